"""Benchmark (not a test): the bridge's CPU and forward latency as ratios to the bare forwarder
(``bridge loadtest --reference``), side by side in one run on one machine.

    .venv/bin/python benchmarks/bench_ratios.py [--calls 100 200 300] [--seconds 20] [--rounds 2]
        [--sweep 400 500 600] [--workers]

* **Ratios.** At each ``--calls``, ``--rounds`` rounds of one bridge run and one reference run, the
  order alternating from round to round (a machine getting busier or quieter favours neither). Per
  row: the bridge's and the reference's CPU per call-second, their ratio, the forward latency p99 of
  each, frames lost, and ``limited_by`` (the harness, not the bridge, was the limit).
* **Where each passes 5 ms p99** (``--sweep``): one run of each at every load of ``--calls`` and
  ``--sweep``, in order; the first load at which each one's forward p99 passes 5 ms, or "not within"
  the loads tried (with the harness's own limit, when it was reached first).
* **Workers** (``--workers``): ``--workers 2`` against ``--workers 1`` at the largest ``--calls``,
  alternating, both pinned as ``bridge loadtest`` pins them (the same bridge cores for one worker and
  two, the harness on its own: on fewer than three cores the two workers share one) and both
  unpinned (``--no-pin``: the workers spread over every core, sharing them with the harness): the CPU
  per call-second of two workers over one, each way. Pinned, two controls run beside them: one
  process carrying half the calls (what each worker carries), and two separate bridges carrying half
  each at the same time, on the same bridge core (two load tests at once): if two workers cost what
  two separate bridges do, the difference from one worker is not worker mode's but two processes'.
  Two workers over two separate bridges, round by round, is worker mode's own cost; and the reference
  forwarder at half the calls over itself at all of them shows whether a bare forwarder, too, costs
  more per call when a process carries half the load (what every worker does).

Prints the tables, then one JSON line with every run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bridge.tools.runs import loadtest_run, machine

ROOT = Path(__file__).resolve().parent.parent
P99_LIMIT_MS = 5.0


def run(calls: int, seconds: float, *extra: str) -> dict[str, Any]:
    return loadtest_run(["--calls", str(calls), "--seconds", str(seconds), *extra], cwd=ROOT)


def cpu(r: dict[str, Any]) -> float:
    return float(r["bridge_cpu_ms_per_call_second"])


def p99(r: dict[str, Any]) -> float:
    return float(r["forward_latency_ms"]["p99"])


def ratios(calls: list[int], seconds: float, rounds: int, runs: list[dict[str, Any]]) -> None:
    print(
        f"{'calls':>5}  {'round':>5}  {'bridge':>7}  {'reference':>9}  {'ratio':>5}  {'p99 bridge':>10}  "
        f"{'p99 ref':>7}  {'lost':>4}  limited_by"
    )
    for n in calls:
        found: list[float] = []
        for k in range(1, rounds + 1):
            order = ("bridge", "reference") if k % 2 else ("reference", "bridge")
            got = {side: run(n, seconds, *(["--reference"] if side == "reference" else [])) for side in order}
            b, r = got["bridge"], got["reference"]
            runs.extend(got.values())
            found.append(cpu(b) / cpu(r))
            limited = sorted({*(b.get("limited_by") or []), *(r.get("limited_by") or [])}) or None
            print(
                f"{n:>5}  {k:>5}  {cpu(b):>7.3f}  {cpu(r):>9.3f}  {found[-1]:>5.2f}  {p99(b):>10.2f}  "
                f"{p99(r):>7.2f}  {b['frames_lost']:>4}  {limited}"
            )
        print(f"{n:>5}  median ratio {statistics.median(found):.2f}")


def sweep(loads: list[int], seconds: float, runs: list[dict[str, Any]]) -> None:
    passed: dict[str, int | None] = {"bridge": None, "reference": None}
    harness: int | None = None
    print(f"{'calls':>5}  {'p99 bridge':>10}  {'p99 ref':>7}  {'cpu bridge':>10}  {'cpu ref':>7}  limited_by")
    for n in loads:
        b, r = run(n, seconds), run(n, seconds, "--reference")
        runs.extend((b, r))
        for side, result in (("bridge", b), ("reference", r)):
            if passed[side] is None and p99(result) > P99_LIMIT_MS:
                passed[side] = n
        limited = sorted({*(b.get("limited_by") or []), *(r.get("limited_by") or [])}) or None
        if limited and harness is None:
            harness = n
        print(f"{n:>5}  {p99(b):>10.2f}  {p99(r):>7.2f}  {cpu(b):>10.3f}  {cpu(r):>7.3f}  {limited}")
        if passed["bridge"] is not None and passed["reference"] is not None:
            break
    for side, at in passed.items():
        where = f"at {at} calls" if at is not None else f"not within {loads[-1]} calls"
        print(f"{side}: forward p99 passes {P99_LIMIT_MS:g} ms {where}")
    if harness is not None:
        print(f"the harness itself was the limit from {harness} calls (limited_by): later rows describe it")


def workers(calls: int, seconds: float, rounds: int, runs: list[dict[str, Any]]) -> None:
    half = calls // 2
    print(f"{'round':>5}  {'pinning':>8}  {'bridge':>24}  {'cpu ms/call-s':>13}  {'p99 ms':>6}  {'lost':>4}")
    found: dict[str, list[float]] = {
        "pinned": [],
        "unpinned": [],
        "half": [],
        "separate": [],
        "own": [],
        "ref_half": [],
    }

    def show(k: int, how: str, what: str, r: dict[str, Any]) -> None:
        print(f"{k:>5}  {how:>8}  {what:>24}  {cpu(r):>13.3f}  {p99(r):>6.2f}  {r['frames_lost']:>4}")

    for k in range(1, rounds + 1):
        for how, extra in (("pinned", ()), ("unpinned", ("--no-pin",))):
            order = (1, 2) if k % 2 else (2, 1)
            got = {w: run(calls, seconds, "--workers", str(w), *extra) for w in order}
            runs.extend(got.values())
            for w in order:
                show(k, how, f"{w} worker{'s' if w > 1 else ''}, {calls} calls", got[w])
            found[how].append(cpu(got[2]) / cpu(got[1]))
            if how == "pinned":
                alone = run(half, seconds)
                with ThreadPoolExecutor(2) as pool:  # two load tests at once: both bridges on the bridge core
                    pair = list(pool.map(lambda _: run(half, seconds), range(2)))
                runs.extend((alone, *pair))
                show(k, how, f"1 process, {half} calls", alone)
                for r in pair:
                    show(k, how, f"1 of 2 separate, {half}", r)
                found["half"].append(cpu(alone) / cpu(got[1]))
                separate = statistics.mean(cpu(r) for r in pair)
                found["separate"].append(separate / cpu(got[1]))
                found["own"].append(cpu(got[2]) / separate)
                # The bare forwarder's own load curve: does it, too, cost more per call at half the calls?
                ref = {n: run(n, seconds, "--reference") for n in ((calls, half) if k % 2 else (half, calls))}
                runs.extend(ref.values())
                for n, r in ref.items():
                    show(k, how, f"reference, {n} calls", r)
                found["ref_half"].append(cpu(ref[half]) / cpu(ref[calls]))
    labels = {
        "pinned": f"two workers / one, pinned, at {calls} calls",
        "unpinned": f"two workers / one, unpinned, at {calls} calls",
        "half": f"one process at {half} calls / one at {calls}",
        "separate": f"two separate bridges at {half} calls each, sharing the core / one at {calls}",
        "own": "two workers / two separate bridges (worker mode's own cost), pinned",
        "ref_half": f"the reference at {half} calls / the reference at {calls} (the bare forwarder's load curve)",
    }
    for how, ratios_found in found.items():
        each = ", ".join(f"{x:.2f}" for x in ratios_found)
        print(f"{labels[how]}: {each}; median {statistics.median(ratios_found):.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, nargs="+", default=[100, 200, 300])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--sweep", type=int, nargs="*", default=[], help="more loads for the 5 ms p99 search")
    parser.add_argument("--workers", action="store_true", help="two workers against one at the largest --calls")
    args = parser.parse_args()
    print(f"machine: {machine()}; load average at start: {os.getloadavg()[0]:.2f}")
    runs: list[dict[str, Any]] = []
    ratios(args.calls, args.seconds, args.rounds, runs)
    if args.sweep:
        sweep(sorted({*args.calls, *args.sweep}), args.seconds, runs)
    if args.workers:
        workers(max(args.calls), args.seconds, args.rounds, runs)
    print(json.dumps({"machine": machine(), "runs": runs}))


if __name__ == "__main__":
    main()
