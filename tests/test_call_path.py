"""End to end through the bridge: Twilio stream -> fake Gladia (with drops) -> signed webhook."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest
from standardwebhooks.webhooks import Webhook

from bridge.tools.writers.twilio import TwilioStreamWriter
from tests.support.calls import WEBHOOK_SECRET, BridgeFactory, caller_audio, play_call, wait_for
from tests.support.fakes import FakeGladia, FakeWebhook, expected_texts


def stream_url(server: Any) -> str:
    return str(server.make_url("/twilio/stream"))


async def test_clean_call_delivers_every_final_signed_and_in_order(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    """A call with no faults: Gladia gets the caller's exact bytes, the bot every final once, signed."""
    hook, _ = webhook
    audio = caller_audio(3.5)
    server = await make_bridge()
    code = await play_call(stream_url(server), audio)
    assert code == 1000
    await wait_for(lambda: bool(hook.events("call.ended")))

    assert fake_gladia.all_audio() == audio
    (session,) = fake_gladia.sessions.values()
    assert session.body["encoding"] == "wav/ulaw" and session.body["sample_rate"] == 8000
    assert session.body["bit_depth"] == 8
    assert session.body["custom_metadata"]["call_sid"] == "CA" + "1" * 32
    assert session.body["messages_config"]["receive_acknowledgments"] is True
    assert session.stop_received == 1

    texts = [e["utterance"]["text"] for e in hook.events("utterance.final")]
    assert texts == expected_texts(audio, 8000)
    events = hook.events()
    assert [e["type"] for e in events] == ["call.started"] + ["utterance.final"] * 4 + [
        "call.ended",
        "transcript.completed",
    ]
    # the whole conversation after call.ended: every final, in order, with its speaker
    (record,) = hook.events("transcript.completed")
    assert [u["text"] for u in record["utterances"]] == texts and not record["truncated"]
    assert {u["speaker"] for u in record["utterances"]} == {"caller"} and record["speakers"] == ["caller"]
    assert [e["sequence"] for e in events] == list(range(1, len(events) + 1))
    final = events[1]
    assert final["call"]["provider"] == "twilio"
    assert final["call"]["from"] == "+15550001" and final["call"]["to"] == "+15550002"
    assert final["call"]["stream_sid"] == "MZ" + "1" * 32
    assert final["stt_session_id"] == session.id
    assert final["utterance"]["start"] == 0.0 and final["utterance"]["end"] == 1.0
    assert final["utterance"]["language"] == "en"
    verifier = Webhook(WEBHOOK_SECRET)
    for request in hook.requests:
        verifier.verify(request.body.decode(), request.headers)  # raises if the signature is wrong
    summary = hook.events("call.ended")[0]["summary"]
    assert summary["end_reason"] == "stop" and summary["utterances"] == 4
    assert summary["stt_reconnects"] == 0 and summary["phone_bytes"] == len(audio)


@pytest.mark.parametrize("ack_every", [1, 7])
@pytest.mark.parametrize("inclusive", [False, True])
async def test_drops_mid_utterance_lose_and_duplicate_nothing(
    make_bridge: BridgeFactory,
    fake_gladia: FakeGladia,
    webhook: tuple[FakeWebhook, str],
    ack_every: int,
    inclusive: bool,
) -> None:
    """Several drops (abrupt, 1011, 4500, 1006-style) mid-utterance: Gladia ends with exactly the
    caller's audio, and every final reaches the bot once, in order."""
    hook, _ = webhook
    fake_gladia.ack_every = ack_every
    fake_gladia.inclusive_ranges = inclusive
    fake_gladia.repeat_finals_on_resume = True
    fake_gladia.drops = [(3_050, 1011), (9_990, None), (17_777, 4500), (25_001, None), (33_333, 1012)]
    audio = caller_audio(5.3)
    server = await make_bridge()
    await play_call(stream_url(server), audio, pace=0.0005)
    await wait_for(lambda: bool(hook.events("call.ended")))

    (session,) = fake_gladia.sessions.values()
    assert session.connections == 6
    assert bytes(session.audio) == audio
    texts = [e["utterance"]["text"] for e in hook.events("utterance.final")]
    assert texts == expected_texts(audio, 8000)
    summary = hook.events("call.ended")[0]["summary"]
    assert summary["stt_reconnects"] == 5
    assert summary["stt_sessions"] == 1
    if ack_every > 1:
        assert summary["stt_resent_bytes"] > 0
    assert summary["stt_lost_bytes"] == 0


