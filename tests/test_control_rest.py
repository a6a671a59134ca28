"""Call-control requests (bridge.control.rest) are the requests each vendor's own SDK sends for the same
operation, captured without sending; jambonz and Asterisk, with no official Python SDK, against their
documented request facts; then sent by bridge.control.send to loopback fakes of the carriers' APIs."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, parse_qsl, unquote, urlsplit

import httpx
import jwt
import plivo
import pytest
import requests
import vonage
from aiohttp import ClientSession, web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from telnyx import Telnyx
from twilio.http import HttpClient
from twilio.http.response import Response as TwilioResponse
from twilio.rest import Client as TwilioClient
from vonage_voice import Connect, PhoneEndpoint, Talk

from bridge.control import rest
from bridge.control.rest import HttpRequest
from bridge.control.send import send_request
from bridge.errors import ControlError

AC, TOKEN, CA = "AC0123456789abcdef0123456789abcdef", "twilio-secret-token", "CA11112222333344445555666677778888"
PLIVO_ID, PLIVO_TOKEN = "MAODUYMZQ3NDHKOTBLNG", "plivo-secret-token"
TELNYX_KEY = "KEY-telnyx-secret"
SECRETS = [TOKEN, PLIVO_TOKEN, TELNYX_KEY, "jambonz-secret", "ari-secret", "sw-secret"]
TWIML = (
    '<Response><Dial action="https://bridge.example/twilio/dial-status"><Number>+15550142</Number></Dial></Response>'
)


# --- capturing the SDKs' requests ---------------------------------------------------------------------


class _TwilioRecorder(HttpClient):  # type: ignore[misc]  # twilio ships no type information
    """A twilio HTTP client that records each request instead of sending it."""

    def __init__(self) -> None:
        super().__init__(logging.getLogger("test.twilio"), False)
        self.requests: list[dict[str, Any]] = []

    def request(self, method: str, url: str, **kwargs: Any) -> Any:
        self.requests.append({"method": method, "url": url, **kwargs})
        return TwilioResponse(200, json.dumps({"sid": CA, "account_sid": AC}))


@pytest.fixture
def captured_requests(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[requests.PreparedRequest]]:
    """What the plivo and vonage SDKs hand to ``requests`` (they send through ``requests.Session``)."""
    seen: list[requests.PreparedRequest] = []

    def send(_session: requests.Session, prepared: requests.PreparedRequest, **_: Any) -> requests.Response:
        seen.append(prepared)
        answer = requests.Response()
        answer.status_code = 204
        answer._content = b""
        answer.url = prepared.url or ""
        answer.request = prepared
        return answer

    monkeypatch.setattr(requests.Session, "send", send)
    yield seen


@pytest.fixture(scope="module")
def rsa_key() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public.decode()


def _basic(header: str | bytes) -> tuple[str, str]:
    text = header.decode() if isinstance(header, bytes) else header
    scheme, _, value = text.partition(" ")
    assert scheme == "Basic"
    user, _, password = base64.b64decode(value).decode().partition(":")
    return user, password


def _form(body: bytes) -> dict[str, list[str]]:
    return parse_qs(body.decode("ascii"), keep_blank_values=True, strict_parsing=True)


# --- each builder against its vendor's SDK ------------------------------------------------------------


def test_twilio_call_update_is_what_the_twilio_sdk_sends() -> None:
    """The REST call update with inline TwiML has the SDK's method, URL, form fields and Basic credentials."""
    recorder = _TwilioRecorder()
    TwilioClient(AC, TOKEN, http_client=recorder).calls(CA).update(twiml=TWIML)
    sdk = recorder.requests[0]

    ours = rest.twilio_call_update("https://api.twilio.com", AC, TOKEN, CA, twiml=TWIML)

    assert (ours.method, ours.url) == (sdk["method"], sdk["url"])
    assert _form(ours.body) == {k: [v] for k, v in sdk["data"].items()}
    assert _basic(ours.headers["Authorization"]) == sdk["auth"]
    assert ours.headers["Content-Type"] == sdk["headers"]["Content-Type"] == "application/x-www-form-urlencoded"
    assert ours.headers["Accept"] == sdk["headers"]["Accept"]


