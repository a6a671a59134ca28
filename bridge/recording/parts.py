"""A recording kept in object storage as parts, and how the parts are read back as one file (pure).

Fleet mode (``BRIDGE_RECORDINGS_URL=s3://bucket/prefix``, :mod:`bridge.recording.uploader`): the writer
still writes the recording into a local spool file, and every ``recording.part_s`` the bytes added since
the last cut go to an object of their own, ``<prefix>/<call id>/<segment>/<seq>``. A dead instance loses
what it had not cut yet: at most one part (plus the writer's flush window before it). Every part is
listed in the shared record (:mod:`bridge.recording.index`), so any instance can serve the recording.

A **segment** is what one owner wrote of a call: a call that moves to another instance (a fleet
hand-over, or an instance killed mid-call and its call carried on by another) goes on in a new segment,
appended after the last part of the one before (the lost part, if any, is not there: no silence stands
for it, as for a local file continued by a new owner). Segment names sort by the time they were opened.

Joining on read rather than composing one object at the end: a composed object would need a part of at
least 5 MiB per S3 multipart part (about 2.7 minutes of 8 kHz stereo WAV) or a second copy of every
byte, and a call whose owner died would never be composed. Reading is cheap: one ranged GET per part a
``Range`` request touches.

* WAV: each segment's spool file starts with a 44-byte header whose sizes were stale when its first part
  was cut; the parts are read without it (``header``) and one fresh header for the whole is put first.
* Ogg/Opus: the parts are byte ranges cut at page boundaries, so a segment's parts joined are its file;
  segments joined are a chained Ogg stream (RFC 7845 section 3), as a local file continued by a new owner.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

WAV, OPUS = "wav", "opus"  # bridge.recording.formats' names (not imported: the stores read this module)
WAV_HEADER = 44
_WAV_MAX_DATA = 0xFFFFFFFF - 36


@dataclass(frozen=True, slots=True)
class Part:
    """One object of a recording, as the index lists it."""

    segment: str
    seq: int
    key: str
    bytes: int  # the object's size
    frames: int  # audio frames in it (one sample per channel)
    header: int = 0  # leading bytes that are not audio (a WAV segment's first part: its stale header)


@dataclass(frozen=True, slots=True)
class Piece:
    """A byte range of the joined recording: ``data`` (the fresh header) or ``key``'s bytes [start, end)."""

    key: str | None
    start: int
    end: int
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class Layout:
    """The joined recording: its size, length and the pieces it is made of, in order."""

    format: str
    rate: int
    channels: int
    size: int
    frames: int
    pieces: tuple[Piece, ...]
    etag: str

    @property
    def duration_s(self) -> float:
        return self.frames / self.rate if self.rate else 0.0

    def slice(self, start: int, end: int) -> list[Piece]:
        """The pieces that make bytes [start, end) of the joined recording (0 <= start <= end <= size)."""
        out: list[Piece] = []
        offset = 0
        for piece in self.pieces:
            length = piece.end - piece.start
            lo, hi = max(start, offset), min(end, offset + length)
            if lo < hi:
                a, b = piece.start + lo - offset, piece.start + hi - offset
                out.append(Piece(piece.key, a, b, piece.data[a:b] if piece.key is None else b""))
            offset += length
            if offset >= end:
                break
        return out


def wav_header(rate: int, channels: int, data_bytes: int) -> bytes:
    """A canonical 16-bit PCM WAV header (RIFF, ``fmt `` of 16 bytes, ``data``) for ``data_bytes`` of audio."""
    data_bytes = min(data_bytes, _WAV_MAX_DATA)
    block = 2 * channels
    return (
        b"RIFF"
        + struct.pack("<I", 36 + data_bytes)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * block, block, 16)
        + b"data"
        + struct.pack("<I", data_bytes)
    )


def layout(fmt: str, rate: int, channels: int, parts: list[Part]) -> Layout:
    """Join ``parts`` (any order: they are sorted by segment, then seq) into one recording's layout."""
    if fmt not in (WAV, OPUS):
        raise ValueError(f"unknown recording format {fmt!r}")
    ordered = sorted(parts, key=lambda p: (p.segment, p.seq))
    pieces: list[Piece] = []
    frames = 0
    digest = hashlib.sha256(f"{fmt}:{rate}:{channels}".encode())
    for part in ordered:
        skip = min(part.header, part.bytes) if fmt == WAV else 0
        if part.bytes > skip:
            pieces.append(Piece(part.key, skip, part.bytes))
        frames += max(0, part.frames)
        digest.update(f"|{part.key}:{part.bytes}:{part.frames}".encode())
    if fmt == WAV:
        data = sum(p.end - p.start for p in pieces)
        header = wav_header(rate, channels, data)
        pieces.insert(0, Piece(None, 0, len(header), header))
        frames = data // (2 * channels)  # exact, whatever the writer counted
    size = sum(p.end - p.start for p in pieces)
    return Layout(fmt, rate, channels, size, frames, tuple(pieces), digest.hexdigest()[:32])
