"""The transcript file's tables and the statements that write them (for :mod:`bridge.transcripts`).

Pure: SQL text, and :func:`runs`, which lays a batch of queued writes out as few statements as possible.
The tables are created with ``CREATE ... IF NOT EXISTS``, so opening a file of an older bridge adds what
it lacks (the add-ons and the analyses came later, in tables of their own) and changes nothing else.

Add-ons (a final's translations, entities, sentiment) are linked to the utterance row they follow:
``utterance_seq`` is the ``seq`` of the call's utterance with that id at the moment the add-on is
written. Gladia numbers utterances per session (``00_00000003``), so a call whose session was replaced
can say an id again: the later utterance replaces the first (a new row, a new ``seq``) and the first
one's add-ons, linked to a row that is gone, are no longer shown with it.
"""

from __future__ import annotations

from typing import Any

from bridge.recording import index as recording_index

SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS calls (
    call_id     TEXT PRIMARY KEY,
    provider    TEXT,
    call_sid    TEXT,
    stream_sid  TEXT,
    caller      TEXT,
    called      TEXT,
    parameters  TEXT NOT NULL DEFAULT '{}',
    started_at  REAL NOT NULL,   -- unix seconds
    ended_at    REAL,            -- NULL while the call runs (or if its process died)
    end_reason  TEXT
);
CREATE INDEX IF NOT EXISTS calls_by_start ON calls (started_at);
CREATE INDEX IF NOT EXISTS calls_by_end ON calls (ended_at);
CREATE INDEX IF NOT EXISTS calls_by_expiry ON calls (coalesce(ended_at, started_at));
CREATE TABLE IF NOT EXISTS utterances (
    seq           INTEGER PRIMARY KEY,
    call_id       TEXT NOT NULL,
    utterance_id  TEXT NOT NULL,
    start         REAL NOT NULL,   -- seconds from the start of the call
    body          TEXT NOT NULL,   -- the utterance as JSON
    UNIQUE (call_id, utterance_id)
);
CREATE TABLE IF NOT EXISTS addons (
    seq            INTEGER PRIMARY KEY,
    call_id        TEXT NOT NULL,
    utterance_id   TEXT NOT NULL,
    utterance_seq  INTEGER,        -- utterances.seq when written; NULL: no such utterance then
    kind           TEXT NOT NULL,  -- translation | entities | sentiment
    body           TEXT NOT NULL   -- what is shown, as JSON
);
CREATE INDEX IF NOT EXISTS addons_by_call ON addons (call_id);
CREATE TABLE IF NOT EXISTS analyses (
    call_id  TEXT PRIMARY KEY,
    body     TEXT NOT NULL          -- the post-call analysis as JSON
);
"""
    + recording_index.SCHEMA
)

CALL_STARTED = """
INSERT INTO calls (call_id, provider, call_sid, stream_sid, caller, called, parameters, started_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (call_id) DO UPDATE SET
    provider = excluded.provider, call_sid = excluded.call_sid, stream_sid = excluded.stream_sid,
    caller = excluded.caller, called = excluded.called, parameters = excluded.parameters,
    started_at = min(started_at, excluded.started_at)
"""
# An utterance, add-on, analysis or end for a call whose start was lost (dropped, or written by a process
# that died) still lands: the call gets a row of its own with what is known (and the purge finds it).
CALL_SEEN = "INSERT OR IGNORE INTO calls (call_id, started_at) VALUES (?, ?)"
# The same id again replaces the utterance with a new row (new seq): the add-ons of the one it replaces
# stay linked to the old seq (see the module docstring). A first write costs what an upsert does.
UTTERANCE = "INSERT OR REPLACE INTO utterances (call_id, utterance_id, start, body) VALUES (?, ?, ?, ?)"
ADDON = """
INSERT INTO addons (call_id, utterance_id, utterance_seq, kind, body)
VALUES (?1, ?2, (SELECT seq FROM utterances WHERE call_id = ?1 AND utterance_id = ?2), ?3, ?4)
"""
ANALYSIS = """
INSERT INTO analyses (call_id, body) VALUES (?, ?)
ON CONFLICT (call_id) DO UPDATE SET body = excluded.body
"""
CALL_ENDED = "UPDATE calls SET ended_at = ?, end_reason = ? WHERE call_id = ?"
EXPIRED = "SELECT call_id FROM calls WHERE coalesce(ended_at, started_at) < ? LIMIT ?"
# What the purge deletes for each expired call, children first.
PURGE = (
    "DELETE FROM addons WHERE call_id = ?",
    "DELETE FROM analyses WHERE call_id = ?",
    recording_index.PURGE,
    "DELETE FROM utterances WHERE call_id = ?",
    "DELETE FROM calls WHERE call_id = ?",
)

CALL_COLUMNS = "call_id, provider, call_sid, stream_sid, caller, called, parameters, started_at, ended_at, end_reason"

# The calls listed by ``GET /v1/calls?since=``: started or ended since, newest first; with ``&q=`` only those
# whose numbers or utterance texts hold ``q`` (LIKE: ASCII letters in either case; the pattern from
# :func:`like_pattern`, its wildcards escaped with a backslash).
_LISTED = (
    f"SELECT {CALL_COLUMNS}, (SELECT count(*) FROM utterances u WHERE u.call_id = c.call_id) "
    "FROM calls c WHERE (started_at >= ? OR ended_at >= ?) "
)
_ORDER = "ORDER BY started_at DESC, call_id LIMIT ?"
LIST_SINCE = _LISTED + _ORDER
LIST_SINCE_MATCHING = (
    _LISTED + "AND (caller LIKE ?3 ESCAPE '\\' OR called LIKE ?3 ESCAPE '\\' OR EXISTS (SELECT 1 FROM utterances t "
    "WHERE t.call_id = c.call_id AND json_extract(t.body, '$.text') LIKE ?3 ESCAPE '\\')) " + _ORDER
)


def like_pattern(q: str) -> str:
    """A LIKE pattern matching ``q`` anywhere in a text, ``q``'s own ``%``, ``_`` and ``\\`` taken literally
    (escaped with ``\\``, the ``ESCAPE`` of :data:`LIST_SINCE_MATCHING` and its PostgreSQL twin)."""
    return "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


# One queued write: statements and their parameters, applied in order in the batch's transaction.
Op = tuple[tuple[str, tuple[Any, ...]], ...]


def runs(batch: list[Op]) -> list[tuple[str, list[tuple[Any, ...]]]]:
    """A batch's statements in order, consecutive ones of the same SQL as one ``executemany`` (a group
    commit of many calls' finals is a few statements, not two per final); a call's "seen" row once per
    batch (after the first, the insert would change nothing)."""
    out: list[tuple[str, list[tuple[Any, ...]]]] = []
    seen: set[Any] = set()
    for op in batch:
        for sql, args in op:
            if sql is CALL_SEEN:
                if args[0] in seen:
                    continue
                seen.add(args[0])
            if out and out[-1][0] is sql:
                out[-1][1].append(args)
            else:
                out.append((sql, [args]))
    return out
