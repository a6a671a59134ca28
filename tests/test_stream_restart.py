"""Twilio stream restarts: a new stream for the same callSid continues the call's Gladia session, but
only when it proves it is the same call; every call ends exactly once, whatever the interleaving."""

from __future__ import annotations

import asyncio
import tempfile
import xml.etree.ElementTree as ET
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bridge.app import create_app, drain_calls
from bridge.call.registry import CALLS
from bridge.settings import Settings
from bridge.stt.admission import ADMISSION
from bridge.tools.writers.twilio import TwilioStreamWriter
from tests.support.calls import FAST, WEBHOOK_SECRET, BridgeFactory, caller_audio, wait_for
from tests.support.fakes import FakeGladia, FakeWebhook, expected_texts

CALL_SID = "CA" + "8" * 32


async def voice_parameters(server: Any, call_sid: str, account_sid: str = "AC" + "0" * 32) -> dict[str, str]:
    """The <Parameter>s of the TwiML /twilio/voice answers for this call: what Twilio puts in
    start.customParameters."""
    form = {"CallSid": call_sid, "AccountSid": account_sid, "From": "+1", "To": "+2"}
    async with aiohttp.ClientSession() as http, http.post(server.make_url("/twilio/voice"), data=form) as resp:
        assert resp.status == 200
        twiml = ET.fromstring(await resp.text())
    return {p.attrib["name"]: p.attrib["value"] for p in twiml.iter("Parameter")}


async def stream_part(
    url: str,
    stream_sid: str,
    audio: bytes,
    stop: bool,
    parameters: dict[str, str],
    call_sid: str = CALL_SID,
    account_sid: str = "AC" + "0" * 32,
) -> None:
    writer = TwilioStreamWriter(call_sid, stream_sid, account_sid=account_sid, parameters=parameters)
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        await ws.send_str(writer.connected())
        await ws.send_str(writer.start())
        for i in range(0, len(audio), 160):
            await ws.send_str(writer.media(audio[i : i + 160]))
        if stop:
            await ws.send_str(writer.stop())
            async for _ in ws:
                pass
        # without stop: the socket just goes away, as when Twilio's stream drops


