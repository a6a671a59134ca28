"""A recording kept as parts in object storage, joined on read (bridge.recording.parts) and listed in the
call record's index (bridge.recording.index): pure, no event loop.

Oracles: Python's ``wave`` module reads the joined WAV (an independent RIFF reader); slices are checked
against the whole joined file materialised byte by byte; the index's SQL runs on a real SQLite."""

from __future__ import annotations

import io
import sqlite3
import wave

from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.recording import index
from bridge.recording.parts import WAV_HEADER, Layout, Part, layout, wav_header
from bridge.recording.uploader import Cut, PartCutter
from bridge.transcript_schema import SCHEMA


def _stale_header() -> bytes:
    return wav_header(8000, 2, 0)  # what a spool file's header says before its sizes are set


def _materialise(lay: Layout, objects: dict[str, bytes]) -> bytes:
    out = b""
    for piece in lay.pieces:
        out += piece.data if piece.key is None else objects[piece.key][piece.start : piece.end]
    return out


def _two_segments() -> tuple[list[Part], dict[str, bytes], bytes]:
    a0 = _stale_header() + bytes(range(256)) * 4  # 1024 bytes of audio: 256 frames
    a1 = b"\x01\x02\x03\x04" * 100
    b0 = _stale_header() + b"\x05\x06\x07\x08" * 50
    objects = {"p/c/s1/000000": a0, "p/c/s1/000001": a1, "p/c/s2/000000": b0}
    parts = [  # listed out of order on purpose
        Part("s2", 0, "p/c/s2/000000", len(b0), 50, WAV_HEADER),
        Part("s1", 1, "p/c/s1/000001", len(a1), 100, 0),
        Part("s1", 0, "p/c/s1/000000", len(a0), 256, WAV_HEADER),
    ]
    audio = a0[WAV_HEADER:] + a1 + b0[WAV_HEADER:]
    return parts, objects, audio


def test_wav_segments_join_into_one_file_an_independent_reader_reads() -> None:
    parts, objects, audio = _two_segments()
    lay = layout("wav", 8000, 2, parts)
    joined = _materialise(lay, objects)
    assert lay.size == len(joined) == WAV_HEADER + len(audio)
    with wave.open(io.BytesIO(joined)) as w:
        assert (w.getnchannels(), w.getframerate(), w.getsampwidth()) == (2, 8000, 2)
        assert w.getnframes() == len(audio) // 4 == lay.frames
        assert w.readframes(w.getnframes()) == audio
    assert abs(lay.duration_s - len(audio) / 4 / 8000) < 1e-9


def test_opus_parts_are_joined_whole_in_segment_order() -> None:
    parts = [Part("s2", 0, "k3", 3, 10), Part("s1", 1, "k2", 2, 10), Part("s1", 0, "k1", 4, 10)]
    lay = layout("opus", 8000, 2, parts)
    assert [p.key for p in lay.pieces] == ["k1", "k2", "k3"]
    assert lay.size == 9 and lay.frames == 30


def test_the_etag_changes_when_a_part_does() -> None:
    parts, _, _ = _two_segments()
    before = layout("wav", 8000, 2, parts).etag
    grown = [*parts, Part("s2", 1, "p/c/s2/000001", 40, 10, 0)]
    assert layout("wav", 8000, 2, grown).etag != before
    assert layout("wav", 8000, 2, list(reversed(parts))).etag == before


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_any_slice_is_the_same_bytes_as_the_whole_file_cut(data: st.DataObject) -> None:
    parts, objects, _ = _two_segments()
    lay = layout("wav", 8000, 2, parts)
    whole = _materialise(lay, objects)
    start = data.draw(st.integers(0, lay.size))
    end = data.draw(st.integers(start, lay.size))
    got = b"".join(p.data if p.key is None else objects[p.key][p.start : p.end] for p in lay.slice(start, end))
    assert got == whole[start:end]


def _db() -> sqlite3.Connection:
    db = sqlite3.connect(":memory:")
    db.executescript(SCHEMA)
    return db


def _write(db: sqlite3.Connection, *rows: tuple[object, ...]) -> None:
    db.executemany(index.PART, rows)


