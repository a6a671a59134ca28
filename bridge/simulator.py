"""``bridge call``: play audio into a running bridge as a carrier's media stream would.

Speaks the Twilio Media Streams dialect (20 ms mu-law frames as JSON text), paced in real time by
default or as fast as the socket takes it, and reports what the bridge did: how the stream was
closed, and anything the bridge sent back on the socket (audio, marks, clears).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

import websockets

from bridge.adapters.twilio import TwilioStreamWriter

FRAME_BYTES = 160  # 20 ms of 8 kHz mu-law


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


def _progress(out: TextIO, done: int, total: int) -> None:
    width = 30
    filled = int(width * done / max(total, 1))
    out.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done * 0.02:6.1f}s / {total * 0.02:.1f}s")
    out.flush()


async def play_call(url: str, ulaw: bytes, *, realtime: bool = True, parameters: dict[str, str] | None = None,
                    headers: dict[str, str] | None = None, progress: TextIO | None = None,
                    on_frame: Callable[[int, float], None] | None = None) -> CallReport:
    """Play ``ulaw`` (8 kHz mu-law) as one Twilio call into ``url``; returns what happened.

    Args:
        realtime: pace frames at 20 ms (a real call); otherwise send as fast as possible.
        on_frame: called with (frame index, monotonic send time) for each audio frame.
    """
    call_sid = "CA" + uuid.uuid4().hex
    stream_sid = "MZ" + uuid.uuid4().hex
    writer = TwilioStreamWriter(call_sid, stream_sid,
                                parameters=parameters or {"From": "+15550100", "To": "+15550199"})
    report = CallReport(call_sid, stream_sid)
    frames = [ulaw[i:i + FRAME_BYTES] for i in range(0, len(ulaw), FRAME_BYTES)]
    started = time.monotonic()
    async with websockets.connect(url, additional_headers=headers, max_size=2**20) as ws:

        async def listen() -> None:
            try:
                async for message in ws:
                    report.received.append(message if isinstance(message, str) else f"<{len(message)} bytes>")
            except websockets.ConnectionClosed:
                pass

        listener = asyncio.create_task(listen())
        await ws.send(writer.connected())
        await ws.send(writer.start())
        t0 = time.monotonic()
        report.started_at = t0
        for i, frame in enumerate(frames):
            if realtime:
                delay = t0 + i * 0.02 - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            await ws.send(writer.media(frame))
            if on_frame is not None:
                on_frame(i, time.monotonic())
            report.frames_sent += 1
            if progress is not None and (i % 10 == 0 or i == len(frames) - 1):
                _progress(progress, i + 1, len(frames))
        if progress is not None:
            progress.write("\n")
        await ws.send(writer.stop())
        await listener
        report.close_code = ws.close_code
        report.close_reason = ws.close_reason or ""
    report.seconds_of_audio = len(ulaw) / 8000
    report.elapsed = time.monotonic() - started
    return report


def print_report(report: CallReport, out: TextIO = sys.stdout) -> None:
    out.write(f"call {report.call_sid} stream {report.stream_sid}\n")
    out.write(f"sent {report.frames_sent} frames ({report.seconds_of_audio:.1f} s of audio) "
              f"in {report.elapsed:.1f} s\n")
    out.write(f"bridge closed the stream with code {report.close_code}"
              + (f" ({report.close_reason})" if report.close_reason else "") + "\n")
    for message in report.received:
        try:
            event = json.loads(message).get("event", "?")
        except (ValueError, AttributeError):
            event = "?"
        out.write(f"bridge sent: {event}\n")
