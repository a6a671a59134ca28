"""Outbound calls end to end on loopback: the bot orders a call, the bridge asks the carrier (a loopback fake of
Twilio's or Telnyx's call API, :mod:`bridge.tools.callee`, which the vendors' SDKs drive in
``tests/test_callee.py``), the fake answers as the callee would, connects its stream with the bridge's claim
as the carrier does, plays a person's answer or a voicemail greeting with its beep, and posts its status and
answering-machine callbacks as the carrier documents them. What the callee heard of ``first_say`` is
transcribed back by the local recogniser."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bridge.tools.callee import Answering, FakeCarrierApi
from tests.support.calls import BridgeFactory, wait_for
from tests.support.fakes import FakeWebhook

AUTH_TOKEN = "twilio-test-auth-token"
ACCOUNT_SID = "AC" + "0" * 32
TELNYX_KEY = "KEY-telnyx-test"
API_TOKEN = "bot-api-token"
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
TELNYX_SIGNING = Ed25519PrivateKey.generate()
TELNYX_PUBLIC = base64.b64encode(TELNYX_SIGNING.public_key().public_bytes_raw()).decode()
FIRST_SAY = "Hello, this is the clinic calling about your appointment tomorrow."
LONG_SAY = FIRST_SAY + " Please have your insurance card ready, and call us back if the time does not suit you."

pytestmark = pytest.mark.timeout(90)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def dialling(
    make_bridge: BridgeFactory, carrier: str, answering: Answering, **extra: str
) -> AsyncIterator[tuple[str, aiohttp.ClientSession, FakeCarrierApi]]:
    """A bridge on loopback whose ``carrier`` is the fake callee's API (Telnyx's webhooks signed with a key
    of the test's, whose public half the bridge checks them with)."""
    fake = FakeCarrierApi(
        carrier,  # type: ignore[arg-type]
        answering,
        auth_token=AUTH_TOKEN,
        account_sid=ACCOUNT_SID,
        api_key=TELNYX_KEY,
        signing_key=TELNYX_SIGNING,
    )
    api = await fake.start()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_API_URL": api,
        "TELNYX_API_KEY": TELNYX_KEY,
        "TELNYX_API_URL": api,
        "TELNYX_CONNECTION_ID": "1234567890",
        "BRIDGE_PUBLIC_URL": base,
        "BRIDGE_SECRET": "s" * 32,
        "BRIDGE_API_TOKEN": API_TOKEN,
        "BRIDGE_DIAL_TO": "+1555",
        "BRIDGE_DIAL_FROM": "+15550002",
        "TELNYX_PUBLIC_KEY": TELNYX_PUBLIC,
    } | extra
    await make_bridge(env, port=port, **{"outbound.answer_grace": 2.0})
    try:
        async with aiohttp.ClientSession() as http:
            yield base, http, fake
    finally:
        await fake.aclose()


async def order(http: aiohttp.ClientSession, base: str, **fields: Any) -> str:
    body = {"to": "+15550142", "from": "+15550002", "parameters": {"campaign": "reminders"}, **fields}
    async with http.post(f"{base}/v1/calls", json=body, headers=AUTH) as resp:
        answer = await resp.json()
        assert resp.status == 201, answer
        return str(answer["id"])


def quiet_bot(hook: FakeWebhook) -> None:
    """The bot: barge-in off (the callee's greeting must not cut first_say short); nothing else."""

    def answer(event: dict[str, Any]) -> Any:
        if event["type"] == "call.started":
            return {"actions": [{"type": "configure", "barge_in": {"enabled": False}}]}
        return None

    hook.answer = answer


def of_call(hook: FakeWebhook, call_id: str) -> list[dict[str, Any]]:
    return [e for e in hook.events() if e["call"]["id"] == call_id]


def heard_text(recognizer: Any, ulaw: bytes) -> str:
    import numpy as np

    from bridge.audio import audioop, resample

    pcm = np.frombuffer(audioop.ulaw2lin(ulaw, 2), dtype=np.int16)
    return str(recognizer.transcribe(resample(pcm, 8000, 16000).astype(np.float32) / 32768.0).text)


