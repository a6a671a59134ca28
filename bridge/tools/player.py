"""``bridge call``: play audio into a running bridge as a carrier's media stream would.

Speaks every dialect the bridge accepts (``--carrier``): Twilio Media Streams by default, SignalWire,
Telnyx, Plivo, Exotel, Vonage, jambonz/FreeSWITCH audio forks and Asterisk chan_websocket, each with
its own framing and native audio (converted from the input), paced in real time by default or as
fast as the socket takes it. It reports what the bridge did: how the stream was closed, and anything
the bridge sent back on the socket (audio, marks, clears).

A two-party call (``outbound``: what the other party says, e.g. the right channel of a stereo WAV) goes out
as the carrier's second track, where its description says it has one (``capabilities.two_tracks``;
:data:`bridge.tools.dialects.TWO_TRACK_CARRIERS`): Twilio's and SignalWire's ``both_tracks``, Telnyx's
``stream_track=both_tracks``, Plivo's ``audioTrack="both"`` (one message per track and 20 ms, the inbound
track's first), and jambonz/FreeSWITCH ``stereo`` forks (both channels interleaved in each binary frame).
The carriers' messages come from :mod:`bridge.tools.dialects`.
"""

from __future__ import annotations

import asyncio
import io
import json
import math
import sys
import time
import uuid
import wave
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

import websockets

from bridge.audio import ULAW_8K, samples_to_float, silence
from bridge.errors import WavError
from bridge.tools.dialects import Dialect, TwilioLikeWriter, carrier_of, dialect, keys_unsupported, opening_messages
from bridge.tools.ear import TwilioEar
from bridge.tools.keypad import KeyPress
from bridge.wav import Wav, read_wav, to_ulaw_8k


def read_two_tracks(data: bytes) -> tuple[bytes, bytes]:
    """A two-channel WAV file as a two-party call: (left, right) as 8 kHz mu-law, the caller and the agent.

    Raises:
        WavError: not a WAV file, not two channels, or not integer PCM (the one-track path reads more).
    """
    wav = read_wav(data)  # checks the file and counts its channels
    if wav.channels != 2:
        raise WavError(
            f"{wav.channels} channel{'s' if wav.channels != 1 else ''}; a two-party call needs a stereo WAV "
            "(left: the caller, right: the agent)"
        )
    try:
        with wave.open(io.BytesIO(data)) as w:
            bits, raw = 8 * w.getsampwidth(), w.readframes(w.getnframes())
    except (wave.Error, EOFError) as exc:
        raise WavError(f"a two-party call reads integer PCM WAV files: {exc}") from exc
    both = samples_to_float(raw, "pcm", bits).reshape(-1, 2)
    left, right = (to_ulaw_8k(Wav(wav.sample_rate, 1, both[:, side].copy())) for side in (0, 1))
    return left, right


@dataclass
class CallReport:
    call_sid: str
    stream_sid: str
    frames_sent: int = 0
    seconds_of_audio: float = 0.0
    elapsed: float = 0.0
    close_code: int | None = None
    close_reason: str = ""
    received: list[str] = field(default_factory=list)
    started_at: float = 0.0  # monotonic time the first audio frame was sent
    ear: TwilioEar | None = None  # what the caller heard (Twilio-like dialects, when asked)
    keys_sent: list[tuple[float, str]] = field(default_factory=list)  # (seconds after the start, key)
    closed_by_bridge: bool = False  # the bridge ended the call (the phone had not hung up)
    frame_seconds: float = 0.02


def _progress(out: TextIO, done: int, total: int, frame_seconds: float = 0.02) -> None:
    width = 30
    filled = int(width * done / max(total, 1))
    out.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done * frame_seconds:6.1f}s / {total * frame_seconds:.1f}s")
    out.flush()


