"""Outbound-call requests (bridge.dial.carriers) are what each vendor's own SDK sends for the same call,
captured without sending (twilio, telnyx, plivo, vonage; SignalWire through the twilio SDK re-based on its
LaML API); jambonz against its swagger's createCall, Asterisk against ARI's documented originate, FreeSWITCH
against hostile values. Ids stay one path segment, credentials stay out of ``repr``, and the carriers'
documented answers give the call's id (or a ControlError with their own words)."""

from __future__ import annotations

import base64
import json
import logging
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, parse_qsl, unquote, urlsplit

import httpx
import jwt
import plivo
import pytest
import requests
import vonage
from aiohttp import ClientSession, web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from plivo import plivoxml
from telnyx import Telnyx
from twilio.http import HttpClient
from twilio.http.response import Response as TwilioResponse
from twilio.rest import Client as TwilioClient
from vonage_voice import AdvancedMachineDetection, Connect, CreateCallRequest, Phone, Sip, ToPhone, WebsocketEndpoint

from bridge.control import esl
from bridge.control.rest import HttpRequest
from bridge.control.send import send_request
from bridge.dial.carriers import answer_markup, create_request, created_call_id, end_request
from bridge.dial.links import DialLinks, EslOriginate
from bridge.dial.order import STREAM_ROUTE, DialOrder, claim_token, read_claim
from bridge.errors import ControlError
from bridge.setting_sections import ControlSettings, OutboundSettings

AC, TWILIO_TOKEN = "AC0123456789abcdef0123456789abcdef", "twilio-secret-token"
CA = "CA11112222333344445555666677778888"
SW_PROJECT, SW_TOKEN, SW_SPACE = "b7d3e2a1-0000-4000-8000-0123456789ab", "sw-secret", "https://example.signalwire.com"
TELNYX_KEY, TELNYX_APP = "KEY-telnyx-secret", "1494404757140276705"
PLIVO_ID, PLIVO_TOKEN = "MAODUYMZQ3NDHKOTBLNG", "plivo-secret-token"
VONAGE_APP = "aaaaaaaa-bbbb-cccc-dddd-0123456789ab"
SECRETS = [TWILIO_TOKEN, SW_TOKEN, TELNYX_KEY, PLIVO_TOKEN, "jambonz-secret", "ari-secret"]
SECRET = b"k" * 32
CALL_ID = "0123456789abcdef0123456789abcdef"
FIXED_UUID = "6f1c2d3e-4b5a-4c6d-8e7f-0123456789ab"
NOW = 1_800_000_000.0
MODES = ["off", "detect", "detect_message_end"]


@pytest.fixture(scope="module")
def rsa_key() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public.decode()


@pytest.fixture(scope="module")
def control(rsa_key: tuple[str, str]) -> ControlSettings:
    return ControlSettings.model_validate(
        {
            "twilio_account_sid": AC,
            "signalwire_project_id": SW_PROJECT,
            "signalwire_api_token": SW_TOKEN,
            "signalwire_api_url": SW_SPACE,
            "telnyx_api_key": TELNYX_KEY,
            "plivo_auth_id": PLIVO_ID,
            "plivo_auth_token": PLIVO_TOKEN,
            "vonage_application_id": VONAGE_APP,
            "vonage_private_key": rsa_key[0],
            "jambonz_api_url": "https://jambonz.example/v1",
            "jambonz_account_sid": "acct-1",
            "jambonz_api_key": "jambonz-secret",
            "freeswitch_esl_url": "esl://:fs-secret@fs.example:8021",
            "freeswitch_dial": "sofia/gateway/gw1/{to}",
            "asterisk_ari_url": "http://pbx.example:8088/ari",
            "asterisk_ari_user": "bridge",
            "asterisk_ari_password": "ari-secret",
        }
    )


OUTBOUND = OutboundSettings.model_validate(
    {
        "dial_to": ["+1555", "pbx.example.com"],
        "dial_from": ["+15550002"],
        "telnyx_connection_id": TELNYX_APP,
        "asterisk_endpoint": "PJSIP/{to}@trunk",
        "asterisk_context": "bridge-outbound",
        "asterisk_extension": "s",
    }
)


def _order(carrier: str, mode: str = "off", to: str = "+15550142", from_: str = "+15550002") -> DialOrder:
    return DialOrder.model_validate(
        {"to": to, "from": from_, "carrier": carrier, "machine_detection": mode, "ring_timeout_s": 25}
    )


def _links(order: DialOrder, *, stream_query: str = "") -> DialLinks:
    route = STREAM_ROUTE.get(order.carrier, order.carrier)
    token = claim_token(SECRET, CALL_ID, order, time.time() + 3600)
    return DialLinks("https://bridge.example", f"wss://bridge.example/{route}/stream{stream_query}", token)


def _create(order: DialOrder, control: ControlSettings, links: DialLinks) -> HttpRequest:
    request = create_request(
        order, CALL_ID, control, OUTBOUND, links, twilio_auth_token=TWILIO_TOKEN, now=NOW, fresh_id=FIXED_UUID
    )
    assert isinstance(request, HttpRequest)
    return request


def _basic(header: str | bytes) -> tuple[str, str]:
    text = header.decode() if isinstance(header, bytes) else header
    scheme, _, value = text.partition(" ")
    assert scheme == "Basic"
    user, _, password = base64.b64decode(value).decode().partition(":")
    return user, password


def _form(body: bytes) -> dict[str, list[str]]:
    """A form body as an order-free multi-dict (each key's values sorted)."""
    parsed = parse_qs(body.decode("ascii"), keep_blank_values=True, strict_parsing=True)
    return {key: sorted(values) for key, values in parsed.items()}


def _sdk_form(data: dict[str, Any]) -> dict[str, list[str]]:
    """The twilio SDK's ``data`` (a list for a repeated field) as the same multi-dict."""
    return {k: sorted(str(x) for x in v) if isinstance(v, list) else [str(v)] for k, v in data.items()}


# --- capturing the SDKs' requests ---------------------------------------------------------------------


class _TwilioRecorder(HttpClient):  # type: ignore[misc]  # twilio ships no type information
    """A twilio HTTP client that records each request and answers the Call resource (201, documented)."""

    def __init__(self) -> None:
        super().__init__(logging.getLogger("test.twilio"), False)
        self.requests: list[dict[str, Any]] = []

    def request(self, method: str, url: str, **kwargs: Any) -> Any:
        self.requests.append({"method": method, "url": url, **kwargs})
        return TwilioResponse(201, json.dumps({"sid": CA, "account_sid": AC, "status": "queued"}))


