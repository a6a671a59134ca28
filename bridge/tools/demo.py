"""``bridge demo``: a whole conversation through the bridge on this machine, nothing to configure.

Starts the local Gladia-compatible STT server, the bridge (with its embedded TTS) and a small demo bot
on free loopback ports. A Twilio phone speaks the sample call's sentences one turn at a time in real
time; the bot receives each utterance (signature verified) and answers it with a ``say``; the phone
plays the answer back (marks echoed, clears honoured), and what the caller heard is transcribed by
the local engine and printed beside what the bot said. Once, the caller speaks over a long answer:
the output shows the interruption and what the caller had heard of it. The summary gives the latency
from the end of each utterance's speech to its webhook, and the turn latency (end of the caller's
speech to the bot's first audio at the phone).

An IVR's two moves are in it too. After its first answer the bot asks for a 4-digit account number
(``gather``, with a spoken prompt); the phone presses four keys once it has heard the prompt, and the
demo prints what the bot got (``dtmf.gathered``). The bot's last answer ends with a ``transfer`` to an
agent (with a briefing for the person who answers) instead of a goodbye: the call starts the way Twilio
starts one (``/twilio/voice``, whose ``<Connect action>`` brings Twilio back once the stream closes), so
when the bridge hands the caller over the phone follows like Twilio would (:mod:`bridge.tools.follow`):
it asks ``/twilio/after-stream``, prints the ``<Dial>`` it got, and reports the person answering.

``--fast`` plays the sample call in one go faster than real time, without answers (the one-way bridge).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

import aiohttp
from aiohttp import web
from standardwebhooks.webhooks import Webhook

from bridge.app import create_app, drain_calls
from bridge.local_stt.server import LocalSttServer, ServerOptions
from bridge.loop import serving
from bridge.settings import Settings
from bridge.tools.follow import TwilioCall, http_base
from bridge.tools.phone import TwilioPhone
from bridge.tools.player import play_call
from bridge.tools.speech import normalised_words, sample_call, speech_turns, word_error_rate
from bridge.tools.twiml_read import ConnectStream, Dial


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
    gathered: dict[str, Any] | None = None  # the dtmf.gathered event
    dial: Dial | None = None  # the <Dial> the transfer handed to the carrier


# The demo bot's answers, turn by turn; the second is long, and the caller speaks over it.
ANSWERS = [
    "Of course. Your savings balance is one thousand two hundred dollars.",
    "Thank you. I found the account. It has twelve payments this year, the largest to the electricity "
    "company, the smallest to the library. Would you like me to read all of them, one by one?",
    "Your last payment was received on the third of November.",
    "That is right, it was the third of November.",
    "You are welcome. I am putting you through to an agent now.",
]
GATHER_TURN = 0  # after this answer, the bot asks for the account number
ACCOUNT = "4721"  # the keys the caller presses
PROMPT = "Please enter your four digit account number."
GATHER = {
    "type": "gather",
    "id": "account",
    "num_digits": 4,
    "timeout_ms": 10000,
    "prompt": {"type": "say", "text": PROMPT},
}
AGENT = "+15550100"
TRANSFER = {
    "type": "transfer",
    "id": "agent",
    "to": AGENT,
    "announce": "A caller who asked about payments. Account verified.",
}
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
    gathered = asyncio.Event()
    transferring = asyncio.Event()  # transfer.started, or the transfer failed
    handed_over: list[bool] = []  # transfer.started came

    def answer(n: int, utterance_id: str) -> list[dict[str, Any]]:
        reply = ANSWERS[min(n, len(ANSWERS) - 1)]
        ends.setdefault(f"reply-{n}", asyncio.Event())
        actions: list[dict[str, Any]] = [
            {"type": "say", "id": f"reply-{n}", "text": reply, "in_reply_to": utterance_id}
        ]
        if n == GATHER_TURN:
            ends.setdefault("account", asyncio.Event())
            actions.append(GATHER)
        if n == len(turns) - 1:
            actions.append(TRANSFER)  # after the goodbye has played (after: playback)
        return actions

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
            return web.json_response({"actions": answer(n, utt["id"])})
        if kind == "playback.started":
            started_at[event["action_id"]] = phone_ref[0].now if phone_ref else 0.0
        elif kind in ("playback.finished", "playback.interrupted", "action.failed"):
            if kind == "playback.interrupted" and event["action_id"] != GATHER["id"]:
                result.interrupted.append(event)
                out.write(
                    f"  the caller spoke over {event['action_id']}: interrupted after {event['played_ms']} ms,"
                    f" heard {event['heard_text']!r}\n"
                )
            if kind == "action.failed":
                out.write(f"  {event['action_id']} failed: {event['error']}\n")
                if event["action_id"] == GATHER["id"]:
                    gathered.set()
                if event["action_id"] == TRANSFER["id"]:
                    transferring.set()
            ends.setdefault(event["action_id"] or "", asyncio.Event()).set()
        elif kind == "dtmf.gathered":
            result.gathered = event
            digits = event["digits"]  # not sensitive here (a demo account number): printed
            out.write(f"  gathered: {len(digits)} digits, {digits} ({event['reason']})\n")
            gathered.set()
        elif kind == "transfer.started":
            out.write(f"  transfer.started: to {event['to']} by {event['method']}\n")
            handed_over.append(True)
            transferring.set()
        elif kind in ("transfer.completed", "transfer.failed"):
            out.write(f"  {kind}: {event.get('status')}\n")
        elif kind == "call.ended":
            result.summary = event["summary"]
            ended.set()
        return web.Response(status=204)

    async with _on_loopback(hook, secret, out) as (bridge_app, stream, stt), aiohttp.ClientSession() as http:
        out.write(f"a conversation of {len(turns)} turns (the sample call's sentences) on {stream}\n")
        carrier = TwilioCall(http, http_base(stream), b"", io.StringIO())  # Twilio's side, for the TwiML
        connect = await _voice(carrier)
        async with TwilioPhone.dial(connect.url, call_sid=carrier.call_sid, parameters=connect.parameters) as phone:
            phone_ref.append(phone)
            for n, (audio, speech_end) in enumerate(turns):
                start = phone.now
                await phone.say(audio)
                speech_ends.append(start + speech_end)
                done = ends.setdefault(f"reply-{n}", asyncio.Event())
                if n == OVERLAP_TURN and n + 1 < len(turns):
                    await phone.wait(lambda n=n: f"reply-{n}" in started_at, 15.0)  # type: ignore[misc]
                    await phone.wait(lambda: False, OVERLAP_AFTER)  # listening, then speaking over it
                elif n == len(turns) - 1:  # the goodbye, then the bridge hands the call over: it closes the stream
                    await phone.wait(done.is_set, 20.0)
                    await phone.wait(transferring.is_set, 10.0)
                    await phone.wait(lambda: phone.closed, 10.0 if handed_over else 0.4)
                else:
                    await phone.wait(done.is_set, 20.0)
                    if n == GATHER_TURN:
                        await _press_keys(phone, ends.setdefault("account", asyncio.Event()), gathered, out)
                    await phone.wait(lambda: False, 0.4)
        report_close = phone.ws.close_code  # the bridge closed the stream (a transfer), or the phone hung up
        if phone.closed_by_bridge_at is not None and handed_over and connect.action:
            result.dial = await _follow(carrier, connect, out)
        await asyncio.wait_for(ended.wait(), timeout=60)
        await drain_calls(bridge_app)
        replies = _bursts(phone)
        for n, heard_audio in enumerate(replies[: len(ANSWERS)]):
            heard = await asyncio.to_thread(_transcribe, stt, heard_audio)
            result.replies.append((_said(n), heard))
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
    _ivr_summary(out, result)
    _median_max(out, "end of speech -> webhook", result.latencies)
    _median_max(out, "turn latency (end of caller speech -> first bot audio at the phone)", result.turn_latencies)
    return result


def _said(n: int) -> str:
    """What the bot said in the phone's n-th burst of audio: the n-th answer, the gather's prompt right
    after its answer (queued behind it, the two play as one)."""
    return f"{ANSWERS[n]} {PROMPT}" if n == GATHER_TURN else ANSWERS[n]


def _short(twiml: str) -> str:
    """A TwiML document to print: without its declaration, the bridge's signed tokens elided."""
    return re.sub(r"\bt=[\w.-]+", "t=...", twiml.split("?>", 1)[-1])