def test_signalwire_call_update_is_the_twilio_shaped_laml_request() -> None:
    """SignalWire's Compatibility API is Twilio-shaped (the `signalwire` package wraps the twilio client), so the
    oracle is the twilio SDK pointed at the LaML base: same path, form ``Url``/``Method``, Basic project:token."""
    recorder = _TwilioRecorder()
    client = TwilioClient("project-id-1", "sw-secret", http_client=recorder)
    client.api.base_url = "https://example.signalwire.com/api/laml"
    client.calls(CA).update(url="https://bridge.example/signalwire/after-stream", method="POST")
    sdk = recorder.requests[0]

    ours = rest.signalwire_call_update(
        "https://example.signalwire.com/",
        "project-id-1",
        "sw-secret",
        CA,
        url="https://bridge.example/signalwire/after-stream",
    )

    assert (ours.method, ours.url) == (sdk["method"], sdk["url"])
    assert _form(ours.body) == {k: [v] for k, v in sdk["data"].items()}
    assert _basic(ours.headers["Authorization"]) == sdk["auth"] == ("project-id-1", "sw-secret")


@pytest.mark.parametrize(
    "optional",
    [
        {
            "from_": "+15550002",
            "audio_url": "https://b.example/a.mp3",
            "webhook_url": "https://b.example/t",
            "client_state": "call-7",
        },
        {"from_": None, "audio_url": None, "webhook_url": None, "client_state": None},
    ],
)
def test_telnyx_transfer_is_what_the_telnyx_sdk_sends(optional: dict[str, Any]) -> None:
    """The transfer action has the SDK's path, JSON body (absent fields left out, ``client_state`` base64) and
    Bearer key; the call-control id with its ``:`` stays as the SDK writes it."""
    seen: list[httpx.Request] = []

    def capture(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"data": {"result": "ok"}})

    call_id = "v3:A1b2C3d4-e5F6_g7"
    sdk_kwargs = {k: v for k, v in optional.items() if v is not None}
    if "client_state" in sdk_kwargs:
        sdk_kwargs["client_state"] = base64.b64encode(sdk_kwargs["client_state"].encode()).decode()
    with httpx.Client(transport=httpx.MockTransport(capture)) as http:
        Telnyx(api_key=TELNYX_KEY, base_url="https://api.telnyx.com/v2", http_client=http).calls.actions.transfer(
            call_id, to="sip:agent@pbx.example.com", timeout_secs=20, **sdk_kwargs
        )
    sdk = seen[0]

    ours = rest.telnyx_transfer(
        "https://api.telnyx.com", TELNYX_KEY, call_id, to="sip:agent@pbx.example.com", timeout_secs=20, **optional
    )

    assert ours.method == sdk.method == "POST"
    assert ours.url == str(sdk.url)
    assert json.loads(ours.body) == json.loads(sdk.content)
    assert ours.headers["Authorization"] == sdk.headers["authorization"] == f"Bearer {TELNYX_KEY}"
    assert ours.headers["Content-Type"] == sdk.headers["content-type"]


def test_telnyx_transfer_refuses_a_ring_time_telnyx_refuses() -> None:
    """``timeout_secs`` outside Telnyx's documented 5-600 is refused before any request."""
    with pytest.raises(ControlError, match="5-600"):
        rest.telnyx_transfer(
            "https://api.telnyx.com",
            "k",
            "v3:x",
            to="+1",
            from_=None,
            timeout_secs=2,
            audio_url=None,
            webhook_url=None,
            client_state=None,
        )


def test_plivo_transfer_is_what_the_plivo_sdk_sends(captured_requests: list[requests.PreparedRequest]) -> None:
    """The A-leg transfer has the SDK's URL (trailing ``/``), JSON body and Basic credentials."""
    call_uuid = "d9b1c7e0-37a4-11ee-9a3c-0242ac120002"
    aleg_url = "https://bridge.example/plivo/after-stream?t=abc"
    plivo.RestClient(PLIVO_ID, PLIVO_TOKEN).calls.transfer(
        call_uuid, legs="aleg", aleg_url=aleg_url, aleg_method="POST"
    )
    sdk = captured_requests[0]

    ours = rest.plivo_transfer("https://api.plivo.com", PLIVO_ID, PLIVO_TOKEN, call_uuid, aleg_url=aleg_url)

    assert (ours.method, ours.url) == (sdk.method, sdk.url)
    assert isinstance(sdk.body, bytes | str)
    assert json.loads(ours.body) == json.loads(sdk.body)
    assert _basic(ours.headers["Authorization"]) == _basic(sdk.headers["Authorization"]) == (PLIVO_ID, PLIVO_TOKEN)
    assert ours.headers["Content-Type"] == sdk.headers["Content-Type"]