class _RequestsCapture:
    """What the plivo and vonage SDKs hand to ``requests`` (they send through ``requests.Session``), answered
    with ``status`` and the JSON ``answer``."""

    def __init__(self) -> None:
        self.seen: list[requests.PreparedRequest] = []
        self.status = 204
        self.answer: dict[str, Any] | None = None

    def send(self, prepared: requests.PreparedRequest) -> requests.Response:
        self.seen.append(prepared)
        response = requests.Response()
        response.status_code = self.status
        response._content = json.dumps(self.answer).encode() if self.answer is not None else b""
        if self.answer is not None:
            response.headers["Content-Type"] = "application/json"
        response.url = prepared.url or ""
        response.request = prepared
        return response


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> Iterator[_RequestsCapture]:
    capture = _RequestsCapture()

    def send(_session: requests.Session, prepared: requests.PreparedRequest, **_: Any) -> requests.Response:
        return capture.send(prepared)

    monkeypatch.setattr(requests.Session, "send", send)
    yield capture


def _telnyx_capture(answer: dict[str, Any]) -> tuple[list[httpx.Request], httpx.Client]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=answer)

    return seen, httpx.Client(transport=httpx.MockTransport(handler))


def _body(prepared: requests.PreparedRequest) -> Any:
    assert isinstance(prepared.body, bytes | str)
    return json.loads(prepared.body)


# --- Twilio, SignalWire -------------------------------------------------------------------------------


def _twilio_sdk_kwargs(order: DialOrder, twiml: str, links: DialLinks, carrier: str) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "to": order.to,
        "from_": order.from_,
        "twiml": twiml,
        "status_callback": links.status_url(carrier),
        "status_callback_event": ["initiated", "ringing", "answered", "completed"],
        "status_callback_method": "POST",
        "timeout": order.ring_timeout_s,
    }
    if order.machine_detection != "off":
        kwargs |= {
            "machine_detection": {"detect": "Enable", "detect_message_end": "DetectMessageEnd"}[
                order.machine_detection
            ],
            "async_amd": "true",
            "async_amd_status_callback": links.amd_url(carrier),
            "async_amd_status_callback_method": "POST",
        }
    return kwargs


@pytest.mark.parametrize("mode", MODES)
def test_twilio_create_is_what_the_twilio_sdk_sends(control: ControlSettings, mode: str) -> None:
    """The create has the SDK's method, URL, Basic credentials and form (StatusCallbackEvent repeated, AMD
    asynchronous only when asked for); its id is the SDK's ``sid`` read from the same answer."""
    order = _order("twilio", mode)
    links = _links(order)
    ours = _create(order, control, links)
    twiml = _form(ours.body)["Twiml"][0]

    recorder = _TwilioRecorder()
    call = TwilioClient(AC, TWILIO_TOKEN, http_client=recorder).calls.create(
        **_twilio_sdk_kwargs(order, twiml, links, "twilio")
    )
    sdk = recorder.requests[0]

    assert (ours.method, ours.url) == (sdk["method"], sdk["url"])
    assert ours.url == f"https://api.twilio.com/2010-04-01/Accounts/{AC}/Calls.json"
    assert _form(ours.body) == _sdk_form(sdk["data"])
    assert _basic(ours.headers["Authorization"]) == sdk["auth"] == (AC, TWILIO_TOKEN)
    assert ours.headers["Content-Type"] == sdk["headers"]["Content-Type"] == "application/x-www-form-urlencoded"
    assert ("MachineDetection" in _form(ours.body)) == (mode != "off")
    assert created_call_id("twilio", 201, json.dumps({"sid": CA, "status": "queued"})) == call.sid == CA


def test_twilio_twiml_connects_the_stream_with_the_claim() -> None:
    """The inline TwiML is ``<Connect action=after-stream><Stream url><Parameter name="bridge.outbound"
    value=claim>``: the stream is bound to this call and Twilio asks the bridge what follows it."""
    order = _order("twilio", "detect")
    links = _links(order)
    control = ControlSettings.model_validate({"twilio_account_sid": AC})
    twiml = _form(_create(order, control, links).body)["Twiml"][0]
    root = ET.fromstring(twiml)
    assert root.tag == "Response" and [child.tag for child in root] == ["Connect"]
    connect = root[0]
    assert connect.get("action") == "https://bridge.example/twilio/after-stream"
    (stream,) = list(connect)
    assert stream.tag == "Stream" and stream.get("url") == "wss://bridge.example/twilio/stream"
    (parameter,) = list(stream)
    assert (parameter.get("name"), parameter.get("value")) == ("bridge.outbound", links.token)
    claim = read_claim(SECRET, str(parameter.get("value")), time.time())
    assert claim is not None and (claim.call_id, claim.carrier, claim.machine_detection) == (
        CALL_ID,
        "twilio",
        "detect",
    )


def test_twiml_over_4000_characters_is_refused(control: ControlSettings) -> None:
    """Twilio's ``Twiml`` is at most 4000 characters: a longer one is a ControlError before any request."""
    order = _order("twilio")
    links = DialLinks("https://bridge.example", "wss://bridge.example/twilio/stream/" + "x" * 4000, "t")
    with pytest.raises(ControlError, match="4000"):
        _create(order, control, links)


@pytest.mark.parametrize("mode", MODES)
def test_signalwire_create_is_the_twilio_shaped_laml_request(control: ControlSettings, mode: str) -> None:
    """SignalWire's Compatibility API is Twilio-shaped: the twilio SDK re-based on the space's LaML API sends
    the same method, path, form and Basic project:token; the cXML has no ``<Connect action>`` (SignalWire
    documents none) and a ``<Redirect>`` to the after-stream route follows it."""
    order = _order("signalwire", mode)
    links = _links(order)
    ours = _create(order, control, links)
    twiml = _form(ours.body)["Twiml"][0]

    recorder = _TwilioRecorder()
    client = TwilioClient(SW_PROJECT, SW_TOKEN, http_client=recorder)
    client.api.base_url = f"{SW_SPACE}/api/laml"
    client.calls.create(**_twilio_sdk_kwargs(order, twiml, links, "signalwire"))
    sdk = recorder.requests[0]

    assert (ours.method, ours.url) == (sdk["method"], sdk["url"])
    assert ours.url == f"{SW_SPACE}/api/laml/2010-04-01/Accounts/{SW_PROJECT}/Calls.json"
    assert _form(ours.body) == _sdk_form(sdk["data"])
    assert _basic(ours.headers["Authorization"]) == sdk["auth"] == (SW_PROJECT, SW_TOKEN)
    root = ET.fromstring(twiml)
    assert [child.tag for child in root] == ["Connect", "Redirect"]
    assert root[0].get("action") is None
    assert root[1].text == "https://bridge.example/signalwire/after-stream"
    (parameter,) = list(root[0][0])
    assert parameter.get("value") == links.token


