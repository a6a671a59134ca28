"""Benchmark of call recordings under load (not a test): what recording every call costs the bridge, as a
ratio to the same calls unrecorded, side by side in one run on one machine.

    .venv/bin/python benchmarks/bench_recordings_load.py [--calls 200] [--seconds 30] [--rounds 2] [--format wav]

Each round runs ``bridge loadtest`` twice at the same calls and call length, with a ``--config`` file that
says ``[recording] enabled = false`` and one that says ``enabled = true`` (and ``format``); the order
alternates from round to round. Prints the bridge's CPU per call-second, forward latency p99, RSS per call,
the load average before each run and the ratio on / off per round and its median (target: at most 1.2x
for WAV); then one JSON line with the same figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

from bridge.tools.runs import loadtest_run, machine

ROOT = Path(__file__).resolve().parent.parent


def loadtest(calls: int, seconds: float, config: Path) -> dict[str, Any]:
    return loadtest_run(["--calls", str(calls), "--seconds", str(seconds), "--config", str(config)], cwd=ROOT)


def main(calls: int, seconds: float, rounds: int, fmt: str) -> None:
    print(f"machine: {machine()}; load average at start: {os.getloadavg()[0]:.2f}")
    print(f"bridge loadtest --calls {calls} --seconds {seconds}, recordings off vs on ({fmt}), {rounds} rounds")
    print(
        f"{'round':>5}  {'recording':<9}  {'cpu ms/call-s':>12}  {'fwd p99 ms':>9}  {'rss kb/call':>11}  "
        f"{'load':>5}  ratio"
    )
    with tempfile.TemporaryDirectory() as tmp:
        configs = {mode: Path(tmp) / f"{mode}.toml" for mode in ("off", "on")}
        configs["off"].write_text("[recording]\nenabled = false\n")
        configs["on"].write_text(f'[recording]\nenabled = true\nformat = "{fmt}"\n')
        ratios: list[float] = []
        runs: list[dict[str, Any]] = []
        for n in range(1, rounds + 1):
            order = ("off", "on") if n % 2 else ("on", "off")
            results = {mode: loadtest(calls, seconds, configs[mode]) for mode in order}
            ratio = results["on"]["bridge_cpu_ms_per_call_second"] / results["off"]["bridge_cpu_ms_per_call_second"]
            ratios.append(ratio)
            for mode in order:
                r = results[mode]
                print(
                    f"{n:>5}  {mode:<9}  {r['bridge_cpu_ms_per_call_second']:>12.3f}  "
                    f"{r['forward_latency_ms']['p99']:>9.2f}  {r.get('bridge_rss_kb_per_call', 0):>11}  "
                    f"{r.get('load_before', 0):>5.2f}  {f'{ratio:.3f}' if mode == 'on' else ''}",
                    flush=True,
                )
                runs.append({"round": n, "recording": mode, **r})
    print(f"on / off CPU per call-second: median {statistics.median(ratios):.3f} over {rounds} rounds")
    print(
        json.dumps(
            {
                "figure": "recordings_cpu_ratio",
                "machine": machine(),
                "calls": calls,
                "seconds": seconds,
                "format": fmt,
                "ratios": [round(r, 3) for r in ratios],
                "median_ratio": round(statistics.median(ratios), 3),
                "runs": [
                    {
                        "round": r["round"],
                        "recording": r["recording"],
                        "bridge_cpu_ms_per_call_second": r["bridge_cpu_ms_per_call_second"],
                        "forward_p99_ms": r["forward_latency_ms"]["p99"],
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
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each call")
    parser.add_argument("--rounds", type=int, default=2, help="pairs of runs, the order alternating")
    parser.add_argument("--format", choices=("wav", "opus"), default="wav")
    args = parser.parse_args()
    main(args.calls, args.seconds, args.rounds, args.format)
