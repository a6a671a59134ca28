"""Transcripts on record in PostgreSQL: the fleet's shared record (``BRIDGE_DATABASE_URL``), where any
instance answers for any call and a call whose instance was killed is completed by another.

:class:`PgTranscriptStore` has the SQLite store's public interface and semantics
(:class:`bridge.transcripts.TranscriptStore`, whose docstring says what a transcript is): the same
methods, counters, ``report`` events and dicts read back. A call only enqueues (the same bounded queue
and group commit on a writer thread, :class:`bridge.group_commit.GroupWriter`); reads and the purge are
synchronous, for a worker thread (:mod:`bridge.blocking`). Tables: :mod:`bridge.transcript_schema_pg`.

Driver: psycopg 3 (``psycopg[binary]``, maintained), which has a synchronous and an asyncio API over
the same code. Writes run on the group-commit thread and reads on the API's blocking pool, both plain
threads, where the synchronous API is direct; asyncpg (asyncio only) would need an event loop of its own
in the writer thread and a hop to it for every read. ``psycopg.AsyncConnection`` takes the same SQL if a
read path moves onto the event loop. ``executemany`` runs in pipeline mode: a group commit is one round
trip per statement kind, not one per final.

Several instances, one record: every write is idempotent, so a call started on instance A and finished
on B (A killed) is one record, and a batch written again after a lost acknowledgement changes nothing
more. A call row is upserted (the earliest start kept; any write of a call whose start never arrived
creates it, as in SQLite); an utterance is upserted on ``(call_id, utterance id)`` and takes a new
``seq`` (the add-ons of the one it replaces are no longer shown, as in SQLite); an add-on joins the
utterance's current ``seq``; the analysis is upserted; ``call_ended`` from any instance sets the end.

Connection loss: a failed commit keeps its batch at the head of the bounded queue, the store is
degraded (reported once) and the writer reconnects with exponential backoff (``retry_seconds`` up to
``max_retry_seconds``, :mod:`bridge.pg_connection`); the first commit after is ``recovered``. A server
down at start-up does not stop the store from opening: it starts degraded and the idle writer connects
when it can. A batch the server refuses for its content (never to succeed) is written op by op in
savepoints; what is refused is dropped and counted instead of blocking the queue. Any other error
(a table dropped, a permission revoked) is retried on a new connection, which makes the schema again.

Reads use a connection of their own, one at a time (a read on a connection found dead is tried once
more on a new one); ``get`` reads one ``REPEATABLE READ`` snapshot. The purge deletes a bounded batch
per transaction, ``FOR UPDATE SKIP LOCKED``: instances purging at once never wait for each other.
Reads and the purge raise :class:`psycopg.Error` (:data:`STORE_ERRORS`: the HTTP layer must answer 503
for them as for :class:`sqlite3.Error`); the constructor raises :class:`psycopg.ProgrammingError` for a
URL that is not a connection string.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import orjson
import psycopg

from bridge import transcript_schema_pg as pg
from bridge.backoff import Backoff
from bridge.group_commit import GroupWriter
from bridge.pg_connection import TRANSIENT, Connection, Reconnecting, T, connect_options
from bridge.record_reads import MAX_ADDONS_READ, MAX_UTTERANCES_READ, call_fields, transcript_of
from bridge.record_writes import QueuedWrites, Report
from bridge.recording import index as recording_index
from bridge.transcript_addons import addon_row, analysis_body
from bridge.transcript_render import call_seconds
from bridge.transcript_schema import (
    ADDON,
    ANALYSIS,
    CALL_ENDED,
    CALL_SEEN,
    CALL_STARTED,
    UTTERANCE,
    Op,
    like_pattern,
    runs,
)
from bridge.transcript_schema_pg import clean_text, text_or_none

# A failed write or read (the connection, the server); OSError: the socket below it.
STORE_ERRORS: tuple[type[Exception], ...] = (psycopg.Error, OSError)
# A write whose content the server refuses (SQLSTATE classes 22 and 23): it would fail every time.
REFUSED: tuple[type[Exception], ...] = (psycopg.DataError, psycopg.IntegrityError)


class PgTranscriptStore(QueuedWrites):
    """The fleet's transcript record in PostgreSQL (see the module docstring). Open it once per process,
    at start-up; :meth:`close` it at shutdown, after the calls have ended.

    Args:
        url: a libpq connection string or URL (``postgresql://user:pass@host:5432/db``;
            ``BRIDGE_DATABASE_URL``).
        max_queue: writes waiting for the database; beyond, they are dropped and counted.
        retry_seconds: pause before a failed batch is tried again; the first reconnection's delay.
        max_retry_seconds: the longest delay between reconnections (exponential backoff, jittered).
        busy_timeout: seconds a statement waits for a row another instance holds (``lock_timeout``).
        connect_timeout: seconds a connection attempt may take.
        statement_timeout: seconds a statement may take (a commit is then tried again, a read fails).
        commit_delay: seconds the writer waits after a first write for more (group commit).
        clock: wall time, for a call first seen by an utterance or its end.
        report: ``report(event, fields)`` on each change of state, as the SQLite store's.

    Raises:
        psycopg.ProgrammingError: ``url`` is not a connection string. (A server that cannot be reached
            is not an error here: the store starts degraded.)
    """

    MAX_BATCH = 1000
    PURGE_BATCH = 500
    ERRORS = STORE_ERRORS

    def __init__(
        self,
        url: str,
        *,
        max_queue: int = 10_000,
        retry_seconds: float = 1.0,
        max_retry_seconds: float = 30.0,
        busy_timeout: float = 5.0,
        connect_timeout: float = 5.0,
        statement_timeout: float = 30.0,
        commit_delay: float = 0.2,
        clock: Callable[[], float] = time.time,
        report: Report | None = None,
    ) -> None:
        self.url = url
        self.max_queue = max_queue
        self.retry_seconds = retry_seconds
        options = connect_options(  # a URL that is not one fails here, not in every reconnection
            url,
            application_name="telephony-bridge transcripts",
            busy_timeout=busy_timeout,
            connect_timeout=connect_timeout,
            statement_timeout=statement_timeout,
        )
        self._clock = clock
        self._report = report
        self.on_purged: Callable[[list[str]], object] | None = None  # the purged calls' ids (their recordings)
        self._stop = threading.Event()  # close(): a reconnection waiting out its backoff gives up
        backoff = Backoff(initial=retry_seconds, maximum=max(retry_seconds, max_retry_seconds))
        self._writer = Reconnecting(url, options, setup=_create_schema, backoff=backoff, stop=self._stop)
        self._reader = Reconnecting(url, options)
        self._read_lock = threading.Lock()
        self._closed = False
        self._dropping = False
        self._refused = 0  # writes that were not a call, an utterance, ...; or that the server refused
        self._writes: GroupWriter[Op] = GroupWriter(
            self._commit,
            name="transcript-writer-pg",
            bound=max_queue,
            commit_delay=commit_delay,
            max_batch=self.MAX_BATCH,
            retry_seconds=retry_seconds,
            errors=STORE_ERRORS,
            on_state_change=self._state_changed,
            on_committed=self._committed,
            on_idle=self._idle,
        )
        try:
            self._writer.connection()
        except TRANSIENT as exc:  # the server is not there (yet): degraded until the writer connects
            reason = f"{type(exc).__name__}: {exc}"[:200]
            self._writes.degraded = reason
            self._state_changed(reason)
        self._writes.start()

    # -- what a call does (event loop; never blocks on the database, never raises) --------------

    def call_started(self, call: Mapping[str, Any], started_at: float) -> None:
        """Record a call's start (as :meth:`bridge.transcripts.TranscriptStore.call_started`)."""
        try:
            row = (
                clean_text(str(call["id"])),
                text_or_none(call.get("provider")),
                text_or_none(call.get("call_sid")),
                text_or_none(call.get("stream_sid")),
                text_or_none(call.get("from")),
                text_or_none(call.get("to")),
                clean_text(json.dumps(call.get("parameters") or {}, ensure_ascii=False, default=str)),
                float(started_at),
            )
        except (KeyError, TypeError, ValueError) as exc:
            self._drop(f"a call start that is not a call object: {type(exc).__name__}: {exc}")
            return
        self._queue(((CALL_STARTED, row),))

    def utterance(self, call_id: str, utterance: Mapping[str, Any]) -> None:
        """Record a final utterance of a call; the same utterance id again (from any instance) replaces it."""
        try:
            body = orjson.dumps(utterance, default=str).decode()  # escapes NUL; refuses lone surrogates
            key = clean_text(str(utterance.get("id") or uuid.uuid4().hex))
            row = (clean_text(str(call_id)), key, call_seconds(utterance.get("start")), body)
        except (TypeError, ValueError) as exc:
            self._drop(f"an utterance that is not JSON: {type(exc).__name__}: {exc}")
            return
        self._queue(((CALL_SEEN, (row[0], self._clock())), (UTTERANCE, row)))

    def addon(self, call_id: str, type_: str, item: Mapping[str, Any]) -> None:
        """Record an add-on result of a call's final (as :meth:`bridge.transcripts.TranscriptStore.addon`)."""
        try:
            uid, kind, body = addon_row(type_, item)
        except (TypeError, ValueError) as exc:
            self._drop(f"an add-on that cannot be kept: {type(exc).__name__}: {exc}")
            return
        call = clean_text(str(call_id))
        self._queue(((CALL_SEEN, (call, self._clock())), (ADDON, (call, clean_text(uid), kind, body))))

    def analysis(self, call_id: str, analysis: Mapping[str, Any]) -> None:
        """Record a call's post-call analysis; a later one replaces it."""
        try:
            body = analysis_body(analysis)
        except (TypeError, ValueError) as exc:
            self._drop(f"an analysis that cannot be kept: {type(exc).__name__}: {exc}")
            return
        call = clean_text(str(call_id))
        self._queue(((CALL_SEEN, (call, self._clock())), (ANALYSIS, (call, body))))

    def call_ended(self, call_id: str, ended_at: float, end_reason: str) -> None:
        """Record a call's end (unix seconds, and the ``call.ended`` end reason), from any instance."""
        try:
            ended = float(ended_at)
        except (TypeError, ValueError) as exc:
            self._drop(f"an end time that is not a number: {exc}")
            return
        call = clean_text(str(call_id))
        self._queue(((CALL_SEEN, (call, ended)), (CALL_ENDED, (ended, clean_text(str(end_reason)), call))))

    # -- reads and the purge (a worker thread: bridge.blocking) ---------------------------------

    def _read(self, work: Callable[[Connection], T]) -> T:
        with self._read_lock:  # one reader connection, one read at a time (as the SQLite store)
            return self._reader.run(work)

    def get(self, call_id: str) -> dict[str, Any] | None:
        """The call's transcript as recorded so far, by any instance, or None (the same dict as
        :meth:`bridge.transcripts.TranscriptStore.get`).

        Raises:
            psycopg.Error: the database cannot be read.
        """

        def read(db: Connection) -> tuple[Any, ...] | None:
            with db.transaction():  # one snapshot for the call, its utterances, add-ons and analysis
                db.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                row = db.execute(pg.READ_CALL, (call_id,)).fetchone()
                if row is None:
                    return None
                bodies = db.execute(pg.READ_UTTERANCES, (call_id, MAX_UTTERANCES_READ + 1)).fetchall()
                addons = db.execute(pg.READ_ADDONS, (call_id, MAX_ADDONS_READ + 1)).fetchall()
                analysis = db.execute(pg.READ_ANALYSIS, (call_id,)).fetchone()
            return row, bodies, addons, analysis

        found = self._read(read)
        if found is None:
            return None
        row, bodies, addons, analysis = found
        return transcript_of(row, bodies, addons, analysis)

    def list_since(self, since: float, limit: int = 100, q: str | None = None) -> list[dict[str, Any]]:
        """Calls that started or ended at or after ``since`` (unix seconds), on any instance, newest start
        first, at most ``limit``: each the transcript's call fields and ``utterances``, their number. ``q``:
        only the calls whose caller or called number, or the text of one of their utterances, holds it
        (any letter in either case; ``%`` and ``_`` are themselves).

        Raises:
            psycopg.Error: the database cannot be read.
        """
        args: dict[str, Any] = {"since": since, "limit": limit}
        if q:
            args["q"] = like_pattern(pg.clean_text(q))

        def read(db: Connection) -> list[tuple[Any, ...]]:
            return db.execute(pg.LIST_SINCE_MATCHING if q else pg.LIST_SINCE, args).fetchall()

        rows = self._read(read)
        return [{**call_fields(row), "utterances": int(row[10])} for row in rows]

    def recording_index(self, call_ids: list[str]) -> dict[str, recording_index.Indexed]:
        """These calls' recordings as the index lists them (:mod:`bridge.recording.index`); absent: none.

        Raises:
            psycopg.Error: the database cannot be read.
        """
        ids = call_ids[: recording_index.MAX_IDS]
        sql = recording_index.read_sql(len(ids), "%s")
        rows = self._read(lambda db: db.execute(sql, ids).fetchall()) if ids else []
        return recording_index.indexed(rows, self._clock())

    def purge(self, before: float) -> int:
        """Delete the calls (with their utterances, add-ons and analysis) that ended before ``before`` (unix
        seconds), or started before it when their end was never recorded; returns how many calls went
        (this instance's purge: another's running at once takes other rows).

        Raises:
            psycopg.Error: the database cannot be written.
        """

        def batch(db: Connection) -> list[str]:
            with db.transaction():
                return [row[0] for row in db.execute(pg.PURGE_BATCH_SQL, (before, self.PURGE_BATCH)).fetchall()]

        gone = 0
        while True:
            ids = self._read(batch)
            if ids and self.on_purged is not None:  # their recordings go with them (bridge.recording.service)
                self.on_purged(ids)
            gone += len(ids)
            if len(ids) < self.PURGE_BATCH:
                return gone

    # -- lifetime --------------------------------------------------------------------------------

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued (bounded by ``timeout``), stop the writer thread, close the connections.
        Writes after this are dropped (and counted)."""
        if self._closed:
            return
        self._writes.flush(timeout)
        self._stop.set()  # a reconnection waiting out its backoff gives up
        stopped = self._writes.close(0)
        self._closed = True
        if stopped:  # else a commit is stuck in the driver: leave it the connection
            self._writer.close()
        with self._read_lock:
            self._reader.close()

    # -- the writer thread (bridge.group_commit.GroupWriter calls these) -------------------------

    def _idle(self) -> None:
        """Nothing to write: while degraded without a connection, try to make one (so that the store
        recovers, and says so, without waiting for the next call's writes)."""
        if self._writes.degraded is None or not self._writer.due or self._stop.is_set():
            return
        try:
            self._writer.connection()
        except TRANSIENT:
            return
        self._writes.degraded = None
        self._state_changed(None)

    def _commit(self, batch: list[Op]) -> None:
        db = self._writer.connection()
        try:
            with db.transaction(), db.cursor() as cur:
                for sql, rows in runs(batch):
                    cur.executemany(pg.STATEMENTS[sql], rows)
        except TRANSIENT:
            self._writer.lost(db)
            raise
        except REFUSED as exc:  # the server refused some write's content: find which, keep the rest
            self._commit_each(db, batch, f"{type(exc).__name__}: {exc}")
        except psycopg.Error:
            self._fails(db)
            raise

    def _fails(self, db: Connection) -> None:
        """Neither the connection nor the data: the database (a table gone, a permission taken away). The
        batch is tried again on a new connection, which makes the schema again if it is missing."""
        db.close()
        self._writer.lost(db)

    def _commit_each(self, db: Connection, batch: list[Op], first: str) -> None:
        """The batch op by op, each in a savepoint; an op the server refuses is dropped and counted."""
        refused = 0
        try:
            with db.transaction(), db.cursor() as cur:
                for op in batch:
                    try:
                        with db.transaction():
                            for sql, args in op:
                                cur.execute(pg.STATEMENTS[sql], args)
                    except REFUSED:
                        refused += 1
        except TRANSIENT:
            self._writer.lost(db)
            raise
        except psycopg.Error:
            self._fails(db)
            raise
        self._refused += refused
        if refused:
            self._dropped(f"the database refused {refused} write(s): {first}")


def _create_schema(db: Connection) -> None:
    """The tables, if missing (every new writer connection: the database may be a new one since)."""
    with db.transaction():
        db.execute("SELECT pg_advisory_xact_lock(%s)", (pg.SCHEMA_LOCK,))
        db.execute(pg.SCHEMA)
