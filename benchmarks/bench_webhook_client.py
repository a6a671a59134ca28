"""Micro-benchmark of the webhook client (not a test): the client's CPU per POST, the bridge's
:class:`~bridge.delivery.webhook.WebhookClient` (keep-alive connections, answers read by llhttp) next to the same
signed POST through aiohttp's ``ClientSession`` (what the client did before), side by side in one run.

    .venv/bin/python benchmarks/bench_webhook_client.py [--posts 1000] [--rounds 10] [--loop uvloop|asyncio]

The bot is a loopback aiohttp server in another process (it answers each event 200 with a small JSON
body, as a bot with nothing to say would), so this process's CPU (``time.process_time``) is the client's
alone: building and signing the event's headers, the request, reading the answer. The POSTs are
sequential (one in flight); each side gets a warm-up first, and the sides alternate from round to round.
Prints CPU and wall time per POST for each side per round and the round's ratio (the two sides ran back to
back: on a shared machine whose speed drifts, the ratio holds better than either figure), the medians;
then one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
from yarl import URL

ROOT = Path(__file__).resolve().parent.parent
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
BODY = json.dumps({"type": "utterance.final", "sequence": 7, "utterance": {"text": "x" * 120}})


def serve(port: int) -> None:
    """The bot: answers every POST 200 ``{"ok":true}`` (run in its own process)."""
    from aiohttp import web

    async def hook(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=b'{"ok":true}', content_type="application/json")

    app = web.Application()
    app.router.add_post("/hook", hook)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None, handle_signals=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("the benchmark's bot did not start")


async def measure(post: Callable[[], Awaitable[None]], posts: int) -> tuple[float, float]:
    """CPU and wall microseconds per POST over ``posts`` sequential POSTs."""
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(posts):
        await post()
    return (time.process_time() - cpu) / posts * 1e6, (time.perf_counter() - wall) / posts * 1e6


async def bench(url: str, posts: int, rounds: int) -> dict[str, list[tuple[float, float]]]:
    from bridge.delivery.webhook import Delivered, WebhookClient, WebhookEvent
    from bridge.untrusted import read_bounded

    event = WebhookEvent("msg_c1_7", BODY)
    results: dict[str, list[tuple[float, float]]] = {"pool": [], "aiohttp": []}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, limit_per_host=0)) as http:
        client = WebhookClient(url, secret=SECRET, timeout=5.0)
        timeout = aiohttp.ClientTimeout(total=5.0)
        target = URL(url)  # parsed once, as the client did

        async def new() -> None:
            outcome = await client.post(event)
            assert isinstance(outcome, Delivered), outcome

        async def old() -> None:  # WebhookClient.post as it was, through aiohttp
            async with http.post(
                target, data=event.body.encode(), headers=client.headers(event), timeout=timeout, allow_redirects=False
            ) as resp:
                assert resp.status == 200
                await read_bounded(resp.content, client.max_response_bytes)
                resp.headers.get("Content-Type", "")

        sides = {"pool": new, "aiohttp": old}
        try:
            for side in sides.values():
                await measure(side, max(100, posts // 10))  # warm-up: connections, caches
            for n in range(rounds):
                order = list(sides) if n % 2 == 0 else list(reversed(sides))
                for name in order:
                    results[name].append(await measure(sides[name], posts))
        finally:
            await client.aclose()
    return results


def main(posts: int, rounds: int, loop: str) -> None:
    port = free_port()
    bot = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        wait_listening(port)
        url = f"http://127.0.0.1:{port}/hook"
        if loop == "uvloop":
            import uvloop

            results = uvloop.run(bench(url, posts, rounds))
        else:
            results = asyncio.run(bench(url, posts, rounds))
    finally:
        bot.terminate()
        bot.wait(10)
    load = os.getloadavg()[0]
    print(f"{posts} sequential signed POSTs per round, {rounds} rounds, loop {loop}; load average {load:.2f}")
    print(f"{'round':>5}  {'client':<9}  {'cpu us/POST':>11}  {'wall us/POST':>12}  {'aiohttp/pool CPU':>16}")
    ratios = [old[0] / new[0] for new, old in zip(results["pool"], results["aiohttp"], strict=True)]
    for n in range(rounds):
        for name, figures in results.items():
            last = f"{ratios[n]:>15.2f}x" if name == "aiohttp" else ""
            print(f"{n + 1:>5}  {name:<9}  {figures[n][0]:>11.1f}  {figures[n][1]:>12.1f}  {last}")
    medians = {name: statistics.median(cpu for cpu, _ in figures) for name, figures in results.items()}
    walls = {name: statistics.median(wall for _, wall in figures) for name, figures in results.items()}
    ratio = statistics.median(ratios)
    for name in results:
        print(f"median {name:<9}  {medians[name]:>11.1f}  {walls[name]:>12.1f}")
    print(f"aiohttp / pool CPU per POST, median of the rounds' ratios: {ratio:.2f}x")
    summary = {
        "posts": posts,
        "rounds": rounds,
        "loop": loop,
        "cpu_us_per_post": {k: round(v, 1) for k, v in medians.items()},
        "wall_us_per_post": {k: round(v, 1) for k, v in walls.items()},
        "cpu_ratio_aiohttp_over_pool": round(ratio, 2),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--posts", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
    else:
        main(args.posts, args.rounds, args.loop)
