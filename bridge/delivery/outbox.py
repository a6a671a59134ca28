"""The durable outbox: every bot event is kept on disk until the bot answers 2xx.

An embedded SQLite database (WAL journal) under ``BRIDGE_DATA_DIR``. An event is inserted when the
call produces it and deleted only after a 2xx; an event that keeps failing past the maximum age is
kept as *dead* (visible with ``bridge outbox list --dead``, sent again with ``bridge outbox replay``).
After a crash (even SIGKILL) the next start delivers what was pending, in order per call, with the
same ``webhook-id``s.

:class:`Outbox` is the store (synchronous; the ``bridge outbox`` tool and start-up recovery use it).
A running bridge writes through :class:`OutboxWriter`: the event loop only appends to a bounded
in-memory queue, and one thread (:class:`bridge.group_commit.GroupWriter`) commits what has queued up
in one transaction (group commit). So a slow, locked or full disk never delays the audio or a
webhook; events are delivered from memory whether or not their row is written yet.

**When an event is accepted** (survives a crash of the bridge process): when the writer thread's
transaction holding its insert has committed. The writer commits in groups: after the first change
it waits ``webhook.outbox_commit_ms`` (50 ms) for more, so an event is accepted within about that
long after the call produced it, and a hundred calls' events cost one transaction, not a hundred. An
event added and delivered within one group is never written at all: only its call's last sequence
number is (a restart numbers the call's ``call.ended`` after it). A healthy bot thus costs the disk
almost nothing; a slow or failing one gets every event written.
Commits are not fsynced (WAL, ``synchronous=NORMAL``): a power cut or kernel crash can lose the last
commits, a process crash cannot. While writes fail (disk full, read-only, locked), the writer keeps
the operations queued in memory (bounded) and retries every second; ``/healthz`` says ``degraded``
with the reason, ``bridge_outbox_write_failures`` counts the failed commits, and one log line marks
each change of state. Events produced meanwhile are still delivered, but are not accepted until the
disk takes them; operations beyond the queue's bound are counted and never written.

**Sensitive events are never written.** An event whose payload says ``"sensitive": true`` (a gather's
PIN) is delivered from memory only: the outbox records just its call's last sequence number
(:meth:`OutboxWriter.numbered`), so its body is in no row, no WAL frame, no dead letter, and a restart
never replays it (nor reuses its ``webhook-id``).
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from aiohttp import web

from bridge.group_commit import GroupWriter

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    webhook_id  TEXT NOT NULL UNIQUE,
    call_id     TEXT NOT NULL,
    sequence    INTEGER NOT NULL,
    type        TEXT NOT NULL,
    body        TEXT NOT NULL,
    created     REAL NOT NULL,   -- wall-clock seconds: the maximum age survives restarts
    attempts    INTEGER NOT NULL DEFAULT 0,
    state       TEXT NOT NULL DEFAULT 'pending',  -- pending | dead
    last_error  TEXT
);
CREATE INDEX IF NOT EXISTS events_by_call ON events (call_id, sequence);
CREATE INDEX IF NOT EXISTS events_by_state ON events (state);
-- calls in progress: a call still here at start-up was cut short by a crash
CREATE TABLE IF NOT EXISTS calls (
    call_id        TEXT PRIMARY KEY,
    call_json      TEXT NOT NULL,
    last_sequence  INTEGER NOT NULL DEFAULT 0
);
CREATE TRIGGER IF NOT EXISTS calls_last_sequence AFTER INSERT ON events BEGIN
    UPDATE calls SET last_sequence = NEW.sequence WHERE call_id = NEW.call_id AND last_sequence < NEW.sequence;
END;
"""


EventState = Literal["pending", "dead"]  # delivered events are deleted


@dataclass(frozen=True, slots=True)
class StoredEvent:
    webhook_id: str
    call_id: str
    sequence: int
    type: str
    body: str
    created: float
    attempts: int
    state: EventState
    last_error: str | None