@pytest.mark.recognition
async def test_twilio_a_person_answers_hears_first_say_and_the_carrier_says_human(
    make_bridge: BridgeFactory, webhook: tuple[FakeWebhook, str], recognizer: Any
) -> None:
    from bridge.tools.speech import normalised_words

    hook, _ = webhook
    quiet_bot(hook)
    answering = Answering(answer="human", ring_ms=300, amd_ms=1500, stay_s=6.0)
    async with asyncio.timeout(80), dialling(make_bridge, "twilio", answering) as (base, http, fake):
        call_id = await order(http, base, carrier="twilio", machine_detection="detect", first_say=FIRST_SAY)
        await wait_for(lambda: bool(hook.events("call.ended")), timeout=60)
        (callee,) = fake.calls
        await asyncio.wait_for(callee.done.wait(), 10)
    events = of_call(hook, call_id)
    types = [e["type"] for e in events]
    assert types[:2] == ["call.dialing", "call.started"], types
    assert [e["sequence"] for e in events] == list(range(1, len(events) + 1))
    started = events[1]["call"]
    assert started["direction"] == "outbound" and started["parameters"]["campaign"] == "reminders"
    assert started["to"] == "+15550142" and started["from"] == "+15550002"
    assert events[0]["carrier_call_id"] == callee.carrier_call_id
    (verdict,) = hook.events("call.answered_by")
    assert verdict["answered_by"] == "human" and verdict["source"] == "carrier"
    assert verdict["carrier_answered_by"] == "human"
    finished = [e for e in hook.events("playback.finished") if e["action_id"] == "first_say"]
    assert finished, types
    assert callee.statuses[:3] == ["initiated", "ringing", "in-progress"] and callee.statuses[-1] == "completed"
    said, got = normalised_words(FIRST_SAY), normalised_words(heard_text(recognizer, callee.ear.heard()))
    assert sum(w in got for w in said) >= 0.6 * len(said), (got, said)


async def test_twilio_a_voicemail_cuts_first_say_and_the_beep_says_when_to_speak(
    make_bridge: BridgeFactory, webhook: tuple[FakeWebhook, str]
) -> None:
    hook, _ = webhook
    quiet_bot(hook)
    answering = Answering(answer="machine", ring_ms=200, stay_s=2.0, variant=1, voice="espeak")
    async with asyncio.timeout(80), dialling(make_bridge, "twilio", answering) as (base, http, fake):
        call_id = await order(http, base, carrier="twilio", machine_detection="detect_message_end", first_say=LONG_SAY)
        await wait_for(lambda: bool(hook.events("call.beep")), timeout=40)
        (callee,) = fake.calls
        assert callee.request["MachineDetection"] == "DetectMessageEnd"
        async with http.delete(f"{base}/v1/calls/{call_id}", headers=AUTH) as resp:
            assert resp.status == 202 and (await resp.json())["status"] == "ending"
        await wait_for(lambda: bool(hook.events("call.ended")), timeout=20)
    (verdict,) = hook.events("call.answered_by")
    assert verdict["answered_by"] == "machine" and verdict["carrier_answered_by"] in (
        "machine_end_beep",
        "machine_end_silence",
    )
    (beep,) = hook.events("call.beep")
    assert beep["source"] in ("carrier", "bridge") and beep["after_ms"] > 0
    cut = [e for e in hook.events("playback.interrupted") if e["action_id"] == "first_say"]
    assert cut and cut[0]["reason"] == "machine"
    types = [e["type"] for e in of_call(hook, call_id)]
    assert types.index("playback.interrupted") < types.index("call.answered_by") < types.index("call.beep")
    assert hook.events("call.ended")[0]["summary"]["end_reason"] == "bot_hangup"


async def test_telnyx_a_person_answers_on_the_claimed_stream(
    make_bridge: BridgeFactory, webhook: tuple[FakeWebhook, str]
) -> None:
    hook, _ = webhook
    quiet_bot(hook)
    answering = Answering(answer="human", ring_ms=200, amd_ms=800, stay_s=3.0, voice="espeak")
    async with asyncio.timeout(60), dialling(make_bridge, "telnyx", answering) as (base, http, fake):
        call_id = await order(http, base, carrier="telnyx", machine_detection="detect")
        await wait_for(lambda: bool(hook.events("call.answered_by")), timeout=30)
        (callee,) = fake.calls
        assert callee.request["answering_machine_detection"] == "detect"
        assert "outbound=" in callee.request["stream_url"]
        async with http.delete(f"{base}/v1/calls/{call_id}", headers=AUTH) as resp:
            assert resp.status == 202
        await wait_for(lambda: bool(hook.events("call.ended")), timeout=20)
        await asyncio.wait_for(callee.done.wait(), 10)
    started = hook.events("call.started")[0]["call"]
    assert started["id"] == call_id and started["direction"] == "outbound" and started["provider"] == "telnyx"
    assert hook.events("call.answered_by")[0]["answered_by"] == "human"
    assert callee.ended_by == "bridge"  # the bridge's hang-up reached Telnyx (actions/hangup)


@pytest.mark.parametrize(("answer", "status"), [("busy", "busy"), ("no-answer", "no-answer"), ("failed", "failed")])
async def test_a_call_nobody_takes_fails_with_the_carriers_word(
    make_bridge: BridgeFactory, webhook: tuple[FakeWebhook, str], answer: str, status: str
) -> None:
    hook, _ = webhook
    async with (
        asyncio.timeout(40),
        dialling(make_bridge, "twilio", Answering(answer=answer, ring_ms=300)) as (  # type: ignore[arg-type]
            base,
            http,
            fake,
        ),
    ):
        call_id = await order(http, base, carrier="twilio")
        await wait_for(lambda: bool(hook.events("call.ended")), timeout=20)
    assert [e["type"] for e in of_call(hook, call_id)] == ["call.dialing", "call.failed", "call.ended"]
    assert hook.events("call.failed")[0]["status"] == status
    assert hook.events("call.ended")[0]["summary"]["end_reason"] == "not_answered"
    assert not fake.calls[0].streams