async def test_a_new_stream_for_the_same_call_attaches_to_its_gladia_session(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    """Stream 1 drops without stop; stream 2 (same callSid and the call's resume token from
    /twilio/voice, new streamSid) continues the same call: one Gladia session holding both parts'
    audio, one event sequence, call.stream_restarted."""
    hook, _ = webhook
    server: Any = await make_bridge()
    url = str(server.make_url("/twilio/stream"))
    params = await voice_parameters(server, CALL_SID)
    assert set(params) == {"CallSid", "From", "To", "bridge.resume"}
    audio = caller_audio(3.0)
    await stream_part(url, "MZ" + "1" * 32, audio[:12000], False, params)
    await wait_for(lambda: any(len(s.audio) == 12000 for s in fake_gladia.sessions.values()))
    await stream_part(url, "MZ" + "2" * 32, audio[12000:], True, await voice_parameters(server, CALL_SID))
    await wait_for(lambda: bool(hook.events("transcript.completed")))  # the last event

    (session,) = fake_gladia.sessions.values()
    assert bytes(session.audio) == audio
    events = hook.events()
    assert [e["type"] for e in events] == (
        ["call.started", "utterance.final", "call.stream_restarted"]
        + ["utterance.final"] * 2
        + ["call.ended", "transcript.completed"]
    )
    assert [e["sequence"] for e in events] == list(range(1, len(events) + 1))
    assert len({e["call"]["id"] for e in events}) == 1
    assert events[2]["call"]["stream_sid"] == "MZ" + "2" * 32 and events[2]["streams"] == 2
    assert "bridge.resume" not in events[0]["call"]["parameters"]  # a capability, not for the bot's records
    assert [e["utterance"]["text"] for e in hook.events("utterance.final")] == expected_texts(audio, 8000)
    summary = events[-2]["summary"]
    assert summary["phone_streams"] == 2 and summary["phone_bytes"] == len(audio)
    assert summary["stt_sessions"] == 1 and summary["end_reason"] == "stop"


async def test_a_dropped_stream_with_no_restart_ends_after_the_grace_period(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    """No new stream within server.stream_restart_grace: the call ends (stream_lost), its finals delivered."""
    hook, _ = webhook
    server: Any = await make_bridge(server__stream_restart_grace=0.3)
    audio = caller_audio(2.0)
    await stream_part(
        str(server.make_url("/twilio/stream")), "MZ" + "3" * 32, audio, False, await voice_parameters(server, CALL_SID)
    )
    await wait_for(lambda: bool(hook.events("call.ended")))
    assert hook.events("call.ended")[0]["summary"]["end_reason"] == "stream_lost"
    assert fake_gladia.all_audio() == audio
    assert [e["utterance"]["text"] for e in hook.events("utterance.final")] == expected_texts(audio, 8000)


@pytest.mark.parametrize("proof", ["none", "other_call", "forged", "other_account"])
async def test_a_stream_cannot_take_over_a_suspended_call_without_its_resume_token(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str], proof: str
) -> None:
    """Attack: while a call is suspended, a stream names its callSid (with a valid upgrade signature,
    replayed: it covers only the constant stream URL) but not its resume token, or a token of another
    call, a made-up one, or the right one from another account. It becomes a call of its own: the
    victim's call id, number and Gladia session never get the newcomer's audio, and the victim ends
    after its grace."""
    hook, _ = webhook
    server: Any = await make_bridge(server__stream_restart_grace=1.0)
    url = str(server.make_url("/twilio/stream"))
    victim_params = await voice_parameters(server, CALL_SID)
    victim, attacker = caller_audio(1.0, seed=1), caller_audio(1.0, seed=2)
    await stream_part(url, "MZ" + "1" * 32, victim, False, victim_params)
    await wait_for(lambda: any(len(s.audio) == len(victim) for s in fake_gladia.sessions.values()))
    params = {"From": "+1666", "To": "+2"}
    account = "AC" + "0" * 32
    if proof == "other_call":
        params["bridge.resume"] = (await voice_parameters(server, "CA" + "9" * 32))["bridge.resume"]
    elif proof == "forged":
        params["bridge.resume"] = "0" * 32
    elif proof == "other_account":
        params["bridge.resume"] = victim_params["bridge.resume"]
        account = "AC" + "6" * 32
    await stream_part(url, "MZ" + "2" * 32, attacker, True, params, account_sid=account)
    await wait_for(lambda: len(hook.events("call.ended")) == 2, timeout=10)

    started = hook.events("call.started")
    assert len(started) == 2 and started[0]["call"]["id"] != started[1]["call"]["id"]
    by_call = {e["call"]["id"]: e for e in hook.events("call.ended")}
    assert by_call[started[0]["call"]["id"]]["summary"]["end_reason"] == "stream_lost"
    assert by_call[started[1]["call"]["id"]]["summary"]["end_reason"] == "stop"
    assert not hook.events("call.stream_restarted")
    assert [bytes(s.audio) for s in fake_gladia.sessions.values()] == [victim, attacker]
    victim_texts = [
        e["utterance"]["text"] for e in hook.events("utterance.final") if e["call"]["id"] == started[0]["call"]["id"]
    ]
    assert victim_texts == expected_texts(victim, 8000)


async def test_two_dropped_streams_of_one_call_both_end_and_free_their_gladia_sessions(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    """Attack: two live streams with the same callSid (Twilio allows several <Stream>s per call) both
    drop. Each call ends once after the grace (the first one leaked: its Gladia session stayed open
    for good and held an admission slot, so with gladia.max_sessions = 2 later calls got no finals)."""
    hook, _ = webhook
    server: Any = await make_bridge(server__stream_restart_grace=0.3, gladia__max_sessions=2)
    url = str(server.make_url("/twilio/stream"))
    params = await voice_parameters(server, CALL_SID)
    async with aiohttp.ClientSession() as http:
        for round_ in range(3):
            writers = [TwilioStreamWriter(CALL_SID, f"MZ{round_}{i}" + "0" * 30, parameters=params) for i in range(2)]
            sockets = [await http.ws_connect(url) for _ in writers]
            for ws, writer in zip(sockets, writers, strict=True):  # both live at once
                await ws.send_str(writer.connected())
                await ws.send_str(writer.start())
            for i, (ws, writer) in enumerate(zip(sockets, writers, strict=True)):
                audio = caller_audio(1.0, seed=10 * round_ + i)
                for k in range(0, len(audio), 160):
                    await ws.send_str(writer.media(audio[k : k + 160]))
            await wait_for(lambda: sum(len(s.audio) for s in fake_gladia.sessions.values()) == 16000 * (round_ + 1))  # noqa: B023
            for ws in sockets:  # both drop
                await ws.close()
            await wait_for(lambda: len(hook.events("call.ended")) == 2 * (round_ + 1), timeout=10)  # noqa: B023
    later = caller_audio(2.0, seed=99)
    await stream_part(url, "MZ" + "9" * 32, later, True, {"From": "+1", "To": "+2"}, call_sid="CA" + "7" * 32)
    await wait_for(lambda: len(hook.events("call.ended")) == 7, timeout=10)
    ended = hook.events("call.ended")
    assert len({e["call"]["id"] for e in ended}) == 7
    assert [e["summary"]["end_reason"] for e in ended].count("stream_lost") == 6
    assert all(s.ended or s.stop_received for s in fake_gladia.sessions.values())
    later_finals = [e for e in hook.events("utterance.final") if e["call"]["call_sid"] == "CA" + "7" * 32]
    assert [e["utterance"]["text"] for e in later_finals] == expected_texts(later, 8000)


async def test_suspended_calls_count_against_max_calls_and_are_shed_first(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    """Attack: connect+start+drop streams, many times. Suspended calls count against server.max_calls
    (and show in /healthz); when the bridge is full, the longest-waiting suspended call is ended (shed)
    to admit a new call, never a live one; a real call still gets through."""
    hook, _ = webhook
    server: Any = await make_bridge(server__max_calls=4, server__stream_restart_grace=30.0)
    url = str(server.make_url("/twilio/stream"))
    seen = []
    async with aiohttp.ClientSession() as http:
        for i in range(10):
            await stream_part(url, f"MZ{i:032d}", caller_audio(0.2, seed=i), False, {}, call_sid=f"CA{i:032d}")
            async with http.get(server.make_url("/healthz")) as resp:
                health = await resp.json()
            seen.append(health["active_calls"] + health["suspended_calls"])
    assert max(seen) <= 4 and health["suspended_calls"] == 4
    real = caller_audio(1.0, seed=77)
    await stream_part(url, "MZ" + "f" * 32, real, True, {}, call_sid="CA" + "f" * 32)
    await wait_for(lambda: any(e["call"]["call_sid"] == "CA" + "f" * 32 for e in hook.events("call.ended")))
    shed = [e for e in hook.events("call.ended") if e["summary"]["end_reason"] == "shed"]
    assert [e["call"]["call_sid"] for e in shed] == [f"CA{i:032d}" for i in range(7)]
    open_sessions = [s for s in fake_gladia.sessions.values() if not (s.ended or s.stop_received)]
    assert len(open_sessions) == 3  # the three calls still suspended, and nothing else


# -- every call ends exactly once, whatever the interleaving ------------------------------------

OPS = st.lists(
    st.tuples(st.sampled_from(["start", "drop", "stop", "audio"]), st.integers(0, 3), st.sampled_from([0, 1])),
    min_size=1,
    max_size=10,
)


async def _scenario(ops: list[tuple[str, int, int]], shutdown: bool) -> None:
    """Up to four sockets on two callSids: start (with the call's token), audio, drop or stop, in the
    order given; then the grace runs out (or the bridge shuts down). Every call gets one call.ended."""
    gladia, hook = FakeGladia(), FakeWebhook()
    loop = asyncio.get_running_loop()
    loop_errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: loop_errors.append(context))
    async with TestServer(gladia.app, host="127.0.0.1") as g, TestServer(hook.app, host="127.0.0.1") as h:
        gladia.base_url = str(g.make_url("")).rstrip("/")
        settings_ = Settings.load(
            environ={
                "GLADIA_API_URL": gladia.base_url,
                "GLADIA_API_KEY": "test-key",
                "BOT_WEBHOOK_URL": str(h.make_url("/hook")),
                "BOT_WEBHOOK_SECRET": WEBHOOK_SECRET,
                "BRIDGE_DATA_DIR": tempfile.mkdtemp(),
                "BRIDGE_SECRET": "property-test",
            },
            overrides={**FAST, "server.stream_restart_grace": 0.2, "gladia.max_sessions": 3},
        )
        app = create_app(settings_)
        async with TestServer(app, host="127.0.0.1") as b, aiohttp.ClientSession() as http:
            url = str(b.make_url("/twilio/stream"))
            params = {sid: await voice_parameters(b, sid) for sid in ("CA" + "a" * 32, "CA" + "b" * 32)}
            sockets: dict[int, tuple[aiohttp.ClientWebSocketResponse, TwilioStreamWriter]] = {}
            for n, (op, slot, which) in enumerate(ops):
                if op == "start" and slot not in sockets:
                    sid = ("CA" + "a" * 32, "CA" + "b" * 32)[which]
                    ws = await http.ws_connect(url)
                    writer = TwilioStreamWriter(sid, f"MZ{n:032d}", parameters=params[sid])
                    await ws.send_str(writer.connected())
                    await ws.send_str(writer.start())
                    sockets[slot] = (ws, writer)
                elif op == "audio" and slot in sockets:
                    ws, writer = sockets[slot]
                    for _ in range(5):
                        await ws.send_str(writer.media(bytes([n]) * 160))
                elif op in ("drop", "stop") and slot in sockets:
                    ws, writer = sockets.pop(slot)
                    if op == "stop":
                        await ws.send_str(writer.stop())
                    await ws.close()
                await asyncio.sleep(0.02)
            for ws, _ in sockets.values():
                await ws.close()
            if shutdown:
                await drain_calls(app)

            def started() -> set[str]:
                return {e["call"]["id"] for e in hook.events("call.started")}

            await wait_for(lambda: {e["call"]["id"] for e in hook.events("call.ended")} == started(), timeout=15)
            await asyncio.sleep(0.3)  # nothing more may come
            calls = app[CALLS]
            assert not calls.streams and len(calls.suspended) == 0
            assert app[ADMISSION].active == 0
    ended = [e["call"]["id"] for e in hook.events("call.ended")]
    assert len(ended) == len(set(ended)) == len(started())
    assert all(s.ended or s.stop_received or s.closes for s in gladia.sessions.values())
    assert not loop_errors, loop_errors


@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(ops=OPS, shutdown=st.booleans())
# The interleavings the attack run found, always tried: two live streams of one call both drop
# (then the grace, or a shutdown), and a restart that takes one of two suspended calls.
@example(ops=[("start", 0, 0), ("start", 1, 0), ("audio", 0, 0), ("drop", 0, 0), ("drop", 1, 0)], shutdown=False)
@example(ops=[("start", 0, 0), ("start", 1, 0), ("drop", 0, 0), ("drop", 1, 0)], shutdown=True)
@example(
    ops=[
        ("start", 0, 0),
        ("start", 1, 0),
        ("drop", 0, 0),
        ("drop", 1, 0),
        ("start", 2, 0),
        ("audio", 2, 0),
        ("stop", 2, 0),
    ],
    shutdown=False,
)
@pytest.mark.timeout(240)
def test_every_call_ends_exactly_once_whatever_the_interleaving(
    ops: list[tuple[str, int, int]], shutdown: bool
) -> None:
    """Property: random start/audio/drop/stop sequences over four sockets and two callSids (several
    streams per call, restarts with the right token), then the grace or a shutdown: every call that
    started ends exactly once, no call is left suspended or holding a Gladia slot, and the event
    loop's exception handler is never reached."""
    asyncio.run(_scenario(ops, shutdown))