class Outbox:
    """One bridge process's outbox file (``<data dir>/outbox.sqlite3``)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # check_same_thread=False: start-up recovery runs on the loop's thread, then only the writer
        # thread uses the connection.
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(SCHEMA)

    @classmethod
    def in_dir(cls, data_dir: Path, worker: int | None = None) -> Outbox:
        """The outbox of a single-process bridge, or of worker ``worker`` of a multi-process one."""
        return cls(data_dir / ("outbox.sqlite3" if worker is None else f"outbox-w{worker}.sqlite3"))

    def merge_from(self, other: Path) -> int:
        """Take over another outbox file's events and unfinished calls (a worker that no longer
        exists, or a change between single- and multi-process), then delete that file."""
        before = self.counts()
        self._db.execute("ATTACH DATABASE ? AS other", (str(other),))
        try:
            self._db.execute("BEGIN")
            self._db.execute("INSERT OR IGNORE INTO calls SELECT call_id, call_json, last_sequence FROM other.calls")
            self._db.execute(
                "INSERT OR IGNORE INTO events (webhook_id, call_id, sequence, type, body, created, "
                "attempts, state, last_error) SELECT webhook_id, call_id, sequence, type, body, created, "
                "attempts, state, last_error FROM other.events"
            )
            self._db.execute("COMMIT")
        finally:
            self._db.execute("DETACH DATABASE other")
        for suffix in ("", "-wal", "-shm"):
            Path(str(other) + suffix).unlink(missing_ok=True)
        after = self.counts()
        return sum(after.values()) - sum(before.values())

    @property
    def db(self) -> sqlite3.Connection:
        return self._db

    def close(self) -> None:
        self._db.close()

    def call_started(self, call_id: str, call_json: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO calls (call_id, call_json) VALUES (?, ?)", (call_id, call_json))

    def call_ended(self, call_id: str) -> None:
        self._db.execute("DELETE FROM calls WHERE call_id = ?", (call_id,))

    def unfinished_calls(self) -> list[tuple[str, str, int]]:
        """Calls whose end was never recorded: (call id, call JSON, last event sequence)."""
        return list(self._db.execute("SELECT call_id, call_json, last_sequence FROM calls").fetchall())

    def add(
        self, webhook_id: str, call_id: str, sequence: int, type_: str, body: str, created: float | None = None
    ) -> int:
        """Store a pending event; returns 1, or 0 when that webhook-id is already stored."""
        return self._db.execute(
            "INSERT OR IGNORE INTO events (webhook_id, call_id, sequence, type, body, created) VALUES (?,?,?,?,?,?)",
            (webhook_id, call_id, sequence, type_, body, time.time() if created is None else created),
        ).rowcount

    def delivered(self, webhook_id: str) -> int:
        """Forget a pending event; returns how many rows went (0 or 1)."""
        return self._db.execute("DELETE FROM events WHERE webhook_id = ? AND state = 'pending'", (webhook_id,)).rowcount

    def advance_sequence(self, call_id: str, sequence: int) -> None:
        """What an insert of event ``sequence`` does to its call's record (the trigger), for an event
        delivered before it was ever written."""
        self._db.execute(
            "UPDATE calls SET last_sequence = ? WHERE call_id = ? AND last_sequence < ?", (sequence, call_id, sequence)
        )

    def attempted(self, webhook_id: str, error: str) -> None:
        self._db.execute(
            "UPDATE events SET attempts = attempts + 1, last_error = ? WHERE webhook_id = ?", (error[:500], webhook_id)
        )

    def dead(self, webhook_id: str, error: str) -> int:
        """A pending event becomes dead; returns how many rows changed (0 or 1)."""
        return self._db.execute(
            "UPDATE events SET state = 'dead', last_error = ? WHERE webhook_id = ? AND state = 'pending'",
            (error[:500], webhook_id),
        ).rowcount

    def revive(self, webhook_id: str | None = None) -> int:
        """Dead events (one, or all) become pending again with a fresh age; returns how many."""
        now = time.time()
        if webhook_id is None:
            cur = self._db.execute("UPDATE events SET state = 'pending', created = ? WHERE state = 'dead'", (now,))
        else:
            cur = self._db.execute(
                "UPDATE events SET state = 'pending', created = ? WHERE state = 'dead' AND webhook_id = ?",
                (now, webhook_id),
            )
        return cur.rowcount

    def events(self, state: EventState | None = None, call_id: str | None = None) -> Iterator[StoredEvent]:
        """Stored events grouped by call (in call-id order; calls are delivered independently), in
        sequence order within a call."""
        sql = "SELECT webhook_id, call_id, sequence, type, body, created, attempts, state, last_error FROM events"
        where: list[str] = []
        args: list[str] = []
        if state is not None:
            where.append("state = ?")
            args.append(state)
        if call_id is not None:
            where.append("call_id = ?")
            args.append(call_id)
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY call_id, sequence"
        for row in self._db.execute(sql, args).fetchall():
            yield StoredEvent(*row)

    def counts(self) -> dict[str, int]:
        rows = self._db.execute("SELECT state, COUNT(*) FROM events GROUP BY state").fetchall()
        out = {"pending": 0, "dead": 0}
        out.update({state: n for state, n in rows})
        return out


# One queued write: the Outbox method's name and its arguments.
OutboxOp = Literal["call_started", "call_ended", "add", "delivered", "attempted", "dead", "advance_sequence"]
_Op = tuple[OutboxOp, tuple[Any, ...]]


class OutboxWriter:
    """The bridge's outbox writes, off the event loop (see the module docstring).

    Every method that changes the outbox only queues the change and returns; the writer thread
    applies the queued changes in order, each batch in one transaction. ``on_state_change(reason)``
    is called from the writer thread when writes start failing (``reason``) and when they work again
    (``None``); ``on_failure()`` for every failed commit.
    """

    MAX_BATCH = 2000

    def __init__(
        self,
        outbox: Outbox,
        *,
        max_queued: int = 200_000,
        retry_seconds: float = 1.0,
        commit_delay: float = 0.05,
        on_state_change: Callable[[str | None], None] | None = None,
        on_failure: Callable[[], None] | None = None,
    ) -> None:
        self.outbox = outbox
        self.max_queued = max_queued
        self.retry_seconds = retry_seconds
        self._writes: GroupWriter[_Op] = GroupWriter(
            self._commit,
            name="outbox-writer",
            bound=max_queued,
            commit_delay=commit_delay,
            max_batch=self.MAX_BATCH,
            retry_seconds=retry_seconds,
            on_state_change=on_state_change,
            on_failure=on_failure,
            on_idle=self._refresh_counts,
        )
        self._counts = {"pending": 0, "dead": 0}
        self._counts_at = 0.0

    # -- queueing (event loop; never blocks on the disk) -------------------------------------

    def call_started(self, call_id: str, call_json: str) -> None:
        self._queue("call_started", call_id, call_json)

    def call_ended(self, call_id: str) -> None:
        self._queue("call_ended", call_id)

    def add(
        self, webhook_id: str, call_id: str, sequence: int, type_: str, body: str, created: float | None = None
    ) -> None:
        self._queue("add", webhook_id, call_id, sequence, type_, body, time.time() if created is None else created)

    def delivered(self, webhook_id: str) -> None:
        self._queue("delivered", webhook_id)

    def attempted(self, webhook_id: str, error: str) -> None:
        self._queue("attempted", webhook_id, error)

    def dead(self, webhook_id: str, error: str) -> None:
        self._queue("dead", webhook_id, error)

    def numbered(self, call_id: str, sequence: int) -> None:
        """A sensitive event took ``sequence``: only the call's last sequence advances, nothing of the
        event is written."""
        self._queue("advance_sequence", call_id, sequence)

    def _queue(self, name: OutboxOp, *args: Any) -> None:
        self._writes.put((name, args))  # refused when full or closed: counted in dropped_ops

    @property
    def queued(self) -> int:
        """Operations not yet committed (queued, or in the batch being written)."""
        return self._writes.queued

    # What the bridge reports (/healthz, the metrics): why writes fail, failed commits, dropped ops.

    @property
    def degraded(self) -> str | None:
        """Why writes fail (``outbox.degraded``'s reason), None while they work."""
        return self._writes.degraded

    @property
    def write_failures(self) -> int:
        """Failed commits."""
        return self._writes.write_failures

    @property
    def dropped_ops(self) -> int:
        """Operations never to be written: beyond the queue's bound, after close, left at close."""
        return self._writes.dropped

    @property
    def committed_ops(self) -> int:
        """Operations committed."""
        return self._writes.committed

    def counts(self) -> dict[str, int]:
        """Pending and dead events as of the last commit (other processes' changes, e.g. ``bridge outbox
        replay``, show within ten seconds)."""
        return dict(self._counts)

    # -- lifetime ----------------------------------------------------------------------------

    def start(self) -> None:
        self._counts = self.outbox.counts()
        self._counts_at = time.monotonic()
        self._writes.start()

    def flush(self, timeout: float) -> bool:
        """Block until everything queued so far is committed, or ``timeout``; True when it was."""
        return self._writes.flush(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued (bounded by ``timeout``), stop the thread, close the store."""
        self._writes.close(timeout)
        self.outbox.close()

    # -- the writer thread (bridge.group_commit.GroupWriter calls these) ---------------------

    def _commit(self, batch: list[_Op]) -> None:
        db = self.outbox.db
        pending = dead = 0
        batch, last_sequences = _settled_in_batch(batch)
        db.execute("BEGIN IMMEDIATE")
        try:
            for name, args in batch:
                changed = getattr(self.outbox, name)(*args)
                if name == "add":
                    pending += changed
                elif name == "delivered":
                    pending -= changed
                elif name == "dead":
                    pending, dead = pending - changed, dead + changed
            for call_id, sequence in last_sequences.items():  # after the batch's call_started rows
                self.outbox.advance_sequence(call_id, sequence)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        self._counts = {"pending": self._counts["pending"] + pending, "dead": self._counts["dead"] + dead}

    def _refresh_counts(self) -> None:
        """Recount from the file now and then, when idle (another process may have changed it)."""
        now = time.monotonic()
        if now - self._counts_at < 10.0:
            return
        self._counts_at = now
        # A locked or failing disk: keep the last figures; the state change says why.
        with contextlib.suppress(sqlite3.Error):
            self._counts = self.outbox.counts()


def _settled_in_batch(batch: list[_Op]) -> tuple[list[_Op], dict[str, int]]:
    """An event added and delivered within one batch never needs a row: its insert, retries and delete
    are left out, and only its call's ``last_sequence`` advances (a restart numbers the call's
    ``call.ended`` after it). Returns the operations to apply and, per call, the highest such sequence."""
    added = {args[0]: i for i, (name, args) in enumerate(batch) if name == "add"}
    if not added:
        return batch, {}
    settled = {args[0] for name, args in batch if name == "delivered" and args[0] in added}
    if not settled:
        return batch, {}
    last: dict[str, int] = {}
    kept: list[_Op] = []
    for name, args in batch:
        if args and args[0] in settled and name in ("add", "attempted", "delivered"):
            if name == "add":
                call_id, sequence = args[1], args[2]
                last[call_id] = max(sequence, last.get(call_id, 0))
            continue
        kept.append((name, args))
    return kept, last


# The application's key for it (set up by bridge.app's cleanup_ctx).
OUTBOX: web.AppKey[OutboxWriter | None] = web.AppKey("outbox")  # the SQLite outbox (None: not durable here)