def test_vonage_transfer_is_what_the_vonage_sdk_sends(
    captured_requests: list[requests.PreparedRequest], rsa_key: tuple[str, str]
) -> None:
    """The NCCO transfer has the SDK's method, URL and exact body; both JWTs verify with the application's
    public key and carry the same claims (``iat``, ``jti``, ``exp`` differ by design, ``exp`` = ``iat`` + 900)."""
    private, public = rsa_key
    app_id = "aaaaaaaa-bbbb-cccc-dddd-0123456789ab"
    uuid = "63f61863-4a51-4f6b-86e1-46edebcf9356"
    ncco_models = [
        Talk(text="Connecting you now."),
        Connect(
            endpoint=[PhoneEndpoint(number="447700900001", onAnswer={"url": "https://bridge.example/vonage/briefing"})],
            from_="447700900000",
            timeout=20,
            eventType="synchronous",
            eventUrl=["https://bridge.example/vonage/connect-event"],
        ),
    ]
    client = vonage.Vonage(vonage.Auth(application_id=app_id, private_key=private))
    client.voice.transfer_call_ncco(uuid, ncco_models)
    sdk = captured_requests[0]
    ncco = [m.model_dump(by_alias=True, exclude_none=True) for m in ncco_models]

    ours = rest.vonage_transfer(
        "https://api.nexmo.com", app_id, private, uuid, ncco=ncco, now=1_800_000_000.7, jti="jti-1"
    )

    assert (ours.method, ours.url) == (sdk.method, sdk.url) == ("PUT", f"https://api.nexmo.com/v1/calls/{uuid}")
    assert isinstance(sdk.body, bytes | str)
    assert json.loads(ours.body) == json.loads(sdk.body)
    assert ours.headers["Content-Type"] == sdk.headers["Content-Type"] == "application/json"
    sdk_auth = sdk.headers["Authorization"]
    sdk_token = (sdk_auth.decode() if isinstance(sdk_auth, bytes) else sdk_auth).removeprefix("Bearer ")
    our_token = ours.headers["Authorization"].removeprefix("Bearer ")
    theirs = jwt.decode(sdk_token, public, algorithms=["RS256"], options={"verify_exp": False})
    mine = jwt.decode(our_token, public, algorithms=["RS256"], options={"verify_exp": False, "verify_iat": False})
    assert set(mine) == set(theirs) == {"application_id", "iat", "jti", "exp"}
    assert mine == {"application_id": app_id, "iat": 1_800_000_000, "jti": "jti-1", "exp": 1_800_000_900}
    assert theirs["exp"] - theirs["iat"] == mine["exp"] - mine["iat"]
    assert jwt.get_unverified_header(our_token) == jwt.get_unverified_header(sdk_token)


def test_a_vonage_key_that_is_not_a_key_fails_without_showing_it() -> None:
    """A private-key setting that is not an RSA PEM gives a ControlError whose message holds none of it."""
    with pytest.raises(ControlError) as caught:
        rest.vonage_transfer("https://api.nexmo.com", "app", "not-a-pem-secret", "u", ncco=[], now=0, jti="j")
    assert "not-a-pem-secret" not in str(caught.value)


def test_jambonz_redirect_is_the_documented_update_call() -> None:
    """Documented request facts (jambonz/jambonz-api-server@dd755f8 ``lib/swagger/swagger.yaml``: ``updateCall``
    POST /v1/Accounts/{account_sid}/Calls/{call_sid} with ``{"call_hook": {"url", "method"}}``, global
    ``bearerAuth`` security; ``lib/auth/index.js`` takes the API key as a passport-http-bearer token)."""
    ours = rest.jambonz_redirect(
        "https://jambonz.example/",
        "acct-1",
        "jambonz-secret",
        "call-2",
        call_hook_url="https://bridge.example/jambonz/hook",
    )
    assert ours.method == "POST"
    assert ours.url == "https://jambonz.example/v1/Accounts/acct-1/Calls/call-2"
    assert json.loads(ours.body) == {"call_hook": {"url": "https://bridge.example/jambonz/hook", "method": "POST"}}
    assert ours.headers["Authorization"] == "Bearer jambonz-secret"
    assert ours.headers["Content-Type"] == "application/json"
    with_version = rest.jambonz_redirect(
        "https://jambonz.example/v1", "acct-1", "k", "call-2", call_hook_url="https://b/j"
    )
    assert with_version.url == ours.url