async def test_the_bot_cancels_a_ringing_call_at_the_carrier(
    make_bridge: BridgeFactory, webhook: tuple[FakeWebhook, str]
) -> None:
    hook, _ = webhook
    async with asyncio.timeout(40), dialling(make_bridge, "twilio", Answering(ring_ms=10_000)) as (base, http, fake):
        call_id = await order(http, base, carrier="twilio")
        await wait_for(lambda: bool(hook.events("call.dialing")), timeout=10)
        async with http.delete(f"{base}/v1/calls/{call_id}", headers=AUTH) as resp:
            assert resp.status == 202 and (await resp.json())["status"] == "canceled"
        (callee,) = fake.calls
        await asyncio.wait_for(callee.done.wait(), 10)
        await wait_for(lambda: bool(hook.events("call.ended")), timeout=10)
    assert callee.statuses[-1] == "canceled" and not callee.streams
    assert hook.events("call.failed")[0]["status"] == "canceled"


async def test_the_bridges_own_detector_gives_its_opinion_before_the_carriers_verdict(
    make_bridge: BridgeFactory, webhook: tuple[FakeWebhook, str]
) -> None:
    """Twilio's verdict comes late (6 s): by then the bridge's detector has heard the person's short
    "hello" and its pause on the real audio path, and says so as ``bridge_opinion``."""
    hook, _ = webhook
    quiet_bot(hook)
    answering = Answering(answer="human", ring_ms=200, amd_ms=6000, stay_s=8.0, variant=0, voice="espeak")
    async with asyncio.timeout(60), dialling(make_bridge, "twilio", answering) as (base, http, _fake):
        await order(http, base, carrier="twilio", machine_detection="detect")
        await wait_for(lambda: bool(hook.events("call.answered_by")), timeout=30)
    (verdict,) = hook.events("call.answered_by")
    assert verdict["source"] == "carrier" and verdict["answered_by"] == "human"
    assert verdict["bridge_opinion"]["answered_by"] == "human", verdict
    assert verdict["bridge_opinion"]["detection_ms"] < 4000


async def test_a_bot_on_the_websocket_alone_gets_the_dialing_and_the_call_on_one_socket(
    make_bridge: BridgeFactory, aiohttp_server: Any
) -> None:
    """No webhook: the bot's socket opens at the order, carries ``call.dialing`` (an action sent then is
    refused, saying why), and goes on carrying the call once answered: one socket, one sequence."""
    from aiohttp import web

    received: list[dict[str, Any]] = []
    connections: list[str] = []

    async def bot(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        connections.append(request.query.get("call_id", ""))
        async for msg in ws:
            data = msg.json()
            received.append(data)
            if data.get("type") == "call.dialing":
                await ws.send_json({"request_id": "early", "actions": [{"type": "say", "text": "Too soon."}]})
        return ws

    app = web.Application()
    app.router.add_get("/bot", bot)
    bot_server = await aiohttp_server(app, host="127.0.0.1")
    answering = Answering(answer="human", ring_ms=300, stay_s=1.5, voice="espeak")
    fake = FakeCarrierApi("twilio", answering, auth_token=AUTH_TOKEN, account_sid=ACCOUNT_SID)
    api = await fake.start()
    port = free_port()
    env = {
        "BOT_WEBHOOK_URL": "",
        "BOT_WS_URL": str(bot_server.make_url("/bot")).replace("http", "ws", 1),
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_API_URL": api,
        "BRIDGE_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "BRIDGE_API_TOKEN": API_TOKEN,
        "BRIDGE_DIAL_TO": "+1555",
        "BRIDGE_DIAL_FROM": "+15550002",
    }
    await make_bridge(env, port=port)
    try:
        async with asyncio.timeout(60), aiohttp.ClientSession() as http:
            call_id = await order(http, f"http://127.0.0.1:{port}", carrier="twilio")
            await wait_for(lambda: any(m.get("type") == "call.ended" for m in received), timeout=40)
    finally:
        await fake.aclose()
    assert connections == [call_id]  # one socket, from the order to the end
    events = [m for m in received if "sequence" in m]
    assert [e["type"] for e in events][:2] == ["call.dialing", "call.started"]
    assert [e["sequence"] for e in events] == list(range(1, len(events) + 1))
    (refused,) = [m for m in received if m.get("request_id") == "early"]
    assert refused["actions"][0]["status"] == "failed" and "not been answered" in refused["actions"][0]["error"]