async def test_session_lost_opens_a_new_session_and_tells_the_bot(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    """A drop after which the handshake is refused with 403: a new session carries on the call."""
    hook, _ = webhook
    fake_gladia.drops = [(12_000, 1011)]
    fake_gladia.lose_session_after_drops = True
    audio = caller_audio(3.0)
    server = await make_bridge()
    await play_call(stream_url(server), audio, pace=0.0005)
    await wait_for(lambda: bool(hook.events("call.ended")))

    first, second = fake_gladia.sessions.values()
    # The new session starts where the lost one's acknowledged audio ended.
    assert bytes(first.audio) + bytes(second.audio) == audio
    replaced = hook.events("stt.session_replaced")
    assert len(replaced) == 1
    assert replaced[0]["old_stt_session_id"] == first.id and replaced[0]["stt_session_id"] == second.id
    assert "403" in replaced[0]["reason"]
    finals = hook.events("utterance.final")
    assert [f["stt_session_id"] for f in finals][-1] == second.id
    # Times are call times: the second session's first final starts where the first one's audio ended.
    starts = [f["utterance"]["start"] for f in finals]
    assert starts == sorted(starts)
    assert finals[-1]["utterance"]["end"] == pytest.approx(len(audio) / 8000)


async def test_close_4400_range_is_a_lost_session(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    """Gladia closing with a 44xx code ends that session; the call continues on a new one."""
    hook, _ = webhook
    fake_gladia.drops = [(8_000, 4408)]
    audio = caller_audio(2.0)
    server = await make_bridge()
    await play_call(stream_url(server), audio, pace=0.0005)
    await wait_for(lambda: bool(hook.events("call.ended")))
    assert len(fake_gladia.sessions) == 2
    assert fake_gladia.all_audio() == audio
    assert len(hook.events("stt.session_replaced")) == 1


async def test_init_refusals_are_retried_while_audio_is_buffered(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    """POST /v2/live answering 429 then 503 then 500: retried with backoff, no audio lost."""
    hook, _ = webhook
    fake_gladia.init_failures = [429, 503, 500]
    audio = caller_audio(1.5)
    server = await make_bridge()
    await play_call(stream_url(server), audio)
    await wait_for(lambda: bool(hook.events("call.ended")))
    assert fake_gladia.all_audio() == audio
    assert len(hook.events("utterance.final")) == 2


async def test_init_401_gives_up_and_the_bot_is_told(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    """A wrong API key is not retried: the bot gets stt.failed, the call still ends cleanly."""
    hook, _ = webhook
    server = await make_bridge(environ={"GLADIA_API_KEY": "wrong"})
    code = await play_call(stream_url(server), caller_audio(0.5))
    assert code == 1000
    await wait_for(lambda: bool(hook.events("call.ended")))
    (failed,) = hook.events("stt.failed")
    assert "401" in failed["reason"]
    assert len(fake_gladia.init_headers) == 1
    assert hook.events("call.ended")[0]["summary"]["stt_gave_up"]


async def test_webhook_5xx_and_timeouts_are_retried_with_a_stable_id(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    """The bot failing (500, 503, a timeout) gets every event once per webhook-id, in order."""
    hook, _ = webhook
    hook.fail_statuses = [500, 204, 503, 502]
    hook.delays = [0.0, 0.0, 0.0, 0.0, 2.5]  # the fifth request outlives the 2 s client timeout
    audio = caller_audio(2.0)
    server = await make_bridge()
    await play_call(stream_url(server), audio)
    await wait_for(lambda: bool(hook.events("call.ended")), timeout=20)
    events = hook.events()
    assert [e["sequence"] for e in events] == list(range(1, len(events) + 1))
    assert [e["utterance"]["text"] for e in hook.events("utterance.final")] == expected_texts(audio, 8000)
    ids = [r.headers["webhook-id"] for r in hook.requests]
    assert len(ids) > len(set(ids))  # retries reused the id
    assert all(i.startswith("msg_") for i in ids)


async def test_webhook_4xx_is_not_retried(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    """A 400 from the bot is final for that event; the following events still go out."""
    hook, _ = webhook
    hook.fail_statuses = [204, 400]
    server = await make_bridge()
    await play_call(stream_url(server), caller_audio(2.0))
    await wait_for(lambda: bool(hook.events("transcript.completed")))
    seqs = [r.json["sequence"] for r in hook.requests]
    assert seqs == list(range(1, len(seqs) + 1))  # sequence 2 was tried once, never again
    assert [r.status for r in hook.requests if r.json["sequence"] == 2] == [400]
    assert [e["type"] for e in hook.events()][-2:] == ["call.ended", "transcript.completed"]


async def test_missed_final_is_read_back_after_the_call(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    """Gladia's socket dies after stop_recording, before the last final: the bridge reads the session
    back with GET /v2/live/{id} and delivers the missing final, in order, before call.ended."""
    hook, _ = webhook
    fake_gladia.crash_after_stop = True
    audio = caller_audio(2.5)
    server = await make_bridge()
    await play_call(stream_url(server), audio)
    await wait_for(lambda: bool(hook.events("transcript.completed")))
    assert len(fake_gladia.sessions) == 1
    assert [e["utterance"]["text"] for e in hook.events("utterance.final")] == expected_texts(audio, 8000)
    assert [e["type"] for e in hook.events()][-2:] == ["call.ended", "transcript.completed"]
    summary = hook.events("call.ended")[0]["summary"]
    assert summary["stt_recovered_finals"] == 1 and not summary["stt_ended_normally"]


async def test_session_cap_queues_calls_instead_of_failing_them(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    """With gladia.max_sessions = 1, a second concurrent call waits for the first call's session to
    end (its audio buffered) and is then transcribed in full."""
    hook, _ = webhook
    server = await make_bridge(gladia__max_sessions=1)
    a, b = caller_audio(2.0, seed=1), caller_audio(2.0, seed=2)
    first = asyncio.create_task(play_call(stream_url(server), a, call_sid="CA" + "a" * 32, pace=0.006))
    await wait_for(lambda: len(fake_gladia.sessions) == 1)
    second = asyncio.create_task(play_call(stream_url(server), b, call_sid="CA" + "b" * 32, pace=0.006))
    await asyncio.sleep(0.3)
    assert len(fake_gladia.sessions) == 1  # the second call is queued, not refused
    await asyncio.gather(first, second)
    await wait_for(lambda: len(hook.events("call.ended")) == 2)
    audio_by_call = {s.body["custom_metadata"]["call_sid"]: bytes(s.audio) for s in fake_gladia.sessions.values()}
    assert audio_by_call == {"CA" + "a" * 32: a, "CA" + "b" * 32: b}
    queued = {e["call"]["call_sid"]: e["summary"]["stt_queued_s"] for e in hook.events("call.ended")}
    assert queued["CA" + "b" * 32] > 0.2 and queued["CA" + "a" * 32] < 0.2


async def test_silence_keeps_the_gladia_session_alive_during_holds(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    """No phone audio for longer than gladia.keepalive_seconds: silence is sent to Gladia meanwhile."""
    hook, _ = webhook
    server = await make_bridge(gladia__keepalive_seconds=0.2)
    writer = TwilioStreamWriter("CA" + "c" * 32, "MZ" + "c" * 32)
    async with aiohttp.ClientSession() as http, http.ws_connect(stream_url(server)) as ws:
        await ws.send_str(writer.connected())
        await ws.send_str(writer.start())
        await ws.send_str(writer.media(b"\x01" * 160))
        await asyncio.sleep(0.7)  # a hold: the carrier sends nothing
        await ws.send_str(writer.stop())
        async for _ in ws:
            pass
    await wait_for(lambda: bool(hook.events("call.ended")))
    (session,) = fake_gladia.sessions.values()
    assert bytes(session.audio[:160]) == b"\x01" * 160
    assert len(session.audio) >= 160 + 2 * 800 and set(session.audio[160:]) == {0xFF}  # mu-law silence
    assert hook.events("call.ended")[0]["summary"]["stt_keepalive_bytes"] == len(session.audio) - 160


async def test_a_call_that_hangs_up_while_the_session_is_still_refused_tells_the_bot(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    """Gladia answers POST /v2/live with 503 for longer than the call lasts plus gladia.finish_timeout:
    after the hang-up the bridge keeps trying within finish_timeout, then the bot gets stt.failed
    (it used to get a call.ended that said nothing of the lost transcript)."""
    hook, _ = webhook
    fake_gladia.init_down_until = time.monotonic() + 60
    server = await make_bridge(gladia__finish_timeout=1.0)
    assert await play_call(stream_url(server), caller_audio(0.5)) == 1000
    await wait_for(lambda: bool(hook.events("transcript.completed")), timeout=10)  # the last event
    (failed,) = hook.events("stt.failed")
    assert "no Gladia session" in failed["reason"]
    assert [e["type"] for e in hook.events()] == ["call.started", "stt.failed", "call.ended", "transcript.completed"]
    assert hook.events("call.ended")[0]["summary"]["stt_gave_up"]


async def test_a_huge_gladia_message_is_refused_not_forwarded(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    """Attack: the STT side sends a 10 MB transcript. The bridge skips messages over 1 MiB unread (the
    session carries on) instead of turning it into a 10 MB webhook; every real final still reaches the bot."""
    hook, _ = webhook
    fake_gladia.huge_message_bytes = 10 * 1024 * 1024
    fake_gladia.repeat_finals_on_resume = True
    server = await make_bridge()
    audio = caller_audio(3.0)
    assert await play_call(stream_url(server), audio) == 1000
    await wait_for(lambda: bool(hook.events("call.ended")))
    assert max(len(r.body) for r in hook.requests) < 64 * 1024
    assert "x" * 1000 not in str(hook.events())
    assert [e["utterance"]["text"] for e in hook.events("utterance.final")] == expected_texts(audio, 8000)
