"""Benchmark of the local STT server (not a test): real-time factor and final latency on this machine.

    .venv/bin/python benchmarks/bench_local_stt.py [--sessions N] [--model tiny.en|base]

* RTF: the sample call (22.8 s, 8 kHz mu-law) sent as fast as possible; wall time until the last final
  divided by the audio duration (1 session, then N at once), and the process's CPU time over the audio
  of all the sessions (what one session costs a machine: its cores over it is how many it carries).
* Final latency: the same call streamed in real time (20 ms frames); for each final, the time from
  the moment the end of its speech was sent to the moment the final arrived.
Prints one JSON line per measurement.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bridge.local_stt.models import ModelName
from bridge.local_stt.server import LocalSttServer, ServerOptions
from bridge.loop import serving
from bridge.tools.speech import sample_call

REQUEST = {"encoding": "wav/ulaw", "sample_rate": 8000, "bit_depth": 8, "endpointing": 0.3}


async def one_session(base: str, ulaw: bytes, realtime: bool) -> tuple[float, list[float]]:
    async with aiohttp.ClientSession() as http:
        async with http.post(base + "/v2/live", json=REQUEST) as resp:
            session = await resp.json()
        sent_at: list[float] = []
        latencies: list[float] = []
        t0 = time.monotonic()
        async with http.ws_connect(session["url"]) as ws:

            async def receive() -> None:
                async for msg in ws:
                    data = json.loads(msg.data)
                    if data["type"] == "transcript" and data["data"]["is_final"]:
                        end_frame = min(int(data["data"]["utterance"]["end"] / 0.02), len(sent_at) - 1)
                        latencies.append(time.monotonic() - sent_at[end_frame])

            reader = asyncio.create_task(receive())
            for i in range(0, len(ulaw), 160):
                if realtime:
                    delay = t0 + (i // 160) * 0.02 - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                await ws.send_bytes(ulaw[i : i + 160])
                sent_at.append(time.monotonic())
            await ws.send_str(json.dumps({"type": "stop_recording"}))
            await reader
        return time.monotonic() - t0, latencies


async def main(sessions: int, model: ModelName) -> None:
    ulaw, _ = sample_call()
    seconds = len(ulaw) / 8000
    stt = LocalSttServer(ServerOptions(model=model, max_sessions=max(8, sessions)))
    async with serving(stt.app) as base:
        machine = {"model": model, "cores": os.cpu_count(), "audio_seconds": round(seconds, 1)}
        for n in sorted({1, sessions}):
            c0 = time.process_time()
            results = await asyncio.gather(*(one_session(base, ulaw, realtime=False) for _ in range(n)))
            cpu = time.process_time() - c0
            wall = max(r[0] for r in results)
            print(
                json.dumps(
                    {
                        "measure": "rtf_fast",
                        "sessions": n,
                        "rtf_per_session": round(wall / seconds, 3),
                        "cpu_rtf_per_session": round(cpu / (n * seconds), 3),
                        "load_average": round(os.getloadavg()[0], 2),
                        **machine,
                    }
                )
            )
        wall, latencies = await one_session(base, ulaw, realtime=True)
        lat = sorted(latencies)
        print(
            json.dumps(
                {
                    "measure": "final_latency_realtime",
                    "finals": len(lat),
                    "latency_ms_median": round(lat[len(lat) // 2] * 1000),
                    "latency_ms_max": round(lat[-1] * 1000),
                    "endpointing_s": REQUEST["endpointing"],
                    **machine,
                }
            )
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=2)
    parser.add_argument("--model", choices=("tiny.en", "base"), default="tiny.en")
    args = parser.parse_args()
    asyncio.run(main(args.sessions, args.model))
