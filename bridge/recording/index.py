"""The recordings' index in the call record: which objects hold a call's recording (pure: SQL text and
the reading of its rows).

Fleet mode keeps recordings in object storage as parts (:mod:`bridge.recording.parts`); each part, once
uploaded, gets a row in ``recording_parts`` of the same store as the transcripts (the SQLite file, or
PostgreSQL with ``BRIDGE_DATABASE_URL``: then every instance sees every call's parts). The row is written
through the store's bounded queue and group commit, like an utterance; writing it again (a part uploaded
again after a late silence patched it) updates it. A segment's last part says ``closed`` once its owner
closed the recording; the purge deletes a call's rows with its transcript.

When a recording is complete (served; before, ``GET /v1/calls/{id}/recording`` answers 409): the call
has ended on record, and either every segment was closed by its owner, or the call was ended by the
instance that took it over from a dead one (``instance_lost``: the dead owner's open segment is all
there will be), or it ended more than ``SETTLE_S`` ago (its owner died between the end and its last
upload).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from bridge.recording.parts import Layout, Part, layout

SETTLE_S = 600.0  # an owner that died after the call's end, before its last part: served as stored after this
LOST = "instance_lost"
MAX_IDS = 500  # call ids per read (the listing asks for at most a page)

# SQLite and PostgreSQL alike.
SCHEMA = """
CREATE TABLE IF NOT EXISTS recording_parts (
    call_id  TEXT NOT NULL,
    segment  TEXT NOT NULL,      -- one owner's piece of the call, named to sort by time
    seq      INTEGER NOT NULL,   -- the part's place in its segment
    key      TEXT NOT NULL,      -- the object's key
    bytes    INTEGER NOT NULL,
    frames   INTEGER NOT NULL,
    header   INTEGER NOT NULL,   -- leading bytes that are not audio
    format   TEXT NOT NULL,      -- wav | opus
    rate     INTEGER NOT NULL,
    closed   INTEGER NOT NULL DEFAULT 0,   -- 1: the segment's last part, its owner closed it
    PRIMARY KEY (call_id, segment, seq)
);
"""

PART = """
INSERT INTO recording_parts (call_id, segment, seq, key, bytes, frames, header, format, rate, closed)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (call_id, segment, seq) DO UPDATE SET
    key = excluded.key, bytes = excluded.bytes, frames = excluded.frames, header = excluded.header,
    closed = max(closed, excluded.closed)
"""
PART_PG = PART.replace("?", "%s").replace("max(closed,", "greatest(recording_parts.closed,")
PURGE = "DELETE FROM recording_parts WHERE call_id = ?"

_COLUMNS = (
    "p.call_id, p.segment, p.seq, p.key, p.bytes, p.frames, p.header, p.format, p.rate, p.closed, "
    "c.ended_at, c.end_reason"
)


def read_sql(count: int, placeholder: str) -> str:
    """The parts of ``count`` calls (``placeholder``: ``?`` for SQLite, ``%s`` for psycopg), in order."""
    marks = ", ".join([placeholder] * count)
    return (
        f"SELECT {_COLUMNS} FROM recording_parts p LEFT JOIN calls c ON c.call_id = p.call_id "
        f"WHERE p.call_id IN ({marks}) ORDER BY p.call_id, p.segment, p.seq"
    )


def part_row(
    call_id: str,
    segment: str,
    seq: int,
    key: str,
    nbytes: int,
    frames: int,
    header: int,
    fmt: str,
    rate: int,
    closed: bool,
) -> tuple[Any, ...]:
    """The row :data:`PART` writes (the store queues it after the call's "seen" row)."""
    return (call_id, segment, int(seq), key, int(nbytes), int(frames), int(header), fmt, int(rate), int(closed))


@dataclass(frozen=True, slots=True)
class Indexed:
    """A call's recording as its index says: its layout, and whether it is complete (see the docstring)."""

    layout: Layout
    complete: bool

    def described(self) -> dict[str, Any]:
        """The listing's ``recording`` object."""
        return {"format": self.layout.format, "duration_s": round(self.layout.duration_s, 3), "bytes": self.layout.size}


def indexed(rows: Iterable[Sequence[Any]], now: float, settle_s: float = SETTLE_S) -> dict[str, Indexed]:
    """Rows of :func:`read_sql` to each call's :class:`Indexed`."""
    by_call: dict[str, list[Sequence[Any]]] = {}
    for row in rows:
        by_call.setdefault(str(row[0]), []).append(row)
    out: dict[str, Indexed] = {}
    for call_id, call_rows in by_call.items():
        parts = [Part(str(r[1]), int(r[2]), str(r[3]), int(r[4]), int(r[5]), int(r[6])) for r in call_rows]
        first = call_rows[0]
        ended_at, end_reason = first[10], first[11]
        last_of: dict[str, Sequence[Any]] = {}
        for r in call_rows:
            last_of[str(r[1])] = r  # rows come in (segment, seq) order: the last one wins
        closed = all(int(r[9]) for r in last_of.values())
        complete = ended_at is not None and (closed or end_reason == LOST or now - float(ended_at) > settle_s)
        out[call_id] = Indexed(layout(str(first[7]), int(first[8]), 2, parts), complete)
    return out