def test_asterisk_redirect_and_continue_are_the_documented_ari_calls() -> None:
    """Documented request facts (Asterisk Channels REST API): POST /channels/{id}/redirect?endpoint= and
    /channels/{id}/continue?context=&extension=&priority=, HTTP Basic with an ari.conf user."""
    redirect = rest.asterisk_redirect(
        "http://pbx.example:8088/ari", "bridge", "ari-secret", "1700000000.42", endpoint="PJSIP/+15550142@trunk"
    )
    parts = urlsplit(redirect.url)
    assert redirect.method == "POST" and redirect.body == b""
    assert (parts.netloc, parts.path) == ("pbx.example:8088", "/ari/channels/1700000000.42/redirect")
    assert parse_qsl(parts.query, strict_parsing=True) == [("endpoint", "PJSIP/+15550142@trunk")]
    assert _basic(redirect.headers["Authorization"]) == ("bridge", "ari-secret")

    cont = rest.asterisk_continue(
        "http://pbx.example:8088/ari",
        "bridge",
        "ari-secret",
        "1700000000.42",
        context="agents",
        extension="100",
        priority=1,
    )
    parts = urlsplit(cont.url)
    assert parts.path == "/ari/channels/1700000000.42/continue"
    assert parse_qsl(parts.query, strict_parsing=True) == [
        ("context", "agents"),
        ("extension", "100"),
        ("priority", "1"),
    ]


# --- ids, credentials ---------------------------------------------------------------------------------

BUILDERS: dict[str, Callable[[str], HttpRequest]] = {
    "twilio": lambda i: rest.twilio_call_update("https://t.example", AC, TOKEN, i, twiml="<Response/>"),
    "signalwire": lambda i: rest.signalwire_call_update("https://s.example", "p", "sw-secret", i, url="https://b/x"),
    "telnyx": lambda i: rest.telnyx_transfer(
        "https://x.example",
        TELNYX_KEY,
        i,
        to="+1",
        from_=None,
        timeout_secs=30,
        audio_url=None,
        webhook_url=None,
        client_state=None,
    ),
    "plivo": lambda i: rest.plivo_transfer("https://p.example", PLIVO_ID, PLIVO_TOKEN, i, aleg_url="https://b/p"),
    "jambonz": lambda i: rest.jambonz_redirect(
        "https://j.example", "a", "jambonz-secret", i, call_hook_url="https://b/j"
    ),
    "asterisk": lambda i: rest.asterisk_redirect("https://a.example/ari", "u", "ari-secret", i, endpoint="PJSIP/1"),
}
# The path each builder writes for call id "ID", as segments.
SHAPES = {
    "twilio": ["2010-04-01", "Accounts", AC, "Calls", "ID.json"],
    "signalwire": ["api", "laml", "2010-04-01", "Accounts", "p", "Calls", "ID.json"],
    "telnyx": ["v2", "calls", "ID", "actions", "transfer"],
    "plivo": ["v1", "Account", PLIVO_ID, "Call", "ID", ""],
    "jambonz": ["v1", "Accounts", "a", "Calls", "ID"],
    "asterisk": ["ari", "channels", "ID", "redirect"],
}


@pytest.mark.parametrize("carrier", sorted(BUILDERS))
@pytest.mark.parametrize("hostile", ["../../Accounts/other", "a/b", "x?y=1#z", "%2F..%2F", "a b;c", "v3:ok@x"])
def test_a_carrier_id_stays_one_path_segment(carrier: str, hostile: str) -> None:
    """An id holding ``/``, ``..``, ``?``, ``#`` or ``%`` is one quoted segment: the path keeps its shape and the
    segment decodes back to the id."""
    parts = urlsplit(BUILDERS[carrier](hostile).url)
    segments = parts.path.split("/")[1:]
    expected = SHAPES[carrier]
    assert len(segments) == len(expected)
    index = next(n for n, s in enumerate(expected) if "ID" in s)
    for n, (got, want) in enumerate(zip(segments, expected, strict=True)):
        if n != index:
            assert got == want
    assert unquote(segments[index]) == expected[index].replace("ID", hostile)
    assert "/" not in segments[index] and "?" not in segments[index] and "#" not in segments[index]
    assert parts.fragment == ""


