"""The shared transcript record's tables in PostgreSQL and the statements that write them (for
:mod:`bridge.transcripts_pg`; the SQLite ones are :mod:`bridge.transcript_schema`).

Pure: SQL text, and :func:`clean_text`, which makes a string one PostgreSQL accepts. The tables are the
SQLite store's (the same columns, the same meaning), with PostgreSQL's types; ``bridge_schema`` records
this schema's version. Everything is ``CREATE ... IF NOT EXISTS``: an instance opening a database
another already set up changes nothing.

Each statement is idempotent, so that several instances writing one call (one killed, another carrying
the call on) and a batch written again after a lost acknowledgement give one coherent record: see
:mod:`bridge.transcripts_pg`.
"""

from __future__ import annotations

from typing import Any

from bridge.recording import index as recording_index
from bridge.transcript_schema import ADDON, ANALYSIS, CALL_COLUMNS, CALL_ENDED, CALL_SEEN, CALL_STARTED, UTTERANCE

SCHEMA_VERSION = 1
SCHEMA_LOCK = 0x62726467_7472  # pg_advisory_xact_lock key: one instance creates the tables at a time

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS bridge_schema (
    component  TEXT PRIMARY KEY,
    version    INTEGER NOT NULL
);
INSERT INTO bridge_schema (component, version) VALUES ('transcripts', {SCHEMA_VERSION})
    ON CONFLICT (component) DO NOTHING;