async def play_call(
    url: str,
    ulaw: bytes,
    *,
    realtime: bool = True,
    parameters: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    progress: TextIO | None = None,
    on_frame: Callable[[int, float], None] | None = None,
    carrier: str = "twilio",
    sample_rate: int | None = None,
    call_sid: str | None = None,
    stream_sid: str | None = None,
    listen_reply: bool = False,
    linger: float = 0.0,
    outbound: bytes | None = None,
    keys: Sequence[KeyPress] = (),
) -> CallReport:
    """Play ``ulaw`` (8 kHz mu-law) as one call in ``carrier``'s dialect into ``url``.

    Args:
        realtime: pace frames at their duration (a real call); otherwise send as fast as possible.
        on_frame: called with (frame index, monotonic send time) for each audio frame.
        sample_rate: L16 at this rate, for carriers that offer it.
        listen_reply: play what the bridge sends back like a Twilio phone (real-time playback, mark
            echoes, clears) into ``report.ear`` (Twilio and SignalWire dialects).
        linger: after the audio, keep the call open (sending silence) up to this many seconds while
            the bridge still plays something back.
        outbound: the other party (8 kHz mu-law), on the carrier's second track: a two-party call, as
            ``<Start><Stream track="both_tracks">`` forks it (the shorter track is padded with silence).
        keys: keys the caller presses, each in the carrier's DTMF message between two audio frames, at
            its time in the call's audio (the call is made long enough to press the last one).

    The bridge may end the call itself (a hang-up, a transfer): the audio stops there, and
    ``report.closed_by_bridge`` and ``report.frames_sent`` say so and where.

    Raises:
        ValueError: ``outbound`` for a carrier in one track, or with ``listen_reply`` (a stream that plays
            back carries one track); ``keys`` on a carrier that sends no DTMF message.
    """
    if outbound is not None and listen_reply:
        raise ValueError("a stream the bridge plays back into carries one track (no outbound)")
    if keys:  # the call lasts until the last key has been pressed, and a little longer
        ulaw = ulaw.ljust(int((max(k.at for k in keys) + 0.5) * 8000), b"\xff")  # mu-law silence
    if outbound is not None:
        length = max(len(ulaw), len(outbound))
        ulaw, outbound = ulaw.ljust(length, b"\xff"), outbound.ljust(length, b"\xff")
    if url.startswith(("http://", "https://")):
        url = "ws" + url[4:]  # http -> ws, https -> wss
    rules = carrier_of(carrier).frames
    call_sid = call_sid or (rules.call_sid_prefix + uuid.uuid4().hex)
    stream_sid = stream_sid or (rules.stream_sid_prefix + uuid.uuid4().hex)
    params = parameters or {"From": "+15550100", "To": "+15550199"}
    play = dialect(carrier, ulaw, call_sid, stream_sid, params, sample_rate, outbound)
    if keys and play.dtmf is None:
        raise ValueError(keys_unsupported(carrier) or carrier)
    report = CallReport(call_sid, stream_sid if rules.own_stream_id else call_sid, frame_seconds=play.frame_seconds)
    writer = play.writer
    ear = report.ear = TwilioEar() if listen_reply and writer is not None and play.audio_format == ULAW_8K else None
    opening = opening_messages(carrier, params, sample_rate, outbound is not None)
    messages = iter(play.messages)  # built as sent: a key's message is numbered among them
    lingering = bool(linger and realtime and writer is not None)
    pending = list(keys)
    started = time.monotonic()
    async with websockets.connect(
        url,
        additional_headers=headers,
        max_size=2**20,
        subprotocols=[websockets.Subprotocol(p) for p in play.subprotocols] or None,
    ) as ws:

        async def answer(names: list[str]) -> None:
            for name in names:
                assert writer is not None
                await ws.send(writer.mark(name))

        async def listen() -> None:
            try:
                async for message in ws:
                    report.received.append(message if isinstance(message, str) else f"<{len(message)} bytes>")
                    if ear is not None and isinstance(message, str):
                        await answer(ear.receive(message, time.monotonic() - t0))
            except websockets.ConnectionClosed:
                pass

        t0 = time.monotonic()
        listener = asyncio.create_task(listen())
        audio_total = math.ceil(len(play.native_audio) / play.audio_format.bytes_for_ms(play.frame_seconds * 1000))
        report.started_at = t0
        hung_up = False
        try:
            for _ in range(opening):
                await ws.send(next(messages))
            for frame_index in range(audio_total):
                if listener.done():
                    break  # the bridge ended the call
                if realtime:
                    delay = t0 + frame_index * play.frame_seconds - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                while pending and pending[0].at <= frame_index * play.frame_seconds + 1e-9:
                    await _press(ws, play, pending.pop(0), report, progress, time.monotonic() - t0)
                for _ in range(play.messages_per_frame):
                    await ws.send(next(messages))
                if ear is not None:
                    await answer(ear.due(time.monotonic() - t0))
                if on_frame is not None:
                    on_frame(frame_index, time.monotonic())
                report.frames_sent += 1
                if progress is not None and (frame_index % 10 == 0 or frame_index + 1 == audio_total):
                    _progress(progress, frame_index + 1, audio_total, play.frame_seconds)
            if progress is not None:
                progress.write("\n")
            if not listener.done():
                if lingering:
                    assert writer is not None
                    await _linger(ws, play, writer, ear, t0, report.frames_sent, linger, answer, listener)
                if not listener.done():
                    hung_up = True
                    if lingering:
                        assert writer is not None
                        await ws.send(writer.stop())
                    else:
                        for message in messages:  # the stop, if the dialect has one
                            await ws.send(message)
                    if not play.sends_stop:
                        await ws.close()  # this dialect has no stop message: hanging up is closing the socket
        except websockets.ConnectionClosed:
            pass  # the bridge closed the stream while the phone was still talking
        await listener
        report.closed_by_bridge = not hung_up
        report.close_code = ws.close_code
        report.close_reason = ws.close_reason or ""
    report.seconds_of_audio = len(ulaw) / 8000
    report.elapsed = time.monotonic() - started
    return report