@pytest.mark.parametrize("carrier", sorted(BUILDERS))
@pytest.mark.parametrize("bad", ["", ".", "..", "a\nb"])
def test_a_dot_or_empty_carrier_id_is_refused(carrier: str, bad: str) -> None:
    """``.``, ``..`` and an empty id would move the path at the server; a control character is no id."""
    with pytest.raises(ControlError):
        BUILDERS[carrier](bad)


@pytest.mark.parametrize("carrier", sorted(BUILDERS))
def test_a_request_repr_shows_no_credential(carrier: str) -> None:
    """``repr`` of a built request (what a log line would show) holds no token, no password, no Basic value."""
    request = BUILDERS[carrier]("CA1")
    shown = repr(request)
    assert "<redacted>" in shown
    assert request.headers["Authorization"] not in shown
    assert not any(secret in shown for secret in SECRETS)


# --- sending to loopback fakes of the carriers' APIs --------------------------------------------------


@dataclass
class FakeCarrierApi:
    """One loopback server standing in for every carrier's call-control API: it checks the credentials a
    carrier checks and answers what that carrier documents for the operation."""

    public_key: str
    received: list[tuple[str, str, bytes]] = field(default_factory=list)
    delay: float = 0.0
    status: int | None = None  # overrides the documented answer
    body: bytes | None = None

    def _authorised(self, raw_path: str, header: str) -> bool:
        if raw_path.startswith("/2010-04-01/"):
            return header.startswith("Basic ") and _basic(header) == (AC, TOKEN)
        if raw_path.startswith("/api/laml/"):
            return header.startswith("Basic ") and _basic(header) == ("p", "sw-secret")
        if raw_path.startswith("/v2/calls/"):
            return header == f"Bearer {TELNYX_KEY}"
        if raw_path.startswith("/v1/Account/"):
            return header.startswith("Basic ") and _basic(header) == (PLIVO_ID, PLIVO_TOKEN)
        if raw_path.startswith("/v1/calls/"):
            try:
                jwt.decode(header.removeprefix("Bearer "), self.public_key, algorithms=["RS256"])
            except jwt.PyJWTError:
                return False
            return True
        if raw_path.startswith("/v1/Accounts/"):
            return header == "Bearer jambonz-secret"
        if raw_path.startswith("/ari/"):
            return header.startswith("Basic ") and _basic(header) == ("u", "ari-secret")
        return False

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.received.append((request.method, request.raw_path, body))
        if self.delay:
            await asyncio.sleep(self.delay)
        if not self._authorised(request.raw_path, request.headers.get("Authorization", "")):
            return web.json_response({"message": "Authenticate"}, status=401)
        if self.status is not None:
            return web.Response(status=self.status, body=self.body or b"")
        path = request.raw_path
        if path.startswith(("/2010-04-01/", "/api/laml/")):  # the updated Call resource
            return web.json_response({"sid": "CA1", "status": "in-progress"})
        if path.startswith("/v2/calls/"):
            return web.json_response({"data": {"result": "ok"}})
        if path.startswith("/v1/Account/"):
            return web.json_response({"message": "call transferred", "api_id": "x"}, status=202)
        if path.startswith("/v1/Accounts/"):  # jambonz updateCall: 200 or 202 "Accepted" (swagger.yaml)
            return web.Response(status=202)
        return web.Response(status=204)  # Vonage, ARI: no content

    @property
    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app


@pytest.fixture
async def carrier_api(aiohttp_server: Any, rsa_key: tuple[str, str]) -> AsyncIterator[tuple[FakeCarrierApi, str]]:
    fake = FakeCarrierApi(public_key=rsa_key[1])
    server: TestServer = await aiohttp_server(fake.app, host="127.0.0.1")
    yield fake, f"http://127.0.0.1:{server.port}"


@pytest.fixture
async def http() -> AsyncIterator[ClientSession]:
    async with ClientSession() as session:
        yield session


