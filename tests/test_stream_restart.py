"""Twilio stream restarts: a new stream for the same callSid continues the call's Gladia session."""

from __future__ import annotations

from typing import Any

import aiohttp

from bridge.adapters.twilio import TwilioStreamWriter
from tests.conftest import BridgeFactory, caller_audio, wait_for
from tests.fakes import FakeGladia, FakeWebhook, expected_texts

CALL_SID = "CA" + "8" * 32


async def stream_part(url: str, stream_sid: str, audio: bytes, stop: bool) -> None:
    writer = TwilioStreamWriter(CALL_SID, stream_sid, parameters={"From": "+1", "To": "+2"})
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        await ws.send_str(writer.connected())
        await ws.send_str(writer.start())
        for i in range(0, len(audio), 160):
            await ws.send_str(writer.media(audio[i:i + 160]))
        if stop:
            await ws.send_str(writer.stop())
            async for _ in ws:
                pass
        # without stop: the socket just goes away, as when Twilio's stream drops


async def test_a_new_stream_for_the_same_call_attaches_to_its_gladia_session(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    """Stream 1 drops without stop; stream 2 (same callSid, new streamSid) continues the same call:
    one Gladia session holding both parts' audio, one event sequence, call.stream_restarted."""
    hook, _ = webhook
    server: Any = await make_bridge()
    url = str(server.make_url("/twilio/stream"))
    audio = caller_audio(3.0)
    await stream_part(url, "MZ" + "1" * 32, audio[:12000], stop=False)
    await wait_for(lambda: any(len(s.audio) == 12000 for s in fake_gladia.sessions.values()))
    await stream_part(url, "MZ" + "2" * 32, audio[12000:], stop=True)
    await wait_for(lambda: bool(hook.events("call.ended")))

    (session,) = fake_gladia.sessions.values()
    assert bytes(session.audio) == audio
    events = hook.events()
    assert [e["type"] for e in events] == (["call.started", "utterance.final", "call.stream_restarted"]
                                           + ["utterance.final"] * 2 + ["call.ended"])
    assert [e["sequence"] for e in events] == list(range(1, len(events) + 1))
    assert len({e["call"]["id"] for e in events}) == 1
    assert events[2]["call"]["stream_sid"] == "MZ" + "2" * 32 and events[2]["streams"] == 2
    assert [e["utterance"]["text"] for e in hook.events("utterance.final")] == expected_texts(audio, 8000)
    summary = events[-1]["summary"]
    assert summary["phone_streams"] == 2 and summary["phone_bytes"] == len(audio)
    assert summary["stt_sessions"] == 1 and summary["end_reason"] == "stop"


async def test_a_dropped_stream_with_no_restart_ends_after_the_grace_period(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    """No new stream within server.stream_restart_grace: the call ends (stream_lost), its finals delivered."""
    hook, _ = webhook
    server: Any = await make_bridge(server__stream_restart_grace=0.3)
    audio = caller_audio(2.0)
    await stream_part(str(server.make_url("/twilio/stream")), "MZ" + "3" * 32, audio, stop=False)
    await wait_for(lambda: bool(hook.events("call.ended")))
    assert hook.events("call.ended")[0]["summary"]["end_reason"] == "stream_lost"
    assert fake_gladia.all_audio() == audio
    assert [e["utterance"]["text"] for e in hook.events("utterance.final")] == expected_texts(audio, 8000)
