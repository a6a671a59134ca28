"""Soak benchmark, full length (not a test): 50 concurrent real-time calls for 10 minutes, Gladia
dropping every session's socket every 3 s of audio; prints the bridge's memory after each wave and
whether anything was lost.

    .venv/bin/python benchmarks/bench_soak.py [--calls 50] [--minutes 10] [--call-seconds 60]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bridge.log import configure_logging
from bridge.loop import serving
from tests.support.fakes import FakeGladia, FakeWebhook
from tests.support.process import free_port
from tests.support.soak import run_waves, start_soak_bridge


async def main(calls: int, minutes: float, call_seconds: float) -> None:
    configure_logging("warning", "json")
    gladia, hook = FakeGladia(), FakeWebhook()
    gladia.drop_every_bytes = 24_000
    async with serving(gladia.app) as gladia_url, serving(hook.app) as hook_url:
        gladia.base_url = gladia_url
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BRIDGE_", "GLADIA_", "BOT_", "TWILIO_"))}
        env.update(
            GLADIA_API_URL=gladia_url,
            GLADIA_API_KEY="test-key",
            BOT_WEBHOOK_URL=hook_url + "/hook",
            BRIDGE_DATA_DIR=tempfile.mkdtemp(prefix="bridge-soak-"),
        )
        port = free_port()
        proc = await start_soak_bridge(env, port)
        try:
            waves = max(1, math.ceil(minutes * 60 / call_seconds))
            result = await run_waves(
                port,
                proc.pid,
                gladia,
                hook,
                calls=calls,
                call_seconds=call_seconds,
                waves=waves,
                report=lambda r: print(json.dumps(r), flush=True),
            )
        finally:
            await proc.stop()
    rss = result.rss_after_wave_kib
    print(
        json.dumps(
            {
                "calls": result.calls,
                "lost_calls": len(result.lost_calls),
                "rss_first_wave_mib": round(rss[0] / 1024, 1),
                "rss_last_wave_mib": round(rss[-1] / 1024, 1),
                "cores": os.cpu_count(),
            }
        )
    )


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--calls", type=int, default=50)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--call-seconds", type=float, default=60.0)
    a = p.parse_args()
    asyncio.run(main(a.calls, a.minutes, a.call_seconds))
