"""Faults injected on purpose, each asserting what was lost: nothing.

Gladia dropping the socket all call long, refusing the handshake, closing with 1009, refusing
session creation for 20 s; the bot failing, stalling and timing out for a minute; SIGTERM with 20
calls running. (SIGKILL mid-call with events pending: tests/test_outbox.py.)
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from typing import Any

import pytest

from bridge.clock import Clock
from tests.support.bridge_process import start_bridge
from tests.support.calls import BridgeFactory, caller_audio, play_call, wait_for
from tests.support.fakes import FakeGladia, FakeWebhook, VirtualClock, expected_texts
from tests.support.process import minimal_env


def url(server: Any) -> str:
    return str(server.make_url("/twilio/stream"))


def delivered_once_in_order(hook: FakeWebhook) -> list[Any]:
    """Every event reached the bot (2xx) once per webhook-id, and per call in sequence order."""
    ok = Counter(r.headers["webhook-id"] for r in hook.requests if r.status < 300)
    events = hook.events()
    assert len(ok) == len(events)
    by_call: dict[str, list[int]] = {}
    for e in events:
        by_call.setdefault(e["call"]["id"], []).append(e["sequence"])
    for seqs in by_call.values():
        assert seqs == list(range(1, len(seqs) + 1))
    return events


@pytest.mark.timeout(60)
async def test_gladia_drops_every_two_seconds_for_a_whole_call(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    """A 30 s call whose Gladia socket is dropped every 2 s of audio (abrupt, 1011, 1006-style,
    4500, 1001): Gladia ends with exactly the caller's audio and the bot with every final once."""
    hook, _ = webhook
    codes = [None, 1011, 4500, 1012, None, 1013]
    fake_gladia.drops = [(16_000 * k + 37 * k, codes[k % len(codes)]) for k in range(1, 15)]
    fake_gladia.ack_every = 3
    audio = caller_audio(30.0, seed=11)
    server = await make_bridge()
    assert await play_call(url(server), audio, pace=0.0003) == 1000
    await wait_for(lambda: bool(hook.events("call.ended")), timeout=30)
    (session,) = fake_gladia.sessions.values()
    assert session.connections == 15
    assert bytes(session.audio) == audio
    assert [e["utterance"]["text"] for e in hook.events("utterance.final")] == expected_texts(audio, 8000)
    delivered_once_in_order(hook)
    summary = hook.events("call.ended")[0]["summary"]
    assert summary["stt_lost_bytes"] == 0 and summary["stt_overflow_bytes"] == 0


