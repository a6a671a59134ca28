"""How many Gladia sessions the bridge holds at once (an app-wide resource)."""

from __future__ import annotations

import asyncio

from aiohttp import web


class Admission:
    """At most ``limit`` Gladia sessions at once for this bridge (0: no limit); the rest wait in order."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0
        self.waiting = 0
        self._sem = asyncio.Semaphore(limit) if limit > 0 else None

    async def acquire(self) -> None:
        if self._sem is not None:
            self.waiting += 1
            try:
                await self._sem.acquire()
            finally:
                self.waiting -= 1
        self.active += 1

    def release(self) -> None:
        self.active -= 1
        if self._sem is not None:
            self._sem.release()


# The application's key for it (set up by bridge.app's cleanup_ctx).
ADMISSION = web.AppKey("admission", Admission)  # gladia.max_sessions, shared by the calls