async def _voice(carrier: TwilioCall) -> ConnectStream:
    """The call's start as Twilio makes it: ``/twilio/voice``, whose ``<Connect action>`` brings Twilio back
    to the bridge once the stream ends (the bridge hands a call over through it)."""
    verbs = await carrier.fetch("POST", f"{carrier.base}/twilio/voice", carrier.fields("ringing"))
    connect = next((v for v in verbs if isinstance(v, ConnectStream)), None)
    if connect is None:
        raise RuntimeError(f"/twilio/voice answered no <Connect><Stream>: {carrier.last_document}")
    return connect


async def _press_keys(phone: TwilioPhone, prompt_done: asyncio.Event, gathered: asyncio.Event, out: TextIO) -> None:
    """Once the prompt has played, the account number on the keypad, one key every 200 ms (a person)."""
    await phone.wait(prompt_done.is_set, 15.0)
    start = phone.now + 0.5
    due = [(start + 0.2 * i, key) for i, key in enumerate(ACCOUNT)]
    out.write(f"  the caller presses {ACCOUNT} on the keypad\n")

    def each(now: float) -> list[str]:
        messages = []
        while due and due[0][0] <= now:
            messages.append(phone.writer.dtmf(due.pop(0)[1]))
        return messages

    await phone.wait(lambda: not due and gathered.is_set(), 12.0, each=each)
    if not gathered.is_set():
        out.write("  gathered: nothing came back (is the gather action available on this bridge?)\n")


