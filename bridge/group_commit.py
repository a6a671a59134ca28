"""Group commit off the event loop: a bounded queue of changes and the one thread that writes them in
batches (the outbox and the transcript store share it; each keeps its own store, its own SQL and what it
reports).

:class:`WriteQueue` is the queue. The event loop only appends (:meth:`WriteQueue.put`, bounded, never
waits on the disk). The writer thread asks for its next batch (:meth:`WriteQueue.take`), which waits
``commit_delay`` after the first change so that what every call produces meanwhile joins one
transaction. While changes keep coming the thread looks every ``commit_delay`` by itself, and nobody
wakes it; after ``IDLE_AFTER`` seconds of quiet it sleeps until the next change wakes it (once).
:meth:`~WriteQueue.flush` and :meth:`~WriteQueue.close` cut the wait short; so does a failing store
(nothing is gained by waiting).

:class:`GroupWriter` is the thread around it: it hands each batch to the store's ``commit`` (one
transaction); a batch that fails with a store error (disk full, read-only, locked) goes back in front
and is tried again every ``retry_seconds``, and the change of state (failing, working again) is told
once through ``on_state_change``, never once per write. It counts failed commits, committed changes and
the changes that did not fit in the queue (or came after close), and closes within a timeout.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

Op = TypeVar("Op")

IDLE_AFTER = 1.0  # seconds without a change before the writer thread sleeps until woken
STORE_ERRORS: tuple[type[Exception], ...] = (sqlite3.Error, OSError)  # a failed commit, tried again


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


class GroupWriter(Generic[Op]):
    """The writer thread of a store (see the module docstring).

    Args:
        commit: writes one batch in one transaction (the writer thread calls it); raises one of
            ``errors`` when the store fails, and then nothing of the batch is kept.
        name: the thread's name.
        bound: changes waiting at most; beyond, :meth:`put` refuses them and counts them in ``dropped``.
        commit_delay: seconds to wait after the first change for more (0: at once).
        max_batch: changes per transaction at most.
        retry_seconds: pause before a failed batch is tried again.
        errors: the exceptions of a failing store (others end the thread, as a bug would).
        on_state_change: ``(reason)`` when commits start failing, ``(None)`` when they work again;
            from the writer thread.
        on_failure: ``()`` after every failed commit.
        on_committed: ``(waiting)`` after every committed batch, after ``on_state_change(None)``:
            how many changes were queued behind it.
        on_idle: ``()`` when the thread looked and nothing had come.
    """

    def __init__(
        self,
        commit: Callable[[list[Op]], None],
        *,
        name: str,
        bound: int,
        commit_delay: float,
        max_batch: int,
        retry_seconds: float,
        errors: tuple[type[Exception], ...] = STORE_ERRORS,
        on_state_change: Callable[[str | None], None] | None = None,
        on_failure: Callable[[], None] | None = None,
        on_committed: Callable[[int], None] | None = None,
        on_idle: Callable[[], None] | None = None,
    ) -> None:
        self._commit = commit
        self._name = name
        self._max_batch = max_batch
        self._retry_seconds = retry_seconds
        self._errors = errors
        self._on_state_change = on_state_change
        self._on_failure = on_failure
        self._on_committed = on_committed
        self._on_idle = on_idle
        self._queue: WriteQueue[Op] = WriteQueue(bound, commit_delay)
        self._thread: threading.Thread | None = None
        # Why commits fail (None when they work), failed commits, committed and dropped changes.
        self.degraded: str | None = None
        self.write_failures = 0
        self.committed = 0
        self.dropped = 0

    # -- the event loop's side ---------------------------------------------------------------

    def put(self, op: Op) -> bool:
        """Queue a change; False (and counted in ``dropped``) when the queue is full or closing."""
        if self._queue.put(op):
            return True
        self.dropped += 1
        return False

    @property
    def closing(self) -> bool:
        """:meth:`close` has begun: changes are refused."""
        return self._queue.closing

    @property
    def queued(self) -> int:
        """Changes not yet committed (queued, or in the batch being written)."""
        return self._queue.queued

    # -- lifetime ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the writer thread (once)."""
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def flush(self, timeout: float) -> bool:
        """Block until everything queued so far is committed, or ``timeout``; True when it was."""
        return self._queue.flush(timeout)

    def close(self, timeout: float) -> bool:
        """Write what is queued (bounded by ``timeout``), then stop the thread; what is still queued
        is counted in ``dropped``. False when the thread is still in a commit (stuck in the driver:
        leave it the store's connection)."""
        self.flush(timeout)
        self._queue.close()
        if self._thread is not None:
            self._thread.join(timeout=max(0.1, self._retry_seconds + 0.5))
        self.dropped += self._queue.discard()
        return self._thread is None or not self._thread.is_alive()

    # -- the writer thread -------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            batch = self._queue.take(self._max_batch, failing=self.degraded is not None)
            if batch is None:
                return
            if not batch:
                if self._on_idle is not None:
                    self._on_idle()
                continue
            try:
                self._commit(batch)
            except self._errors as exc:
                self._queue.failed(batch)  # kept in order; tried again
                self.write_failures += 1
                if self._on_failure is not None:
                    self._on_failure()
                reason = f"{type(exc).__name__}: {exc}"[:200]
                if self.degraded is None:
                    self.degraded = reason
                    if self._on_state_change is not None:
                        self._on_state_change(reason)
                self._queue.pause(self._retry_seconds)
                continue
            self.committed += len(batch)
            waiting = self._queue.committed()
            if self.degraded is not None:
                self.degraded = None
                if self._on_state_change is not None:
                    self._on_state_change(None)
            if self._on_committed is not None:
                self._on_committed(waiting)
