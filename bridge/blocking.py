"""Threads for blocking work a client can make slow, kept apart from the audio path's threads.

The reply loop makes its audio on threads of its own (DTMF tones, TTS resampling, WAV decoding:
``bridge.reply.call_reply``'s pools, apart from the event loop's default executor). Work that a
client starts and that can block for seconds, a transcript read on a SQLite file another process has
locked for instance, must never take threads the audio waits for: 40 such reads once delayed a
``dtmf`` action's first audio from 0.06 s to 5.8 s. It runs here instead, on a few threads of its
own (:data:`THREADS`), with a bound on how much may wait for them (:data:`MAX_WAITING`); beyond it
:meth:`BlockingPool.run` raises :class:`PoolFull` at once and the API answers 503 with
``Retry-After``.

One pool per application, created and closed by the ``cleanup_ctx`` that owns what it reads
(:func:`bridge.http.transcripts.transcript_store`), reached through its typed application key
(:data:`bridge.http.transcripts.TRANSCRIPT_READS`).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")

THREADS = 2
MAX_WAITING = 16  # work admitted beyond the running threads; more answers 503 at once


class PoolFull(Exception):
    """The pool's threads are busy and its waiting room is full: answer 503 with Retry-After.
    ``refused``: how many submissions the pool has refused so far (to log 1, 10, 100... of them)."""

    def __init__(self, message: str, refused: int) -> None:
        super().__init__(message)
        self.refused = refused


class BlockingPool:
    """A small bounded thread pool (see the module docstring).

    Args:
        threads: threads that run the work.
        max_waiting: work that may wait for a thread; a submission beyond raises :class:`PoolFull`.
        name: the threads' name prefix (seen in thread dumps).
    """

    def __init__(self, threads: int = THREADS, max_waiting: int = MAX_WAITING, name: str = "client-io") -> None:
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix=name)
        self._limit = threads + max_waiting
        self._admitted = 0  # running or waiting; counted until the work itself is over (not its awaiter)
        self._lock = threading.Lock()
        self.refused = 0

    @property
    def admitted(self) -> int:
        return self._admitted

    async def run(self, fn: Callable[..., T], *args: object, bounded: bool = True) -> T:
        """Run ``fn(*args)`` on one of the pool's threads (with the caller's context variables) and
        return its result. A cancelled caller does not free the slot before the work has ended: the
        bound counts what the threads still have to do.

        Args:
            bounded: False for the bridge's own upkeep (the purge), which is never refused.

        Raises:
            PoolFull: ``bounded`` and the pool is full; nothing was started.
        """
        with self._lock:
            if bounded and self._admitted >= self._limit:
                self.refused += 1
                raise PoolFull(f"{self._admitted} blocking reads already running or waiting", self.refused)
            self._admitted += 1
        context = contextvars.copy_context()
        try:
            future = self._executor.submit(functools.partial(context.run, fn, *args))
        except BaseException:
            self._release(None)
            raise
        future.add_done_callback(self._release)
        return await asyncio.wrap_future(future)

    def _release(self, _future: object) -> None:  # any thread
        with self._lock:
            self._admitted -= 1

    def close(self) -> None:
        """Drop what waits and let the running work end on its own (it is bounded by the store's busy
        timeout); the awaiters of dropped work get ``CancelledError``."""
        self._executor.shutdown(wait=False, cancel_futures=True)
