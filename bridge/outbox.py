"""The durable outbox: every bot event is on disk before it is sent, until the bot answers 2xx.

An embedded SQLite database (WAL journal) under ``BRIDGE_DATA_DIR``. An event is inserted when the
call produces it and deleted only after a 2xx; an event that keeps failing past the maximum age is
kept as *dead* (visible with ``bridge outbox list --dead``, sent again with ``bridge outbox replay``).
After a crash (even SIGKILL) the next start delivers what was pending, in order per call, with the
same ``webhook-id``s.

Synchronous on purpose: one insert or delete is tens of microseconds with WAL and
``synchronous=NORMAL`` (commits are not fsynced; a power cut can lose the last commits, a process
crash cannot), which is less than the JSON encoding of the event itself.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

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


@dataclass(frozen=True, slots=True)
class StoredEvent:
    webhook_id: str
    call_id: str
    sequence: int
    type: str
    body: str
    created: float
    attempts: int
    state: str
    last_error: str | None


class Outbox:
    """One bridge process's outbox file (``<data dir>/outbox.sqlite3``)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
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
            self._db.execute("INSERT OR IGNORE INTO events (webhook_id, call_id, sequence, type, body, created, "
                             "attempts, state, last_error) SELECT webhook_id, call_id, sequence, type, body, created, "
                             "attempts, state, last_error FROM other.events")
            self._db.execute("COMMIT")
        finally:
            self._db.execute("DETACH DATABASE other")
        for suffix in ("", "-wal", "-shm"):
            Path(str(other) + suffix).unlink(missing_ok=True)
        after = self.counts()
        return sum(after.values()) - sum(before.values())

    def close(self) -> None:
        self._db.close()

    def call_started(self, call_id: str, call_json: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO calls (call_id, call_json) VALUES (?, ?)", (call_id, call_json))

    def call_ended(self, call_id: str) -> None:
        self._db.execute("DELETE FROM calls WHERE call_id = ?", (call_id,))

    def unfinished_calls(self) -> list[tuple[str, str, int]]:
        """Calls whose end was never recorded: (call id, call JSON, last event sequence)."""
        return list(self._db.execute("SELECT call_id, call_json, last_sequence FROM calls").fetchall())

    def add(self, webhook_id: str, call_id: str, sequence: int, type_: str, body: str,
            created: float | None = None) -> None:
        self._db.execute(
            "INSERT OR IGNORE INTO events (webhook_id, call_id, sequence, type, body, created) VALUES (?,?,?,?,?,?)",
            (webhook_id, call_id, sequence, type_, body, time.time() if created is None else created))

    def delivered(self, webhook_id: str) -> None:
        self._db.execute("DELETE FROM events WHERE webhook_id = ?", (webhook_id,))

    def attempted(self, webhook_id: str, error: str) -> None:
        self._db.execute("UPDATE events SET attempts = attempts + 1, last_error = ? WHERE webhook_id = ?",
                         (error[:500], webhook_id))

    def dead(self, webhook_id: str, error: str) -> None:
        self._db.execute("UPDATE events SET state = 'dead', last_error = ? WHERE webhook_id = ?",
                         (error[:500], webhook_id))

    def revive(self, webhook_id: str | None = None) -> int:
        """Dead events (one, or all) become pending again with a fresh age; returns how many."""
        now = time.time()
        if webhook_id is None:
            cur = self._db.execute("UPDATE events SET state = 'pending', created = ? WHERE state = 'dead'", (now,))
        else:
            cur = self._db.execute("UPDATE events SET state = 'pending', created = ? "
                                   "WHERE state = 'dead' AND webhook_id = ?", (now, webhook_id))
        return cur.rowcount

    def events(self, state: str | None = None, call_id: str | None = None) -> Iterator[StoredEvent]:
        """Stored events, oldest call first, in sequence order within a call."""
        sql = "SELECT webhook_id, call_id, sequence, type, body, created, attempts, state, last_error FROM events"
        where, args = [], []
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
