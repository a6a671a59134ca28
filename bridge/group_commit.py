"""The queue between the event loop and a writer thread that commits in groups (the outbox and the
transcript store share it; each keeps its own store, failure reports and counts).

The event loop only appends (:meth:`WriteQueue.put`, bounded, never waits on the disk). The writer
thread asks for its next batch (:meth:`WriteQueue.take`), which waits ``commit_delay`` after the first
change so that what every call produces meanwhile joins one transaction. While changes keep coming the
thread looks every ``commit_delay`` by itself, and nobody wakes it; after ``IDLE_AFTER`` seconds of
quiet it sleeps until the next change wakes it (once). :meth:`~WriteQueue.flush` and
:meth:`~WriteQueue.close` cut the wait short; so does a failing store (nothing is gained by waiting).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Generic, TypeVar

Op = TypeVar("Op")

IDLE_AFTER = 1.0  # seconds without a change before the writer thread sleeps until woken


class WriteQueue(Generic[Op]):
    """See the module docstring. ``bound``: changes waiting at most; ``commit_delay``: seconds (0: commit
    what is there as soon as the thread gets to it)."""

    def __init__(self, bound: int, commit_delay: float) -> None:
        self.bound = bound
        self.commit_delay = commit_delay
        self.closing = False
        self._ops: deque[Op] = deque()
        self._cond = threading.Condition()
        self._busy = False  # a batch is being written
        self._idle = False  # the writer sleeps until woken: a change must wake it
        self._hurry = threading.Event()  # cuts the writer's wait for more changes short
        self._flushing = 0
        self._last_batch = time.monotonic()

    # -- the event loop's side ---------------------------------------------------------------

    def put(self, op: Op) -> bool:
        """Queue a change; False when the queue is full or closing (the caller counts it dropped)."""
        with self._cond:
            if self.closing or len(self._ops) >= self.bound:
                return False
            self._ops.append(op)
            if self._idle:
                self._cond.notify()
            return True

    @property
    def queued(self) -> int:
        """Changes not yet committed (queued, or in the batch being written)."""
        return len(self._ops) + (1 if self._busy else 0)

    def flush(self, timeout: float) -> bool:
        """Block until everything queued so far is committed, or ``timeout``; True when it was."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._flushing += 1
            self._hurry.set()
            try:
                while self._ops or self._busy:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    self._cond.wait(min(left, 0.05))
            finally:
                self._flushing -= 1
        return True

    def close(self) -> None:
        """No more changes; the writer's next :meth:`take` returns what is left, then None."""
        with self._cond:
            self.closing = True
            self._hurry.set()
            self._cond.notify_all()

    def discard(self) -> int:
        """Forget what is still queued (after the writer stopped); returns how many changes."""
        with self._cond:
            n = len(self._ops)
            self._ops.clear()
            return n

    # -- the writer thread's side --------------------------------------------------------------

    def take(self, max_batch: int, failing: bool) -> list[Op] | None:
        """The next batch, after waiting as the module docstring says (empty: nothing came); None when
        the writer should stop (closing, and nothing left or the store ``failing``)."""
        with self._cond:  # never held during disk I/O: the event loop takes it to queue
            if (
                not self._ops
                and not self.closing
                and (self.commit_delay <= 0 or time.monotonic() - self._last_batch >= IDLE_AFTER)
            ):
                self._idle = True
                self._cond.wait(1.0)
                self._idle = False
            linger = not (self.closing or self._flushing or failing) and self.commit_delay > 0
        if linger:
            self._hurry.wait(self.commit_delay)
        with self._cond:
            self._hurry.clear()
            if self.closing and (not self._ops or failing):
                return None
            batch = [self._ops.popleft() for _ in range(min(len(self._ops), max_batch))]
            self._busy = bool(batch)
        if batch:
            self._last_batch = time.monotonic()
        return batch

    def committed(self) -> int:
        """The batch is written; returns how many changes wait behind it."""
        with self._cond:
            self._busy = False
            self._cond.notify_all()
            return len(self._ops)

    def failed(self, batch: list[Op]) -> None:
        """The batch could not be written: it goes back in front, in order."""
        with self._cond:
            self._ops.extendleft(reversed(batch))
            self._busy = False
            self._cond.notify_all()

    def pause(self, seconds: float) -> None:
        """The writer waits before trying a failed batch again (not while closing)."""
        with self._cond:
            if not self.closing:
                self._cond.wait(seconds)
