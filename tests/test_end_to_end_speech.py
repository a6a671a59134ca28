"""Real speech end to end: espeak-ng sentences on the 8 kHz mu-law telephone path, played as a Twilio
call into `bridge serve` running the embedded local STT server, transcripts checked at the webhook."""

from __future__ import annotations

import signal

import pytest

from bridge.tools.player import play_call
from tests.support.bridge_process import run_bridge, start_bridge
from tests.support.calls import wait_for
from tests.support.fakes import FakeWebhook
from tests.support.process import minimal_env
from tests.support.speech import SENTENCES, SPANS, ULAW, wer, words

pytestmark = pytest.mark.recognition


@pytest.mark.timeout(120)
async def test_speech_through_bridge_serve_with_the_embedded_stt(webhook: tuple[FakeWebhook, str]) -> None:
    """With no Gladia key or URL, `bridge serve` runs the local STT server in-process; a spoken call
    reaches the bot as one final per sentence, in order, each on its sentence's time in the call, with
    words and language. (Which words come back depends on the CPU: test_recognition_quality.py.)"""
    hook, hook_url = webhook
    proc = await start_bridge(minimal_env(BOT_WEBHOOK_URL=hook_url), log_format=None, startup=30.0, healthy_only=True)
    port = proc.port
    try:
        report = await play_call(f"ws://127.0.0.1:{port}/twilio/stream", ULAW, realtime=False)
        assert report.close_code == 1000
        await wait_for(lambda: bool(hook.events("call.ended")), timeout=60)
    finally:
        proc.send_signal(signal.SIGTERM)
        await proc.wait(30)
    assert "bridge.embedded_stt" in proc.text
    finals = hook.events("utterance.final")
    texts = [f["utterance"]["text"] for f in finals]
    print("\n".join(texts))
    print(f"word error rate (reported, not asserted here): {wer(' '.join(SENTENCES), ' '.join(texts)):.1%}")
    assert len(finals) == len(SENTENCES)
    for final, (start, end) in zip(finals, SPANS, strict=True):
        utt = final["utterance"]
        assert words(utt["text"]) and utt["words"] and utt["language"] == "en"
        assert start - 0.35 <= utt["start"] < utt["end"] <= end + 0.35, (utt["start"], utt["end"], start, end)
    assert [f["sequence"] for f in finals] == sorted(f["sequence"] for f in finals)
    assert hook.events("call.ended")[0]["summary"]["utterances"] == len(SENTENCES)


@pytest.mark.timeout(120)
async def test_the_demo_command_prints_the_utterances() -> None:
    """`bridge demo` (the README's run command) is a conversation: each sentence of the sample call is
    a turn, the bot's spoken answer reaches the phone and is transcribed back, one answer is
    interrupted by the caller, and the summary has both latencies."""
    proc = await run_bridge("demo", env=minimal_env(), timeout=100, stderr_to_out=True)
    text = proc.out.decode()
    print(text)
    assert proc.returncode == 0
    assert text.count("bot heard") == len(SENTENCES)
    assert "end of speech -> webhook: median" in text
    assert "call closed with code 1000" in text
    assert text.count("caller heard:") == len(SENTENCES)
    heard = [line.split("caller heard:", 1)[1].strip() for line in text.splitlines() if "caller heard:" in line]
    assert all(heard), heard  # every answer reached the phone and was heard as words
    assert "the caller spoke over reply-1: interrupted" in text and "1 answer interrupted" in text
    assert "turn latency (end of caller speech -> first bot audio at the phone): median" in text
