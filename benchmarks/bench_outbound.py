"""Benchmark of outbound calls (not a test): prints one JSON line per figure.

    .venv/bin/python benchmarks/bench_outbound.py [--rate 20] [--seconds 10] [--answers 10] [--concurrent 2]

The bridge runs in this process (``create_app`` on a loopback port) with its fakes on loopback: Gladia (no
transcripts), the bot's webhook, and Twilio's call API as the callee (:mod:`bridge.tools.callee`: it
answers, connects the stream with the bridge's claim, plays a person's "hello" and records what it hears,
in real time). The bridge speaks with its embedded voice (Piper, the ``local`` extra). The figures include
the harness sharing the bridge's event loop: upper bounds of the bridge's own share.

* ``machine``: the CPU count and model, first.
* ``create_ms`` (target p99 <= 50 ms at 20 creates a second): ``POST /v1/calls`` sent at ``--rate`` a second
  for ``--seconds``, from the send to the ``201``; the carrier request goes out after the answer (the fake
  lets these calls ring, cancelled at the end).
* ``first_say_ms`` (target <= 300 ms with the speech cached): ``--answers`` calls answered by a person, at
  most ``--concurrent`` at once, each with a ``first_say``; from the callee's stream ``start`` to the first
  audible frame of ``first_say`` at its loudspeaker. The speech is made while the phone rings (200 ms
  here; the first call of a run also loads the voice, so it is reported apart as ``first_say_cold_ms``).

Every figure: median, p99, max and the count of samples, in milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bridge.app import create_app
from bridge.audio import audioop
from bridge.log import configure_logging
from bridge.loop import loopback_socket, serving
from bridge.settings import Settings
from bridge.tools.callee import Answering, CalleeCall, FakeCarrierApi
from tests.support.fakes import FakeGladia, FakeWebhook

AUTH_TOKEN = "twilio-bench-auth-token"
ACCOUNT_SID = "AC" + "0" * 32
API_TOKEN = "bench-api-token"
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
FIRST_SAY = "Hello, this is the clinic calling about your appointment tomorrow."
AUDIBLE = 500  # a 16-bit sample this loud is speech, not the playout's silence


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def figure(name: str, values: list[float], **extra: Any) -> None:
    line = {"figure": name, "count": len(values), **extra}
    if values:
        line |= {
            "median_ms": round(statistics.median(values), 1),
            "p99_ms": round(pct(values, 0.99), 1),
            "max_ms": round(max(values), 1),
        }
    print(json.dumps(line), flush=True)


def machine() -> None:
    model = platform.processor() or ""
    try:
        for row in Path("/proc/cpuinfo").read_text().splitlines():
            if row.startswith("model name"):
                model = row.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    print(json.dumps({"figure": "machine", "cpus": os.cpu_count(), "model": model}), flush=True)


def first_audible_ms(call: CalleeCall) -> float | None:
    """From the callee's stream start to the first audible frame it played (ms)."""
    for played in call.ear.played:
        pcm = audioop.ulaw2lin(played.audio, 2)
        for i in range(0, len(pcm) - 1, 2):
            if abs(int.from_bytes(pcm[i : i + 2], "little", signed=True)) >= AUDIBLE:
                return (played.start + i / 2 / 8000) * 1000
    return None


async def run(args: argparse.Namespace) -> None:
    machine()
    gladia, hook = FakeGladia(segment_seconds=3600.0), FakeWebhook()
    fake = FakeCarrierApi("twilio", Answering(answer="no-answer", ring_ms=600_000), auth_token=AUTH_TOKEN,
                          account_sid=ACCOUNT_SID)  # fmt: skip
    api = await fake.start()
    async with serving(gladia.app) as gladia_url, serving(hook.app) as hook_url:
        gladia.base_url = gladia_url
        sock = loopback_socket()
        base = f"http://127.0.0.1:{sock.getsockname()[1]}"
        env = {
            "BRIDGE_DATA_DIR": tempfile.mkdtemp(prefix="bench-outbound-"),
            "GLADIA_API_URL": gladia_url,
            "GLADIA_API_KEY": "bench",
            "BOT_WEBHOOK_URL": hook_url + "/hook",
            "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
            "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
            "TWILIO_API_URL": api,
            "BRIDGE_PUBLIC_URL": base,
            "BRIDGE_API_TOKEN": API_TOKEN,
            "BRIDGE_DIAL_TO": "+1555",
            "BRIDGE_DIAL_FROM": "+15550002",
            "BRIDGE_LOG_LEVEL": "warning",
        }
        settings = Settings.load(environ=env, overrides={"outbound.max_pending": 10_000})
        configure_logging(settings.log.level, settings.log.format)
        runner = web.AppRunner(create_app(settings), handle_signals=False, access_log=None)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        try:
            async with aiohttp.ClientSession() as http:
                await _creates(http, base, args)
                fake.answering = Answering(answer="human", ring_ms=200, stay_s=4.0, voice="espeak")
                await _first_says(http, base, fake, args)
        finally:
            await runner.cleanup()  # the calls still ringing are cancelled at the fake
            await fake.aclose()


async def _creates(http: aiohttp.ClientSession, base: str, args: argparse.Namespace) -> None:
    times: list[float] = []
    body = {"to": "+15550142", "from": "+15550002", "carrier": "twilio", "first_say": FIRST_SAY}

    async def one() -> None:
        sent = time.perf_counter()
        async with http.post(f"{base}/v1/calls", json=body, headers=AUTH) as resp:
            await resp.read()
            assert resp.status == 201, resp.status
        times.append((time.perf_counter() - sent) * 1000)

    tasks = []
    total = int(args.rate * args.seconds)
    start = time.perf_counter()
    for i in range(total):
        await asyncio.sleep(max(0.0, start + i / args.rate - time.perf_counter()))
        tasks.append(asyncio.create_task(one()))
    await asyncio.gather(*tasks)
    figure("create_ms", times, rate=args.rate, seconds=args.seconds, target_p99_ms=50)


async def _first_says(http: aiohttp.ClientSession, base: str, fake: FakeCarrierApi, args: argparse.Namespace) -> None:
    body = {"to": "+15550143", "from": "+15550002", "carrier": "twilio", "first_say": FIRST_SAY}
    before = len(fake.calls)
    gate = asyncio.Semaphore(args.concurrent)

    async def one() -> None:
        async with gate:
            async with http.post(f"{base}/v1/calls", json=body, headers=AUTH) as resp:
                assert resp.status == 201, await resp.text()
            await asyncio.sleep(0.05)
            call = fake.calls[-1]
            await asyncio.wait_for(call.done.wait(), 60)

    cold = asyncio.create_task(one())
    await cold
    await asyncio.gather(*(one() for _ in range(args.answers)))
    answered = fake.calls[before:]
    figures = [ms for c in answered if (ms := first_audible_ms(c)) is not None]
    figure("first_say_cold_ms", figures[:1])
    figure("first_say_ms", figures[1:], concurrent=args.concurrent, target_ms=300)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=20.0, help="creates a second (default 20)")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds of creates (default 10)")
    parser.add_argument("--answers", type=int, default=10, help="answered calls with a first_say (default 10)")
    parser.add_argument("--concurrent", type=int, default=2, help="answered calls at once (default 2)")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