# --- Telnyx -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_telnyx_create_is_what_the_telnyx_sdk_sends(control: ControlSettings, mode: str) -> None:
    """``POST /v2/calls`` has the SDK's URL, Bearer key and JSON body: the claimed stream URL (RTP, PCMU,
    inbound track), the status route as webhook_url, the claim base64 as client_state, and
    answering_machine_detection ``detect``/``greeting_end``; its id is the SDK's ``data.call_control_id``."""
    order = _order("telnyx", mode)
    links = _links(order, stream_query="?token=stream-token")
    ours = _create(order, control, links)

    answer = {
        "data": {
            "call_control_id": "v3:abc-DEF_123",
            "call_leg_id": "leg-1",
            "call_session_id": "session-1",
            "is_alive": False,
            "record_type": "call",
        }
    }
    seen, http = _telnyx_capture(answer)
    kwargs: dict[str, Any] = {
        "connection_id": TELNYX_APP,
        "from_": order.from_,
        "to": order.to,
        "stream_url": f"wss://bridge.example/telnyx/stream?token=stream-token&outbound={links.token}",
        "stream_track": "inbound_track",
        "stream_bidirectional_mode": "rtp",
        "stream_bidirectional_codec": "PCMU",
        "timeout_secs": order.ring_timeout_s,
        "webhook_url": links.status_url("telnyx"),
        "webhook_url_method": "POST",
        "client_state": base64.b64encode(links.token.encode()).decode(),
    }
    if mode != "off":
        kwargs["answering_machine_detection"] = {"detect": "detect", "detect_message_end": "greeting_end"}[mode]
    with http:
        result = Telnyx(api_key=TELNYX_KEY, base_url="https://api.telnyx.com/v2", http_client=http).calls.dial(**kwargs)
    sdk = seen[0]

    assert ours.method == sdk.method == "POST"
    assert ours.url == str(sdk.url) == "https://api.telnyx.com/v2/calls"
    assert json.loads(ours.body) == json.loads(sdk.content)
    assert ours.headers["Authorization"] == sdk.headers["authorization"] == f"Bearer {TELNYX_KEY}"
    assert ours.headers["Content-Type"] == sdk.headers["content-type"]
    assert result.data is not None
    assert created_call_id("telnyx", 200, json.dumps(answer)) == result.data.call_control_id == "v3:abc-DEF_123"


# --- Plivo --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("to", ["+15550142", "sip:agent@pbx.example.com"])
def test_plivo_create_is_what_the_plivo_sdk_sends(
    control: ControlSettings, captured: _RequestsCapture, mode: str, to: str
) -> None:
    """``POST /v1/Account/{id}/Call/`` has the SDK's URL (trailing ``/``), Basic credentials and JSON body
    (the SDK's defaults included); numbers are written as Plivo's reference writes them, digits without "+"
    (a SIP URI as it is); its id is the SDK's ``request_uuid`` from the documented answer."""
    order = _order("plivo", mode, to=to)
    links = _links(order)
    ours = _create(order, control, links)

    captured.status = 201
    captured.answer = {"message": "call fired", "request_uuid": "9834029e-58b6-11e1-b8b7-a5bd0e4e126f", "api_id": "x"}
    kwargs: dict[str, Any] = {
        "from_": "15550002",
        "to_": to.removeprefix("+"),
        "answer_url": links.answer_url("plivo"),
        "answer_method": "POST",
        "ring_url": links.status_url("plivo"),
        "hangup_url": links.status_url("plivo"),
        "ring_timeout": order.ring_timeout_s,
    }
    if mode != "off":
        kwargs |= {"machine_detection": "true", "machine_detection_url": links.amd_url("plivo")}
    result = plivo.RestClient(PLIVO_ID, PLIVO_TOKEN).calls.create(**kwargs)
    sdk = captured.seen[0]

    assert (ours.method, ours.url) == (sdk.method, sdk.url)
    assert ours.url == f"https://api.plivo.com/v1/Account/{PLIVO_ID}/Call/"
    assert json.loads(ours.body) == _body(sdk)
    assert _basic(ours.headers["Authorization"]) == _basic(sdk.headers["Authorization"]) == (PLIVO_ID, PLIVO_TOKEN)
    assert ours.headers["Content-Type"] == sdk.headers["Content-Type"]
    assert created_call_id("plivo", 201, json.dumps(captured.answer)) == result.request_uuid


def test_plivo_answer_markup_is_the_sdks_stream_then_redirect() -> None:
    """The answer URL serves ``<Stream bidirectional keepCallAlive contentType=mu-law 8k>`` to the claimed
    stream URL, then ``<Redirect>`` to the after-stream route: the elements the plivo SDK's XML builders make."""
    order = _order("plivo")
    links = _links(order)
    markup = answer_markup("plivo", links)
    assert markup.content_type == "text/xml" and isinstance(markup.body, str)
    sdk = (
        plivoxml.ResponseElement()
        .add(
            plivoxml.StreamElement(
                links.claimed_stream_url(),
                bidirectional=True,
                keepCallAlive=True,
                contentType="audio/x-mulaw;rate=8000",
            )
        )
        .add(plivoxml.RedirectElement(links.after_stream_url("plivo")))
        .to_string(False)
    )
    ours, theirs = ET.fromstring(markup.body), ET.fromstring(sdk)
    assert [(e.tag, e.attrib, (e.text or "").strip()) for e in ours] == [
        (e.tag, e.attrib, (e.text or "").strip()) for e in theirs
    ]
    assert ours[0].text == f"wss://bridge.example/plivo/stream?outbound={links.token}"


