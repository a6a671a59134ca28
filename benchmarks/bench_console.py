"""Benchmark of the console under load (not a test): what 20 open console pages cost a bridge carrying 100
calls, as a ratio to the same calls with nobody watching, side by side in one run on one machine.

    .venv/bin/python benchmarks/bench_console.py [--calls 100] [--consoles 20] [--seconds 30] [--rounds 2] [--reply]

Each round runs ``bridge loadtest --console 0`` and ``bridge loadtest --console N`` at the same calls and call
length (the bridge has an API token in both: only the clients differ); the order alternates from round to
round. A console client asks what the page does (:mod:`bridge.tools.load_console`): ``GET /v1/events`` with
the live list's types, ``GET /v1/calls`` at each connection and every 10 s, the past calls every 60 s; the
clients open one after another over the first 7.5 s (a quarter of a 30 s call).
Prints the bridge's CPU per call-second, forward latency p99, what the clients got, the load average before
each run and the ratio with / without per round and its median (issue 32's target: at most 1.1x); then one
JSON line with the same figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path
from typing import Any

from bridge.tools.runs import loadtest_run, machine

ROOT = Path(__file__).resolve().parent.parent


def loadtest(calls: int, seconds: float, consoles: int, reply: bool) -> dict[str, Any]:
    args = ["--calls", str(calls), "--seconds", str(seconds), "--console", str(consoles)]
    return loadtest_run([*args, "--reply"] if reply else args, cwd=ROOT)


def main(calls: int, consoles: int, seconds: float, rounds: int, reply: bool) -> None:
    print(f"machine: {machine()}; load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(
        f"bridge loadtest --calls {calls} --seconds {seconds}{' --reply' if reply else ''}, "
        f"without and with {consoles} console clients, {rounds} rounds"
    )
    print(
        f"{'round':>5}  {'consoles':>8}  {'cpu ms/call-s':>12}  {'fwd p99 ms':>9}  {'events':>7}  {'requests':>8}  "
        f"{'load':>5}  ratio"
    )
    modes = {"off": 0, "on": consoles}
    ratios: list[float] = []
    runs: list[dict[str, Any]] = []
    for n in range(1, rounds + 1):
        order = ("off", "on") if n % 2 else ("on", "off")
        results = {mode: loadtest(calls, seconds, modes[mode], reply) for mode in order}
        ratio = results["on"]["bridge_cpu_ms_per_call_second"] / results["off"]["bridge_cpu_ms_per_call_second"]
        ratios.append(ratio)
        for mode in order:
            r = results[mode]
            got = r.get("console") or {}
            print(
                f"{n:>5}  {modes[mode]:>8}  {r['bridge_cpu_ms_per_call_second']:>12.3f}  "
                f"{r['forward_latency_ms']['p99']:>9.2f}  {got.get('events', 0):>7}  {got.get('requests', 0):>8}  "
                f"{r.get('load_before', 0):>5.2f}  {f'{ratio:.3f}' if mode == 'on' else ''}",
                flush=True,
            )
            runs.append({"round": n, "consoles": modes[mode], **r})
    print(f"with / without CPU per call-second: median {statistics.median(ratios):.3f} over {rounds} rounds")
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(
        json.dumps(
            {
                "figure": "console_cpu_ratio",
                "machine": machine(),
                "calls": calls,
                "consoles": consoles,
                "seconds": seconds,
                "reply": reply,
                "ratios": [round(r, 3) for r in ratios],
                "median_ratio": round(statistics.median(ratios), 3),
                "runs": [
                    {
                        "round": r["round"],
                        "consoles": r["consoles"],
                        "bridge_cpu_ms_per_call_second": r["bridge_cpu_ms_per_call_second"],
                        "forward_p99_ms": r["forward_latency_ms"]["p99"],
                        "frames_lost": r["frames_lost"],
                        "console": r.get("console"),
                        "load_before": r.get("load_before"),
                        "limited_by": r.get("limited_by"),
                    }
                    for r in runs
                ],
            }
        )
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--consoles", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each call")
    parser.add_argument("--rounds", type=int, default=2, help="pairs of runs, the order alternating")
    parser.add_argument("--reply", action="store_true", help="the bot answers every final (playback events)")
    args = parser.parse_args()
    main(args.calls, args.consoles, args.seconds, args.rounds, args.reply)
