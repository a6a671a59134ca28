"""Benchmark of fleet mode (not a test): what a call costs the bridge in fleet mode (on Redis) next to
single mode (SQLite), as a ratio, side by side in one run on one machine; and what it costs Redis.

    .venv/bin/python benchmarks/bench_fleet.py [--calls 200] [--seconds 20] [--rounds 2] [--instances 2]

Each round runs ``bridge loadtest`` twice at the same calls and call length: single mode, and
``--fleet`` (one instance in fleet mode, on a redis-server the load test starts: AOF,
``appendfsync everysec`` unless ``--redis-appendfsync`` says otherwise; dialled directly, as in single
mode, so the only difference is fleet mode). The order alternates from round to round, so a machine
that gets busier or quieter during the run does not favour one side. Then one run with
``--instances N`` (N bridges on one Redis behind the load test's loopback balancer), for information:
its bridge CPU is the sum over the N, and the balancer's is apart.

Prints a table: the bridges' CPU per call-second, forward latency p99, final -> webhook p99, frames lost,
the Redis commands per call-second (``INFO stats`` ``total_commands_processed``: a command a script runs
counts as well as the script), Redis's and the balancer's CPU per call-second, the generator's CPU share
(over 0.8: the load, not the bridge, was the limit), the load average before the run, and the ratio
fleet / single per round and its median (the target: at most 1.15); then one JSON line with the same
figures and the Redis commands by name.
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
TARGET = 1.15  # issue 15: fleet mode's CPU per call-second at most 1.15x single mode's


def loadtest(calls: int, seconds: float, mode: list[str], generators: int | None, fsync: str) -> dict[str, Any]:
    """One ``bridge loadtest`` run (fleet modes with the given Redis fsync policy)."""
    args = ["--calls", str(calls), "--seconds", str(seconds), *mode]
    if mode:
        args += ["--redis-appendfsync", fsync]
    if generators is not None:
        args += ["--generators", str(generators)]
    return loadtest_run(args, cwd=ROOT)


def _mode(r: dict[str, Any]) -> str:
    if not r["fleet"]:
        return "single"
    return "fleet" if r["instances"] == 1 else f"fleet x{r['instances']}"


def _num(value: float | None, fmt: str, width: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}{fmt}}"


HEADER = (
    f"{'round':>5}  {'mode':<9}  {'calls':>5}  {'cpu ms/call-s':>13}  {'fwd p99':>8}  {'hook p99':>8}  "
    f"{'lost':>5}  {'finals':>11}  {'redis ops/call-s':>16}  {'redis cpu':>9}  {'bal cpu':>7}  {'gen':>4}  "
    f"{'load':>4}  {'ratio':>5}"
)


def row(round_: str, r: dict[str, Any], ratio: str) -> str:
    return (
        f"{round_:>5}  {_mode(r):<9}  {r['calls']:>5}  {r['bridge_cpu_ms_per_call_second']:>13.3f}  "
        f"{r['forward_latency_ms']['p99']:>8.2f}  {r['final_to_webhook_ms']['p99']:>8.2f}  {r['frames_lost']:>5}  "
        f"{r['finals_delivered']:>5}/{r['finals_expected']:<5}  {_num(r['redis_ops_per_call_second'], '.2f', 16)}  "
        f"{_num(r['redis_cpu_ms_per_call_second'], '.3f', 9)}  {_num(r['balancer_cpu_ms_per_call_second'], '.3f', 7)}"
        f"  {r['generator_cpu_share']:>4.2f}  {r['load_before']:>4.2f}  {ratio:>5}"
    )


def summary(r: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "fleet",
        "instances",
        "calls",
        "bridge_cpu_ms_per_call_second",
        "frames_lost",
        "failed_calls",
        "finals_delivered",
        "finals_expected",
        "redis_appendfsync",
        "redis_ops_per_call_second",
        "redis_ops_per_call",
        "redis_commands_per_call_second",
        "redis_cpu_ms_per_call_second",
        "balancer_cpu_ms_per_call_second",
        "balancer_connections",
        "generator_cpu_share",
        "load_before",
    )
    return {
        "mode": _mode(r),
        **{k: r[k] for k in keys},
        "forward_p99_ms": r["forward_latency_ms"]["p99"],
        "final_to_webhook_p99_ms": r["final_to_webhook_ms"]["p99"],
    }


def main(calls: int, seconds: float, rounds: int, instances: int, generators: int | None, fsync: str) -> None:
    load = os.getloadavg()
    print(f"machine: {machine()}; load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(
        f"bridge loadtest --calls {calls} --seconds {seconds}: single mode vs --fleet (one instance), {rounds} "
        f"rounds; redis-server started by the load test, appendfsync {fsync}"
    )
    print(HEADER)
    ratios: list[float] = []
    runs: list[dict[str, Any]] = []
    modes = {"single": [], "fleet": ["--fleet"]}
    for n in range(1, rounds + 1):
        order = ("single", "fleet") if n % 2 else ("fleet", "single")
        results = {}
        for name in order:
            results[name] = loadtest(calls, seconds, modes[name], generators, fsync)
        ratio = results["fleet"]["bridge_cpu_ms_per_call_second"] / results["single"]["bridge_cpu_ms_per_call_second"]
        ratios.append(ratio)
        for name in order:
            print(row(str(n), results[name], f"{ratio:.2f}" if name == "fleet" else ""), flush=True)
        runs.extend({"round": n, **summary(results[name])} for name in order)
    median = statistics.median(ratios)
    verdict = "within" if median <= TARGET else "OVER"
    print(f"fleet / single CPU per call-second: median {median:.2f} over {rounds} rounds ({verdict} {TARGET})")
    if instances > 1:
        r = loadtest(calls, seconds, ["--instances", str(instances)], generators, fsync)
        print(row("info", r, ""), flush=True)
        print(f"  --instances {instances}: connections per instance {r['balancer_connections']}")
        runs.append({"round": "info", **summary(r)})
    print(
        json.dumps(
            {
                "figure": "fleet_cpu_ratio",
                "machine": machine(),
                "load_average_at_start": load,
                "calls": calls,
                "seconds": seconds,
                "redis_appendfsync": fsync,
                "ratios": [round(r, 3) for r in ratios],
                "median_ratio": round(median, 3),
                "target": TARGET,
                "runs": runs,
            }
        )
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each call")
    parser.add_argument("--rounds", type=int, default=2, help="pairs of runs, the order alternating")
    parser.add_argument(
        "--instances", type=int, default=2, help="the fleet run for information: this many bridges (1 or 0: none)"
    )
    parser.add_argument("--generators", type=int, help="caller processes (default: bridge loadtest's)")
    parser.add_argument(
        "--redis-appendfsync", choices=("always", "everysec", "no"), default="everysec", help="the started Redis's"
    )
    args = parser.parse_args()
    main(args.calls, args.seconds, args.rounds, args.instances, args.generators, args.redis_appendfsync)