async def _press(
    ws: Any, play: Dialect, press: KeyPress, report: CallReport, progress: TextIO | None, now: float
) -> None:
    assert play.dtmf is not None
    await ws.send(play.dtmf(press.key))
    report.keys_sent.append((now, press.key))
    if progress is not None:
        progress.write(f"\rkey {press.key} pressed at {now:6.2f} s{' ' * 40}\n")
        progress.flush()


async def _linger(
    ws: Any,
    play: Dialect,
    writer: TwilioLikeWriter,
    ear: TwilioEar | None,
    t0: float,
    frames: int,
    linger: float,
    answer: Callable[[list[str]], Awaitable[None]],
    listener: asyncio.Task[None],
) -> None:
    """Silence after the caller's audio while the bridge is still playing something back: until it has
    sent nothing for 2 s and the phone has played it all, ``linger`` seconds, or the bridge ends the call."""
    quiet = silence(play.audio_format, play.frame_seconds * 1000)
    end = time.monotonic() + linger
    while time.monotonic() < end and not listener.done():
        now = time.monotonic() - t0
        if ear is not None:
            await answer(ear.due(now))
            idle = now - max((t for t, _ in ear.marks), default=0.0)
            if ear.played and now > ear.finished_at() + 0.5 and idle > 2.0:
                return
        for track in writer.tracks:  # silence on each track the stream announced
            await ws.send(writer.media(quiet, track))
        frames += 1
        await asyncio.sleep(max(0.0, t0 + frames * play.frame_seconds - time.monotonic()))


def reply_wav(ear: TwilioEar) -> bytes:
    """What the caller heard, as a 16-bit PCM WAV at 8 kHz."""
    import struct

    from bridge.audio import decode_to_pcm16

    pcm = decode_to_pcm16(ear.heard(), "ulaw")
    header = struct.pack("<HHIIHH", 1, 1, 8000, 16000, 2, 16)
    return (
        b"RIFF"
        + struct.pack("<I", 36 + len(pcm))
        + b"WAVE"
        + b"fmt "
        + struct.pack("<I", 16)
        + header
        + b"data"
        + struct.pack("<I", len(pcm))
        + pcm
    )


def print_reply(ear: TwilioEar, out: TextIO = sys.stdout) -> None:
    out.write(
        f"reply: {len(ear.heard()) / 8000:.1f} s heard, {len(ear.marks)} marks echoed "
        f"({', '.join(name for _, name in ear.marks[:8])}{', ...' if len(ear.marks) > 8 else ''}), "
        f"{len(ear.clears)} clears"
        + (f" (at {', '.join(f'{t:.1f}' for t in ear.clears)} s)" if ear.clears else "")
        + "\n"
    )
    first = ear.first_audio_at()
    if first is not None:
        out.write(f"first reply audio {first:.2f} s after the call started\n")


def print_report(report: CallReport, out: TextIO = sys.stdout) -> None:
    out.write(f"call {report.call_sid} stream {report.stream_sid}\n")
    sent = f"{report.seconds_of_audio:.1f} s of audio"
    if report.closed_by_bridge:
        sent = f"{report.frames_sent * report.frame_seconds:.1f} s of the {sent}"
    out.write(f"sent {report.frames_sent} frames ({sent}) in {report.elapsed:.1f} s\n")
    out.write(
        f"bridge closed the stream with code {report.close_code}"
        + (f" ({report.close_reason})" if report.close_reason else "")
        + "\n"
    )
    runs: list[list[Any]] = []  # [event, count]: a run of the same message is one line
    for message in report.received:
        try:
            event = json.loads(message).get("event", "?")
        except (ValueError, AttributeError):
            event = "?"
        if runs and runs[-1][0] == event:
            runs[-1][1] += 1
        else:
            runs.append([event, 1])
    for event, count in runs:
        out.write(f"bridge sent: {event}" + (f" x{count}" if count > 1 else "") + "\n")
