"""The fake callee of outbound calls (bridge.tools.callee), driven by the carriers' own SDKs.

The oracle is the vendors' code: twilio-python places the call against the fake (its REST client pointed at
the fake's base URL), its ``RequestValidator`` checks every callback's X-Twilio-Signature and the stream's,
and the telnyx SDK dials and parses the webhooks with its own types. A small aiohttp app plays the bridge:
the stream route records the carrier's messages and plays a reply with a mark, the callback routes record
what the fake reported. The greetings are short synthetic ones (a tone for speech, a 1 kHz beep) so the
tests run in about a second each; one test plays the real synthesised greeting.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import math
import shutil
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pydantic import BaseModel
from telnyx import APIStatusError, AsyncTelnyx
from telnyx.types import (
    CallAnsweredWebhookEvent,
    CallHangupWebhookEvent,
    CallInitiatedWebhookEvent,
    CallMachineDetectionEndedWebhookEvent,
    CallMachineGreetingEndedWebhookEvent,
    CallStreamingStartedWebhookEvent,
    CallStreamingStoppedWebhookEvent,
)
from twilio.base.exceptions import TwilioRestException
from twilio.request_validator import RequestValidator
from twilio.rest import Client as TwilioClient

from bridge.audio import encode_from_pcm16
from bridge.tools.callee import (
    Answering,
    CalleeCall,
    FakeCarrierApi,
    add_arguments,
    describe,
    run_callee,
    telnyx_detection,
    twilio_answered_by,
    without_query,
)
from bridge.tools.greetings import Greeting

AC, TOKEN = "AC0123456789abcdef0123456789abcdef", "twilio-secret-token"
TELNYX_KEY = "KEY0123_telnyx_secret"
REPLY = encode_from_pcm16(struct.pack("<400h", *([3000, -3000] * 200)) * 8, "ulaw")  # 0.4 s the bridge plays
TOKEN_QUERY = "t=claim.token-1"


def _tone(ms: int, hz: float, amplitude: float = 8000.0) -> bytes:
    n = ms * 8
    return struct.pack(f"<{n}h", *(round(amplitude * math.sin(2 * math.pi * hz * i / 8000)) for i in range(n)))


def _silence(ms: int) -> bytes:
    return b"\x00\x00" * (ms * 8)


def synthetic(kind: Literal["human", "machine"], beep: bool = True) -> Greeting:
    """A greeting laid out as the real ones are, with a tone for the speech: human 0.8 s ("speech" ends at
    600 ms); machine 1.2 s (speech ends at 700 ms, the beep at 1000 ms, or no beep)."""
    if kind == "human":
        pcm = _silence(200) + _tone(400, 300) + _silence(200)
        return Greeting("human", "Hello?", pcm, 600, None, 200)
    tail = _silence(100) + (_tone(200, 1000) if beep else _silence(200)) + _silence(200)
    pcm = _silence(100) + _tone(600, 300) + tail
    return Greeting("machine", "Leave a message.", pcm, 700, 1000 if beep else None, 100, 1000 if beep else None)


def greeter_of(greeting: Greeting) -> Callable[[Literal["human", "machine"], int, str], Greeting]:
    return lambda kind, variant, voice: greeting


@dataclass
class Stream:
    """One media stream the bridge accepted."""

    path: str
    query: str
    signature_ok: bool | None
    messages: list[dict[str, Any]] = field(default_factory=list)
    inbound: bytearray = field(default_factory=bytearray)
    marks: list[str] = field(default_factory=list)
    closed_by_bridge: bool = False

    def events(self) -> list[str]:
        return [m["event"] for m in self.messages if m["event"] != "media"]


@dataclass
class Bridge:
    """The bridge's side: a stream route per carrier and callback routes, recording everything. On a
    stream it plays :data:`REPLY` and a mark ``reply-1`` at once; with ``hang_up_after`` bytes of the callee's
    audio received and the mark echoed, it closes the stream (the bot hung up)."""

    validator: RequestValidator
    hang_up_after: int | None = None
    streams: list[Stream] = field(default_factory=list)
    callbacks: list[tuple[str, dict[str, str], bool]] = field(default_factory=list)  # (path, form, signed ok)
    webhooks: list[dict[str, Any]] = field(default_factory=list)
    base: str = ""

    async def stream(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=2**22)
        await ws.prepare(request)
        header = request.headers.get("X-Twilio-Signature")
        signed = None if header is None else self.validator.validate(f"ws{self.base[4:]}{request.path}", {}, header)
        stream = Stream(request.path, request.query_string, signed)
        self.streams.append(stream)
        async for msg in ws:
            data = json.loads(msg.data)
            stream.messages.append(data)
            match data["event"]:
                case "start":
                    sid = {"streamSid": data.get("streamSid")} if "streamSid" in data else {}
                    await ws.send_str(
                        json.dumps({"event": "media", **sid, "media": {"payload": base64.b64encode(REPLY).decode()}})
                    )
                    await ws.send_str(json.dumps({"event": "mark", **sid, "mark": {"name": "reply-1"}}))
                case "media":
                    stream.inbound += base64.b64decode(data["media"]["payload"])
                case "mark":
                    stream.marks.append(data["mark"]["name"])
                case "stop":
                    break
            if self.hang_up_after is not None and len(stream.inbound) >= self.hang_up_after and stream.marks:
                stream.closed_by_bridge = True
                await ws.close()
                break
        return ws

    async def callback(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        ok = self.validator.validate(str(request.url), form, request.headers.get("X-Twilio-Signature", ""))
        self.callbacks.append((request.path, form, ok))
        return web.Response(text="")

    async def after_stream(self, request: web.Request) -> web.Response:
        """``<Connect action>``: recorded like a callback; the TwiML that follows is a hang-up."""
        await self.callback(request)
        return web.Response(text="<Response><Hangup/></Response>", content_type="application/xml")

    async def webhook(self, request: web.Request) -> web.Response:
        self.webhooks.append(
            {"text": await request.text(), "type": request.content_type, "headers": dict(request.headers)}
        )
        return web.Response(text="")

    def forms(self, path: str) -> list[dict[str, str]]:
        return [form for p, form, _ in self.callbacks if p == path]


@pytest.fixture
async def bridge() -> AsyncIterator[Bridge]:
    b = Bridge(RequestValidator(TOKEN))
    app = web.Application()
    app.router.add_get("/twilio/stream", b.stream)
    app.router.add_get("/telnyx/stream", b.stream)
    app.router.add_post("/twilio/call-status", b.callback)
    app.router.add_post("/twilio/amd", b.callback)
    app.router.add_post("/telnyx/events", b.webhook)
    app.router.add_post("/twilio/after-stream", b.after_stream)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    b.base = str(server.make_url("")).rstrip("/")
    yield b
    await server.close()


@pytest.fixture
async def fake() -> AsyncIterator[Callable[..., Awaitable[FakeCarrierApi]]]:
    apis: list[FakeCarrierApi] = []

    async def make(carrier: Literal["twilio", "telnyx"], answering: Answering) -> FakeCarrierApi:
        api = FakeCarrierApi(carrier, answering, auth_token=TOKEN, account_sid=AC, api_key=TELNYX_KEY)
        await api.start()
        apis.append(api)
        return api

    yield make
    for api in apis:
        await api.aclose()


def twilio_client(api: FakeCarrierApi, token: str = TOKEN) -> TwilioClient:
    client = TwilioClient(AC, token)
    client.api.base_url = api.base_url
    return client


def twiml(b: Bridge, parameters: dict[str, str] | None = None, action: str = "") -> str:
    params = "".join(f'<Parameter name="{k}" value="{v}"/>' for k, v in (parameters or {}).items())
    connect = f'<Connect action="{action}">' if action else "<Connect>"
    return f'<Response>{connect}<Stream url="ws{b.base[4:]}/twilio/stream">{params}</Stream></Connect></Response>'


async def create(api: FakeCarrierApi, b: Bridge, **kwargs: Any) -> Any:
    """``client.calls.create`` as the bridge's code would call it (the SDK is blocking: in a thread)."""
    fields: dict[str, Any] = {
        "to": "+15550142",
        "from_": "+15550002",
        "twiml": twiml(b, {"bridge.outbound": "claim-1", "campaign": "reminders"}),
        "status_callback": f"{b.base}/twilio/call-status?{TOKEN_QUERY}",
        **kwargs,
    }
    return await asyncio.to_thread(twilio_client(api).calls.create, **fields)