def _built(base: str, private_key: str, call_id: str) -> dict[str, tuple[HttpRequest, int]]:
    """Each carrier's request to ``base`` and the status its API documents for success."""
    return {
        "twilio": (rest.twilio_call_update(base, AC, TOKEN, call_id, twiml=TWIML), 200),
        "signalwire": (rest.signalwire_call_update(base, "p", "sw-secret", call_id, url="https://b.example/x"), 200),
        "telnyx": (
            rest.telnyx_transfer(
                base,
                TELNYX_KEY,
                call_id,
                to="+15550142",
                from_=None,
                timeout_secs=30,
                audio_url=None,
                webhook_url=None,
                client_state="s",
            ),
            200,
        ),
        "plivo": (rest.plivo_transfer(base, PLIVO_ID, PLIVO_TOKEN, call_id, aleg_url="https://b.example/p"), 202),
        "vonage": (
            rest.vonage_transfer(
                base, "app", private_key, call_id, ncco=[{"action": "talk", "text": "hi"}], now=time.time(), jti="j"
            ),
            204,
        ),
        "jambonz": (
            rest.jambonz_redirect(base, "a", "jambonz-secret", call_id, call_hook_url="https://b.example/j"),
            202,
        ),
        "asterisk": (rest.asterisk_redirect(base + "/ari", "u", "ari-secret", call_id, endpoint="PJSIP/+1@t"), 204),
    }


async def test_each_request_is_accepted_by_a_fake_of_its_carrier(
    carrier_api: tuple[FakeCarrierApi, str], http: ClientSession, rsa_key: tuple[str, str]
) -> None:
    """Sent as built, every request passes its carrier's credential check and gets the documented status; the
    server sees the quoted id byte for byte (``v3:a/b`` arrives as ``v3:a%2Fb``, one segment)."""
    fake, base = carrier_api
    for carrier, (request, documented) in _built(base, rsa_key[0], "v3:a/b").items():
        status, _ = await send_request(http, request, timeout=5)
        assert status == documented, carrier
        method, raw_path, body = fake.received[-1]
        assert method == request.method and body == request.body, carrier
        assert "v3:a%2Fb" in raw_path and "v3:a/b" not in raw_path, carrier


async def test_a_wrong_credential_gets_the_carriers_401(
    carrier_api: tuple[FakeCarrierApi, str], http: ClientSession
) -> None:
    """An answer that is not success is returned (status and body), not raised: the caller reads it."""
    _, base = carrier_api
    request = rest.twilio_call_update(base, AC, "wrong-token", CA, twiml=TWIML)
    status, body = await send_request(http, request, timeout=5)
    assert status == 401 and "Authenticate" in body


async def test_a_5xx_is_returned_and_the_body_kept_to_2_kb(
    carrier_api: tuple[FakeCarrierApi, str], http: ClientSession
) -> None:
    """A 503 with a long body comes back as (503, its first 2048 bytes)."""
    fake, base = carrier_api
    fake.status, fake.body = 503, b"x" * 10_000
    status, body = await send_request(
        http, rest.plivo_transfer(base, PLIVO_ID, PLIVO_TOKEN, "u", aleg_url="https://b/p"), 5
    )
    assert (status, len(body)) == (503, 2048)


async def test_no_answer_in_time_is_a_control_error_without_credentials(
    carrier_api: tuple[FakeCarrierApi, str], http: ClientSession
) -> None:
    """A carrier that does not answer within the timeout raises ControlError, quickly, naming no secret."""
    fake, base = carrier_api
    fake.delay = 5.0
    request = rest.telnyx_transfer(
        base,
        TELNYX_KEY,
        "v3:x",
        to="+1555",
        from_=None,
        timeout_secs=30,
        audio_url=None,
        webhook_url=None,
        client_state=None,
    )
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ControlError) as caught:
        await send_request(http, request, timeout=0.2)
    assert loop.time() - started < 2
    assert "no answer" in str(caught.value)
    assert not any(secret in str(caught.value) for secret in SECRETS)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


async def test_a_refused_connection_is_a_control_error_without_credentials(http: ClientSession) -> None:
    """Nothing listening on the port: ControlError naming the operation, no token, no Basic value."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed when the block ends: nothing listens there
    request = rest.plivo_transfer(f"http://127.0.0.1:{port}", PLIVO_ID, PLIVO_TOKEN, "u", aleg_url="https://b/p")
    with pytest.raises(ControlError) as caught:
        await send_request(http, request, timeout=5)
    message = str(caught.value)
    assert message.startswith("POST http://127.0.0.1:")
    assert PLIVO_TOKEN not in message and request.headers["Authorization"].split()[1] not in message