# --- Vonage -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("to", ["+15550142", "sip:agent@pbx.example.com"])
def test_vonage_create_is_what_the_vonage_sdk_sends(
    control: ControlSettings, captured: _RequestsCapture, rsa_key: tuple[str, str], mode: str, to: str
) -> None:
    """``POST /v1/calls`` has the SDK's URL and exact JSON body (numbers without "+", an NCCO ``connect`` to
    the claimed WebSocket URL at 16 kHz, advanced machine detection ``detect``/``detect_beep``); both JWTs
    verify with the application's key and carry the same claims; its id is the SDK's ``uuid``."""
    order = _order("vonage", mode, to=to)
    links = _links(order)
    ours = _create(order, control, links)

    captured.status = 201
    captured.answer = {
        "uuid": "63f61863-4a51-4f6b-86e1-46edebcf9356",
        "status": "started",
        "direction": "outbound",
        "conversation_uuid": "CON-f972836a-550f-45fa-956c-12a2ab5b7d22",
    }
    endpoint = WebsocketEndpoint(uri=links.claimed_stream_url(), contentType="audio/l16;rate=16000", headers={})
    request = CreateCallRequest(
        to=[Sip(uri=to)] if to.startswith("sip:") else [ToPhone(number="15550142")],
        from_=Phone(number="15550002"),
        ncco=[Connect(endpoint=[endpoint], from_="15550002")],
        event_url=[links.status_url("vonage")],
        event_method="POST",
        ringing_timer=order.ring_timeout_s,
        advanced_machine_detection=(
            AdvancedMachineDetection(
                behavior="continue",
                mode={"detect": "detect", "detect_message_end": "detect_beep"}[mode],
                beep_timeout=45,
            )
            if mode != "off"
            else None
        ),
    )
    result = vonage.Vonage(vonage.Auth(application_id=VONAGE_APP, private_key=rsa_key[0])).voice.create_call(request)
    sdk = captured.seen[0]

    assert (ours.method, ours.url) == (sdk.method, sdk.url) == ("POST", "https://api.nexmo.com/v1/calls")
    assert json.loads(ours.body) == _body(sdk)
    assert ours.headers["Content-Type"] == sdk.headers["Content-Type"] == "application/json"
    sdk_auth = sdk.headers["Authorization"]
    sdk_token = (sdk_auth.decode() if isinstance(sdk_auth, bytes) else sdk_auth).removeprefix("Bearer ")
    our_token = ours.headers["Authorization"].removeprefix("Bearer ")
    mine = jwt.decode(our_token, rsa_key[1], ["RS256"], options={"verify_exp": False, "verify_iat": False})
    theirs = jwt.decode(sdk_token, rsa_key[1], ["RS256"], options={"verify_exp": False, "verify_iat": False})
    assert set(mine) == set(theirs) == {"application_id", "iat", "jti", "exp"}
    assert mine == {"application_id": VONAGE_APP, "iat": int(NOW), "jti": FIXED_UUID, "exp": int(NOW) + 900}
    assert created_call_id("vonage", 201, json.dumps(captured.answer)) == result.uuid


# --- jambonz ------------------------------------------------------------------------------------------

# jambonz/jambonz-api-server@dd755f8 lib/swagger/swagger.yaml, createCall (call-control.md §7): the body's
# properties, its required ones, Target's types and fields, and Webhook's fields. ``amd`` is read from the
# same body by the feature server's rest:dial task (jambonz-feature-server@389c65e lib/tasks/rest_dial.js),
# its ``actionHook`` required ("object|string", verb-specifications@1b1452d specs.json).
JAMBONZ_CREATE_PROPERTIES = {
    "application_sid", "answerOnBridge", "call_hook", "call_status_hook", "from", "fromHost", "timeout",
    "timeLimit", "tag", "to", "headers", "sipRequestWithinDialogHook",
}  # fmt: skip
JAMBONZ_TARGET = {"type": {"phone", "sip", "user", "teams"}, "fields": {"number", "sipUri", "trunk", "name"}}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("to", ["+15550142", "sip:agent@pbx.example.com"])
def test_jambonz_create_is_the_swaggers_create_call(control: ControlSettings, mode: str, to: str) -> None:
    """``POST /v1/Accounts/{sid}/Calls`` (``/v1`` once, whether the setting has it or not), Bearer API key,
    a body of createCall's properties only (plus ``amd`` when asked): ``from``, a ``Target``, the answer
    and status routes as ``Webhook``s, ``timeout``."""
    order = _order("jambonz", mode, to=to)
    links = _links(order)
    ours = _create(order, control, links)
    body = json.loads(ours.body)

    assert ours.method == "POST" and ours.url == "https://jambonz.example/v1/Accounts/acct-1/Calls"
    assert ours.headers["Authorization"] == "Bearer jambonz-secret"
    assert ours.headers["Content-Type"] == "application/json"
    assert set(body) - {"amd"} <= JAMBONZ_CREATE_PROPERTIES and {"from", "to"} <= set(body)
    assert body["to"]["type"] in JAMBONZ_TARGET["type"] and set(body["to"]) - {"type"} <= JAMBONZ_TARGET["fields"]
    expected_target = {"type": "sip", "sipUri": to} if to.startswith("sip:") else {"type": "phone", "number": to}
    assert body == {
        "from": "+15550002",
        "to": expected_target,
        "call_hook": {"url": f"https://bridge.example/jambonz/outbound-answer?t={links.token}", "method": "POST"},
        "call_status_hook": {"url": f"https://bridge.example/jambonz/call-status?t={links.token}", "method": "POST"},
        "timeout": 25,
        **({"amd": {"actionHook": f"https://bridge.example/jambonz/amd?t={links.token}"}} if mode != "off" else {}),
    }
    assert created_call_id("jambonz", 201, json.dumps({"sid": "2531329f-fb09-4ef7-887e-84e648214436"})) == (
        "2531329f-fb09-4ef7-887e-84e648214436"
    )


def test_jambonz_answer_markup_is_a_listen_to_the_claimed_stream() -> None:
    """The call_hook serves one ``listen`` verb to the claimed audiofork URL at 8000 Hz, with only
    properties verb-specifications@1b1452d lists for ``listen``."""
    order = _order("jambonz")
    links = _links(order)
    markup = answer_markup("jambonz", links)
    assert markup.content_type == "application/json"
    assert markup.body == [
        {
            "verb": "listen",
            "url": f"wss://bridge.example/audiofork/stream?outbound={links.token}",
            "mixType": "mono",
            "sampleRate": 8000,
            "metadata": {},
            "passDtmf": True,
        }
    ]
    listen_properties = {"id", "actionHook", "auth", "finishOnKey", "maxLength", "metadata", "mixType", "passDtmf",
                         "playBeep", "disableBidirectionalAudio", "bidirectionalAudio", "sampleRate", "timeout",
                         "transcribe", "url", "wsAuth", "earlyMedia", "channel"}  # fmt: skip
    assert isinstance(markup.body, list) and set(markup.body[0]) - {"verb"} <= listen_properties


@pytest.mark.parametrize("carrier", ["twilio", "signalwire", "telnyx", "vonage", "freeswitch", "asterisk"])
def test_only_plivo_and_jambonz_have_answer_markup(carrier: str) -> None:
    """The others carry their markup inline (or have none): asking for it is a ValueError."""
    with pytest.raises(ValueError, match=carrier):
        answer_markup(carrier, _links(_order(carrier)))


