"""``bridge demo``: a whole conversation through the bridge on this machine, nothing to configure.

Starts the local Gladia-compatible STT server, the bridge (with its embedded TTS) and a small demo bot
on free loopback ports. A Twilio phone speaks the sample call's sentences one turn at a time in real
time; the bot receives each utterance (signature verified) and answers it with a ``say``; the phone
plays the answer back (marks echoed, clears honoured), and what the caller heard is transcribed by
the local engine and printed beside what the bot said. Once, the caller speaks over a long answer:
the output shows the interruption and what the caller had heard of it. The summary gives the latency
from the end of each utterance's speech to its webhook, and the turn latency (end of the caller's
speech to the bot's first audio at the phone).

``--fast`` plays the sample call in one go faster than real time, without answers (the one-way bridge).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from aiohttp import web
from standardwebhooks.webhooks import Webhook

from bridge.app import create_app, drain_calls
from bridge.local_stt.server import LocalSttServer, ServerOptions
from bridge.loop import serving
from bridge.settings import Settings
from bridge.tools.phone import TwilioPhone
from bridge.tools.player import play_call
from bridge.tools.speech import normalised_words, sample_call, speech_turns, word_error_rate


@dataclass
class DemoResult:
    utterances: list[dict[str, Any]] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    wer: float = 1.0
    turn_latencies: list[float] = field(default_factory=list)  # end of caller speech -> first reply audio
    replies: list[tuple[str, str]] = field(default_factory=list)  # (what the bot said, what the caller heard)
    interrupted: list[dict[str, Any]] = field(default_factory=list)  # playback.interrupted events


# The demo bot's answers, turn by turn; the second is long, and the caller speaks over it.
ANSWERS = [
    "Of course. Your savings balance is one thousand two hundred dollars.",
    "Thank you. I found the account. It has twelve payments this year, the largest to the electricity "
    "company, the smallest to the library. Would you like me to read all of them, one by one?",
    "Your last payment was received on the third of November.",
    "That is right, it was the third of November.",
    "You are welcome. Goodbye!",
]
OVERLAP_TURN = 1  # the caller's next sentence starts this long after the answer to this turn starts playing
OVERLAP_AFTER = 2.5


async def _one_way(out: TextIO, realtime: bool) -> DemoResult:
    ulaw, sentences = sample_call()
    secret = "whsec_" + base64.b64encode(os.urandom(24)).decode()
    verifier = Webhook(secret)
    result = DemoResult()
    ended = asyncio.Event()
    frame_times: list[float] = []

    async def hook(request: web.Request) -> web.Response:
        body = await request.text()
        verifier.verify(body, dict(request.headers))  # raises on a bad signature
        event = json.loads(body)
        result.events.append(event["type"])
        if event["type"] == "utterance.final":
            utt = event["utterance"]
            frame = min(int(utt["end"] / 0.02), len(frame_times) - 1)
            latency = time.monotonic() - frame_times[frame] if frame >= 0 else float("nan")
            result.utterances.append(utt)
            result.latencies.append(latency)
            out.write(
                f"  bot heard [{utt['start']:6.2f}s-{utt['end']:6.2f}s] {utt['text']!r}"
                f"   (+{latency * 1000:.0f} ms after end of speech)\n"
            )
            out.flush()
        elif event["type"] == "call.ended":
            result.summary = event["summary"]
            ended.set()
        return web.Response(status=204)

    async with _on_loopback(hook, secret, out) as (bridge_app, stream, _):
        out.write(f"playing the sample call ({len(ulaw) / 8000:.1f} s, {len(sentences)} sentences) into {stream}\n")
        report = await play_call(stream, ulaw, realtime=realtime, on_frame=lambda i, t: frame_times.append(t))
        await asyncio.wait_for(ended.wait(), timeout=60)
        await drain_calls(bridge_app)
    heard = " ".join(u["text"] for u in result.utterances)
    result.wer = word_error_rate(normalised_words(" ".join(sentences)), normalised_words(heard))
    lat = sorted(result.latencies)
    out.write("\nsummary\n")
    out.write(
        f"  call closed with code {report.close_code}; {len(result.utterances)} utterances delivered "
        f"({len(sentences)} sentences spoken); word error rate {result.wer:.0%}\n"
    )
    if lat:
        out.write(
            f"  end of speech -> webhook: median {lat[len(lat) // 2] * 1000:.0f} ms, max {lat[-1] * 1000:.0f} ms\n"
        )
    out.write(f"  events: {', '.join(result.events)}\n")
    return result


async def run_demo(out: TextIO = sys.stdout, realtime: bool = True) -> DemoResult:
    if not realtime:
        return await _one_way(out, realtime)
    return await _conversation(out)


async def _conversation(out: TextIO) -> DemoResult:
    ulaw, sentences = sample_call()
    turns = speech_turns(ulaw)
    secret = "whsec_" + base64.b64encode(os.urandom(24)).decode()
    verifier = Webhook(secret)
    result = DemoResult()
    ended = asyncio.Event()
    ends: dict[str, asyncio.Event] = {}  # reply id -> finished or interrupted
    started_at: dict[str, float] = {}
    phone_ref: list[TwilioPhone] = []
    speech_ends: list[float] = []  # phone time each sentence's speech ended

    async def hook(request: web.Request) -> web.Response:
        body = await request.text()
        verifier.verify(body, dict(request.headers))  # raises on a bad signature
        event = json.loads(body)
        kind = event["type"]
        result.events.append(kind)
        if kind == "utterance.final":
            utt = event["utterance"]
            n = len(result.utterances)
            result.utterances.append(utt)
            latency = (phone_ref[0].now - speech_ends[n]) if phone_ref and n < len(speech_ends) else float("nan")
            result.latencies.append(latency)
            out.write(
                f"  bot heard [{utt['start']:6.2f}s-{utt['end']:6.2f}s] {utt['text']!r}"
                f"   (+{latency * 1000:.0f} ms after end of speech)\n"
            )
            out.flush()
            reply = ANSWERS[min(n, len(ANSWERS) - 1)]
            ends.setdefault(f"reply-{n}", asyncio.Event())
            return web.json_response(
                {"actions": [{"type": "say", "id": f"reply-{n}", "text": reply, "in_reply_to": utt["id"]}]}
            )
        if kind == "playback.started":
            started_at[event["action_id"]] = phone_ref[0].now if phone_ref else 0.0
        elif kind in ("playback.finished", "playback.interrupted", "action.failed"):
            if kind == "playback.interrupted":
                result.interrupted.append(event)
                out.write(
                    f"  the caller spoke over {event['action_id']}: interrupted after {event['played_ms']} ms,"
                    f" heard {event['heard_text']!r}\n"
                )
            if kind == "action.failed":
                out.write(f"  {event['action_id']} failed: {event['error']}\n")
            ends.setdefault(event["action_id"] or "", asyncio.Event()).set()
        elif kind == "call.ended":
            result.summary = event["summary"]
            ended.set()
        return web.Response(status=204)

    async with _on_loopback(hook, secret, out) as (bridge_app, stream, stt):
        out.write(f"a conversation of {len(turns)} turns (the sample call's sentences) on {stream}\n")
        async with TwilioPhone.dial(stream) as phone:
            phone_ref.append(phone)
            for n, (audio, speech_end) in enumerate(turns):
                start = phone.now
                await phone.say(audio)
                speech_ends.append(start + speech_end)
                done = ends.setdefault(f"reply-{n}", asyncio.Event())
                if n == OVERLAP_TURN and n + 1 < len(turns):
                    await phone.wait(lambda n=n: f"reply-{n}" in started_at, 15.0)  # type: ignore[misc]
                    await phone.wait(lambda: False, OVERLAP_AFTER)  # listening, then speaking over it
                else:
                    await phone.wait(done.is_set, 20.0)
                    await phone.wait(lambda: False, 0.4)
        report_close = phone.ws.close_code  # the phone hung up (stop); the bridge closed the stream
        await asyncio.wait_for(ended.wait(), timeout=60)
        await drain_calls(bridge_app)
        replies = _bursts(phone)
        for n, heard_audio in enumerate(replies[: len(ANSWERS)]):
            heard = await asyncio.to_thread(_transcribe, stt, heard_audio)
            result.replies.append((ANSWERS[n], heard))
        for n, (start, _) in enumerate(_burst_starts(phone)[: len(speech_ends)]):
            result.turn_latencies.append(start - speech_ends[n])
    out.write("\nwhat the bot said / what the caller heard (transcribed from the phone by the local engine)\n")
    for said, heard in result.replies:
        out.write(f"  bot said:     {said}\n  caller heard: {heard}\n")
    heard_all = " ".join(u["text"] for u in result.utterances)
    result.wer = word_error_rate(normalised_words(" ".join(sentences)), normalised_words(heard_all))
    out.write("\nsummary\n")
    out.write(
        f"  call closed with code {report_close}; {len(result.utterances)} utterances delivered "
        f"({len(turns)} sentences spoken); word error rate {result.wer:.0%}; "
        f"{len(result.interrupted)} answer interrupted\n"
    )
    _median_max(out, "end of speech -> webhook", result.latencies)
    _median_max(out, "turn latency (end of caller speech -> first bot audio at the phone)", result.turn_latencies)
    return result


@contextlib.asynccontextmanager
async def _on_loopback(
    hook: Callable[[web.Request], Awaitable[web.StreamResponse]], secret: str, out: TextIO
) -> AsyncIterator[tuple[web.Application, str, LocalSttServer]]:
    """The local STT server, the demo bot (``hook``) and the bridge on free loopback ports; yields the
    bridge's app, its Twilio stream URL and the STT server."""
    hook_app = web.Application()
    hook_app.router.add_post("/hook", hook)
    out.write("starting the local speech-to-text server (Whisper tiny.en, offline)...\n")
    data_dir = tempfile.mkdtemp(prefix="bridge-demo-")  # the demo's outbox, not yours
    stt = LocalSttServer(ServerOptions())
    async with serving(stt.app) as stt_url, serving(hook_app) as hook_url:
        env = {
            "GLADIA_API_URL": stt_url,
            "BOT_WEBHOOK_URL": hook_url + "/hook",
            "BOT_WEBHOOK_SECRET": secret,
            "BRIDGE_DATA_DIR": data_dir,
        }
        bridge_app = create_app(Settings.load(environ=env))
        async with serving(bridge_app) as bridge_url:
            out.write(f"bridge on {bridge_url}, STT on {stt_url}, demo bot on {hook_url}/hook\n")
            yield bridge_app, bridge_url.replace("http://", "ws://") + "/twilio/stream", stt


