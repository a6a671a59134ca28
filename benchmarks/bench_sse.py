"""Benchmark of ``GET /v1/events`` (not a test): what its readers cost the bridge's process, per event and
reader, next to the same events published with no reader, side by side in one run on one machine.

    .venv/bin/python benchmarks/bench_sse.py [--readers 20] [--rate 200] [--seconds 5]

The route and its tap run alone in this process (no calls: what a call costs is ``bridge loadtest``'s);
events shaped like an ``utterance.final`` of 100 calls are published at ``--rate`` a second, and each reader
is a ``curl -N`` process (its CPU is not counted). Prints the process's CPU per second without readers, with
them, and the difference per event and reader; then one JSON line with the same figures. Issue 32's target
(20 readers following 100 calls, at most 1.1x the bridge's CPU per call-second) is measured against what the
calls cost; this bench gives the readers' side of that sum.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import shutil
import subprocess
import time

from aiohttp import web

from bridge.app_keys import SETTINGS
from bridge.event_tap import EventTap
from bridge.http.all_events import add_routes
from bridge.http.call_events import EVENT_TAP
from bridge.settings import Settings

TOKEN = "bench-sse-token-0123456789"


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(readers: int, rate: int, seconds: float) -> tuple[float, int]:
    """CPU seconds per second of this process while publishing ``rate`` events a second to ``readers``."""
    app = web.Application()
    app[SETTINGS] = Settings.load(environ={"BRIDGE_API_TOKEN": TOKEN})
    app[EVENT_TAP] = tap = EventTap()
    add_routes(app)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    curl = ["curl", "-sN", "-H", f"Authorization: Bearer {TOKEN}", f"http://127.0.0.1:{port}/v1/events"]
    procs = [await asyncio.create_subprocess_exec(*curl, stdout=subprocess.DEVNULL) for _ in range(readers)]
    try:
        async with asyncio.timeout(20):
            while tap.feed.followers < readers:
                await asyncio.sleep(0.05)
        body = json.dumps({"type": "utterance.final", "call": {"id": "0" * 32}, "utterance": {"text": "y" * 400}})
        published, started, cpu = 0, time.monotonic(), _cpu()
        while (elapsed := time.monotonic() - started) < seconds:
            while published < elapsed * rate:
                published += 1
                tap.publish(f"{published % 100:032d}", published, "utterance.final", body)
            await asyncio.sleep(0.01)
        return (_cpu() - cpu) / seconds, published
    finally:
        for proc in procs:
            proc.terminate()
            await proc.wait()
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--readers", type=int, default=20)
    parser.add_argument("--rate", type=int, default=200, help="events published a second")
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    if shutil.which("curl") is None:
        raise SystemExit("curl is needed (apt-get install curl)")
    alone, _ = asyncio.run(measure(0, args.rate, args.seconds))
    followed, published = asyncio.run(measure(args.readers, args.rate, args.seconds))
    per_event_us = (followed - alone) / max(1, args.readers * published / args.seconds) * 1e6
    print(f"no reader:    {alone * 1000:.1f} ms CPU per second")
    print(f"{args.readers} readers: {followed * 1000:.1f} ms CPU per second")
    print(f"each event to each reader: {per_event_us:.1f} us")
    figures = {"readers": args.readers, "rate": args.rate, "alone_ms": alone * 1000, "followed_ms": followed * 1000}
    print(json.dumps({**figures, "per_event_reader_us": per_event_us}))


if __name__ == "__main__":
    main()