# --- FreeSWITCH ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("to", "dial"),
    [
        ("+15550142", "sofia/gateway/gw1/+15550142"),
        ("sip:agent@pbx.example.com", "sofia/external/agent@pbx.example.com"),
    ],
)
def test_freeswitch_originate_forks_the_answered_call_to_the_bridge(
    control: ControlSettings, to: str, dial: str
) -> None:
    """``originate {origination_uuid,origination_caller_id_number,originate_timeout,api_on_answer='uuid_audio_fork
    <uuid> start <claimed url> mono 8k'}<dial> &park()``: the uuid is the carrier id, the command is one
    ESL line."""
    order = _order("freeswitch", to=to)
    links = _links(order)
    originate = create_request(order, CALL_ID, control, OUTBOUND, links, fresh_id=FIXED_UUID)
    assert isinstance(originate, EslOriginate)
    stream = f"wss://bridge.example/audiofork/stream?outbound={links.token}&rate=8000&mix=mono"
    assert originate.uuid == FIXED_UUID
    assert originate.command == (
        f"originate {{origination_uuid={FIXED_UUID},origination_caller_id_number=+15550002,originate_timeout=25,"
        f"api_on_answer='uuid_audio_fork {FIXED_UUID} start {stream} mono 8k'}}{dial} &park()"
    )
    assert esl.api(originate.command) == f"api {originate.command}\n\n".encode()
    fresh = create_request(order, CALL_ID, control, OUTBOUND, links)
    assert isinstance(fresh, EslOriginate) and fresh.uuid != FIXED_UUID and fresh.uuid in fresh.command


HOSTILE = [
    "+1555 0142",
    "+15550142'",
    '+15550142"',
    "+1555,0142",
    "+15550142\n&hangup()",
    "+15550142\r",
    "+1555}sofia/x",
    "+1555|sofia/gateway/other/1",
    "+1555${sip_h_x}",
    "+1555`x`",
]


@pytest.mark.parametrize("field", ["to", "from"])
def test_freeswitch_refuses_values_that_would_break_the_command(control: ControlSettings, field: str) -> None:
    """A space, quote, comma, brace, bar, ``$``, backquote or line break in ``to`` or ``from`` (an order built
    past its validation) is a ControlError, not a command FreeSWITCH would split differently."""
    links = _links(_order("freeswitch"))
    for value in HOSTILE:
        fields: dict[str, Any] = {"to": "+15550142", "from_": "+15550002", "carrier": "freeswitch"}
        fields["from_" if field == "from" else "to"] = value
        order = DialOrder.model_construct(**fields)
        with pytest.raises(ControlError):
            create_request(order, CALL_ID, control, OUTBOUND, links, fresh_id=FIXED_UUID)


def test_freeswitch_refuses_a_stream_url_that_would_break_the_command(control: ControlSettings) -> None:
    """The stream URL sits inside the quoted api_on_answer: a space, quote or comma in it is refused too."""
    for stream in ("wss://b.example/a b", "wss://b.example/a'b", "wss://b.example/a,b"):
        with pytest.raises(ControlError):
            create_request(
                _order("freeswitch"), CALL_ID, control, OUTBOUND, DialLinks("https://b.example", stream, "t")
            )


def test_freeswitch_needs_a_dial_string_for_a_number_and_a_number_to_call_from(control: ControlSettings) -> None:
    """Without control.freeswitch_dial a number cannot be dialled; a SIP ``from`` is no caller id number."""
    bare = control.model_copy(update={"freeswitch_dial": ""})
    with pytest.raises(ControlError, match="freeswitch_dial"):
        create_request(_order("freeswitch"), CALL_ID, bare, OUTBOUND, _links(_order("freeswitch")))
    order = DialOrder.model_construct(to="+15550142", from_="sip:bot@pbx.example.com", carrier="freeswitch")
    with pytest.raises(ControlError, match="from"):
        create_request(order, CALL_ID, control, OUTBOUND, _links(_order("freeswitch")))


def test_freeswitch_end_and_originate_answers(control: ControlSettings) -> None:
    """The end is ``uuid_kill <uuid>`` whether ringing or answered (a hostile uuid refused); ``+OK <uuid>`` gives
    the uuid, ``-ERR NO_ANSWER`` a ControlError saying so."""
    for answered in (False, True):
        assert end_request("freeswitch", control, OUTBOUND, FIXED_UUID, answered=answered) == f"uuid_kill {FIXED_UUID}"
    for bad in ("a b", "x'y", "-bleg", "u\nv", ""):
        with pytest.raises(ControlError):
            end_request("freeswitch", control, OUTBOUND, bad, answered=True)
    assert created_call_id("freeswitch", 0, f"+OK {FIXED_UUID}\n") == FIXED_UUID
    with pytest.raises(ControlError, match="NO_ANSWER"):
        created_call_id("freeswitch", 0, "-ERR NO_ANSWER\n")


# --- Asterisk -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_asterisk_create_is_aris_documented_originate(control: ControlSettings, mode: str) -> None:
    """ARI ``POST /channels`` with the documented query (endpoint from the template, the operator's
    context/extension at priority 1, callerId, timeout, channelId), Basic with the ari.conf user, and the
    claim and claimed stream URL as channel variables for the dialplan; its id is the Channel's ``id``."""
    order = _order("asterisk", mode)
    links = _links(order)
    ours = _create(order, control, links)
    parts = urlsplit(ours.url)
    assert ours.method == "POST"
    assert (parts.scheme, parts.netloc, parts.path) == ("http", "pbx.example:8088", "/ari/channels")
    assert parse_qsl(parts.query, strict_parsing=True) == [
        ("endpoint", "PJSIP/+15550142@trunk"),
        ("extension", "s"),
        ("context", "bridge-outbound"),
        ("priority", "1"),
        ("callerId", "+15550002"),
        ("timeout", "25"),
        ("channelId", FIXED_UUID),
    ]
    assert json.loads(ours.body) == {
        "variables": {
            "BRIDGE_OUTBOUND": links.token,
            "BRIDGE_STREAM_URL": f"wss://bridge.example/asterisk/stream?outbound={links.token}",
        }
    }
    assert _basic(ours.headers["Authorization"]) == ("bridge", "ari-secret")
    assert ours.headers["Content-Type"] == "application/json"
    channel = {"id": FIXED_UUID, "name": "PJSIP/trunk-00000001", "state": "Down"}
    assert created_call_id("asterisk", 200, json.dumps(channel)) == FIXED_UUID


# --- cancel and hang up, against the SDKs and the documents -------------------------------------------