async def _follow(carrier: TwilioCall, connect: ConnectStream, out: TextIO) -> Dial | None:
    """What Twilio does once the bridge has closed the stream of a call it hands over: ask the ``<Connect
    action>``, dial the ``<Dial>`` it gets; the person answers."""
    assert connect.action is not None
    try:
        verbs = await carrier.fetch(connect.method, connect.action, carrier.fields())
    except Exception as exc:  # the demo goes on to its summary: say what went wrong
        out.write(f"  the carrier's next step failed: {exc}\n")
        return None
    out.write(f"  <Connect action> answered: {_short(carrier.last_document)}\n")
    dial = next((v for v in verbs if isinstance(v, Dial)), None)
    if dial is None:
        out.write("  no <Dial>: the call was not transferred\n")
        return None
    out.write(f"  transferred to {dial.targets[0].to} (Dial, ring timeout {dial.timeout_s} s)\n")
    try:
        after = await carrier.dial(dial)  # answered: the person picks up, then their call ends
    except Exception as exc:
        out.write(f"  the dial's callbacks failed: {exc}\n")
        return dial
    if after is not None:
        out.write(f"  <Dial action> answered: {_short(carrier.last_document)}\n")
    return dial


def _ivr_summary(out: TextIO, result: DemoResult) -> None:
    gathered = result.gathered
    if gathered is not None:
        out.write(f"  gathered: {len(gathered['digits'])} digits, {gathered['digits']} ({gathered['reason']})\n")
    else:
        out.write("  gathered: nothing\n")
    if result.dial is not None:
        target = result.dial.targets[0]
        out.write(f"  transferred to {target.to} (Dial, ring timeout {result.dial.timeout_s} s)\n")
    else:
        out.write("  not transferred\n")


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
            "BRIDGE_TRANSFER_TO": AGENT,  # the one number the demo bot may transfer to
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
