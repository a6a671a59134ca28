"""Transcripts on record: each call's finals kept in SQLite (their renderers, pure, are
:mod:`bridge.transcript_render`).

:class:`TranscriptStore` is the file, ``<data dir>/transcripts.sqlite3``, shared by every worker process
of a bridge (a ``GET`` may reach any of them): WAL journal, a busy timeout, one writer connection per
process.

A call writes through the store without ever waiting on the disk: :meth:`TranscriptStore.call_started`,
:meth:`~TranscriptStore.utterance` and :meth:`~TranscriptStore.call_ended` append to a bounded
in-memory queue and return; one thread (:class:`bridge.group_commit.GroupWriter`) commits what has
queued up, a batch per transaction, waiting ``commit_delay`` (0.2 s) after the first write for more
(group commit: every call's finals of that moment in one transaction; the API's reads first wait for
this process's queue). They never raise.
While the disk fails (full, read-only, locked past the busy timeout) the writer keeps the queue and
retries every ``retry_seconds``; what does not fit in the queue is dropped and counted. Each change of
state (writes failing / working again, the queue overflowing / caught up) is reported once
through the ``report`` callback, never once per utterance. Reads (:meth:`~TranscriptStore.get`,
:meth:`~TranscriptStore.list_since`) and :meth:`~TranscriptStore.purge` are synchronous and run on a
worker thread (the API's own pool, :mod:`bridge.blocking`).

The transcript dict (what ``get`` returns and the renderers take)::

    {"id", "provider", "call_sid", "stream_sid", "from", "to", "parameters",
     "started_at", "ended_at", "end_reason",     # ISO 8601 UTC; ended_at/end_reason null while running
     "active",                                   # true until call_ended is recorded
     "utterances": [{"id", "channel", "speaker", "start", "end", "text", "language",
                     "words": [{"word", "start", "end", "confidence"}], ...,
                     "translations"?: {language: text}, "entities"?: [...], "sentiment"?: [...]}],
     "analysis"?: {"status", "summary"?, "chapters"?, "errors"?}}   # ?: only when recorded

Utterance ``start``/``end`` are seconds from the start of the call. An utterance's add-ons
(:meth:`~TranscriptStore.addon`, shown as :mod:`bridge.transcript_addons` says) and the call's post-call
analysis (:meth:`~TranscriptStore.analysis`) are written the same way as its finals.

Only the call's record, its finals and what Gladia's add-ons said of them are kept: no key the caller
pressed, no other bot event. So a sensitive
gather's digits never reach this file, and neither do the words of its caller, whose audio reaches
speech-to-text as silence while it runs.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import orjson

from bridge.group_commit import GroupWriter
from bridge.record_reads import MAX_ADDONS_READ, MAX_UTTERANCES_READ, call_fields, transcript_of
from bridge.record_writes import QueuedWrites, Report
from bridge.recording import index as recording_index
from bridge.transcript_addons import addon_row, analysis_body
from bridge.transcript_render import call_seconds
from bridge.transcript_schema import (
    ADDON,
    ANALYSIS,
    CALL_COLUMNS,
    CALL_ENDED,
    CALL_SEEN,
    CALL_STARTED,
    EXPIRED,
    LIST_SINCE,
    LIST_SINCE_MATCHING,
    PURGE,
    SCHEMA,
    UTTERANCE,
    Op,
    like_pattern,
    runs,
)

FILENAME = "transcripts.sqlite3"


def _text(value: Any) -> str | None:
    return None if value is None else _utf8(str(value))


def _utf8(text: str) -> str:
    """``text`` as SQLite can store it: a lone surrogate (a JSON escape like ``\\ud800`` that a carrier's
    parameters may carry) becomes ``?`` (SQLite refuses it, and the writer thread would stop on it)."""
    return text if text.isascii() else text.encode("utf-8", "replace").decode("utf-8")


class TranscriptStore(QueuedWrites):
    """The transcript file of a bridge (see the module docstring). Open it once per process, at
    start-up; :meth:`close` it at shutdown, after the calls have ended.

    Args:
        path: the SQLite file (``<data dir>/transcripts.sqlite3``, see :meth:`in_dir`).
        max_queue: writes waiting for the disk; beyond, they are dropped and counted.
        retry_seconds: pause before a failed batch is tried again.
        busy_timeout: seconds a statement waits for another process's lock before it fails.
        clock: wall time, for a call first seen by an utterance or its end.
        report: ``report(event, fields)`` on each change of state, from the caller's thread or the
            writer thread: ``transcripts.degraded`` (``reason``), ``transcripts.recovered``,
            ``transcripts.dropping`` (``reason``: the first write dropped since the last catch-up),
            ``transcripts.caught_up`` (``dropped``: the total so far).

    Raises:
        sqlite3.Error, OSError: the file cannot be opened or created.
    """

    MAX_BATCH = 1000
    PURGE_BATCH = 500
    ERRORS: tuple[type[Exception], ...] = (sqlite3.Error,)  # what a read or the purge may raise (the API: 503)

    def __init__(
        self,
        path: Path,
        *,
        max_queue: int = 10_000,
        retry_seconds: float = 1.0,
        busy_timeout: float = 5.0,
        commit_delay: float = 0.2,
        clock: Callable[[], float] = time.time,
        report: Report | None = None,
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_queue = max_queue
        self.retry_seconds = retry_seconds
        self._clock = clock
        self._report = report
        self._writer = self._connect(busy_timeout)
        self._writer.executescript(SCHEMA)
        self._reader = self._connect(busy_timeout)
        self._read_lock = threading.Lock()
        self._closed = False
        self._dropping = False
        self._refused = 0  # writes that were not a call, an utterance, an add-on, an analysis or an end
        # told the ids of the calls each purge batch deleted, on the purge's thread (their recordings go too)
        self.on_purged: Callable[[list[str]], object] | None = None
        self._writes: GroupWriter[Op] = GroupWriter(
            self._commit,
            name="transcript-writer",
            bound=max_queue,
            commit_delay=commit_delay,
            max_batch=self.MAX_BATCH,
            retry_seconds=retry_seconds,
            on_state_change=self._state_changed,
            on_committed=self._committed,
        )
        self._writes.start()

    @classmethod
    def in_dir(cls, data_dir: Path, **options: Any) -> TranscriptStore:
        """The store of the bridge whose ``server.data_dir`` is ``data_dir`` (every worker shares it)."""
        return cls(data_dir / FILENAME, **options)

    def _connect(self, busy_timeout: float) -> sqlite3.Connection:
        # check_same_thread=False: the writer connection is used by the writer thread only, the reader
        # by whichever worker thread holds _read_lock.
        db = sqlite3.connect(str(self.path), timeout=busy_timeout, isolation_level=None, check_same_thread=False)
        try:
            db.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
            db.execute("PRAGMA journal_mode=WAL")  # readers never block the writers of other processes
            db.execute("PRAGMA synchronous=NORMAL")
        except BaseException:
            db.close()
            raise
        return db

    # -- what a call does (event loop; never blocks on the disk, never raises) -----------------

    def call_started(self, call: Mapping[str, Any], started_at: float) -> None:
        """Record a call's start: ``call`` is the bot events' call object (``id``, ``provider``,
        ``call_sid``, ``stream_sid``, ``from``, ``to``, ``parameters``), ``started_at`` unix seconds."""
        try:
            row = (
                str(call["id"]),
                _text(call.get("provider")),
                _text(call.get("call_sid")),
                _text(call.get("stream_sid")),
                _text(call.get("from")),
                _text(call.get("to")),
                _utf8(json.dumps(call.get("parameters") or {}, ensure_ascii=False, default=str)),
                float(started_at),
            )
        except (KeyError, TypeError, ValueError) as exc:
            self._drop(f"a call start that is not a call object: {type(exc).__name__}: {exc}")
            return
        self._queue(((CALL_STARTED, row),))

    def utterance(self, call_id: str, utterance: Mapping[str, Any]) -> None:
        """Record a final utterance of a call (the ``utterance.final`` event's utterance, with its
        ``speaker`` and ``channel``). The same utterance id again replaces the first (and the add-ons
        recorded for the first are no longer shown: :mod:`bridge.transcript_schema`)."""
        try:
            body = orjson.dumps(utterance, default=str).decode()  # compact UTF-8; a final is one per turn
            key = str(utterance.get("id") or uuid.uuid4().hex)
            row = (str(call_id), key, call_seconds(utterance.get("start")), body)
        except (TypeError, ValueError) as exc:
            self._drop(f"an utterance that is not JSON: {type(exc).__name__}: {exc}")
            return
        self._queue(((CALL_SEEN, (row[0], self._clock())), (UTTERANCE, row)))

    def addon(self, call_id: str, type_: str, item: Mapping[str, Any]) -> None:
        """Record an add-on result of a call's final: ``type_`` is the bot event's type
        (``utterance.translation``, ``utterance.entities``, ``utterance.sentiment``), ``item`` its payload
        without ``call``. It joins the utterance with that ``utterance_id`` recorded last before it (see
        :mod:`bridge.transcript_addons` for how it is shown)."""
        try:
            uid, kind, body = addon_row(type_, item)
        except (TypeError, ValueError) as exc:
            self._drop(f"an add-on that cannot be kept: {type(exc).__name__}: {exc}")
            return
        call = str(call_id)
        self._queue(((CALL_SEEN, (call, self._clock())), (ADDON, (call, uid, kind, body))))

    def analysis(self, call_id: str, analysis: Mapping[str, Any]) -> None:
        """Record a call's post-call analysis (``{status, summary?, chapters?, errors?}``, as
        ``transcript.completed`` carries it); a later one replaces it."""
        try:
            body = analysis_body(analysis)
        except (TypeError, ValueError) as exc:
            self._drop(f"an analysis that cannot be kept: {type(exc).__name__}: {exc}")
            return
        call = str(call_id)
        self._queue(((CALL_SEEN, (call, self._clock())), (ANALYSIS, (call, body))))

    def call_ended(self, call_id: str, ended_at: float, end_reason: str) -> None:
        """Record a call's end (unix seconds, and the ``call.ended`` end reason)."""
        try:
            ended = float(ended_at)
        except (TypeError, ValueError) as exc:
            self._drop(f"an end time that is not a number: {exc}")
            return
        call = str(call_id)
        self._queue(((CALL_SEEN, (call, ended)), (CALL_ENDED, (ended, str(end_reason), call))))

    # -- reads and the purge (a worker thread: bridge.blocking) -------------------------------

    def get(self, call_id: str) -> dict[str, Any] | None:
        """The call's transcript as recorded so far (see the module docstring), or None.

        Raises:
            sqlite3.Error: the file cannot be read.
        """
        with self._read_lock:
            db = self._reader
            db.execute("BEGIN")  # one snapshot for the call, its utterances and their add-ons
            try:
                row = db.execute(f"SELECT {CALL_COLUMNS} FROM calls WHERE call_id = ?", (call_id,)).fetchone()
                if row is None:
                    return None
                bodies = db.execute(
                    "SELECT seq, body FROM utterances WHERE call_id = ? ORDER BY start, seq LIMIT ?",
                    (call_id, MAX_UTTERANCES_READ + 1),
                ).fetchall()
                addons = db.execute(
                    "SELECT utterance_seq, kind, body FROM addons WHERE call_id = ? AND utterance_seq IS NOT NULL "
                    "ORDER BY seq LIMIT ?",
                    (call_id, MAX_ADDONS_READ + 1),
                ).fetchall()
                analysis = db.execute("SELECT body FROM analyses WHERE call_id = ?", (call_id,)).fetchone()
            finally:
                db.execute("COMMIT")
        return transcript_of(row, bodies, addons, analysis)

    def list_since(self, since: float, limit: int = 100, q: str | None = None) -> list[dict[str, Any]]:
        """Calls that started or ended at or after ``since`` (unix seconds), newest start first, at
        most ``limit``: each the transcript's call fields and ``utterances``, their number. ``q``: only the
        calls whose caller or called number, or the text of one of their utterances, holds it (ASCII
        letters in either case, as SQLite's LIKE; ``%`` and ``_`` are themselves).

        Raises:
            sqlite3.Error: the file cannot be read.
        """
        with self._read_lock:
            if q:
                rows = self._reader.execute(LIST_SINCE_MATCHING, (since, since, like_pattern(q), limit)).fetchall()
            else:
                rows = self._reader.execute(LIST_SINCE, (since, since, limit)).fetchall()
        return [{**call_fields(row), "utterances": row[10]} for row in rows]

    def recording_index(self, call_ids: list[str]) -> dict[str, recording_index.Indexed]:
        """These calls' recordings as the index lists them (:mod:`bridge.recording.index`); absent: none.

        Raises:
            sqlite3.Error: the file cannot be read.
        """
        ids = call_ids[: recording_index.MAX_IDS]
        with self._read_lock:
            rows = self._reader.execute(recording_index.read_sql(len(ids), "?"), ids).fetchall() if ids else []
        return recording_index.indexed(rows, self._clock())

    def purge(self, before: float) -> int:
        """Delete the calls (with their utterances, add-ons and analysis, and through :attr:`on_purged` their
        recordings) that ended before ``before`` (unix seconds), or started before it when their end was never
        recorded; returns how many calls went.

        Deletes a bounded batch per transaction, so another process's writes wait at most one batch.

        Raises:
            sqlite3.Error: the file cannot be written.
        """
        gone = 0
        with self._read_lock:
            db = self._reader
            while True:
                db.execute("BEGIN IMMEDIATE")
                try:
                    ids = [(call_id,) for (call_id,) in db.execute(EXPIRED, (before, self.PURGE_BATCH))]
                    for delete in PURGE:  # its add-ons, analysis, utterances, then the call
                        db.executemany(delete, ids)
                    db.execute("COMMIT")
                except BaseException:
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                    raise
                if ids and self.on_purged is not None:
                    self.on_purged([call_id for (call_id,) in ids])
                gone += len(ids)
                if len(ids) < self.PURGE_BATCH:
                    return gone

    # -- lifetime ------------------------------------------------------------------------------

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued (bounded by ``timeout``), stop the writer thread, close the file.
        Writes after this are dropped (and counted)."""
        if self._closed:
            return
        stopped = self._writes.close(timeout)
        self._closed = True
        if stopped:  # else a commit is stuck in the driver: leave it the connection
            self._writer.close()
        with self._read_lock:
            self._reader.close()

    # -- the writer thread (bridge.group_commit.GroupWriter calls these) -----------------------

    def _commit(self, batch: list[Op]) -> None:
        db = self._writer
        db.execute("BEGIN IMMEDIATE")
        try:
            for sql, rows in runs(batch):
                db.executemany(sql, rows)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            raise