CREATE TABLE IF NOT EXISTS calls (
    call_id     TEXT PRIMARY KEY,
    provider    TEXT,
    call_sid    TEXT,
    stream_sid  TEXT,
    caller      TEXT,
    called      TEXT,
    parameters  TEXT NOT NULL DEFAULT '{{}}',
    started_at  DOUBLE PRECISION NOT NULL,   -- unix seconds
    ended_at    DOUBLE PRECISION,            -- NULL while the call runs (or if its instance died)
    end_reason  TEXT
);
CREATE INDEX IF NOT EXISTS calls_by_start ON calls (started_at);
CREATE INDEX IF NOT EXISTS calls_by_end ON calls (ended_at);
CREATE INDEX IF NOT EXISTS calls_by_expiry ON calls ((coalesce(ended_at, started_at)));
CREATE SEQUENCE IF NOT EXISTS utterance_seq;
CREATE TABLE IF NOT EXISTS utterances (
    seq           BIGINT PRIMARY KEY DEFAULT nextval('utterance_seq'),
    call_id       TEXT NOT NULL,
    utterance_id  TEXT NOT NULL,
    start         DOUBLE PRECISION NOT NULL,   -- seconds from the start of the call
    body          TEXT NOT NULL,               -- the utterance as JSON
    UNIQUE (call_id, utterance_id)
);
CREATE SEQUENCE IF NOT EXISTS addon_seq;
CREATE TABLE IF NOT EXISTS addons (
    seq            BIGINT PRIMARY KEY DEFAULT nextval('addon_seq'),
    call_id        TEXT NOT NULL,
    utterance_id   TEXT NOT NULL,
    utterance_seq  BIGINT,          -- utterances.seq when written; NULL: no such utterance then
    kind           TEXT NOT NULL,   -- translation | entities | sentiment
    body           TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS addons_by_call ON addons (call_id);
CREATE TABLE IF NOT EXISTS analyses (
    call_id  TEXT PRIMARY KEY,
    body     TEXT NOT NULL
);
{recording_index.SCHEMA}
"""

# The SQLite statements (bridge.transcript_schema) are the queued writes' names; these are what they are
# in PostgreSQL, with the same parameters in the same order.
STATEMENTS: dict[str, str] = {
    CALL_STARTED: """
        INSERT INTO calls (call_id, provider, call_sid, stream_sid, caller, called, parameters, started_at)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
        ON CONFLICT (call_id) DO UPDATE SET
            provider = excluded.provider, call_sid = excluded.call_sid, stream_sid = excluded.stream_sid,
            caller = excluded.caller, called = excluded.called, parameters = excluded.parameters,
            started_at = least(calls.started_at, excluded.started_at)
    """,
    CALL_SEEN: "INSERT INTO calls (call_id, started_at) VALUES (%s, %s) ON CONFLICT (call_id) DO NOTHING",
    UTTERANCE: """
        INSERT INTO utterances (call_id, utterance_id, start, body) VALUES (%s, %s, %s, %s)
        ON CONFLICT (call_id, utterance_id) DO UPDATE SET
            seq = nextval('utterance_seq'), start = excluded.start, body = excluded.body
    """,
    ADDON: """
        INSERT INTO addons (call_id, utterance_id, utterance_seq, kind, body)
        SELECT v.call_id, v.utterance_id,
               (SELECT seq FROM utterances u WHERE u.call_id = v.call_id AND u.utterance_id = v.utterance_id),
               v.kind, v.body
        FROM (VALUES (%s::text, %s::text, %s::text, %s::text)) AS v (call_id, utterance_id, kind, body)
    """,
    ANALYSIS: """
        INSERT INTO analyses (call_id, body) VALUES (%s, %s)
        ON CONFLICT (call_id) DO UPDATE SET body = excluded.body
    """,
    CALL_ENDED: "UPDATE calls SET ended_at = %s, end_reason = %s WHERE call_id = %s",
    recording_index.PART: recording_index.PART_PG,
}

# The expired calls of one purge batch and everything of theirs, in one statement.
PURGE_BATCH_SQL = """
WITH gone AS (
    SELECT call_id FROM calls WHERE coalesce(ended_at, started_at) < %s
    LIMIT %s FOR UPDATE SKIP LOCKED
), a AS (
    DELETE FROM addons WHERE call_id IN (SELECT call_id FROM gone)
), n AS (
    DELETE FROM analyses WHERE call_id IN (SELECT call_id FROM gone)
), u AS (
    DELETE FROM utterances WHERE call_id IN (SELECT call_id FROM gone)
), r AS (
    DELETE FROM recording_parts WHERE call_id IN (SELECT call_id FROM gone)
)
DELETE FROM calls WHERE call_id IN (SELECT call_id FROM gone) RETURNING call_id
"""


# What the reads ask (the SQLite store's questions, in PostgreSQL's placeholders).
READ_CALL = f"SELECT {CALL_COLUMNS} FROM calls WHERE call_id = %s"
READ_UTTERANCES = "SELECT seq, body FROM utterances WHERE call_id = %s ORDER BY start, seq LIMIT %s"
READ_ADDONS = (
    "SELECT utterance_seq, kind, body FROM addons WHERE call_id = %s AND utterance_seq IS NOT NULL "
    "ORDER BY seq LIMIT %s"
)
READ_ANALYSIS = "SELECT body FROM analyses WHERE call_id = %s"
_LISTED = (
    f"SELECT {CALL_COLUMNS}, (SELECT count(*) FROM utterances u WHERE u.call_id = c.call_id) "
    "FROM calls c WHERE (started_at >= %(since)s OR ended_at >= %(since)s) "
)
_ORDER = "ORDER BY started_at DESC, call_id LIMIT %(limit)s"
LIST_SINCE = _LISTED + _ORDER
# ``&q=``: ILIKE (any letter in either case), the pattern of bridge.transcript_schema.like_pattern.
LIST_SINCE_MATCHING = (
    _LISTED
    + "AND (caller ILIKE %(q)s ESCAPE '\\' OR called ILIKE %(q)s ESCAPE '\\' OR EXISTS (SELECT 1 FROM utterances t "
    "WHERE t.call_id = c.call_id AND (t.body::jsonb ->> 'text') ILIKE %(q)s ESCAPE '\\')) " + _ORDER
)


def clean_text(value: str) -> str:
    """Text PostgreSQL accepts: no NUL character, valid UTF-8 (a lone surrogate replaced). SQLite took
    both; here they would make the server refuse the whole batch."""
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-8", "replace").decode("utf-8")
    return value


def text_or_none(value: Any) -> str | None:
    return None if value is None else clean_text(str(value))
