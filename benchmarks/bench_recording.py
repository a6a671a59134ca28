"""Benchmark of call recordings (not a test): CPU and disk per call-minute, WAV and Ogg/Opus.

    .venv/bin/python benchmarks/bench_recording.py [--calls 50] [--seconds 60] [--rate 8000] [--take-ms 1000]
        [--complexities 0,1,2,3] [--no-libsndfile]

Side by side in one run: WAV, Ogg/Opus through libsndfile (soundfile: the fallback, libopus's default
complexity) and Ogg/Opus through the system's libopus at each ``--complexities`` level (the default is
:data:`bridge.recording.opus_encoder.COMPLEXITY`); the machine (the CPU's model name, as lscpu shows it)
first.

Each call feeds a :class:`~bridge.recording.timeline.Timeline` as the call path would: the caller's
audio in 20 ms frames (the carrier's cadence), the bot's playout in 2 s pieces placed ahead on its clock,
one barge-in clear a minute; every ``--take-ms`` of call time it takes the settled audio and hands it to
one :class:`~bridge.recording.writer.RecordingWriter` (one thread for every call). Calls run as fast
as the CPU allows, not in real time. Prints, per format: the loop side's CPU (timeline and queueing, on
the event loop in the bridge), the writer thread's CPU (encoding, disk), both per call-second and per
call-minute, and the bytes on disk per call-minute; then one JSON line with the same figures. The audio
is the shipped two-party call (speech), repeated.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np

from bridge.recording import formats, opus_encoder
from bridge.recording.timeline import Timeline
from bridge.recording.writer import RecordingWriter
from bridge.tools.runs import machine

SAMPLE = Path(__file__).resolve().parent.parent / "bridge" / "samples" / "two_party_call.wav"


def speech(rate: int, frames: int) -> np.ndarray:
    with wave.open(str(SAMPLE)) as w:
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2)
    if rate != 8000:
        x = np.arange(len(data) * rate // 8000) * 8000 / rate
        data = np.stack([np.interp(x, np.arange(len(data)), data[:, c]) for c in range(2)], 1).astype("<i2")
    return np.tile(data, (frames // len(data) + 1, 1))[:frames]


def run_variant(variant: str, calls: int, seconds: float, rate: int, take_ms: int) -> dict[str, Any]:
    """``variant``: ``wav``, ``opus-libsndfile`` or ``opus-libopus-c<N>``; picks the Opus encoder the way
    a machine without libopus would (``formats.OPUS_ENCODER``) and the complexity, for this run only."""
    encoder, complexity = formats.OPUS_ENCODER, opus_encoder.COMPLEXITY
    if variant == "opus-libsndfile":
        formats.OPUS_ENCODER = "libsndfile"
    elif variant.startswith("opus-libopus-c"):
        opus_encoder.COMPLEXITY = int(variant.removeprefix("opus-libopus-c"))
    try:
        with tempfile.TemporaryDirectory() as directory:
            result = run(variant.split("-")[0], calls, seconds, rate, take_ms, directory)
    finally:
        formats.OPUS_ENCODER, opus_encoder.COMPLEXITY = encoder, complexity
    return {**result, "variant": variant}


def run(fmt: str, calls: int, seconds: float, rate: int, take_ms: int, directory: str) -> dict[str, Any]:
    frames = round(seconds * rate)
    audio = speech(rate, frames)
    caller = [audio[:, 0].tobytes()] * calls
    bot = [audio[:, 1].tobytes()] * calls
    frame, piece, take_every = rate // 50, 2 * rate, rate * take_ms // 1000
    writer = RecordingWriter(flush_s=5.0, max_queued_bytes=1 << 30)
    writer.start()
    timelines = []
    for n in range(calls):
        writer.open(f"c{n}", os.path.join(directory, f"c{n}.{fmt}"), fmt, rate)
        timelines.append(Timeline(rate, settle_s=0.5))
    process0, loop0 = time.process_time(), time.thread_time()
    for now in range(frame, frames + 1, frame):  # every call advances 20 ms at a time
        for n, t in enumerate(timelines):
            t.caller(caller[n][2 * (now - frame) : 2 * now], now - frame)
            if (now - frame) % piece == 0:  # the bot's next piece, placed 1 s ahead
                at = now - frame + rate
                t.other(bot[n][2 * at : 2 * (at + piece)], at)
            if now % (60 * rate) == 30 * rate:
                t.other_clear(now + rate // 2)  # a barge-in
            if now % take_every == 0:
                writer.append(f"c{n}", t.take_settled(now))
    for n, t in enumerate(timelines):
        writer.append(f"c{n}", t.take(frames))
        writer.close(f"c{n}")
    loop_cpu = time.thread_time() - loop0
    writer.stop(timeout=600)
    total_cpu = time.process_time() - process0
    size = sum(os.path.getsize(os.path.join(directory, f"c{n}.{fmt}")) for n in range(calls))
    call_seconds = calls * seconds
    status = writer.status()
    assert status.dropped_bytes == 0, status
    return {
        "format": fmt,
        "rate": rate,
        "calls": calls,
        "seconds": seconds,
        "loop_cpu_ms_per_call_second": 1000 * loop_cpu / call_seconds,
        "writer_cpu_ms_per_call_second": 1000 * (total_cpu - loop_cpu) / call_seconds,
        "cpu_ms_per_call_minute": 60_000 * total_cpu / call_seconds,
        "bytes_per_call_minute": size / (call_seconds / 60),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rate", type=int, default=8000, choices=[8000, 16000])
    parser.add_argument("--take-ms", type=int, default=1000)
    parser.add_argument("--complexities", default="0,1,2,3", help="libopus complexity levels to compare")
    parser.add_argument("--no-libsndfile", action="store_true", help="skip Opus through libsndfile (slow)")
    args = parser.parse_args()
    print(f"machine: {machine()}; Opus encoder in use: {formats.OPUS_ENCODER}")
    print(f"{args.calls} calls x {args.seconds:g} s at {args.rate} Hz, stereo, take every {args.take_ms} ms")
    variants = ["wav"] + ([] if args.no_libsndfile else ["opus-libsndfile"])
    if opus_encoder.version() is not None:
        variants += [f"opus-libopus-c{int(c)}" for c in args.complexities.split(",") if c]
    heads = ("loop ms/call-s", "writer ms/call-s", "CPU ms/call-s", "CPU ms/call-min", "KiB/call-min")
    print(f"{'variant':<16}  {heads[0]:>14}  {heads[1]:>16}  {heads[2]:>13}  {heads[3]:>15}  {heads[4]:>12}")
    results = []
    for variant in variants:
        r = run_variant(variant, args.calls, args.seconds, args.rate, args.take_ms)
        results.append(r)
        print(
            f"{variant:<16}  {r['loop_cpu_ms_per_call_second']:>14.3f}  {r['writer_cpu_ms_per_call_second']:>16.3f}  "
            f"{r['cpu_ms_per_call_minute'] / 60:>13.3f}  {r['cpu_ms_per_call_minute']:>15.1f}  "
            f"{r['bytes_per_call_minute'] / 1024:>12.1f}"
        )
    print(json.dumps({"machine": machine(), "opus_encoder": formats.OPUS_ENCODER, "results": results}))


if __name__ == "__main__":
    main()
