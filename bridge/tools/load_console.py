"""``bridge loadtest --console N``: N clients that ask of the bridge what the console page (issue 32) asks
while it is open, so that a run with them and one without, side by side, say what watching costs.

Each client, as ``bridge/console/static/console.js`` does: ``GET /v1/calls`` at log-in; the past calls
(``GET /v1/calls?since=<24 h ago>&limit=50``); ``GET /v1/events?types=<the live list's>`` read to its end
and resumed with ``Last-Event-ID``, with ``GET /v1/calls`` at each (re)connection; every 10 s ``GET
/v1/calls`` again, every 60 s the past calls; after calls end, the past calls at most once a second. The
clients open the page one after another (pages are not opened in step), over the first quarter of the
calls' length, at most 10 s: each has followed the calls for most of the measured window. Nothing is
rendered: the events are parsed (their JSON read) and counted. The clients run in one process of the
harness (:func:`consoles`), on its cores; :class:`Consoles` starts it and collects what it counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing as mp
import queue
import time
from typing import Any

import aiohttp

# The live list's event types (bridge/console/static/live.js, LIVE_TYPES).
LIVE_TYPES = "call.started,call.ended,playback.started,playback.finished,playback.interrupted"
LIVE_S = 10.0  # the page's GET /v1/calls refresh
PAST_S = 60.0  # its past-calls refresh
PAST = 86400  # the past list's default window (24 hours)


class _Client:
    def __init__(self, http: aiohttp.ClientSession, base: str, counts: dict[str, int]) -> None:
        self.http, self.base, self.counts = http, base, counts
        self.ended = False  # a call ended since the last past-calls read

    async def get(self, path: str) -> None:
        async with self.http.get(self.base + path) as resp:
            await resp.read()
            self.counts["requests"] += 1
            if resp.status != 200:
                self.counts["errors"] += 1

    async def live(self) -> None:
        await self.get("/v1/calls")

    async def past(self) -> None:
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - PAST))
        await self.get(f"/v1/calls?since={since}&limit=50")

    async def events(self) -> None:
        """``GET /v1/events`` for ever, resumed with the last id (the page's ``followAll``)."""
        last: str | None = None
        while True:
            headers = {"Last-Event-ID": last} if last else {}
            try:
                async with self.http.get(
                    f"{self.base}/v1/events?types={LIVE_TYPES}", headers=headers, timeout=aiohttp.ClientTimeout()
                ) as resp:
                    if resp.status != 200:
                        self.counts["errors"] += 1
                        await asyncio.sleep(1.0)
                        continue
                    last = last or resp.headers.get("X-Events-From")
                    self.counts["streams"] += 1
                    opened = asyncio.create_task(self.live())  # the page reads the list at each connection
                    kind = ""
                    async for raw in resp.content:
                        line = raw.decode().rstrip("\r\n")
                        if line.startswith("id: "):
                            last = line[4:]
                        elif line.startswith("event: "):
                            kind = line[7:]
                        elif line.startswith("data: "):
                            json.loads(line[6:])
                            self.counts["events"] += 1
                            self.ended = self.ended or kind == "call.ended"
                    await opened
            except (aiohttp.ClientError, OSError):
                self.counts["errors"] += 1
            await asyncio.sleep(0.5)

    async def run(self, offset: float) -> None:
        """``offset``: seconds from the first client's log-in (pages are not opened in step)."""
        await asyncio.sleep(offset)
        await self.live()  # log-in
        await self.past()
        reader = asyncio.create_task(self.events())
        try:
            next_live = time.monotonic() + LIVE_S
            next_past = time.monotonic() + PAST_S
            while True:
                await asyncio.sleep(1.0)
                now = time.monotonic()
                if self.ended:  # at most a read a second while calls end (the page's pastSoon)
                    self.ended = False
                    await self.past()
                if now >= next_live:
                    next_live += LIVE_S
                    await self.live()
                if now >= next_past:
                    next_past += PAST_S
                    await self.past()
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader


async def _run(base: str, token: str, n: int, spread: float, stop: Any, results: Any) -> None:
    counts = {"clients": n, "requests": 0, "errors": 0, "streams": 0, "events": 0}
    headers = {"Authorization": f"Bearer {token}"}
    cpu0 = time.process_time()
    async with aiohttp.ClientSession(headers=headers, connector=aiohttp.TCPConnector(limit=0)) as http:
        tasks = [asyncio.create_task(_Client(http, base, counts).run(i * spread / n)) for i in range(n)]
        while not stop.is_set():
            await asyncio.sleep(0.2)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    results.put({**counts, "cpu_s": round(time.process_time() - cpu0, 3)})


def consoles(base: str, token: str, n: int, spread: float, stop: Any, results: Any) -> None:
    """The clients' process: ``n`` console-like clients of the bridge at ``base``, opened one after another
    over ``spread`` seconds, until ``stop`` is set; then what they counted on ``results``."""
    asyncio.run(_run(base, token, n, spread, stop, results))


class Consoles:
    """The clients' process of one run (:func:`consoles`): :meth:`finish` stops it and returns its counts."""

    def __init__(self, ctx: Any, base: str, token: str, n: int, spread: float) -> None:
        self.stop, self.results = ctx.Event(), ctx.Queue()
        self.counts: dict[str, Any] | None = None
        self.proc: mp.process.BaseProcess = ctx.Process(
            target=consoles, args=(base, token, n, spread, self.stop, self.results), daemon=True
        )
        self.proc.start()

    def finish(self) -> dict[str, Any] | None:
        """Stop the clients; what they counted (None: they did not say within 60 s). Again: the same."""
        if not self.stop.is_set():
            self.stop.set()
            with contextlib.suppress(queue.Empty):
                self.counts = self.results.get(timeout=60)
            self.proc.join(timeout=30)
            if self.proc.is_alive():
                self.proc.kill()
        return self.counts