@pytest.mark.parametrize("answered", [False, True])
@pytest.mark.parametrize("carrier", ["twilio", "signalwire"])
def test_twilio_and_signalwire_end_is_the_sdks_status_update(
    control: ControlSettings, carrier: str, answered: bool
) -> None:
    """Ringing: ``Status=canceled``; answered: ``Status=completed``, on the call's resource, as the twilio SDK's
    ``calls(sid).update(status=...)`` sends it (re-based on the LaML API for SignalWire)."""
    recorder = _TwilioRecorder()
    if carrier == "twilio":
        client = TwilioClient(AC, TWILIO_TOKEN, http_client=recorder)
    else:
        client = TwilioClient(SW_PROJECT, SW_TOKEN, http_client=recorder)
        client.api.base_url = f"{SW_SPACE}/api/laml"
    client.calls(CA).update(status="completed" if answered else "canceled")
    sdk = recorder.requests[0]
    ours = end_request(carrier, control, OUTBOUND, CA, answered=answered, twilio_auth_token=TWILIO_TOKEN)
    assert isinstance(ours, HttpRequest)
    assert (ours.method, ours.url) == (sdk["method"], sdk["url"])
    assert _form(ours.body) == _sdk_form(sdk["data"])
    assert _basic(ours.headers["Authorization"]) == sdk["auth"]


def test_telnyx_end_is_the_sdks_hangup(control: ControlSettings) -> None:
    """``POST /v2/calls/{id}/actions/hangup`` with the SDK's body, ringing or answered."""
    seen, http = _telnyx_capture({"data": {"result": "ok"}})
    with http:
        Telnyx(api_key=TELNYX_KEY, base_url="https://api.telnyx.com/v2", http_client=http).calls.actions.hangup(
            "v3:abc"
        )
    sdk = seen[0]
    for answered in (False, True):
        ours = end_request("telnyx", control, OUTBOUND, "v3:abc", answered=answered)
        assert isinstance(ours, HttpRequest)
        assert (ours.method, ours.url) == (sdk.method, str(sdk.url))
        assert json.loads(ours.body) == json.loads(sdk.content or b"{}")
        assert ours.headers["Authorization"] == sdk.headers["authorization"]


def test_plivo_end_is_the_sdks_cancel_or_delete(control: ControlSettings, captured: _RequestsCapture) -> None:
    """Ringing: ``calls.cancel(request_uuid)`` (DELETE .../Request/{uuid}/, no body); answered:
    ``calls.delete(call_uuid)`` (DELETE .../Call/{uuid}/, the SDK's JSON body)."""
    client = plivo.RestClient(PLIVO_ID, PLIVO_TOKEN)
    client.calls.cancel("req-1")
    client.calls.delete("call-2")
    cancel, delete = captured.seen
    ringing = end_request("plivo", control, OUTBOUND, "req-1", answered=False)
    answered = end_request("plivo", control, OUTBOUND, "call-2", answered=True)
    assert isinstance(ringing, HttpRequest) and isinstance(answered, HttpRequest)
    assert (ringing.method, ringing.url) == (cancel.method, cancel.url)
    assert ringing.body == (cancel.body or b"") == b""
    assert (answered.method, answered.url) == (delete.method, delete.url)
    assert json.loads(answered.body) == _body(delete)
    for ours, sdk in ((ringing, cancel), (answered, delete)):
        assert _basic(ours.headers["Authorization"]) == _basic(sdk.headers["Authorization"])


def test_vonage_end_is_the_sdks_hangup(
    control: ControlSettings, captured: _RequestsCapture, rsa_key: tuple[str, str]
) -> None:
    """``PUT /v1/calls/{uuid}`` ``{"action": "hangup"}`` with an application JWT, ringing or answered."""
    vonage.Vonage(vonage.Auth(application_id=VONAGE_APP, private_key=rsa_key[0])).voice.hangup("uuid-1")
    sdk = captured.seen[0]
    for answered in (False, True):
        ours = end_request("vonage", control, OUTBOUND, "uuid-1", answered=answered, now=NOW, jti=FIXED_UUID)
        assert isinstance(ours, HttpRequest)
        assert (ours.method, ours.url) == (sdk.method, sdk.url)
        assert json.loads(ours.body) == _body(sdk)
        claims = jwt.decode(
            ours.headers["Authorization"].removeprefix("Bearer "),
            rsa_key[1],
            ["RS256"],
            options={"verify_exp": False, "verify_iat": False},
        )
        assert claims["application_id"] == VONAGE_APP and claims["jti"] == FIXED_UUID


def test_jambonz_and_asterisk_end_are_the_documented_requests(control: ControlSettings) -> None:
    """jambonz: swagger ``updateCall`` POST with ``call_status`` ``no-answer`` (ringing) or ``completed`` (its
    enum); Asterisk: ARI ``DELETE /channels/{id}`` with Basic credentials."""
    for answered, status in ((False, "no-answer"), (True, "completed")):
        ours = end_request("jambonz", control, OUTBOUND, "call-9", answered=answered)
        assert isinstance(ours, HttpRequest)
        assert (ours.method, ours.url) == ("POST", "https://jambonz.example/v1/Accounts/acct-1/Calls/call-9")
        assert json.loads(ours.body) == {"call_status": status}
        assert ours.headers["Authorization"] == "Bearer jambonz-secret"
        ari = end_request("asterisk", control, OUTBOUND, "1700000000.42", answered=answered)
        assert isinstance(ari, HttpRequest)
        assert (ari.method, ari.url, ari.body) == ("DELETE", "http://pbx.example:8088/ari/channels/1700000000.42", b"")
        assert _basic(ari.headers["Authorization"]) == ("bridge", "ari-secret")


# --- ids, credentials ---------------------------------------------------------------------------------

HTTP_CARRIERS = ["twilio", "signalwire", "telnyx", "plivo", "vonage", "jambonz", "asterisk"]
# The path of each end request for carrier id "ID", as segments (ringing, answered).
END_SHAPES = {
    "twilio": (["2010-04-01", "Accounts", AC, "Calls", "ID.json"],) * 2,
    "signalwire": (["api", "laml", "2010-04-01", "Accounts", SW_PROJECT, "Calls", "ID.json"],) * 2,
    "telnyx": (["v2", "calls", "ID", "actions", "hangup"],) * 2,
    "plivo": (["v1", "Account", PLIVO_ID, "Request", "ID", ""], ["v1", "Account", PLIVO_ID, "Call", "ID", ""]),
    "vonage": (["v1", "calls", "ID"],) * 2,
    "jambonz": (["v1", "Accounts", "acct-1", "Calls", "ID"],) * 2,
    "asterisk": (["ari", "channels", "ID"],) * 2,
}


