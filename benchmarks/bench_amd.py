"""Benchmark of the bridge's own answering-machine detector (not a test): its verdicts on generated answers.

    .venv/bin/python benchmarks/bench_amd.py [--voices piper espeak] [--count 22] [--codec ulaw|pcm]
                                             [--noise-db -40]

Each answer is a :func:`bridge.tools.greetings.greeting` (``--count`` of each kind per voice: a person's
"Hello?" and a machine's greeting, most with a beep), carried as a phone carries it (``--codec ulaw``:
through G.711 mu-law and back, as the bridge decodes a carrier's stream; ``pcm``: as generated), with
``--noise-db`` more white noise (RMS, dBFS) when given, and fed to a :class:`MachineDetector` in 20 ms
frames from the answer until it is done (or the answer ends). Prints, per voice and for all:

* the confusion matrix (rows: the truth, human and machine; columns: the verdict, human, machine,
  unknown; fax counted as unknown) and the accuracy;
* ``detection_ms`` (from the answer to the verdict): median and p90, per truth;
* beeps found over beeps present, with the median and max ``|after_ms - beep_end_ms|``, and beeps
  reported where there was none; for greetings ending in silence, how often the end was found and the
  median ``|message_end_ms - speech_end_ms|``;
* the CPU cost: microseconds per 20 ms frame fed (wall time of ``feed``, one core), median and p99;
* the answers it got wrong.

Then one JSON line with every figure. The machine (CPU model, cores) comes first.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bridge.dial.detector import MachineDetector
from bridge.tools.greetings import Greeting, greeting
from bridge.tools.runs import machine

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

FRAME_BYTES = 320  # 20 ms at 8 kHz, 16-bit
COLUMNS = ("human", "machine", "unknown")
KINDS: tuple[Literal["human", "machine"], ...] = ("human", "machine")


@dataclass(frozen=True, slots=True)
class Outcome:
    voice: str
    kind: Literal["human", "machine"]
    variant: int
    text: str
    said: str  # human | machine | unknown (fax counts as unknown)
    reason: str
    detection_ms: int | None
    beep_end_ms: int | None  # the truth
    beep_after_ms: int | None  # what the detector said
    speech_end_ms: int
    message_end_ms: int | None
    frame_us: list[float]


def carried(g: Greeting, codec: str, noise_db: float | None, variant: int) -> bytes:
    """The greeting as the detector would get it from the call."""
    pcm = g.pcm
    if noise_db is not None:
        x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
        x += np.random.default_rng(1000 + variant).standard_normal(len(x)) * 32767 * 10 ** (noise_db / 20)
        pcm = np.clip(np.rint(x), -32768, 32767).astype("<i2").tobytes()
    if codec == "ulaw":
        pcm = audioop.ulaw2lin(audioop.lin2ulaw(pcm, 2), 2)
    return pcm


def detect(voice: str, kind: Literal["human", "machine"], variant: int, args: argparse.Namespace) -> Outcome:
    """One answer through a fresh detector, each ``feed`` timed."""
    g = greeting(kind, variant, voice=voice)
    audio = carried(g, args.codec, args.noise_db, variant)
    d = MachineDetector()
    spent: list[float] = []
    for at in range(0, len(audio) - FRAME_BYTES + 1, FRAME_BYTES):
        frame = audio[at : at + FRAME_BYTES]
        started = time.perf_counter_ns()
        d.feed(frame)
        spent.append((time.perf_counter_ns() - started) / 1000)
        if d.done:
            break
    v = d.verdict
    said = "unknown" if v is None or v.answered_by == "fax" else v.answered_by
    return Outcome(
        voice=voice,
        kind=kind,
        variant=variant,
        text=g.text,
        said=said,
        reason=v.reason if v else "none",
        detection_ms=v.detection_ms if v else None,
        beep_end_ms=g.beep_end_ms,
        beep_after_ms=d.beep.after_ms if d.beep else None,
        speech_end_ms=g.speech_end_ms,
        message_end_ms=d.message_end_ms,
        frame_us=spent,
    )


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(outcomes: list[Outcome]) -> dict[str, Any]:
    matrix = {truth: {col: sum(o.kind == truth and o.said == col for o in outcomes) for col in COLUMNS} for truth in
              ("human", "machine")}  # fmt: skip
    right = sum(o.kind == o.said for o in outcomes)
    detection = {
        truth: [float(o.detection_ms) for o in outcomes if o.kind == truth and o.detection_ms is not None]
        for truth in ("human", "machine")
    }
    with_beep = [o for o in outcomes if o.beep_end_ms is not None]
    found = [o for o in with_beep if o.beep_after_ms is not None]
    beep_errors = [
        float(abs(o.beep_after_ms - o.beep_end_ms))
        for o in found
        if o.beep_after_ms is not None and o.beep_end_ms is not None
    ]
    silent_end = [o for o in outcomes if o.kind == "machine" and o.beep_end_ms is None]
    ends = [float(abs(o.message_end_ms - o.speech_end_ms)) for o in silent_end if o.message_end_ms is not None]
    frames = [us for o in outcomes for us in o.frame_us]
    return {
        "answers": len(outcomes),
        "matrix": matrix,
        "accuracy": round(right / len(outcomes), 4) if outcomes else None,
        "detection_ms": {
            truth: {"median": pct(values, 0.5), "p90": pct(values, 0.9), "max": max(values, default=None)}
            for truth, values in detection.items()
        },
        "beeps_present": len(with_beep),
        "beeps_found": len(found),
        "beep_error_ms": {"median": pct(beep_errors, 0.5), "max": max(beep_errors, default=None)},
        "beeps_spurious": sum(o.beep_after_ms is not None and o.beep_end_ms is None for o in outcomes),
        "silent_ends_present": len(silent_end),
        "silent_ends_found": len(ends),
        "silent_end_error_ms": {"median": pct(ends, 0.5), "max": max(ends, default=None)},
        "frames": len(frames),
        "us_per_frame": {"median": round(statistics.median(frames), 2), "p99": round(pct(frames, 0.99) or 0, 2)}
        if frames
        else None,
    }


def show(title: str, s: dict[str, Any]) -> None:
    print(f"\n{title}: {s['answers']} answers, accuracy {s['accuracy']:.1%}")
    head = "truth / verdict"
    print(f"  {head:<16}" + "".join(f"{c:>9}" for c in COLUMNS))
    for truth, row in s["matrix"].items():
        print(f"  {truth:<16}" + "".join(f"{row[c]:>9}" for c in COLUMNS))
    for truth, spread in s["detection_ms"].items():
        print(f"  detection_ms {truth:<8} median {spread['median']}  p90 {spread['p90']}  max {spread['max']}")
    print(
        f"  beeps found {s['beeps_found']}/{s['beeps_present']}, |after_ms - beep_end_ms| median "
        f"{s['beep_error_ms']['median']} max {s['beep_error_ms']['max']} ms; spurious beeps {s['beeps_spurious']}"
    )
    print(
        f"  greetings ending in silence: end found {s['silent_ends_found']}/{s['silent_ends_present']}, "
        f"|message_end_ms - speech_end_ms| median {s['silent_end_error_ms']['median']} ms"
    )
    if s["us_per_frame"]:
        us = s["us_per_frame"]
        print(f"  CPU: {us['median']} us per 20 ms frame (median), p99 {us['p99']} us, {s['frames']} frames")


def main(args: argparse.Namespace) -> None:
    print(f"machine: {machine()}", flush=True)
    print(f"codec {args.codec}, extra noise {args.noise_db if args.noise_db is not None else 'none'} dBFS")
    outcomes: list[Outcome] = []
    by_voice: dict[str, Any] = {}
    for voice in args.voices:
        answers = [(kind, v) for kind in KINDS for v in range(args.count)]
        for kind, v in answers:  # synthesised first: Piper's threads spin a while after each sentence
            greeting(kind, v, voice=voice)
        time.sleep(1.0)
        mine = [detect(voice, kind, v, args) for kind, v in answers]
        outcomes += mine
        by_voice[voice] = summary(mine)
        show(voice, by_voice[voice])
    everything = summary(outcomes)
    show("all voices", everything)
    wrong = [o for o in outcomes if o.kind != o.said]
    for o in wrong:
        print(f"  wrong: {o.voice} {o.kind} {o.variant} {o.text!r} -> {o.said} ({o.reason}, {o.detection_ms} ms)")
    print(
        json.dumps(
            {
                "machine": machine(),
                "codec": args.codec,
                "noise_db": args.noise_db,
                "voices": by_voice,
                "all": everything,
                "wrong": [[o.voice, o.kind, o.variant, o.said, o.reason] for o in wrong],
            }
        )
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--voices", nargs="+", choices=("piper", "espeak"), default=["piper", "espeak"])
    parser.add_argument("--count", type=int, default=22, help="answers of each kind per voice")
    parser.add_argument("--codec", choices=("ulaw", "pcm"), default="ulaw", help="as the call carries it")
    parser.add_argument("--noise-db", type=float, default=None, help="more white noise, RMS dBFS (e.g. -40)")
    main(parser.parse_args())