def test_index_complete_only_once_the_call_ended_and_every_segment_closed() -> None:
    db = _db()
    db.execute("INSERT INTO calls (call_id, started_at) VALUES ('c1', 100)")
    _write(db, index.part_row("c1", "s1", 0, "k0", 1044, 250, 44, "wav", 8000, False))
    rows = db.execute(index.read_sql(1, "?"), ["c1"]).fetchall()
    assert not index.indexed(rows, now=200)["c1"].complete  # running
    db.execute("UPDATE calls SET ended_at = 150, end_reason = 'hangup' WHERE call_id = 'c1'")
    rows = db.execute(index.read_sql(1, "?"), ["c1"]).fetchall()
    assert not index.indexed(rows, now=151)["c1"].complete  # ended, last part still uploading
    assert index.indexed(rows, now=150 + index.SETTLE_S + 1)["c1"].complete  # its owner died after the end
    _write(db, index.part_row("c1", "s1", 0, "k0", 1044, 250, 44, "wav", 8000, True))  # the same part, closed
    rows = db.execute(index.read_sql(1, "?"), ["c1"]).fetchall()
    found = index.indexed(rows, now=151)["c1"]
    assert found.complete and found.layout.size == 1044 and found.described()["duration_s"] == 0.031  # 250 frames
    _write(db, index.part_row("c1", "s1", 0, "k0", 1044, 250, 44, "wav", 8000, False))  # a late retry
    rows = db.execute(index.read_sql(1, "?"), ["c1"]).fetchall()
    assert index.indexed(rows, now=151)["c1"].complete  # closed stays closed


def test_a_call_ended_by_the_instance_that_took_it_over_is_complete_as_stored() -> None:
    db = _db()
    db.execute("INSERT INTO calls (call_id, started_at, ended_at, end_reason) VALUES ('c2', 1, 2, 'instance_lost')")
    _write(db, index.part_row("c2", "s1", 0, "k", 100, 14, 44, "wav", 8000, False))
    rows = db.execute(index.read_sql(2, "?"), ["c2", "absent"]).fetchall()
    found = index.indexed(rows, now=2.5)
    assert found["c2"].complete and "absent" not in found


class _Uploads:
    def __init__(self) -> None:
        self.cuts: list[Cut] = []

    def put(self, cut: Cut) -> None:
        self.cuts.append(cut)


def test_the_cutter_cuts_a_part_per_part_s_and_the_rest_at_close() -> None:
    uploads = _Uploads()
    cutter = PartCutter(uploads, part_s=10)  # type: ignore[arg-type]
    rate = 8000
    cutter.written("c", "/s/c.wav", "wav", rate, 44 + 4 * 5 * rate, 5 * rate)  # 5 s: not yet
    assert uploads.cuts == []
    cutter.written("c", "/s/c.wav", "wav", rate, 44 + 4 * 12 * rate, 12 * rate)
    first = uploads.cuts[-1]
    assert (first.seq, first.offset, first.length, first.header, first.closed) == (0, 0, 44 + 4 * 12 * rate, 44, False)
    cutter.patched("c", rate, 2 * rate)  # a late redaction inside the first part: it goes again
    assert uploads.cuts[-1] == first
    cutter.closed("c", "/s/c.wav", "wav", rate, 44 + 4 * 15 * rate, 15 * rate)
    last = uploads.cuts[-1]
    assert (last.seq, last.offset, last.length, last.frames, last.header, last.closed) == (
        1, 44 + 4 * 12 * rate, 4 * 3 * rate, 3 * rate, 0, True,
    )  # fmt: skip
    assert first.segment == last.segment


def test_a_close_with_nothing_new_marks_the_last_part_closed() -> None:
    uploads = _Uploads()
    cutter = PartCutter(uploads, part_s=1)  # type: ignore[arg-type]
    cutter.written("c", "/s/c.opus", "opus", 8000, 5000, 8000)
    cutter.closed("c", "/s/c.opus", "opus", 8000, 5000, 8000)
    assert [(c.seq, c.length, c.closed) for c in uploads.cuts] == [(0, 5000, False), (0, 5000, True)]
    assert uploads.cuts[0].header == 0  # Opus parts are whole bytes
