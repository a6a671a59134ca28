"""Benchmark of Gladia's add-ons (not a test): what a call with live translation (two languages) and
sentiment analysis costs the bridge next to the same call without, as a ratio, side by side in one run on
one machine. Issue 29's target: at most 1.15x.

    .venv/bin/python benchmarks/bench_addons.py [--calls 100] [--seconds 20] [--rounds 2]

Each round runs ``bridge loadtest`` twice at the same calls and call length: without add-ons, and with
``--addons`` (the bridge's profile asks for translation to fr and es and for sentiment analysis; the load
Gladia sends, after each final, a ``translation`` message per language and a ``sentiment_analysis``
message, which the bridge delivers to the bot as ``utterance.translation`` / ``utterance.sentiment``
events: three more bot events per final). The order alternates from round to round, so a machine that
gets busier or quieter during the run does not favour one side. Prints a table: the bridge's CPU per
call-second, forward latency p99, frames lost, finals, the add-on events the bot received of those sent,
the generator's CPU share (over 0.8: the load, not the bridge, was the limit), and the ratio with / without
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
TARGET = 1.15


def loadtest(calls: int, seconds: float, addons: bool, generators: int | None) -> dict[str, Any]:
    """One ``bridge loadtest`` run, with ``--addons`` or without."""
    args = ["--calls", str(calls), "--seconds", str(seconds)] + (["--addons"] if addons else [])
    if generators is not None:
        args += ["--generators", str(generators)]
    return loadtest_run(args, cwd=ROOT)


def row(round_: int, r: dict[str, Any], ratio: str) -> str:
    addons = f"{r['addon_events']}/{r['addon_messages_sent']}" if r.get("addons") else "-"
    return (
        f"{round_:>5}  {r['calls']:>5}  {'yes' if r.get('addons') else 'no':<6}  "
        f"{r['bridge_cpu_ms_per_call_second']:>12.3f}  {r['forward_latency_ms']['p99']:>9.2f}  "
        f"{r['frames_lost']:>6}  {r['finals_delivered']:>5}/{r['finals_expected']:<5}  {addons:>11}  "
        f"{r['generator_cpu_share']:>5.2f}  {ratio:>6}"
    )


def main(calls: int, seconds: float, rounds: int, generators: int | None) -> None:
    print(f"machine: {machine()}; load average at start: {os.getloadavg()[0]:.2f}")
    print(f"bridge loadtest --calls {calls} --seconds {seconds}, without and with --addons, {rounds} rounds")
    print(
        f"{'round':>5}  {'calls':>5}  {'addons':<6}  {'cpu ms/call-s':>12}  {'fwd p99 ms':>9}  {'lost':>6}  "
        f"{'finals':>11}  {'addon evts':>11}  {'gen':>5}  {'ratio':>6}"
    )
    ratios: list[float] = []
    runs: list[dict[str, Any]] = []
    for n in range(1, rounds + 1):
        order = (False, True) if n % 2 else (True, False)
        results = {addons: loadtest(calls, seconds, addons, generators) for addons in order}
        ratio = results[True]["bridge_cpu_ms_per_call_second"] / results[False]["bridge_cpu_ms_per_call_second"]
        ratios.append(ratio)
        for addons in order:
            print(row(n, results[addons], f"{ratio:.2f}" if addons else ""), flush=True)
        runs.extend({"round": n, **results[a]} for a in order)
    median = statistics.median(ratios)
    verdict = "within" if median <= TARGET else "over"
    print(f"with / without add-ons CPU per call-second: median {median:.2f} over {rounds} rounds ({verdict} {TARGET}x)")
    print(
        json.dumps(
            {
                "figure": "addons_cpu_ratio",
                "machine": machine(),
                "calls": calls,
                "seconds": seconds,
                "target": TARGET,
                "ratios": [round(r, 3) for r in ratios],
                "median_ratio": round(median, 3),
                "runs": [
                    {
                        "round": r["round"],
                        "addons": bool(r.get("addons")),
                        "bridge_cpu_ms_per_call_second": r["bridge_cpu_ms_per_call_second"],
                        "forward_p99_ms": r["forward_latency_ms"]["p99"],
                        "frames_lost": r["frames_lost"],
                        "failed_calls": r["failed_calls"],
                        "finals_delivered": r["finals_delivered"],
                        "finals_expected": r["finals_expected"],
                        "addon_messages_sent": r.get("addon_messages_sent"),
                        "addon_events": r.get("addon_events"),
                        "addon_events_failed": r.get("addon_events_failed"),
                        "generator_cpu_share": r["generator_cpu_share"],
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
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each call")
    parser.add_argument("--rounds", type=int, default=2, help="pairs of runs, the order alternating")
    parser.add_argument("--generators", type=int, help="caller processes (default: bridge loadtest's)")
    args = parser.parse_args()
    main(args.calls, args.seconds, args.rounds, args.generators)