@pytest.mark.timeout(60)
async def test_a_two_party_call_resumes_through_drops_without_a_byte_lost_or_repeated(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    """Both parties as two channels, the Gladia socket dropped every ~2 s at odd byte offsets (inside a
    frame of the interleaved stream): Gladia ends with exactly the two tracks interleaved, sample by
    sample, nothing lost or sent twice, in one session."""
    from bridge.tools.player import play_call as play_two_tracks

    hook, _ = webhook
    codes = [None, 1011, 4500, 1012, None, 1013]
    fake_gladia.drops = [(32_000 * k + 37 * k, codes[k % len(codes)]) for k in range(1, 10)]
    fake_gladia.ack_every = 3
    caller, other = caller_audio(20.0, seed=21), caller_audio(20.0, seed=22)
    server = await make_bridge()
    report = await play_two_tracks(url(server), caller, outbound=other, realtime=False)
    assert report.close_code == 1000
    await wait_for(lambda: bool(hook.events("transcript.completed")), timeout=30)
    (session,) = fake_gladia.sessions.values()
    assert session.body["channels"] == 2 and session.connections == 10
    expected = bytearray(2 * len(caller))
    expected[0::2], expected[1::2] = caller, other
    assert bytes(session.audio) == bytes(expected)
    delivered_once_in_order(hook)
    summary = hook.events("call.ended")[0]["summary"]
    assert summary["stt_lost_bytes"] == 0 and summary["stt_overflow_bytes"] == 0 and summary["stt_sessions"] == 1


async def test_handshake_refused_with_403_mid_call(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    """Mid-call the session URL is refused (403): a new session takes the rest; no audio is lost."""
    hook, _ = webhook
    fake_gladia.drops = [(20_000, None)]
    fake_gladia.handshake_failures = [403]
    audio = caller_audio(5.0)
    server = await make_bridge()
    await play_call(url(server), audio, pace=0.0005)
    await wait_for(lambda: bool(hook.events("call.ended")))
    assert fake_gladia.all_audio() == audio
    assert len(fake_gladia.sessions) == 2 and len(hook.events("stt.session_replaced")) == 1
    delivered_once_in_order(hook)


async def test_close_1009_is_resumed(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    """Gladia closing with 1009 (message too big) is a drop like any other: resumed, nothing lost."""
    hook, _ = webhook
    fake_gladia.drops = [(9_000, 1009), (21_000, 1009)]
    fake_gladia.ack_every = 4
    audio = caller_audio(4.0)
    server = await make_bridge()
    await play_call(url(server), audio, pace=0.0005)
    await wait_for(lambda: bool(hook.events("call.ended")))
    (session,) = fake_gladia.sessions.values()
    assert bytes(session.audio) == audio and session.connections == 3
    assert [e["utterance"]["text"] for e in hook.events("utterance.final")] == expected_texts(audio, 8000)


@pytest.mark.timeout(90)
async def test_gladia_session_creation_down_for_20_seconds(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    """POST /v2/live fails (503/502/429/500) for 20 s from the start of a real-time call: the audio is
    buffered, creation retried with backoff, and once Gladia is back every byte and final arrives."""
    hook, _ = webhook
    fake_gladia.init_down_until = time.monotonic() + 20.0
    audio = caller_audio(25.0, seed=5)
    server = await make_bridge(gladia__reconnect_max_delay=1.0)
    await play_call(url(server), audio, pace=0.02)  # a real-time call
    await wait_for(lambda: bool(hook.events("call.ended")), timeout=30)
    assert fake_gladia.init_refused >= 10
    assert fake_gladia.all_audio() == audio
    assert [e["utterance"]["text"] for e in hook.events("utterance.final")] == expected_texts(audio, 8000)
    assert not hook.events("stt.failed")


@pytest.mark.timeout(60)
async def test_bot_failing_stalling_and_timing_out_for_a_minute(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    """For 60 s the bot answers 500, 503 or nothing in time (the bridge times out) while three calls
    run; afterwards it recovers and every event is delivered once per webhook-id, in order. The
    minute passes in virtual time: the bridge's retry sleeps move the clock the bot's outage reads."""
    hook, _ = webhook
    clock = VirtualClock()
    hook.clock = clock.monotonic
    hook.outage_until = clock.monotonic() + 60.0
    hook.outage_stall = 1.0
    server = await make_bridge(
        clock=Clock(time=clock.time, sleep=clock.sleep), webhook__retry_max_delay=1.0, webhook__timeout=0.3
    )
    audios = [caller_audio(3.0, seed=20 + i) for i in range(3)]
    await asyncio.gather(*(play_call(url(server), a, call_sid=f"CA{i:032d}") for i, a in enumerate(audios)))
    await wait_for(lambda: len(hook.events("call.ended")) == 3, timeout=50)
    assert any(r.status >= 500 for r in hook.requests)
    assert clock.slept >= 40.0  # most of the minute passed in retry sleeps, not in real time
    events = delivered_once_in_order(hook)
    for i, audio in enumerate(audios):
        texts = [
            e["utterance"]["text"]
            for e in events
            if e["type"] == "utterance.final" and e["call"]["call_sid"] == f"CA{i:032d}"
        ]
        assert texts == expected_texts(audio, 8000)


@pytest.mark.timeout(120)
async def test_sigterm_with_20_calls_running(fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]) -> None:
    """SIGTERM while 20 real-time calls stream: the calls run to their end, every final is delivered,
    the process exits 0."""
    hook, hook_url = webhook
    proc = await start_bridge(
        minimal_env(GLADIA_API_URL=fake_gladia.base_url, GLADIA_API_KEY="test-key", BOT_WEBHOOK_URL=hook_url),
        log_format=None,
        startup=10.0,
    )
    port = proc.port
    audios = [caller_audio(4.0, seed=100 + i) for i in range(20)]
    calls = [
        asyncio.create_task(play_call(f"ws://127.0.0.1:{port}/twilio/stream", a, call_sid=f"CA{i:032d}", pace=0.02))
        for i, a in enumerate(audios)
    ]
    await wait_for(
        lambda: len(fake_gladia.sessions) == 20 and all(s.received_bytes > 8000 for s in fake_gladia.sessions.values()),
        timeout=20,
    )
    proc.send_signal(signal.SIGTERM)
    codes = await asyncio.gather(*calls)
    assert codes == [1000] * 20
    assert await proc.wait(60) == 0
    assert len(hook.events("call.ended")) == 20
    sessions = {s.body["custom_metadata"]["call_sid"]: bytes(s.audio) for s in fake_gladia.sessions.values()}
    events = delivered_once_in_order(hook)
    for i, audio in enumerate(audios):
        assert sessions[f"CA{i:032d}"] == audio
        texts = [
            e["utterance"]["text"]
            for e in events
            if e["type"] == "utterance.final" and e["call"]["call_sid"] == f"CA{i:032d}"
        ]
        assert texts == expected_texts(audio, 8000)