HOSTILE_IDS = ["../../Accounts/other", "a/b", "x?y=1#z", "%2F..%2F", "a b;c", "v3:ok@x"]


@pytest.mark.parametrize("carrier", HTTP_CARRIERS)
def test_every_carrier_id_stays_one_path_segment(control: ControlSettings, carrier: str) -> None:
    """An id holding ``/``, ``..``, ``?``, ``#`` or ``%`` is one quoted segment of the end request (ringing or
    answered): the path keeps its shape and the segment decodes back to the id."""
    for answered in (False, True):
        expected = END_SHAPES[carrier][int(answered)]
        index = next(n for n, s in enumerate(expected) if "ID" in s)
        for hostile in HOSTILE_IDS:
            request = end_request(
                carrier, control, OUTBOUND, hostile, answered=answered, twilio_auth_token=TWILIO_TOKEN, now=NOW, jti="j"
            )
            assert isinstance(request, HttpRequest)
            parts = urlsplit(request.url)
            segments = parts.path.split("/")[1:]
            assert len(segments) == len(expected), hostile
            for n, (got, want) in enumerate(zip(segments, expected, strict=True)):
                if n != index:
                    assert got == want, hostile
            assert unquote(segments[index]) == expected[index].replace("ID", hostile)
            assert "/" not in segments[index] and "?" not in segments[index] and "#" not in segments[index]
            assert parts.query == "" and parts.fragment == ""


@pytest.mark.parametrize("carrier", HTTP_CARRIERS)
def test_a_dot_or_empty_carrier_id_is_refused(control: ControlSettings, carrier: str) -> None:
    """``.``, ``..`` and an empty id would move the path at the server; a control character is no id."""
    for bad in ("", ".", "..", "a\nb"):
        with pytest.raises(ControlError):
            end_request(carrier, control, OUTBOUND, bad, answered=True, twilio_auth_token=TWILIO_TOKEN)


def _all_requests(control: ControlSettings) -> Iterator[tuple[str, HttpRequest]]:
    for carrier in HTTP_CARRIERS:
        order = _order(carrier, "detect")
        yield f"{carrier} create", _create(order, control, _links(order))
        for answered in (False, True):
            request = end_request(carrier, control, OUTBOUND, "id-1", answered=answered, twilio_auth_token=TWILIO_TOKEN)
            assert isinstance(request, HttpRequest)
            yield f"{carrier} end", request


def test_no_request_shows_a_credential_in_its_repr(control: ControlSettings, rsa_key: tuple[str, str]) -> None:
    """``repr`` of every create and end request (what a log line would show) holds no token, no password, no
    Basic or Bearer value, no piece of the Vonage key; the body holds none either."""
    key_line = rsa_key[0].splitlines()[1]
    for what, request in _all_requests(control):
        shown = repr(request)
        assert "<redacted>" in shown, what
        assert request.headers["Authorization"] not in shown, what
        assert request.headers["Authorization"].split(" ", 1)[1] not in shown, what
        assert not any(secret in shown or secret.encode() in request.body for secret in SECRETS), what
        assert key_line not in shown, what


@pytest.mark.parametrize(
    ("carrier", "missing", "setting"),
    [
        ("twilio", {}, "TWILIO_AUTH_TOKEN"),
        ("signalwire", {"signalwire_api_token": None}, "SIGNALWIRE_API_TOKEN"),
        ("telnyx", {"telnyx_api_key": None}, "TELNYX_API_KEY"),
        ("plivo", {"plivo_auth_token": None}, "PLIVO_AUTH_TOKEN"),
        ("vonage", {"vonage_private_key": None}, "VONAGE_PRIVATE_KEY"),
        ("jambonz", {"jambonz_api_key": None}, "JAMBONZ_API_KEY"),
        ("asterisk", {"asterisk_ari_password": None}, "ASTERISK_ARI_PASSWORD"),
    ],
)
def test_a_missing_credential_is_a_control_error_naming_the_setting(
    control: ControlSettings, carrier: str, missing: dict[str, Any], setting: str
) -> None:
    """No request is built without its credential; the message names the setting to set."""
    order = _order(carrier)
    with pytest.raises(ControlError, match=setting):
        create_request(order, CALL_ID, control.model_copy(update=missing), OUTBOUND, _links(order), fresh_id=FIXED_UUID)


@pytest.mark.parametrize("carrier", ["plivo", "vonage"])
def test_a_sip_from_is_refused_where_the_api_wants_a_number(control: ControlSettings, carrier: str) -> None:
    """Plivo's ``from`` and Vonage's ``from.number`` are phone numbers: a SIP caller id is a ControlError."""
    fields: dict[str, Any] = {"to": "+15550142", "from_": "sip:bot@pbx.example.com", "carrier": carrier}
    order = DialOrder.model_construct(**fields)
    with pytest.raises(ControlError, match="from"):
        create_request(order, CALL_ID, control, OUTBOUND, _links(_order(carrier)), fresh_id=FIXED_UUID)


# --- the carriers' error answers ----------------------------------------------------------------------

# Error bodies as each API documents them: Twilio's exception JSON (code, message, more_info, status), Telnyx's
# {"errors": [{code, title, detail}]}, Plivo's {"api_id", "error"}, Vonage's problem JSON (type, title,
# detail), jambonz's GeneralError {"msg"} (swagger.yaml), ARI's {"message"}.
ERRORS: list[tuple[str, int, dict[str, Any], str]] = [
    ("twilio", 400, {"code": 21211, "message": "The 'To' number 5551234 is not a valid phone number.",
                     "more_info": "https://www.twilio.com/docs/errors/21211", "status": 400},
     "The 'To' number 5551234 is not a valid phone number."),
    ("signalwire", 401, {"code": 20003, "message": "Authentication Error - invalid username", "status": 401},
     "Authentication Error - invalid username"),
    ("telnyx", 422, {"errors": [{"code": "10015", "title": "Invalid value",
                                 "detail": "The 'to' parameter must be a valid E.164 number."}]},
     "The 'to' parameter must be a valid E.164 number."),
    ("plivo", 400, {"api_id": "5f3b2e44", "error": "invalid 'to' number"}, "invalid 'to' number"),
    ("vonage", 401, {"type": "https://developer.nexmo.com/api-errors#unauthorized", "title": "Unauthorized",
                     "detail": "You did not provide correct credentials.", "instance": "797a8f19"},
     "You did not provide correct credentials."),
    ("jambonz", 400, {"msg": "missing to"}, "missing to"),
    ("asterisk", 400, {"message": "Endpoint parameter not provided"}, "Endpoint parameter not provided"),
]  # fmt: skip


