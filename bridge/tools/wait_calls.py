"""``bridge wait-calls``: hold a pod's termination until the bridge's calls have ended, or a bound
passes, by polling its ``/healthz``. Meant as a Kubernetes ``preStop`` hook (deploy/k8s/): the
kubelet sends SIGTERM only once the hook returns, so the calls end on their own instead of being
drained against ``server.shutdown_timeout``.

It never fails the hook: every outcome exits 0 with one line saying what happened (the kubelet
shows a hook's output only when it fails, so the line is for people running it by hand).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp

REQUEST_TIMEOUT = 2.0  # one /healthz request; a busy bridge that answers slower counts as "unknown"
TRIES_PER_WORKER = 8  # requests per poll to hear from every worker of `bridge serve --workers N`


@dataclass(frozen=True, slots=True)
class Waited:
    """How a wait ended.

    ``outcome``: ``idle`` (no call running), ``timeout`` (calls still running, or the bridge not
    answering, when the bound passed) or ``not_listening`` (nothing accepts connections at the URL,
    so there is no call to wait for). ``calls``: the last count heard, None when none was.
    """

    outcome: Literal["idle", "timeout", "not_listening"]
    calls: int | None
    seconds: float
    url: str

    def line(self) -> str:
        match self.outcome:
            case "idle":
                return f"wait-calls: no calls at {self.url} after {self.seconds:.0f} s"
            case "timeout":
                running = "the bridge not answering" if self.calls is None else f"{self.calls} call(s) still running"
                return f"wait-calls: gave up after {self.seconds:.0f} s with {running} at {self.url}"
            case "not_listening":
                return f"wait-calls: nothing listening at {self.url}: no calls to wait for"


async def wait_calls(
    url: str,
    timeout: float,
    *,
    settle: float = 0.0,
    interval: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> Waited:
    """Poll ``{url}/healthz`` every ``interval`` seconds until no call is running there, at most
    ``timeout`` seconds.

    Args:
        url: the bridge's base URL, e.g. ``http://127.0.0.1:8080``.
        settle: wait at least this long even with no call running: time for the load balancers to
            stop sending new calls to a terminating pod before SIGTERM makes the bridge refuse them.
        clock, sleep: monotonic time and sleeping (tests pass their own).

    Calls waiting for a restarted stream (``suspended_calls``) count as running.
    """
    base = url.rstrip("/")
    start = clock()
    deadline = start + timeout
    calls: int | None = None
    # A fresh connection per request: under `--workers N` the kernel picks a worker per connection.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
        while True:
            try:
                calls = await _count_calls(http, base + "/healthz", min(REQUEST_TIMEOUT, max(0.1, deadline - clock())))
            except aiohttp.ClientConnectorError:
                return Waited("not_listening", calls, clock() - start, base)
            now = clock()
            if calls == 0 and now - start >= settle:
                return Waited("idle", 0, now - start, base)
            if now >= deadline:
                return Waited("timeout", calls, now - start, base)
            await sleep(min(interval, deadline - now))


@dataclass(frozen=True, slots=True)
class _Health:
    calls: int  # active_calls + suspended_calls
    worker: tuple[int, int] | None  # (index, count) under `bridge serve --workers N`


async def _count_calls(http: aiohttp.ClientSession, url: str, timeout: float) -> int | None:
    """Calls running at the bridge, summed over its workers; None when that could not be learnt
    this time (a slow or odd answer, or a worker that no connection reached).

    Raises:
        aiohttp.ClientConnectorError: nothing accepts connections at ``url``.
    """
    seen: dict[int, int] = {}  # worker index -> its calls
    workers = 1
    attempt = 0
    while attempt < TRIES_PER_WORKER * workers:
        attempt += 1
        health = await _healthz(http, url, timeout)
        if health is None:
            return None
        if health.worker is None:
            return health.calls
        index, workers = health.worker
        seen[index] = health.calls
        if len(seen) >= workers:
            return sum(seen.values())
    return None


async def _healthz(http: aiohttp.ClientSession, url: str, timeout: float) -> _Health | None:
    """One ``/healthz`` answer (200, or 503 while draining), or None when there was no usable one.

    Raises:
        aiohttp.ClientConnectorError: nothing accepts connections at ``url``.
    """
    try:
        async with http.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            if resp.status not in (200, 503):
                return None
            body: Any = await resp.json()
    except aiohttp.ClientConnectorError:
        raise
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None
    if not isinstance(body, dict):
        return None
    active, suspended, worker = body.get("active_calls"), body.get("suspended_calls", 0), body.get("worker")
    if not isinstance(active, int) or not isinstance(suspended, int):
        return None
    if isinstance(worker, dict) and isinstance(worker.get("index"), int) and isinstance(worker.get("of"), int):
        return _Health(active + suspended, (worker["index"], worker["of"]))
    return _Health(active + suspended, None)
