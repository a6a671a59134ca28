"""A transfer on every carrier but Twilio, end to end on loopback, played as each carrier documents it.

For each carrier: a phone streaming in the carrier's dialect (the writers of ``bridge call``), a bot that
says something then transfers, a loopback fake of the carrier's call-control API that records what the
bridge sends and answers the documented 2xx; then the carrier's side of the transfer: the markup it
fetches from the URL the request named (SignalWire ``Url``, Plivo ``aleg_url``, jambonz ``call_hook``;
Vonage's NCCO travels inline), the dial's report in the carrier's own shape, and for a caller nobody
answered, the returning stream opened with exactly what that markup gives. FreeSWITCH (an event-socket
fake) and Asterisk (an ARI fake) hand the call to the switch for good. Oracles: each carrier's
documented request shapes and callback payloads (/work/shared/reference/call-control.md), parsed with
ElementTree / json, and the Vonage JWT verified with PyJWT against the public half of the key.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import aiohttp
import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from plivo import plivoxml
from vonage_voice import Connect

from bridge.tools.writers.asterisk import AsteriskStreamWriter
from bridge.tools.writers.audiofork import AudioForkStreamWriter
from bridge.tools.writers.exotel import ExotelStreamWriter
from bridge.tools.writers.plivo import PlivoStreamWriter
from bridge.tools.writers.signalwire import SignalWireStreamWriter
from bridge.tools.writers.telnyx import TelnyxStreamWriter
from bridge.tools.writers.vonage import VonageStreamWriter
from tests.support.calls import BridgeFactory, caller_audio, wait_for
from tests.support.fakes import FakeGladia, FakeWebhook
from tests.test_transfer_twilio import free_port

API_TOKEN = "bot-api-token"
ALLOW = "+1555,pbx.example.com"
TO = "+15550142"
CALLER_ID = "+15550002"
SW_PROJECT, SW_TOKEN = "b3877c40-da60-4b1e-b8a3-6ed4c7b3e0f7", "PT-signalwire-secret"
CALL_UUID = "a1b2c3d4-0000-4000-8000-00000000a11e"  # the carrier's id of the caller's leg
TELNYX_ID = "v3:Z8qjMtTlMn6lRQDhD7nAThAw2lHGbS1aRMBWP0qjmU7ctBEyG9Q8vg"
PLIVO_ID, PLIVO_TOKEN = "MAODUYMZQ3NDHKOTBLNG", "plivo-secret-token"
JAMBONZ_ACCOUNT, JAMBONZ_KEY = "bb845d4b-83a9-4cde-a6e9-50f3743bab3f", "jambonz-secret-key"
VONAGE_APP = "aaaaaaaa-bbbb-cccc-dddd-0123456789ab"
ESL_PASSWORD = "ClueCon"
ARI_USER, ARI_PASSWORD = "bridge", "ari-secret"
CALLER_CHANNEL = "1761245600.7"  # the Asterisk caller channel's id, as the dialplan hands it down
_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
VONAGE_KEY = _KEY.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
).decode()
VONAGE_PUBLIC = (
    _KEY.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
)


# --- the carriers' APIs --------------------------------------------------------------------------------


@dataclass
class Recorded:
    method: str
    raw_path: str  # as sent: quoted ids stay quoted
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def form(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(self.body.decode()).items()}

    def basic(self) -> tuple[str, str]:
        scheme, _, value = self.headers["Authorization"].partition(" ")
        assert scheme == "Basic"
        user, _, password = base64.b64decode(value).decode().partition(":")
        return user, password


@dataclass
class FakeApi:
    """A carrier's call-control API on loopback: records each request, answers ``status``/``answer``."""

    status: int = 200
    answer: Any = None
    requests: list[Recorded] = field(default_factory=list)
    received: asyncio.Event = field(default_factory=asyncio.Event)
    base: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append(
            Recorded(
                request.method,
                request.raw_path.split("?")[0],
                parse_qs(urlsplit(request.raw_path).query),
                dict(request.headers),
                body,
            )
        )
        self.received.set()
        if self.answer is None:
            return web.Response(status=self.status)
        return web.json_response(self.answer, status=self.status)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app


@dataclass
class FakeEsl:
    """FreeSWITCH's event socket on loopback: auth/request, ``auth``, one ``api`` command answered +OK."""

    commands: list[str] = field(default_factory=list)
    received: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(b"Content-Type: auth/request\n\n")
            auth = (await reader.readuntil(b"\n\n")).decode().strip()
            if auth != f"auth {ESL_PASSWORD}":
                writer.write(b"Content-Type: command/reply\nReply-Text: -ERR invalid\n\n")
                return
            writer.write(b"Content-Type: command/reply\nReply-Text: +OK accepted\n\n")
            self.commands.append((await reader.readuntil(b"\n\n")).decode().strip())
            body = b"+OK\n"
            writer.write(b"Content-Type: api/response\nContent-Length: %d\n\n%s" % (len(body), body))
            await writer.drain()
            self.received.set()
            await reader.read()  # until the bridge closes
        finally:
            writer.close()


# --- the phone, in each carrier's dialect ----------------------------------------------------------------


Message = str | bytes


@dataclass
class Dialect:
    """One carrier's side of a stream: its route, the messages that open it, audio frames, the echo of a
    mark the bridge sends, and how it ends (a message, or the socket closing)."""

    route: str
    opening: list[Message]
    frame: Callable[[bytes], Message]
    frame_bytes: int
    echo: Callable[[dict[str, Any]], Message | None] = lambda _msg: None
    stop: Callable[[], Message | None] = lambda: None
    protocols: tuple[str, ...] = ()


def signalwire(parameters: dict[str, str] | None = None, stream_sid: str = "sw-stream-1") -> Dialect:
    w = SignalWireStreamWriter(CALL_UUID, stream_sid, parameters, account_sid=SW_PROJECT)

    def echo(m: dict[str, Any]) -> Message | None:
        return w.mark(m["mark"]["name"]) if m.get("event") == "mark" else None

    return Dialect("signalwire", [w.connected(), w.start()], w.media, 160, echo, w.stop)


