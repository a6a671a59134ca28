"""Benchmark of two-party calls (not a test): what a call carrying both parties costs the bridge next to
a call carrying the caller only, as a ratio, side by side in one run on one machine.

    .venv/bin/python benchmarks/bench_two_tracks.py [--calls 100] [--seconds 20] [--rounds 2]

Each round runs ``bridge loadtest`` twice at the same calls and call length: ``--tracks inbound`` (one
track: a media message each 20 ms) and ``--tracks both`` (Twilio ``both_tracks``: an inbound and an
outbound message each 20 ms, interleaved by the bridge into one two-channel Gladia session, which
sends a final each 1 s of the call instead of each 2 s). The order alternates from round to round, so
a machine that gets busier or quieter during the run does not favour one side. Prints a table: the
bridge's CPU per call-second, forward latency p99 (the caller's track), frames lost, the generator's
CPU share (over 0.8: the load, not the bridge, was the limit), and the ratio two-track / one-track
per round and its median; then one JSON line with the same figures.
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


def loadtest(calls: int, seconds: float, tracks: str, generators: int | None) -> dict[str, Any]:
    """One ``bridge loadtest --tracks <tracks>`` run."""
    args = ["--calls", str(calls), "--seconds", str(seconds), "--tracks", tracks]
    if generators is not None:
        args += ["--generators", str(generators)]
    return loadtest_run(args, cwd=ROOT)


def row(round_: int, r: dict[str, Any], ratio: str) -> str:
    return (
        f"{round_:>5}  {r['calls']:>5}  {r['tracks']:<7}  {r['bridge_cpu_ms_per_call_second']:>12.3f}  "
        f"{r['forward_latency_ms']['p99']:>9.2f}  {r['frames_lost']:>6}  "
        f"{r['finals_delivered']:>5}/{r['finals_expected']:<5}  {r['generator_cpu_share']:>5.2f}  {ratio:>6}"
    )


def main(calls: int, seconds: float, rounds: int, generators: int | None) -> None:
    print(f"machine: {machine()}; load average at start: {os.getloadavg()[0]:.2f}")
    print(f"bridge loadtest --calls {calls} --seconds {seconds}, --tracks inbound vs both, {rounds} rounds")
    print(
        f"{'round':>5}  {'calls':>5}  {'tracks':<7}  {'cpu ms/call-s':>12}  {'fwd p99 ms':>9}  {'lost':>6}  "
        f"{'finals':>11}  {'gen':>5}  {'ratio':>6}"
    )
    ratios: list[float] = []
    runs: list[dict[str, Any]] = []
    for n in range(1, rounds + 1):
        order = ("inbound", "both") if n % 2 else ("both", "inbound")
        results = {tracks: loadtest(calls, seconds, tracks, generators) for tracks in order}
        one, two = results["inbound"], results["both"]
        ratio = two["bridge_cpu_ms_per_call_second"] / one["bridge_cpu_ms_per_call_second"]
        ratios.append(ratio)
        for tracks in order:
            print(row(n, results[tracks], f"{ratio:.2f}" if tracks == "both" else ""), flush=True)
        runs.extend({"round": n, **results[t]} for t in order)
    print(f"two-track / one-track CPU per call-second: median {statistics.median(ratios):.2f} over {rounds} rounds")
    print(
        json.dumps(
            {
                "figure": "two_tracks_cpu_ratio",
                "machine": machine(),
                "calls": calls,
                "seconds": seconds,
                "ratios": [round(r, 3) for r in ratios],
                "median_ratio": round(statistics.median(ratios), 3),
                "runs": [
                    {
                        "round": r["round"],
                        "tracks": r["tracks"],
                        "bridge_cpu_ms_per_call_second": r["bridge_cpu_ms_per_call_second"],
                        "forward_p99_ms": r["forward_latency_ms"]["p99"],
                        "frames_lost": r["frames_lost"],
                        "failed_calls": r["failed_calls"],
                        "finals_delivered": r["finals_delivered"],
                        "finals_expected": r["finals_expected"],
                        "generator_cpu_share": r["generator_cpu_share"],
                    }
                    for r in runs
                ],
            }
        )
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each call")
    parser.add_argument("--rounds", type=int, default=2, help="pairs of runs, the order alternating")
    parser.add_argument("--generators", type=int, help="caller processes (default: bridge loadtest's)")
    args = parser.parse_args()
    main(args.calls, args.seconds, args.rounds, args.generators)