def _median_max(out: TextIO, label: str, values: list[float]) -> None:
    ordered = sorted(v for v in values if v == v)  # NaN-free
    if ordered:
        out.write(f"  {label}: median {ordered[len(ordered) // 2] * 1000:.0f} ms, max {ordered[-1] * 1000:.0f} ms\n")


def _burst_starts(phone: TwilioPhone) -> list[tuple[float, float]]:
    """(start, end) of each run of reply audio the phone played (an answer each)."""
    runs: list[tuple[float, float]] = []
    for p in phone.ear.played:
        end = p.start + len(p.audio) / 8000
        if runs and p.start - runs[-1][1] < 0.5:
            runs[-1] = (runs[-1][0], end)
        else:
            runs.append((p.start, end))
    return runs


def _bursts(phone: TwilioPhone) -> list[bytes]:
    out: list[bytearray] = []
    last_end = -1.0
    for p in phone.ear.played:
        if not out or p.start - last_end >= 0.5:
            out.append(bytearray())
        out[-1] += p.audio
        last_end = p.start + len(p.audio) / 8000
    return [bytes(b) for b in out]


def _transcribe(stt: LocalSttServer, ulaw: bytes) -> str:
    import numpy as np

    from bridge.audio import resample, samples_to_float

    if stt.recognizer is None or not ulaw:
        return ""
    audio = resample(samples_to_float(ulaw, "ulaw"), 8000, 16000).astype(np.float32)
    return str(stt.recognizer.transcribe(audio).text).strip()