# -- the pure part -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "mode", "beep", "expected"),
    [
        ("human", "Enable", True, ("human", 900)),
        ("human", "DetectMessageEnd", True, ("human", 900)),
        ("machine", "Enable", True, ("machine_start", 900)),
        ("machine", "DetectMessageEnd", True, ("machine_end_beep", 1000)),
        ("machine", "DetectMessageEnd", False, ("machine_end_silence", 700 + 1500)),
        ("machine", "", True, None),
    ],
)
def test_twilio_verdict_and_its_time(kind: str, mode: str, beep: bool, expected: tuple[str, int] | None) -> None:
    """Twilio's AnsweredBy and its delay follow the detection mode: the message end waits for the beep (or
    1.5 s of silence after the speech); no MachineDetection, no verdict."""
    g = synthetic("machine", beep) if kind == "machine" else synthetic("human")
    assert twilio_answered_by(kind, mode, g, 900) == expected


@pytest.mark.parametrize(
    ("kind", "mode", "beep", "expected"),
    [
        ("human", "detect", True, [(300, "call.machine.detection.ended", "human")]),
        ("machine", "detect", True, [(300, "call.machine.detection.ended", "machine")]),
        (
            "machine",
            "detect_beep",
            True,
            [(300, "call.machine.detection.ended", "machine"), (1000, "call.machine.greeting.ended", "beep_detected")],
        ),
        ("machine", "detect_beep", False, [(300, "call.machine.detection.ended", "machine")]),
        (
            "machine",
            "greeting_end",
            False,
            [(300, "call.machine.detection.ended", "machine"), (2200, "call.machine.greeting.ended", "ended")],
        ),
        ("human", "disabled", True, []),
    ],
)
def test_telnyx_detection_webhooks(kind: str, mode: str, beep: bool, expected: list[tuple[int, str, str]]) -> None:
    """Telnyx's machine events per answering_machine_detection mode: greeting.ended only for the modes that
    detect the greeting's end, beep_detected only with a beep."""
    g = synthetic("machine", beep) if kind == "machine" else synthetic("human")
    assert telnyx_detection(kind, mode, g, 300) == expected