def telnyx() -> Dialect:
    w = TelnyxStreamWriter(TELNYX_ID, "telnyx-stream-1", caller="+15550001", called=CALLER_ID)

    def echo(m: dict[str, Any]) -> Message | None:
        if m.get("event") != "mark":  # Telnyx echoes a mark once the audio before it has played
            return None
        return json.dumps({"event": "mark", "sequence_number": w._next(), "stream_id": w.stream_id, "mark": m["mark"]})

    return Dialect("telnyx", [w.connected(), w.start()], w.media, 160, echo, w.stop)


def plivo(parameters: dict[str, str] | None = None, stream_id: str = "plivo-stream-1") -> Dialect:
    w = PlivoStreamWriter(CALL_UUID, stream_id, parameters)

    def echo(m: dict[str, Any]) -> Message | None:  # Plivo answers a checkpoint once its audio played
        return w.played_stream(m["name"]) if m.get("event") == "checkpoint" else None

    return Dialect("plivo", [w.start()], w.media, 160, echo, w.stop)


def vonage(headers: dict[str, str] | None = None, content_type: str = "audio/l16;rate=16000") -> Dialect:
    rate = int(content_type.rpartition("=")[2])
    w = VonageStreamWriter(CALL_UUID, rate, headers if headers is not None else {"uuid": CALL_UUID}, id_header=None)

    def echo(m: dict[str, Any]) -> Message | None:  # the NCCO notify the bridge asks for, reached
        return (
            json.dumps({"event": "websocket:notify", "payload": m["payload"]}) if m.get("action") == "notify" else None
        )

    return Dialect("vonage", [w.connected()], lambda b: b, rate // 50 * 2, echo)


def jambonz(metadata: dict[str, Any] | None = None, sample_rate: int = 8000) -> Dialect:
    w = AudioForkStreamWriter(CALL_UUID, sample_rate, caller="+15550001", called=CALLER_ID, metadata=metadata)
    return Dialect("audiofork", [w.metadata_message()], lambda b: b, sample_rate // 50 * 2, protocols=w.subprotocols)


def freeswitch() -> Dialect:
    w = AudioForkStreamWriter(CALL_UUID, style="audio_fork", call_id=CALL_UUID)
    return Dialect("audiofork", [w.metadata_message()], lambda b: b, 320, protocols=w.subprotocols)


def asterisk() -> Dialect:
    w = AsteriskStreamWriter(
        "1761245611.9", json_style=True, variables={"BRIDGE_CALLER_CHANNEL": CALLER_CHANNEL, "FROM": "+15550001"}
    )

    def echo(m: dict[str, Any]) -> Message | None:
        if m.get("command") != "MARK_MEDIA":
            return None
        return json.dumps({"event": "MEDIA_MARK_PROCESSED", "correlation_id": m["correlation_id"]})

    return Dialect("asterisk", [w.media_start(160)], lambda b: b, 160, echo)


def exotel() -> Dialect:
    w = ExotelStreamWriter("exotel-call-1", "exotel-stream-1")

    def echo(m: dict[str, Any]) -> Message | None:
        return w.mark(m["mark"]["name"]) if m.get("event") == "mark" else None

    return Dialect("exotel", [w.connected(), w.start()], w.media, 320, echo, w.stop)


@dataclass
class Phone:
    """The carrier's end of one stream: opens it, streams ``seconds`` of audio at 10x real time, echoes
    marks; ends it (its stop message, then closing) once ``end`` is set, unless the bridge closes first."""

    base: str
    http: aiohttp.ClientSession
    received: list[dict[str, Any]] = field(default_factory=list)
    close_code: int | None = None
    closed_by_bridge: bool = False

    async def stream(
        self, dialect: Dialect, end: asyncio.Event, seconds: float = 2.0, seed: int = 1, hold: float = 20.0
    ) -> None:
        url = self.base.replace("http", "ws", 1) + f"/{dialect.route}/stream"
        audio = caller_audio(seconds * dialect.frame_bytes / 160, seed)
        async with self.http.ws_connect(url, protocols=dialect.protocols) as ws:

            async def send(message: Message | None) -> None:
                if message is None or ws.closed:
                    return
                await (ws.send_bytes(message) if isinstance(message, bytes) else ws.send_str(message))

            async def listen() -> None:
                async for msg in ws:
                    if msg.type == aiohttp.WSMsgType.TEXT:
                        data = json.loads(msg.data)
                        self.received.append(data)
                        await send(dialect.echo(data))

            for message in dialect.opening:
                await send(message)
            listener = asyncio.create_task(listen())
            for i in range(0, len(audio), dialect.frame_bytes):
                await send(dialect.frame(audio[i : i + dialect.frame_bytes]))
                await asyncio.sleep(0.002)
            ending = asyncio.create_task(end.wait())
            await asyncio.wait([listener, ending], timeout=hold, return_when=asyncio.FIRST_COMPLETED)
            ending.cancel()
            self.closed_by_bridge = listener.done()
            if not ws.closed:
                await send(dialect.stop())
                await ws.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(listener, 5)
            self.close_code = ws.close_code


@dataclass
class Call:
    base: str
    http: aiohttp.ClientSession
    hook: FakeWebhook
    api: FakeApi

    def phone(self) -> Phone:
        return Phone(self.base, self.http)

    async def xml(self, url: str, form: dict[str, str], method: str = "POST") -> ET.Element:
        async with self.http.request(method, url, data=form) as resp:
            assert resp.status == 200 and resp.content_type == "text/xml", await resp.text()
            return ET.fromstring(await resp.text())

    async def verbs(self, url: str, body: dict[str, Any] | None, method: str = "POST") -> Any:
        async with self.http.request(method, url, json=body) as resp:
            assert resp.status == 200 and resp.content_type == "application/json", await resp.text()
            return await resp.json()

    async def briefing(self, audio_url: str) -> None:
        """The briefing audio a carrier fetches: the bridge's own voice, as WAV."""
        async with self.http.get(audio_url) as resp:
            assert resp.status == 200 and resp.content_type == "audio/wav"
            wav = await resp.read()
        assert wav[:4] == b"RIFF" and len(wav) > 44 + 8000

    async def act(self, action: dict[str, Any]) -> dict[str, Any]:
        """An action posted on the bot API for the call now on: its result."""
        await wait_for(lambda: bool(self.hook.events("call.started")))
        call_id = self.hook.events("call.started")[0]["call"]["id"]
        url = f"{self.base}/v1/calls/{call_id}/actions"
        async with self.http.post(
            url, json={"actions": [action]}, headers={"Authorization": f"Bearer {API_TOKEN}"}
        ) as resp:
            assert resp.status == 202, await resp.text()
            (result,) = (await resp.json())["actions"]
        return dict(result)


API_ENV: dict[str, Callable[[str], dict[str, str]]] = {
    "signalwire": lambda url: {
        "SIGNALWIRE_API_URL": url,
        "SIGNALWIRE_PROJECT_ID": SW_PROJECT,
        "SIGNALWIRE_API_TOKEN": SW_TOKEN,
    },
    "telnyx": lambda url: {"TELNYX_API_URL": url, "TELNYX_API_KEY": "KEY-telnyx-secret"},
    "plivo": lambda url: {"PLIVO_API_URL": url, "PLIVO_AUTH_ID": PLIVO_ID, "PLIVO_AUTH_TOKEN": PLIVO_TOKEN},
    "vonage": lambda url: {
        "VONAGE_API_URL": url,
        "VONAGE_APPLICATION_ID": VONAGE_APP,
        "VONAGE_PRIVATE_KEY": VONAGE_KEY,
    },
    "jambonz": lambda url: {
        "JAMBONZ_API_URL": url + "/v1",
        "JAMBONZ_ACCOUNT_SID": JAMBONZ_ACCOUNT,
        "JAMBONZ_API_KEY": JAMBONZ_KEY,
    },
    "asterisk": lambda url: {
        "ASTERISK_ARI_URL": url + "/ari",
        "ASTERISK_ARI_USER": ARI_USER,
        "ASTERISK_ARI_PASSWORD": ARI_PASSWORD,
    },
}
# What each API answers a hand-over with (their documented success).
API_ANSWER: dict[str, tuple[int, Any]] = {
    "signalwire": (200, {"sid": CALL_UUID, "status": "in-progress"}),
    "telnyx": (200, {"data": {"result": "ok"}}),
    "plivo": (202, {"message": "call transferred", "api_id": "5f4d3b2a-0000-4000-8000-000000000001"}),
    "vonage": (204, None),
    "jambonz": (202, None),
    "asterisk": (204, None),
}


@contextlib.asynccontextmanager
async def carrier_call(
    make_bridge: BridgeFactory, aiohttp_server: Any, hook: FakeWebhook, api_name: str | None, **env: Any
) -> AsyncIterator[Call]:
    api = FakeApi()
    environ = {"BRIDGE_SECRET": "s" * 32, "BRIDGE_API_TOKEN": API_TOKEN, "BRIDGE_TRANSFER_TO": ALLOW}
    if api_name is not None:
        api.status, api.answer = API_ANSWER[api_name]
        server = await aiohttp_server(api.app(), host="127.0.0.1")
        api.base = str(server.make_url("")).rstrip("/")
        environ |= API_ENV[api_name](api.base)
    overrides = {k: v for k, v in env.items() if "__" in k}
    environ |= {k: v for k, v in env.items() if "__" not in k}
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    await make_bridge(environ | {"BRIDGE_PUBLIC_URL": base}, port=port, **overrides)
    async with aiohttp.ClientSession() as http:
        yield Call(base, http, hook, api)


def transfer_bot(hook: FakeWebhook, transfer: dict[str, Any]) -> None:
    """The bot: on call.started, a short say then the transfer."""

    def answer(event: dict[str, Any]) -> Any:
        if event["type"] == "call.started":
            return {"actions": [{"type": "say", "text": "Please hold.", "id": "hold"}, transfer]}
        return None

    hook.answer = answer


def transfer(**fields: Any) -> dict[str, Any]:
    return {"type": "transfer", "id": "t1", "to": TO, "caller_id": CALLER_ID, "ring_timeout_s": 20} | fields


async def handed_over(call: Call, method: str = "rest", to: str = TO) -> Recorded:
    """The bot's say played out, then ``transfer.started``; the request the carrier's API received."""
    hook = call.hook
    await wait_for(lambda: bool(hook.events("transfer.started")))
    (started,) = hook.events("transfer.started")
    assert started == {**started, "action_id": "t1", "to": to, "method": method}
    finished = hook.events("playback.finished")
    # "Please hold." played first: by the carrier's marks (by the clock on a fork, which has none)
    assert [e["action_id"] for e in finished] == ["hold"]
    assert hook.events().index(finished[0]) < hook.events().index(started)
    if method == "esl":
        return Recorded("", "", {}, {}, b"")
    await wait_for(lambda: bool(call.api.requests))
    (request,) = call.api.requests
    return request


def capabilities(hook: FakeWebhook) -> dict[str, bool]:
    return dict(hook.events("call.started")[0]["capabilities"])


def token_url(url: str, base: str, carrier: str, route: str) -> str:
    assert url.startswith(f"{base}/{carrier}/{route}?t="), url
    return url


async def came_back(call: Call, phone: Phone, dialect: Dialect, status: str, gladia: FakeGladia) -> None:
    """The returning stream: the same call (call.stream_restarted, transfer.failed), then its end."""
    end = asyncio.Event()
    streaming = asyncio.create_task(phone.stream(dialect, end, seconds=1.0, seed=2))
    await wait_for(lambda: bool(call.hook.events("transfer.failed")))
    end.set()
    await streaming
    await wait_for(lambda: bool(call.hook.events("call.ended")))
    hook = call.hook
    types = [e["type"] for e in hook.events()]
    assert types.index("transfer.started") < types.index("call.stream_restarted") < types.index("transfer.failed")
    (failed,) = hook.events("transfer.failed")
    assert failed == {**failed, "action_id": "t1", "status": status}
    assert len({e["call"]["id"] for e in hook.events() if "call" in e}) == 1  # the same call
    assert len(gladia.sessions) == 1  # the same Gladia session
    summary = hook.events("call.ended")[0]["summary"]
    assert summary["phone_streams"] == 2 and summary["end_reason"] not in ("transferred", "transfer_failed")
    assert not hook.events("transfer.completed")


# --- the carrier's side of a transfer, as each documents it -------------------------------------------


@dataclass
class Dialed:
    """What the dial markup asks of the carrier: whom, how long, where to report, the briefing's URL."""

    target: str
    timeout: str
    caller_id: str | None
    action: str
    announce: str | None


class SignalWireSide:
    """cXML: the LaML call update points the call at ``Url``; ``<Dial>``; ``DialCallStatus``."""

    api = carrier = "signalwire"
    call_info: ClassVar[dict[str, str]] = {
        "CallSid": CALL_UUID,
        "AccountSid": SW_PROJECT,
        "From": "+15550001",
        "To": CALLER_ID,
    }

    def dialect(self) -> Dialect:
        return signalwire()

    def check_request(self, call: Call, request: Recorded) -> Any:
        assert (request.method, request.raw_path) == (
            "POST",
            f"/api/laml/2010-04-01/Accounts/{SW_PROJECT}/Calls/{CALL_UUID}.json",
        )
        assert request.basic() == (SW_PROJECT, SW_TOKEN)
        form = request.form()
        assert form["Method"] == "POST"
        return token_url(form["Url"], call.base, self.carrier, "transfer")

    async def dial(self, call: Call, where: Any) -> Dialed:
        doc = await call.xml(where, self.call_info | {"CallStatus": "in-progress"})
        (dial,) = doc.iter("Dial")
        (number,) = dial.iter("Number")
        return Dialed(
            number.text or "", dial.attrib["timeout"], dial.attrib.get("callerId"), dial.attrib["action"],
            number.attrib.get("url"),
        )  # fmt: skip

    async def briefing(self, call: Call, url: str) -> str:
        doc = await call.xml(url, {"CallSid": "b-leg-1", "AccountSid": SW_PROJECT})
        (play,) = doc.iter("Play")
        return play.text or ""

    async def report(self, call: Call, action: str, answered: bool) -> Any:
        status = "completed" if answered else "no-answer"
        return await call.xml(action, self.call_info | {"DialCallStatus": status, "DialCallSid": "b-leg-1"})

    def hung_up(self, answer: Any) -> bool:
        return [el.tag for el in answer] == ["Hangup"]

    def returning(self, call: Call, answer: Any) -> Dialect:
        (stream,) = answer.iter("Stream")
        assert stream.attrib["url"] == call.base.replace("http", "ws", 1) + "/signalwire/stream"
        return signalwire({p.attrib["name"]: p.attrib["value"] for p in answer.iter("Parameter")}, "sw-stream-2")


class PlivoSide:
    """Plivo: the call transfer API sends the A leg to ``aleg_url``; ``<Dial>``; ``DialStatus``."""

    api = carrier = "plivo"
    callback = ""
    call_info: ClassVar[dict[str, str]] = {
        "CallUUID": CALL_UUID,
        "From": "15550001",
        "To": "15550002",
        "Direction": "inbound",
    }

    def dialect(self) -> Dialect:
        return plivo()

    def check_request(self, call: Call, request: Recorded) -> Any:
        assert (request.method, request.raw_path) == ("POST", f"/v1/Account/{PLIVO_ID}/Call/{CALL_UUID}/")
        assert request.basic() == (PLIVO_ID, PLIVO_TOKEN)
        body = request.json()
        assert body["legs"] == "aleg" and body["aleg_method"] == "POST"
        return token_url(body["aleg_url"], call.base, self.carrier, "transfer")

    async def dial(self, call: Call, where: Any) -> Dialed:
        doc = await call.xml(where, self.call_info | {"CallStatus": "in-progress", "Event": "Transfer"})
        (dial,) = doc.iter("Dial")
        (number,) = dial.iter("Number")
        sdk = plivoxml.DialElement(
            action=dial.attrib["action"], method="POST", timeout=20, caller_id=CALLER_ID,
            confirm_sound=dial.attrib.get("confirmSound"), callback_url=dial.attrib["callbackUrl"],
            callback_method="POST",
        )  # fmt: skip
        assert same_xml(
            doc, ET.fromstring(plivoxml.ResponseElement().add(sdk.add(plivoxml.NumberElement(TO))).to_string())
        )
        self.callback = token_url(dial.attrib["callbackUrl"], call.base, "plivo", "dial-status")
        return Dialed(
            number.text or "", dial.attrib["timeout"], dial.attrib.get("callerId"), dial.attrib["action"],
            dial.attrib.get("confirmSound"),
        )  # fmt: skip

    async def briefing(self, call: Call, url: str) -> str:
        doc = await call.xml(url, {"CallUUID": "b-leg-1", "CallStatus": "in-progress"})  # Play/Speak/Wait only
        assert {el.tag for el in doc} <= {"Play", "Speak", "Wait"}
        (play,) = doc.iter("Play")
        return play.text or ""

    async def report(self, call: Call, action: str, answered: bool) -> Any:
        report = {"DialALegUUID": CALL_UUID, "DialAction": "hangup"}
        if answered:  # callbackUrl: the person is bridged with the caller; transfer.completed at once
            bridged = {"DialAction": "answer", "DialBLegStatus": "answer", "DialBLegUUID": "b-leg-1"}
            await call.xml(self.callback, self.call_info | {"DialALegUUID": CALL_UUID} | bridged)
            await wait_for(lambda: bool(call.hook.events("transfer.completed")))
            report |= {"DialStatus": "completed", "DialBLegUUID": "b-leg-1", "DialRingStatus": "true"}
        else:
            report |= {"DialStatus": "no-answer", "DialBLegUUID": "", "DialRingStatus": "true"}
        return await call.xml(action, self.call_info | report)

    def hung_up(self, answer: Any) -> bool:
        return [el.tag for el in answer] == ["Hangup"]

    def returning(self, call: Call, answer: Any) -> Dialect:
        stream, redirect = list(answer)
        sdk = plivoxml.StreamElement(
            stream.text, bidirectional=True, keepCallAlive=True, contentType="audio/x-mulaw;rate=8000",
            extraHeaders=stream.attrib["extraHeaders"],
        )  # fmt: skip
        theirs = plivoxml.ResponseElement().add(sdk).add(plivoxml.RedirectElement(redirect.text))
        assert same_xml(answer, ET.fromstring(theirs.to_string()))
        assert stream.tag == "Stream" and redirect.tag == "Redirect"
        assert stream.text == call.base.replace("http", "ws", 1) + "/plivo/stream"
        assert stream.attrib["bidirectional"] == "true" and stream.attrib["keepCallAlive"] == "true"
        assert stream.attrib["contentType"] == "audio/x-mulaw;rate=8000"
        headers = dict(pair.split("=", 1) for pair in stream.attrib["extraHeaders"].split(","))
        return plivo(headers, "plivo-stream-2")


class JambonzSide:
    """jambonz: the call update's ``call_hook`` answers a ``dial`` verb; ``dial_call_status``."""

    api, carrier = "jambonz", "audiofork"
    call_info: ClassVar[dict[str, Any]] = {
        "call_sid": CALL_UUID, "direction": "inbound", "from": "+15550001", "to": CALLER_ID,
        "call_id": "2a3c9e1f@192.0.2.10", "sip_status": 200, "call_status": "in-progress",
        "account_sid": JAMBONZ_ACCOUNT,
    }  # fmt: skip

    def dialect(self) -> Dialect:
        return jambonz()

    def check_request(self, call: Call, request: Recorded) -> Any:
        assert (request.method, request.raw_path) == ("POST", f"/v1/Accounts/{JAMBONZ_ACCOUNT}/Calls/{CALL_UUID}")
        assert request.headers["Authorization"] == f"Bearer {JAMBONZ_KEY}"
        hook = request.json()["call_hook"]
        assert hook["method"] == "POST"
        return token_url(hook["url"], call.base, self.carrier, "transfer")

    async def dial(self, call: Call, where: Any) -> Dialed:
        (dial,) = await call.verbs(where, self.call_info)
        assert dial["verb"] == "dial"
        (target,) = dial["target"]
        assert target["type"] == "phone"
        return Dialed(
            target["number"], str(dial["timeout"]), dial.get("callerId"), dial["actionHook"], dial.get("confirmHook")
        )

    async def briefing(self, call: Call, url: str) -> str:
        (play,) = await call.verbs(url, self.call_info | {"call_sid": "b-leg-1", "direction": "outbound"})
        assert play["verb"] == "play"
        return str(play["url"])

    async def report(self, call: Call, action: str, answered: bool) -> Any:
        if answered:
            result = {"dial_call_status": "completed", "dial_sip_status": 200, "dial_call_sid": "b-leg-1"}
        else:
            result = {"dial_call_status": "no-answer", "dial_sip_status": 487, "dial_call_sid": "b-leg-1"}
        return await call.verbs(action, self.call_info | result)

    def hung_up(self, answer: Any) -> bool:
        return [verb["verb"] for verb in answer] == ["hangup"]

    def returning(self, call: Call, answer: Any) -> Dialect:
        (listen,) = answer
        assert listen["verb"] == "listen"
        assert listen["url"] == call.base.replace("http", "ws", 1) + "/audiofork/stream"
        return jambonz(listen["metadata"], int(listen["sampleRate"]))


class VonageSide:
    """Vonage: ``PUT /v1/calls/{uuid}`` transfers the leg to an inline NCCO ``connect``; its synchronous
    ``eventUrl`` gets the dial's ``status`` and may answer a new NCCO."""

    api = carrier = "vonage"

    def dialect(self) -> Dialect:
        return vonage()

    def check_request(self, call: Call, request: Recorded) -> Any:
        assert (request.method, request.raw_path) == ("PUT", f"/v1/calls/{CALL_UUID}")
        scheme, _, token = request.headers["Authorization"].partition(" ")
        claims = jwt.decode(token, VONAGE_PUBLIC, algorithms=["RS256"])  # signed with the application's key
        assert scheme == "Bearer" and claims["application_id"] == VONAGE_APP and claims["jti"]
        body = request.json()
        assert body["action"] == "transfer" and body["destination"]["type"] == "ncco"
        return body["destination"]["ncco"]

    async def dial(self, call: Call, where: Any) -> Dialed:
        (connect,) = where
        assert vonage_sdk(connect) == connect  # what the SDK's transfer_call_ncco would send
        assert connect["action"] == "connect" and connect["eventType"] == "synchronous"
        (endpoint,) = connect["endpoint"]
        assert endpoint["type"] == "phone"
        return Dialed(
            "+" + endpoint["number"], str(connect["timeout"]), "+" + connect["from"], connect["eventUrl"][0],
            endpoint.get("onAnswer", {}).get("url"),
        )  # fmt: skip

    async def briefing(self, call: Call, url: str) -> str:
        (stream,) = await call.verbs(url, None, method="GET")  # an answer webhook: GET unless told otherwise
        assert stream["action"] == "stream"
        return str(stream["streamUrl"][0])

    async def report(self, call: Call, action: str, answered: bool) -> Any:
        event = {
            "uuid": "b-leg-1", "conversation_uuid": "CON-aaaaaaaa-bbbb-cccc-dddd-0123456789ab",
            "status": "answered" if answered else "timeout", "direction": "outbound",
            "timestamp": "2026-12-06T18:00:00.000Z",
        }  # fmt: skip
        if answered:  # "ringing" first: not an end
            async with call.http.post(action, json=event | {"status": "ringing"}) as resp:
                assert resp.status == 204
            async with call.http.post(action, json=event) as resp:
                assert resp.status == 204, await resp.text()  # no NCCO: the person stays connected
                return None
        return await call.verbs(action, event)

    def hung_up(self, answer: Any) -> bool:
        return answer is None

    def returning(self, call: Call, answer: Any) -> Dialect:
        (connect,) = answer
        assert vonage_sdk(connect) == connect
        (endpoint,) = connect["endpoint"]
        assert endpoint["type"] == "websocket"
        assert endpoint["uri"] == call.base.replace("http", "ws", 1) + "/vonage/stream"
        return vonage(endpoint["headers"], endpoint["content-type"])


def same_xml(ours: ET.Element, theirs: ET.Element) -> bool:
    """The same document: tags, attributes (in any order), texts, children."""
    return (
        (ours.tag, ours.attrib, (ours.text or "").strip()) == (theirs.tag, theirs.attrib, (theirs.text or "").strip())
        and len(ours) == len(theirs)
        and all(same_xml(a, b) for a, b in zip(ours, theirs, strict=True))
    )


def vonage_sdk(connect: dict[str, Any]) -> Any:
    """``connect`` read by the Vonage SDK's own model (its validators: ``from`` or ``randomFromNumber``,
    the phone number pattern...) and written back as the SDK sends it."""
    fields = dict(connect)
    if "from" in fields:
        fields["from_"] = fields.pop("from")
    fields["endpoint"] = [
        {("contentType" if k == "content-type" else k): v for k, v in endpoint.items()}
        for endpoint in connect["endpoint"]
    ]
    return json.loads(json.dumps(Connect.model_validate(fields).model_dump(by_alias=True, exclude_none=True)))


Side = SignalWireSide | PlivoSide | JambonzSide | VonageSide
SIDES = [SignalWireSide(), PlivoSide(), JambonzSide(), VonageSide()]


def side_id(side: Side) -> str:
    return side.api


@pytest.mark.parametrize("side", SIDES, ids=side_id)
async def test_nobody_answers_and_the_caller_comes_back_on_the_same_call(
    make_bridge: BridgeFactory,
    aiohttp_server: Any,
    fake_gladia: FakeGladia,
    webhook: tuple[FakeWebhook, str],
    side: Side,
) -> None:
    hook, _ = webhook
    transfer_bot(hook, transfer())
    async with carrier_call(make_bridge, aiohttp_server, hook, side.api) as call:
        phone = call.phone()
        streaming = asyncio.create_task(phone.stream(side.dialect(), call.api.received))
        request = await handed_over(call)
        assert capabilities(hook) == {"transfer": True, "announce": True, "return": True, "gather": True}
        where = side.check_request(call, request)
        await streaming  # the carrier takes the caller off the stream for the new markup
        assert not phone.closed_by_bridge
        dialed = await side.dial(call, where)
        assert (dialed.target, dialed.timeout, dialed.caller_id, dialed.announce) == (TO, "20", CALLER_ID, None)
        token_url(dialed.action, call.base, side.carrier, "dial-status")
        answer = await side.report(call, dialed.action, answered=False)
        hook.answer = None
        await came_back(call, phone, side.returning(call, answer), "no-answer", fake_gladia)


@pytest.mark.parametrize("side", SIDES, ids=side_id)
async def test_the_person_answers_after_the_briefing_and_the_call_ends_as_transferred(
    make_bridge: BridgeFactory,
    aiohttp_server: Any,
    fake_gladia: FakeGladia,
    webhook: tuple[FakeWebhook, str],
    side: Side,
) -> None:
    hook, _ = webhook
    transfer_bot(hook, transfer(announce="A caller asking about a lost card."))
    async with carrier_call(make_bridge, aiohttp_server, hook, side.api) as call:
        phone = call.phone()
        streaming = asyncio.create_task(phone.stream(side.dialect(), call.api.received))
        request = await handed_over(call)
        where = side.check_request(call, request)
        await streaming
        dialed = await side.dial(call, where)
        assert dialed.announce is not None
        token_url(dialed.announce, call.base, side.carrier, "announce")
        audio = await side.briefing(call, dialed.announce)
        assert audio.startswith(call.base + "/transfer/announce.wav?t=")
        await call.briefing(audio)  # the bridge's own voice
        answer = await side.report(call, dialed.action, answered=True)
        assert side.hung_up(answer)
        await wait_for(lambda: bool(hook.events("call.ended")))
    (completed,) = hook.events("transfer.completed")
    assert completed == {**completed, "action_id": "t1", "status": "answered"}
    summary = hook.events("call.ended")[0]["summary"]
    assert summary["end_reason"] == "transferred" and summary["phone_streams"] == 1
    assert not hook.events("transfer.failed")


# --- Telnyx Call Control: the caller never leaves the stream ---------------------------------------------


def telnyx_event(kind: str, client_state: str, **payload: Any) -> dict[str, Any]:
    """A Call Control webhook for the transfer's other leg, as Telnyx posts it."""
    return {
        "data": {
            "record_type": "event", "event_type": kind, "id": "0ccc7b54-4df3-4bca-a65a-3da1ecc777f0",
            "occurred_at": "2026-12-06T18:00:00.000000Z",
            "payload": {"call_control_id": "v3:b-leg-1", "connection_id": "1494404757140276705",
                        "client_state": client_state, "from": CALLER_ID, "to": TO, **payload},
        },
        "meta": {"attempt": 1, "delivered_to": "https://bridge.example/telnyx/dial-status"},
    }  # fmt: skip


async def telnyx_handed_over(call: Call, announced: bool) -> dict[str, Any]:
    request = await handed_over(call)
    assert (request.method, request.raw_path) == ("POST", f"/v2/calls/{TELNYX_ID}/actions/transfer")
    assert request.headers["Authorization"] == "Bearer KEY-telnyx-secret"
    body = request.json()
    assert (body["to"], body["from"], body["timeout_secs"]) == (TO, CALLER_ID, 20)
    assert base64.b64decode(body["client_state"]) == b"t1"  # Telnyx requires it base64
    token_url(body["webhook_url"], call.base, "telnyx", "dial-status")
    assert ("audio_url" in body) is announced
    return dict(body)


async def post_telnyx(call: Call, url: str, event: dict[str, Any]) -> None:
    async with call.http.post(url, json=event) as resp:
        assert resp.status == 204, await resp.text()


async def test_telnyx_nobody_answers_and_the_caller_is_still_on_the_stream(
    make_bridge: BridgeFactory, aiohttp_server: Any, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    hook, _ = webhook
    transfer_bot(hook, transfer())
    async with carrier_call(make_bridge, aiohttp_server, hook, "telnyx") as call:
        phone, end = call.phone(), asyncio.Event()
        streaming = asyncio.create_task(phone.stream(telnyx(), end))
        body = await telnyx_handed_over(call, announced=False)
        assert capabilities(hook) == {"transfer": True, "announce": True, "return": True, "gather": True}
        url = body["webhook_url"]
        await post_telnyx(call, url, telnyx_event("call.initiated", body["client_state"], state="bridging"))
        assert not hook.events("transfer.failed")  # not an end
        hangup = telnyx_event("call.hangup", body["client_state"], hangup_cause="timeout", hangup_source="unknown")
        await post_telnyx(call, url, hangup)
        await wait_for(lambda: bool(hook.events("transfer.failed")))  # at once: the caller never left
        assert not streaming.done()
        end.set()
        await streaming
        await wait_for(lambda: bool(hook.events("call.ended")))
    assert not phone.closed_by_bridge
    (failed,) = hook.events("transfer.failed")
    assert failed == {**failed, "action_id": "t1", "status": "no-answer"}
    assert not hook.events("call.stream_restarted") and len(fake_gladia.sessions) == 1
    summary = hook.events("call.ended")[0]["summary"]
    assert summary["phone_streams"] == 1 and summary["end_reason"] == "stop"


async def test_telnyx_the_person_answers_and_the_call_ends_as_transferred(
    make_bridge: BridgeFactory, aiohttp_server: Any, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    hook, _ = webhook
    transfer_bot(hook, transfer(announce="A caller asking about a lost card."))
    async with carrier_call(make_bridge, aiohttp_server, hook, "telnyx") as call:
        phone = call.phone()
        streaming = asyncio.create_task(phone.stream(telnyx(), asyncio.Event()))
        body = await telnyx_handed_over(call, announced=True)
        assert body["audio_url"].startswith(call.base + "/transfer/announce.wav?t=")
        await post_telnyx(call, body["webhook_url"], telnyx_event("call.answered", body["client_state"]))
        await call.briefing(body["audio_url"])  # "played back when the transfer destination answers"
        await asyncio.sleep(0.2)
        assert not streaming.done() and not hook.events("transfer.completed")  # not with the person yet
        await post_telnyx(call, body["webhook_url"], telnyx_event("call.bridged", body["client_state"]))
        await streaming  # the bridge let go of the stream: the caller is with the person
        await wait_for(lambda: bool(hook.events("call.ended")))
    assert phone.closed_by_bridge
    (completed,) = hook.events("transfer.completed")
    assert completed == {**completed, "action_id": "t1", "status": "answered"}
    assert hook.events("call.ended")[0]["summary"]["end_reason"] == "transferred"


# --- FreeSWITCH and Asterisk: the switch takes the call for good ----------------------------------------


@contextlib.asynccontextmanager
async def esl_server() -> AsyncIterator[tuple[FakeEsl, str]]:
    esl = FakeEsl()
    server = await asyncio.start_server(esl.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield esl, f"esl://:{ESL_PASSWORD}@127.0.0.1:{port}"


FS_DIAL = {"control__freeswitch_dial": "sofia/gateway/gw1/{to}"}


async def test_freeswitch_transfers_by_the_event_socket_and_the_call_ends_as_transferred(
    make_bridge: BridgeFactory, aiohttp_server: Any, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    hook, _ = webhook
    transfer_bot(hook, transfer())
    async with (
        esl_server() as (esl, url),
        carrier_call(make_bridge, aiohttp_server, hook, None, FREESWITCH_ESL_URL=url, **FS_DIAL) as call,
    ):
        phone = call.phone()
        streaming = asyncio.create_task(phone.stream(freeswitch(), esl.received))
        await handed_over(call, method="esl")
        caps = capabilities(hook)
        assert (caps["transfer"], caps["announce"], caps["return"]) == (True, False, False)
        # FreeSWITCH api: uuid_transfer <uuid> <dest> <dialplan>, the inline dialplan bridging the number
        assert esl.commands == [f"api uuid_transfer {CALL_UUID} bridge:sofia/gateway/gw1/{TO} inline"]
        await streaming  # the channel left the dialplan that forked it: the fork closes
        await wait_for(lambda: bool(hook.events("call.ended")))
    assert hook.events("call.ended")[0]["summary"]["end_reason"] == "transferred"
    assert not hook.events("transfer.failed")


async def test_asterisk_continues_the_caller_in_the_transfer_context_and_the_call_ends_as_transferred(
    make_bridge: BridgeFactory, aiohttp_server: Any, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    hook, _ = webhook
    transfer_bot(hook, transfer(to="sip:agent@pbx.example.com"))
    async with carrier_call(make_bridge, aiohttp_server, hook, "asterisk") as call:
        phone = call.phone()
        streaming = asyncio.create_task(phone.stream(asterisk(), call.api.received))
        request = await handed_over(call, to="sip:agent@pbx.example.com")
        caps = capabilities(hook)
        assert (caps["transfer"], caps["announce"], caps["return"]) == (True, False, False)
        # ARI POST /channels/{channelId}/continue?context=&extension=&priority= (HTTP Basic, an ari.conf user)
        assert (request.method, request.raw_path) == ("POST", f"/ari/channels/{CALLER_CHANNEL}/continue")
        assert request.query == {
            "context": ["bridge-transfer"], "extension": ["sip:agent@pbx.example.com"], "priority": ["1"]
        }  # fmt: skip
        assert request.basic() == (ARI_USER, ARI_PASSWORD)
        await streaming  # the caller left Stasis: Asterisk hangs the WebSocket channel up
        await wait_for(lambda: bool(hook.events("call.ended")))
    assert hook.events("call.ended")[0]["summary"]["end_reason"] == "transferred"


@pytest.mark.parametrize("carrier", ["vonage", "freeswitch", "asterisk"])
async def test_the_bridge_lets_go_of_a_stream_the_carrier_may_leave_open(
    make_bridge: BridgeFactory,
    aiohttp_server: Any,
    fake_gladia: FakeGladia,
    webhook: tuple[FakeWebhook, str],
    carrier: str,
) -> None:
    """Vonage leaves the WebSocket leg behind when the phone leg is transferred, and what FreeSWITCH's
    uuid_transfer and Asterisk's continue do to the stream is not documented: the bridge closes it once
    the carrier has the caller (here the carrier never does)."""
    hook, _ = webhook
    transfer_bot(hook, transfer())
    async with contextlib.AsyncExitStack() as stack:
        if carrier == "freeswitch":
            _, url = await stack.enter_async_context(esl_server())
            env: dict[str, Any] = {"FREESWITCH_ESL_URL": url, **FS_DIAL}
            call = await stack.enter_async_context(carrier_call(make_bridge, aiohttp_server, hook, None, **env))
            dialect = freeswitch()
        else:
            call = await stack.enter_async_context(carrier_call(make_bridge, aiohttp_server, hook, carrier))
            dialect = vonage() if carrier == "vonage" else asterisk()
        phone = call.phone()
        await phone.stream(dialect, asyncio.Event(), hold=4.0)
        assert phone.closed_by_bridge
        if carrier == "vonage":  # the caller waits with Vonage for the person: answered
            (ncco,) = call.api.requests[0].json()["destination"]["ncco"]
            await VonageSide().report(call, ncco["eventUrl"][0], answered=True)
        await wait_for(lambda: bool(hook.events("call.ended")))
    assert hook.events("call.ended")[0]["summary"]["end_reason"] == "transferred"


@pytest.mark.parametrize("switch", ["freeswitch", "asterisk"])
async def test_a_switch_refuses_a_briefing_and_an_explicit_return(
    make_bridge: BridgeFactory,
    aiohttp_server: Any,
    fake_gladia: FakeGladia,
    webhook: tuple[FakeWebhook, str],
    switch: str,
) -> None:
    hook, _ = webhook
    esl = FakeEsl()
    async with contextlib.AsyncExitStack() as stack:
        if switch == "freeswitch":
            esl, url = await stack.enter_async_context(esl_server())
            env: dict[str, Any] = {"FREESWITCH_ESL_URL": url, **FS_DIAL}
            call = await stack.enter_async_context(carrier_call(make_bridge, aiohttp_server, hook, None, **env))
            dialect = freeswitch()
        else:
            call = await stack.enter_async_context(carrier_call(make_bridge, aiohttp_server, hook, "asterisk"))
            dialect = asterisk()
        end = asyncio.Event()
        streaming = asyncio.create_task(call.phone().stream(dialect, end))
        briefed = await call.act(transfer(id="a1", announce="A caller."))
        assert briefed["status"] == "failed" and "no briefing can be played" in briefed["error"]
        returning = await call.act(transfer(id="a2", on_no_answer="return"))
        assert returning["status"] == "failed" and "(on_no_answer: return)" in returning["error"]
        end.set()
        await streaming
        await wait_for(lambda: bool(hook.events("call.ended")))
    assert [e["action_id"] for e in hook.events("action.failed")] == ["a1", "a2"]
    assert not hook.events("transfer.started") and not call.api.requests and not esl.commands
    assert hook.events("call.ended")[0]["summary"]["end_reason"] not in ("transferred", "transfer_failed")


# --- no way, or no settings ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dialect", "api", "missing"),
    [
        (signalwire, None, "set SIGNALWIRE_API_URL, SIGNALWIRE_PROJECT_ID and SIGNALWIRE_API_TOKEN"),
        (telnyx, None, "set TELNYX_API_KEY"),
        (plivo, None, "set PLIVO_AUTH_ID and PLIVO_AUTH_TOKEN"),
        (vonage, None, "set VONAGE_APPLICATION_ID and VONAGE_PRIVATE_KEY"),
        (
            jambonz,
            None,
            "set JAMBONZ_API_URL, JAMBONZ_ACCOUNT_SID and JAMBONZ_API_KEY (jambonz), or FREESWITCH_ESL_URL",
        ),
        (freeswitch, "jambonz", "names no jambonz callSid (a FreeSWITCH fork?): set FREESWITCH_ESL_URL"),
        (asterisk, None, "set ASTERISK_ARI_URL, ASTERISK_ARI_USER and ASTERISK_ARI_PASSWORD"),
        (exotel, None, "exotel: the carrier documents no way to transfer a streamed call"),
    ],
    ids=["signalwire", "telnyx", "plivo", "vonage", "jambonz", "freeswitch", "asterisk", "exotel"],
)
async def test_a_carrier_without_its_settings_refuses_the_transfer_naming_them(
    make_bridge: BridgeFactory,
    aiohttp_server: Any,
    fake_gladia: FakeGladia,
    webhook: tuple[FakeWebhook, str],
    dialect: Callable[[], Dialect],
    api: str | None,
    missing: str,
) -> None:
    hook, _ = webhook
    transfer_bot(hook, transfer())
    async with carrier_call(make_bridge, aiohttp_server, hook, api) as call:
        end = asyncio.Event()
        streaming = asyncio.create_task(call.phone().stream(dialect(), end))
        await wait_for(lambda: bool(hook.events("action.failed")))
        end.set()
        await streaming
        await wait_for(lambda: bool(hook.events("call.ended")))
    (failed,) = hook.events("action.failed")
    assert failed["action_id"] == "t1" and missing in failed["error"]
    assert capabilities(hook) == {**capabilities(hook), "transfer": False, "announce": False, "return": False}
    assert not hook.events("transfer.started") and not call.api.requests
