"""Benchmark of the reply loop (not a test): prints one JSON line per figure.

    .venv/bin/python benchmarks/bench_reply.py [--turns 40] [--barge-ins 8]

* ``tts_first_audio_ms``: the embedded Piper voice, time to the audio of one 10-word sentence
  (each sentence new to the cache), median and p90.
* ``bridge_share_ms``: the bridge's own part of a turn, TTS excluded: from the moment Gladia (a fake
  on loopback) sends a final to the moment the phone receives the first audio of the bot's answer
  (a ``play`` of an inline WAV, answered by a loopback bot): the webhook round trip, WAV decoding,
  the playout, the carrier message. Several calls at once; median, p99, max.
* ``barge_in_ms``: with the local STT server (Whisper tiny.en + Silero VAD) and the embedded TTS, the
  caller starts speaking over a long answer; the time from the start of the caller's speech (as sent)
  to the phone receiving the ``clear``. Median and max.

* ``echo``: a speakerphone: the phone's microphone hears its own loudspeaker (the bot's answer, 100 ms
  late, at -20, -12 and -6 dB) and nothing else. With the local STT, how often the bot's answer was
  paused or interrupted by its own voice: with the echo guard as configured (300 ms after playback
  starts, and words that are the words being played), and with the time guard off.

The CPU cost of replies at scale is `bridge loadtest --calls 200 --reply` next to the same run
without `--reply` (the ratio, side by side on one machine).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bridge.app import create_app
from bridge.log import configure_logging
from bridge.loop import serving
from bridge.reply.tts import PiperSpeech
from bridge.settings import Settings
from bridge.tools.load_standin import reply_wav
from bridge.tools.phone import TwilioPhone
from bridge.tools.speech import sample_call, speech_turns
from tests.support.bridge_process import start_bridge
from tests.support.fakes import FakeGladia, FakeWebhook
from tests.support.process import minimal_env

SENTENCES = [
    "Your current balance is one thousand two hundred and five dollars.",
    "The next payment of forty dollars is due on the third of May.",
    "Please hold the line while I look up your last four transfers.",
    "I can also send the statement to the email address on file.",
    "Your card ending in four five six was blocked this morning today.",
    "The branch on Main Street opens at nine and closes at five.",
    "Would you like me to connect you with an advisor right now?",
    "Your savings account earned twelve dollars in interest last month.",
    "The transfer to your brother will arrive within two working days.",
    "I have cancelled the standing order to the electricity company for you.",
]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def tts_first_audio() -> dict[str, Any]:
    engine = PiperSpeech()
    await engine.synthesize("Warming up the voice.", None)  # the model loads once
    times = []
    for sentence in SENTENCES:
        t = time.perf_counter()
        await engine.synthesize(sentence, None)
        times.append((time.perf_counter() - t) * 1000)
    await engine.aclose()
    return {
        "figure": "tts_first_audio_ms",
        "engine": engine.name,
        "words": 10,
        "sentences": len(times),
        "median": round(statistics.median(times), 1),
        "p90": round(pct(times, 0.9), 1),
    }


async def bridge_share(turns: int, calls: int = 8) -> dict[str, Any]:
    gladia, hook = FakeGladia(segment_seconds=1.5), FakeWebhook()
    wav = reply_wav(0.5)
    sent_at: dict[tuple[str, str], float] = {}  # (call sid, utterance id) -> when the final left Gladia
    hook.answer = lambda e: (
        {"actions": [{"type": "play", "id": f"r{e['utterance']['id']}", "audio": wav, "interrupt": "none"}]}
        if e["type"] == "utterance.final"
        else None
    )
    original = gladia._send_final

    async def timed_final(ws: Any, session: Any, k: int, segment: bytes) -> dict[str, Any]:
        sent_at[(session.body["custom_metadata"]["call_sid"], f"00_{k:08d}")] = time.monotonic()
        return await original(ws, session, k, segment)

    gladia._send_final = timed_final  # type: ignore[method-assign]
    shares: list[float] = []
    async with serving(gladia.app) as gladia_url, serving(hook.app) as hook_url:
        gladia.base_url = gladia_url
        # the bridge in its own process (bridge serve), as in production: its loop is its own
        env = minimal_env(GLADIA_API_URL=gladia_url, GLADIA_API_KEY="test-key", BOT_WEBHOOK_URL=hook_url + "/hook")
        bridge = await start_bridge(env)
        try:
            url = bridge.ws + "/twilio/stream"
            seconds = turns / calls * 1.5 + 1.0

            async def one(n: int) -> None:
                sid = f"CA{n:032d}"
                async with TwilioPhone.dial(url, call_sid=sid, stream_sid=f"MZ{n:032d}") as phone:
                    await phone.wait(lambda: phone.now > seconds, seconds + 5)
                    media = [t for t, m in phone.received if '"media"' in m[:40]]
                    for f in sorted(t for (s, _), t in sent_at.items() if s == sid):
                        first = next((t for t in media if phone.t0 + t >= f), None)
                        if first is not None:
                            shares.append((phone.t0 + first - f) * 1000)

            await asyncio.gather(*(one(n) for n in range(calls)))
        finally:
            await bridge.stop()
    return {
        "figure": "bridge_share_ms",
        "bridge": "bridge serve, its own process",
        "turns": len(shares),
        "calls_at_once": calls,
        "median": round(statistics.median(shares), 2),
        "p99": round(pct(shares, 0.99), 2),
        "max": round(max(shares), 2),
    }


async def barge_in(trials: int) -> dict[str, Any]:
    from bridge.local_stt.server import LocalSttServer, ServerOptions

    ulaw, _ = sample_call()
    turns = speech_turns(ulaw)
    long_answer = " ".join(SENTENCES[:4])
    latencies: list[float] = []
    hook = FakeWebhook()
    hook.answer = lambda e: {"actions": [{"type": "say", "text": long_answer}]} if e["type"] == "call.started" else None
    stt = LocalSttServer(ServerOptions())
    async with serving(stt.app) as stt_url, serving(hook.app) as hook_url:
        settings = Settings.load(
            environ={
                "GLADIA_API_URL": stt_url,
                "BOT_WEBHOOK_URL": hook_url + "/hook",
                "BRIDGE_DATA_DIR": tempfile.mkdtemp(prefix="bench-barge-"),
            }
        )
        async with serving(create_app(settings)) as bridge_url:
            url = bridge_url.replace("http://", "ws://") + "/twilio/stream"
            for n in range(trials):
                audio, _ = turns[n % len(turns)]
                lead_in = 0.2  # the piece starts 200 ms before its speech (speech_turns keeps 10 frames)
                async with TwilioPhone.dial(url, call_sid=f"CA{n:032d}", stream_sid=f"MZ{n:032d}") as phone:
                    await phone.wait(lambda: bool(phone.ear.played) and phone.now > phone.ear.played[0].start + 2.0, 20)
                    speech_start = phone.now + lead_in
                    await phone.say(audio)
                    await phone.wait(lambda: bool(phone.ear.clears), 5)
                    if phone.ear.clears:
                        latencies.append((phone.ear.clears[0] - speech_start) * 1000)
    return {
        "figure": "barge_in_ms",
        "trials": len(latencies),
        "engine": "faster-whisper tiny.en + silero",
        "median": round(statistics.median(latencies), 1) if latencies else None,
        "max": round(max(latencies), 1) if latencies else None,
    }


async def echo(gains_db: tuple[float, ...] = (-20.0, -12.0, -6.0)) -> list[dict[str, Any]]:
    from bridge.local_stt.server import LocalSttServer, ServerOptions

    results = []
    stt = LocalSttServer(ServerOptions())
    async with serving(stt.app) as stt_url:
        for guard_ms in (300, 0):
            for gain_db in gains_db:
                results.append(await _echo_trial(stt_url, guard_ms, gain_db))
    return results


async def _echo_trial(stt_url: str, guard_ms: int, gain_db: float) -> dict[str, Any]:
    """One call: the bot says three sentences; the phone sends back only its loudspeaker's echo."""
    hook = FakeWebhook()
    answer = " ".join(SENTENCES[:3])
    hook.answer = lambda e: (
        {"actions": [{"type": "say", "id": "answer", "text": answer}]} if e["type"] == "call.started" else None
    )

    def over() -> list[Any]:
        return hook.events("playback.finished") + hook.events("playback.interrupted")

    async with serving(hook.app) as hook_url:
        env = {
            "GLADIA_API_URL": stt_url,
            "BOT_WEBHOOK_URL": hook_url + "/hook",
            "BRIDGE_DATA_DIR": tempfile.mkdtemp(prefix="bench-echo-"),
        }
        settings = Settings.load(environ=env, overrides={"reply.echo_guard_ms": guard_ms})
        async with serving(create_app(settings)) as bridge_url:
            url = bridge_url.replace("http://", "ws://") + "/twilio/stream"
            async with TwilioPhone.dial(url) as phone:
                await phone.wait(lambda: bool(over()), 40, echo=(10 ** (gain_db / 20), 0.1))
                clears = len(phone.ear.clears)
        await asyncio.sleep(0.5)
    ended = over()
    return {
        "figure": "echo",
        "echo_db": gain_db,
        "echo_guard_ms": guard_ms,
        "paused": clears,
        "interrupted": bool(hook.events("playback.interrupted")),
        "played_ms": ended[0]["played_ms"] if ended else None,
    }


async def main(turns: int, barge_ins: int) -> None:
    configure_logging("warning", "json")
    for figure in (tts_first_audio(), bridge_share(turns), barge_in(barge_ins)):
        print(json.dumps(await figure), flush=True)
    for line in await echo():
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=40)
    parser.add_argument("--barge-ins", type=int, default=8)
    args = parser.parse_args()
    asyncio.run(main(args.turns, args.barge_ins))