def test_stream_url_loses_its_query_as_on_twilio() -> None:
    """Twilio's <Stream url> takes no query string: the fake connects without one."""
    assert without_query("wss://b.example/twilio/stream?token=x#f") == "wss://b.example/twilio/stream"


# -- Twilio, driven by twilio-python -------------------------------------------------------------------------


async def test_twilio_human_call_streams_the_greeting_and_signs_every_callback(
    bridge: Bridge, fake: Callable[..., Awaitable[FakeCarrierApi]]
) -> None:
    """A call created with the SDK rings, is answered, connects the TwiML's stream (signed, the parameters as
    customParameters) and plays the greeting in full; the reply is heard and its mark echoed; when the bridge
    closes the stream the call completes; every status and the AMD verdict arrive signed, in order."""
    greeting = synthetic("human")
    ulaw = encode_from_pcm16(greeting.pcm, "ulaw")
    bridge.hang_up_after = len(ulaw)
    api = await fake("twilio", Answering("human", ring_ms=100, amd_ms=300, greeter=greeter_of(greeting)))
    async with asyncio.timeout(15):
        call = await create(
            api,
            bridge,
            status_callback_event=["initiated", "ringing", "answered", "completed"],
            machine_detection="Enable",
            async_amd="true",
            async_amd_status_callback=f"{bridge.base}/twilio/amd?{TOKEN_QUERY}",
        )
        assert call.sid.startswith("CA") and len(call.sid) == 34 and call.status == "queued"
        record = api.calls[0]
        await record.done.wait()

    assert record.request["StatusCallbackEvent"] == ["initiated", "ringing", "answered", "completed"]
    [stream] = bridge.streams
    assert stream.signature_ok is True
    assert stream.events()[:2] == ["connected", "start"]
    start = stream.messages[1]["start"]
    assert start["callSid"] == call.sid and start["accountSid"] == AC
    assert start["streamSid"].startswith("MZ") and start["tracks"] == ["inbound"]
    assert start["customParameters"] == {"bridge.outbound": "claim-1", "campaign": "reminders"}
    assert start["mediaFormat"] == {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
    assert bytes(stream.inbound[: len(ulaw)]) == ulaw  # the greeting, whole and in order
    assert stream.marks == ["reply-1"] and record.marks == ["reply-1"]
    assert bytes(record.heard) == REPLY and record.ear.heard() == REPLY
    assert stream.closed_by_bridge and record.ended_by == "bridge" and "stop" not in stream.events()

    statuses = bridge.forms("/twilio/call-status")
    assert [f["CallStatus"] for f in statuses] == ["initiated", "ringing", "in-progress", "completed"]
    assert record.statuses == ["initiated", "ringing", "in-progress", "completed"]
    assert [f["SequenceNumber"] for f in statuses] == ["0", "1", "2", "3"]
    for form in statuses:
        assert form["CallSid"] == call.sid and form["AccountSid"] == AC
        assert (form["From"], form["To"]) == ("+15550002", "+15550142")
        assert form["Direction"] == "outbound-api" and form["ApiVersion"] == "2010-04-01"
        assert form["CallbackSource"] == "call-progress-events" and form["Timestamp"].endswith("+0000")
    assert int(statuses[-1]["CallDuration"]) >= 1
    [amd] = bridge.forms("/twilio/amd")
    assert amd == {"CallSid": call.sid, "AccountSid": AC, "AnsweredBy": "human", "MachineDetectionDuration": "300"}
    assert all(ok for _, _, ok in bridge.callbacks)  # twilio's RequestValidator, over the URL with its ?t=


async def test_twilio_follows_the_connect_action_when_the_bridge_closes_the_stream(
    bridge: Bridge, fake: Callable[..., Awaitable[FakeCarrierApi]]
) -> None:
    """The bridge closes the stream: the fake requests ``<Connect action>`` as Twilio does (signed, the call's
    standard parameters), runs the ``<Hangup/>`` it answers, and the call completes."""
    greeting = synthetic("human")
    bridge.hang_up_after = 1600
    api = await fake("twilio", Answering("human", ring_ms=20, greeter=greeter_of(greeting)))
    async with asyncio.timeout(10):
        call = await create(api, bridge, twiml=twiml(bridge, action=f"{bridge.base}/twilio/after-stream"))
        await api.calls[0].done.wait()
    [after] = bridge.forms("/twilio/after-stream")
    assert after["CallSid"] == call.sid and after["CallStatus"] == "in-progress"
    assert after["Direction"] == "outbound-api"
    assert [f["CallStatus"] for f in bridge.forms("/twilio/call-status")] == ["completed"]
    assert len(bridge.streams) == 1 and all(ok for _, _, ok in bridge.callbacks)


async def test_twilio_machine_verdict_waits_for_the_beep(
    bridge: Bridge, fake: Callable[..., Awaitable[FakeCarrierApi]]
) -> None:
    """DetectMessageEnd on a voicemail greeting: AnsweredBy machine_end_beep when the beep ends, measured from
    the answer; only the final status is posted when no StatusCallbackEvent is asked for."""
    greeting = synthetic("machine")
    bridge.hang_up_after = len(greeting.pcm) // 2
    api = await fake("twilio", Answering("machine", ring_ms=50, amd_ms=200, greeter=greeter_of(greeting)))
    async with asyncio.timeout(15):
        call = await create(
            api,
            bridge,
            machine_detection="DetectMessageEnd",
            async_amd="true",
            async_amd_status_callback=f"{bridge.base}/twilio/amd?{TOKEN_QUERY}",
        )
        record = api.calls[0]
        await record.done.wait()
    loop_amd = record.amd[0]
    assert loop_amd["AnsweredBy"] == "machine_end_beep" and loop_amd["MachineDetectionDuration"] == "1000"
    assert [f["AnsweredBy"] for f in bridge.forms("/twilio/amd")] == ["machine_end_beep"]
    assert [f["CallStatus"] for f in bridge.forms("/twilio/call-status")] == ["completed"]
    assert bridge.forms("/twilio/call-status")[0]["CallSid"] == call.sid
    assert all(ok for _, _, ok in bridge.callbacks)


@pytest.mark.parametrize("answer", ["busy", "no-answer", "failed"])
async def test_twilio_unanswered_call_has_no_stream_and_a_final_status(
    bridge: Bridge, fake: Callable[..., Awaitable[FakeCarrierApi]], answer: Literal["busy", "no-answer", "failed"]
) -> None:
    """Busy, no answer, failed: the stream is never connected, and the final CallStatus says which (the
    ``completed`` event carries every end), after ringing."""
    api = await fake("twilio", Answering(answer, ring_ms=50))
    async with asyncio.timeout(10):
        await create(api, bridge, status_callback_event=["initiated", "ringing", "answered", "completed"])
        await api.calls[0].done.wait()
    assert bridge.streams == []
    assert [f["CallStatus"] for f in bridge.forms("/twilio/call-status")] == ["initiated", "ringing", answer]
    assert "CallDuration" not in bridge.forms("/twilio/call-status")[-1]


async def test_twilio_cancel_while_ringing(bridge: Bridge, fake: Callable[..., Awaitable[FakeCarrierApi]]) -> None:
    """``calls(sid).update(status="canceled")`` while the phone rings: a ``canceled`` status, no stream."""
    api = await fake("twilio", Answering("human", ring_ms=5000, greeter=greeter_of(synthetic("human"))))
    async with asyncio.timeout(10):
        call = await create(api, bridge)
        updated = await asyncio.to_thread(twilio_client(api).calls(call.sid).update, status="canceled")
        assert updated.sid == call.sid
        await api.calls[0].done.wait()
    assert bridge.streams == []
    assert [f["CallStatus"] for f in bridge.forms("/twilio/call-status")] == ["canceled"]


async def test_twilio_rest_hang_up_stops_the_stream(
    bridge: Bridge, fake: Callable[..., Awaitable[FakeCarrierApi]]
) -> None:
    """``update(status="completed")`` on a live call: the stream gets ``stop`` and closes, the call completes."""
    api = await fake("twilio", Answering("human", ring_ms=20, greeter=greeter_of(synthetic("human"))))
    async with asyncio.timeout(10):
        call = await create(api, bridge)
        while not bridge.streams or len(bridge.streams[0].inbound) < 800:
            await asyncio.sleep(0.02)
        await asyncio.to_thread(twilio_client(api).calls(call.sid).update, status="completed")
        await api.calls[0].done.wait()
    assert bridge.streams[0].events()[-1] == "stop"
    assert api.calls[0].ended_by == "bridge"
    assert [f["CallStatus"] for f in bridge.forms("/twilio/call-status")] == ["completed"]


async def test_twilio_callee_hangs_up_after_its_stay(
    bridge: Bridge, fake: Callable[..., Awaitable[FakeCarrierApi]]
) -> None:
    """The callee hangs up ``stay_s`` after its greeting: the stream gets ``stop``, the call completes."""
    greeting = synthetic("human")
    api = await fake("twilio", Answering("human", ring_ms=20, stay_s=0.3, greeter=greeter_of(greeting)))
    async with asyncio.timeout(10):
        await create(api, bridge)
        await api.calls[0].done.wait()
    stream = bridge.streams[0]
    assert stream.events()[-1] == "stop" and api.calls[0].ended_by == "callee"
    assert len(stream.inbound) >= len(greeting.pcm) // 2 + 0.2 * 8000  # the greeting, then silence


async def test_twilio_refusals(bridge: Bridge, fake: Callable[..., Awaitable[FakeCarrierApi]]) -> None:
    """Wrong credentials: 401; neither Twiml nor Url: 400; ``refuse``: that status; no call placed."""
    api = await fake("twilio", Answering("human"))
    with pytest.raises(TwilioRestException) as wrong:
        await asyncio.to_thread(twilio_client(api, "not-the-token").calls.create, to="+1555", from_="+1", twiml="x")
    assert wrong.value.status == 401
    with pytest.raises(TwilioRestException) as bare:
        await asyncio.to_thread(twilio_client(api).calls.create, to="+15550142", from_="+15550002")
    assert bare.value.status == 400
    api.answering.refuse = 503
    with pytest.raises(TwilioRestException) as refused:
        await create(api, bridge)
    assert refused.value.status == 503
    assert api.calls == [] and bridge.callbacks == []


# -- Telnyx, driven by the telnyx SDK -------------------------------------------------------------------------


TELNYX_EVENTS: dict[str, type[BaseModel]] = {
    "call.initiated": CallInitiatedWebhookEvent,
    "call.answered": CallAnsweredWebhookEvent,
    "call.hangup": CallHangupWebhookEvent,
    "call.machine.detection.ended": CallMachineDetectionEndedWebhookEvent,
    "call.machine.greeting.ended": CallMachineGreetingEndedWebhookEvent,
    "streaming.started": CallStreamingStartedWebhookEvent,
    "streaming.stopped": CallStreamingStoppedWebhookEvent,
}


def telnyx_events(bridge: Bridge) -> list[Any]:
    """Each webhook parsed by the telnyx SDK's model of its event type (validated, not merely constructed):
    its ``data`` (event_type, id, occurred_at, record_type, payload)."""
    parsed: list[Any] = []
    for hook in bridge.webhooks:
        kind = json.loads(hook["text"])["data"]["event_type"]
        parsed.append(TELNYX_EVENTS[kind].model_validate_json(hook["text"]).data)  # type: ignore[attr-defined]
    return parsed


def telnyx_client(api: FakeCarrierApi) -> AsyncTelnyx:
    return AsyncTelnyx(api_key=TELNYX_KEY, base_url=f"{api.base_url}/v2", max_retries=0)


async def test_telnyx_machine_call_with_greeting_end(
    bridge: Bridge, fake: Callable[..., Awaitable[FakeCarrierApi]]
) -> None:
    """``client.calls.dial`` with a stream and greeting_end detection: the SDK reads the answer; webhooks
    (parsed by the SDK's types) come in order with the ids and client_state; the stream keeps its query and
    carries Telnyx's start and the greeting; the SDK's hang-up ends the call with normal_clearing."""
    greeting = synthetic("machine")
    ulaw = encode_from_pcm16(greeting.pcm, "ulaw")
    api = await fake("telnyx", Answering("machine", ring_ms=50, amd_ms=200, greeter=greeter_of(greeting)))
    async with telnyx_client(api) as client, asyncio.timeout(15):
        dialled = await client.calls.dial(
            connection_id="app-1",
            from_="+15550002",
            to="+15550142",
            stream_url=f"ws{bridge.base[4:]}/telnyx/stream?outbound=claim-1",
            stream_track="inbound_track",
            answering_machine_detection="greeting_end",
            webhook_url=f"{bridge.base}/telnyx/events",
            client_state="c3RhdGU=",
        )
        assert dialled.data is not None and dialled.data.call_control_id is not None
        call_id = dialled.data.call_control_id
        assert call_id.startswith("v3:") and dialled.data.is_alive is False
        while not bridge.streams or len(bridge.streams[0].inbound) < len(ulaw) or len(api.calls[0].amd) < 2:
            await asyncio.sleep(0.02)
        await client.calls.actions.hangup(call_id)
        await api.calls[0].done.wait()

    events = telnyx_events(bridge)
    assert [e.event_type for e in events] == [
        "call.initiated",
        "call.answered",
        "streaming.started",
        "call.machine.detection.ended",
        "call.machine.greeting.ended",
        "call.hangup",
    ]
    for e in events:
        assert e.record_type == "event" and e.payload.call_control_id == call_id
        assert e.payload.client_state == "c3RhdGU=" and e.payload.connection_id == "app-1"
        if e.event_type.startswith("call."):  # streaming.* payloads name no parties (the SDK's types)
            assert e.payload.from_ == "+15550002" and e.payload.to == "+15550142"
    assert [e.payload.result for e in events[3:5]] == ["machine", "beep_detected"]
    assert events[-1].payload.hangup_cause == "normal_clearing" and events[-1].payload.hangup_source == "caller"
    assert all(w["type"] == "application/json" for w in bridge.webhooks)

    [stream] = bridge.streams
    assert stream.query == "outbound=claim-1" and stream.signature_ok is None
    start = stream.messages[1]
    assert start["event"] == "start" and start["start"]["call_control_id"] == call_id
    assert start["start"]["media_format"] == {"encoding": "PCMU", "sample_rate": 8000, "channels": 1}
    assert bytes(stream.inbound[: len(ulaw)]) == ulaw
    assert stream.events()[-1] == "stop"
    record = api.calls[0]
    assert record.marks == ["reply-1"] and bytes(record.heard) == REPLY
    assert record.amd == [
        {"event_type": "call.machine.detection.ended", "result": "machine"},
        {"event_type": "call.machine.greeting.ended", "result": "beep_detected"},
    ]


@pytest.mark.parametrize(("answer", "cause"), [("busy", "user_busy"), ("no-answer", "timeout")])
async def test_telnyx_unanswered_call_hangs_up_with_its_cause(
    bridge: Bridge,
    fake: Callable[..., Awaitable[FakeCarrierApi]],
    answer: Literal["busy", "no-answer"],
    cause: str,
) -> None:
    """Busy or not answered: call.initiated then call.hangup with Telnyx's cause, no stream."""
    api = await fake("telnyx", Answering(answer, ring_ms=50))
    async with telnyx_client(api) as client, asyncio.timeout(10):
        await client.calls.dial(
            connection_id="app-1",
            from_="+15550002",
            to="+15550142",
            stream_url=f"ws{bridge.base[4:]}/telnyx/stream",
            webhook_url=f"{bridge.base}/telnyx/events",
        )
        await api.calls[0].done.wait()
    events = telnyx_events(bridge)
    assert [e.event_type for e in events] == ["call.initiated", "call.hangup"]
    assert events[1].payload.hangup_cause == cause and events[1].payload.hangup_source == "callee"
    assert bridge.streams == []


async def test_telnyx_hang_up_while_ringing_cancels(
    bridge: Bridge, fake: Callable[..., Awaitable[FakeCarrierApi]]
) -> None:
    """The SDK's hang-up while the phone rings: call.hangup originator_cancel, no stream; a wrong key: 401."""
    api = await fake("telnyx", Answering("human", ring_ms=5000, greeter=greeter_of(synthetic("human"))))
    async with telnyx_client(api) as client, asyncio.timeout(10):
        dialled = await client.calls.dial(
            connection_id="app-1", from_="+15550002", to="+15550142", webhook_url=f"{bridge.base}/telnyx/events"
        )
        assert dialled.data is not None and dialled.data.call_control_id is not None
        await client.calls.actions.hangup(dialled.data.call_control_id)
        await api.calls[0].done.wait()
        with pytest.raises(APIStatusError) as wrong:
            async with AsyncTelnyx(api_key="wrong", base_url=f"{api.base_url}/v2", max_retries=0) as wrong_key:
                await wrong_key.calls.dial(connection_id="app-1", from_="+15550002", to="+15550142")
    assert wrong.value.status_code == 401
    events = telnyx_events(bridge)
    assert [e.event_type for e in events] == ["call.initiated", "call.hangup"]
    assert events[1].payload.hangup_cause == "originator_cancel"
    assert bridge.streams == [] and len(api.calls) == 1


async def test_telnyx_stream_closed_by_the_bridge_leaves_the_call_up(
    bridge: Bridge, fake: Callable[..., Awaitable[FakeCarrierApi]]
) -> None:
    """The bridge closes the stream: streaming.stopped, the call stays up (Telnyx's stream is not the call)
    until the callee hangs up after its stay: call.hangup from the callee."""
    greeting = synthetic("human")
    bridge.hang_up_after = 1600
    api = await fake("telnyx", Answering("human", ring_ms=20, stay_s=0.3, greeter=greeter_of(greeting)))
    async with telnyx_client(api) as client, asyncio.timeout(10):
        await client.calls.dial(
            connection_id="app-1",
            from_="+15550002",
            to="+15550142",
            stream_url=f"ws{bridge.base[4:]}/telnyx/stream",
            webhook_url=f"{bridge.base}/telnyx/events",
        )
        await api.calls[0].done.wait()
    events = telnyx_events(bridge)
    assert [e.event_type for e in events] == [
        "call.initiated",
        "call.answered",
        "streaming.started",
        "streaming.stopped",
        "call.hangup",
    ]
    assert events[-1].payload.hangup_source == "callee" and api.calls[0].ended_by == "callee"
    assert bridge.streams[0].closed_by_bridge and "stop" not in bridge.streams[0].events()


async def test_a_greeting_that_cannot_be_made_fails_the_call(
    bridge: Bridge, fake: Callable[..., Awaitable[FakeCarrierApi]]
) -> None:
    """A voice that cannot speak (the synthesiser missing): the call fails with a final status, no stream."""

    def broken(kind: Literal["human", "machine"], variant: int, voice: str) -> Greeting:
        raise RuntimeError("no voice")

    api = await fake("twilio", Answering("human", ring_ms=20, greeter=broken))
    async with asyncio.timeout(10):
        await create(api, bridge)
        await api.calls[0].done.wait()
    assert [f["CallStatus"] for f in bridge.forms("/twilio/call-status")] == ["failed"]
    assert bridge.streams == []


# -- the real greeting and the command ------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
async def test_twilio_plays_the_synthesised_greeting(
    bridge: Bridge, fake: Callable[..., Awaitable[FakeCarrierApi]]
) -> None:
    """Without a greeter the callee plays bridge.tools.greetings' greeting (espeak voice: light on CPU)."""
    from bridge.tools.greetings import greeting

    answer = greeting("human", 0, voice="espeak")
    expected = encode_from_pcm16(answer.pcm, "ulaw")[: answer.speech_end_ms * 8]  # up to the end of its speech
    bridge.hang_up_after = len(expected)
    api = await fake("twilio", Answering("human", ring_ms=20, voice="espeak"))
    async with asyncio.timeout(30):
        await create(api, bridge)
        await api.calls[0].done.wait()
    assert bytes(bridge.streams[0].inbound[: len(expected)]) == expected
    assert api.calls[0].greeting is not None and api.calls[0].greeting.text == "Hello?"


def test_command_options_and_unsupported_carrier() -> None:
    """``--answer`` and its options parse with their defaults; a carrier the fake does not speak exits 2."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--carrier", default="twilio")
    add_arguments(parser)
    args = parser.parse_args(["--answer", "machine", "--carrier", "plivo"])
    assert (args.answer, args.api_port, args.api_host, args.ring_ms, args.amd_ms, args.stay) == (
        "machine",
        8099,
        "127.0.0.1",
        200,
        1200,
        10.0,
    )
    assert run_callee(args, io.StringIO()) == 2
    line = describe(CalleeCall("CA1", "+15550142", "+15550002", {}, heard=bytearray(8000)), "human")
    assert line.startswith("+15550142 answer=human") and "heard 1.0 s" in line


async def test_telnyx_webhooks_are_signed_as_telnyx_signs_them(bridge: Bridge) -> None:
    """Given a signing key, every webhook verifies with the telnyx SDK's own Ed25519 check over the body as
    sent (``verify_webhook_signature``: the oracle), and fails it with another account's key."""
    import base64

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from telnyx.lib.webhook_verification import WebhookVerificationError, verify_webhook_signature

    key = Ed25519PrivateKey.generate()
    public = base64.b64encode(key.public_key().public_bytes_raw()).decode()
    other = base64.b64encode(Ed25519PrivateKey.generate().public_key().public_bytes_raw()).decode()
    answering = Answering("human", ring_ms=20, amd_ms=50, stay_s=0.2, greeter=greeter_of(synthetic("human")))
    api = FakeCarrierApi("telnyx", answering, api_key=TELNYX_KEY, signing_key=key)
    await api.start()
    try:
        async with telnyx_client(api) as client, asyncio.timeout(15):
            await client.calls.dial(
                connection_id="app-1",
                from_="+15550002",
                to="+15550142",
                stream_url=f"ws{bridge.base[4:]}/telnyx/stream",
                answering_machine_detection="detect",
                webhook_url=f"{bridge.base}/telnyx/events",
            )
            await api.calls[0].done.wait()
    finally:
        await api.aclose()
    assert len(bridge.webhooks) >= 3
    for hook in bridge.webhooks:
        verify_webhook_signature(hook["text"], hook["headers"], public)
        with pytest.raises(WebhookVerificationError):
            verify_webhook_signature(hook["text"], hook["headers"], other)