@pytest.mark.parametrize(("carrier", "status", "answer", "words"), ERRORS)
def test_a_refusal_is_a_control_error_with_the_status_and_the_carriers_words(
    carrier: str, status: int, answer: dict[str, Any], words: str
) -> None:
    """A documented error answer becomes ControlError naming the carrier, the HTTP status and its message."""
    with pytest.raises(ControlError) as caught:
        created_call_id(carrier, status, json.dumps(answer))
    message = str(caught.value)
    assert carrier in message and f"HTTP {status}" in message and words in message


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (201, json.dumps({"status": "queued"})),  # success without the id
        (201, ""),
        (201, "not json"),
        (201, json.dumps({"sid": ""})),
        (201, json.dumps({"sid": 42})),
        (201, json.dumps({"sid": "CA\n1"})),
        (503, "<html>Service Unavailable</html>"),
    ],
)
def test_an_answer_without_a_usable_id_is_a_control_error(status: int, body: str) -> None:
    """No id (or not a one-line string) in a 2xx, or a 5xx page, is ControlError with the status."""
    with pytest.raises(ControlError, match=f"HTTP {status}"):
        created_call_id("twilio", status, body)


def test_the_carriers_words_are_cut_to_200_characters_on_one_line() -> None:
    """A long or multi-line error text is kept to 200 characters without control characters."""
    with pytest.raises(ControlError) as caught:
        created_call_id("plivo", 400, json.dumps({"error": "bad\r\nthing " + "x" * 1000}))
    message = str(caught.value)
    assert "\n" not in message and "\r" not in message
    words = message.split(": ", 1)[1].split(": ", 1)[1]
    assert words.startswith("bad thing ") and len(words) == 200


def test_documented_success_answers_give_the_id() -> None:
    """Each platform's documented create answer gives the id the later requests name: Plivo's
    ``request_uuid`` (its CallUUID comes later, in the callbacks)."""
    cases: list[tuple[str, dict[str, Any], str]] = [
        ("twilio", {"sid": CA, "status": "queued"}, CA),
        ("signalwire", {"sid": "sw-call-1", "status": "queued"}, "sw-call-1"),
        ("telnyx", {"data": {"call_control_id": "v3:x", "record_type": "call", "is_alive": False}}, "v3:x"),
        ("plivo", {"message": "call queued", "request_uuid": "9834029e", "api_id": "97ce"}, "9834029e"),
        ("vonage", {"uuid": "63f6", "status": "started", "direction": "outbound"}, "63f6"),
        ("jambonz", {"sid": "2531329f"}, "2531329f"),
        ("asterisk", {"id": "1700000000.42", "state": "Down"}, "1700000000.42"),
    ]
    for carrier, answer, expected in cases:
        status = 200 if carrier in ("telnyx", "asterisk") else 201
        assert created_call_id(carrier, status, json.dumps(answer)) == expected, carrier


def test_unknown_carriers_have_no_outbound_requests(control: ControlSettings) -> None:
    """exotel (no outbound stream call here) and made-up names are ControlErrors, not guesses."""
    with pytest.raises(ControlError, match="exotel"):
        created_call_id("exotel", 201, "{}")
    with pytest.raises(ControlError, match="exotel"):
        end_request("exotel", control, OUTBOUND, "x", answered=False)


# --- sent to a loopback fake of the carriers' APIs ----------------------------------------------------


class _FakeCarriers:
    """One loopback server standing in for every platform's create-call API: it records what arrives and
    answers each platform's documented success with an id derived from the path it was asked on."""

    def __init__(self) -> None:
        self.received: list[tuple[str, str, bytes, str]] = []

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.received.append((request.method, request.raw_path, body, request.headers.get("Authorization", "")))
        path = request.path
        if path.endswith("/Calls.json"):  # Twilio, SignalWire: the Call resource
            return web.json_response({"sid": "CA-created", "status": "queued"}, status=201)
        if path == "/v2/calls":
            return web.json_response({"data": {"call_control_id": "v3:created", "record_type": "call"}})
        if path.endswith("/Call/"):
            return web.json_response(
                {"message": "call fired", "request_uuid": "req-created", "api_id": "a"}, status=201
            )
        if path == "/v1/calls":
            return web.json_response({"uuid": "vonage-created", "status": "started"}, status=201)
        if path.endswith("/Calls"):
            return web.json_response({"sid": "jambonz-created"}, status=201)
        if path == "/ari/channels":
            return web.json_response({"id": request.query["channelId"], "state": "Down"})
        return web.json_response({"message": "no such route"}, status=404)


async def test_each_create_sent_to_a_loopback_api_gives_the_carriers_id(
    aiohttp_server: Any, rsa_key: tuple[str, str]
) -> None:
    """Sent as built (bridge.control.send), every create reaches its platform's path with its body and
    credentials, and :func:`created_call_id` reads the id from the documented answer."""
    fake = _FakeCarriers()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    server = await aiohttp_server(app, host="127.0.0.1")
    base = f"http://127.0.0.1:{server.port}"
    control = ControlSettings.model_validate(
        {
            "twilio_account_sid": AC, "twilio_api_url": base,
            "signalwire_project_id": SW_PROJECT, "signalwire_api_token": SW_TOKEN, "signalwire_api_url": base,
            "telnyx_api_key": TELNYX_KEY, "telnyx_api_url": base,
            "plivo_auth_id": PLIVO_ID, "plivo_auth_token": PLIVO_TOKEN, "plivo_api_url": base,
            "vonage_application_id": VONAGE_APP, "vonage_private_key": rsa_key[0], "vonage_api_url": base,
            "jambonz_api_url": base, "jambonz_account_sid": "acct-1", "jambonz_api_key": "jambonz-secret",
            "asterisk_ari_url": f"{base}/ari", "asterisk_ari_user": "bridge", "asterisk_ari_password": "ari-secret",
        }
    )  # fmt: skip
    expected = {
        "twilio": "CA-created",
        "signalwire": "CA-created",
        "telnyx": "v3:created",
        "plivo": "req-created",
        "vonage": "vonage-created",
        "jambonz": "jambonz-created",
        "asterisk": FIXED_UUID,
    }
    async with ClientSession() as http:
        for carrier, carrier_id in expected.items():
            order = _order(carrier, "detect")
            request = _create(order, control, _links(order))
            status, body = await send_request(http, request, timeout=5)
            assert created_call_id(carrier, status, body) == carrier_id, carrier
            method, _, received, authorization = fake.received[-1]
            assert (method, received, authorization) == (
                request.method, request.body, request.headers["Authorization"]
            ), carrier  # fmt: skip
