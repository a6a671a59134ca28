"""Ogg pages, read, fixed up and written (pure: bytes in, bytes and numbers out).

The recording writer needs three things libsndfile does not offer on an Ogg/Opus file left by a crash:
where the last complete page ends (a ``SIGKILL`` can leave half a page), how many samples the file
holds (to place the next piece of a call that moved at the right time), and the end-of-stream flag on
the last page (what makes the file "properly closed" for a strict reader). RFC 3533 pages are simple
enough to read here; each page's CRC is checked so a torn page is never kept.

A recording that was continued (the call moved, or the writer recovered from a full disk) is a *chained*
Ogg file: one logical stream after another, each with its own serial number and OpusHead (RFC 7845
section 3 allows it; ffmpeg decodes the whole chain). :func:`links` reports each of them.

:class:`OpusStream` writes one such logical stream from Opus packets (RFC 7845: OpusHead, OpusTags, then
audio pages whose granule positions count 48 kHz samples), for the libopus recordings (:mod:`.opus_file`).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

CAPTURE = b"OggS"
HEADER = struct.Struct("<4sBBqIIIB")  # capture, version, flags, granule, serial, sequence, crc, segments
FLAG_BOS, FLAG_EOS = 0x02, 0x04
OPUS_RATE = 48000  # Opus granule positions always count 48 kHz samples
# zlib computes the reflected CRC-32; Ogg's is the same polynomial unreflected, so bit-reversing every
# byte in and the 32-bit result out turns one into the other, at C speed.
_REVERSE = bytes(int(f"{b:08b}"[::-1], 2) for b in range(256))


def crc(data: bytes | bytearray | memoryview) -> int:
    """Ogg's CRC-32 (polynomial 0x04C11DB7, initial value 0, no final xor, not reflected)."""
    reflected = zlib.crc32(bytes(data).translate(_REVERSE), 0xFFFFFFFF) ^ 0xFFFFFFFF
    return int(f"{reflected:032b}"[::-1], 2)


@dataclass(frozen=True, slots=True)
class Page:
    offset: int  # where the page starts in the file
    size: int  # header, segment table and body
    flags: int
    granule: int
    serial: int
    sequence: int
    body_offset: int

    @property
    def end(self) -> int:
        return self.offset + self.size


def pages(data: bytes | bytearray | memoryview) -> list[Page]:
    """Every complete, CRC-valid page from the start, stopping at the first that is not (a torn tail)."""
    view = memoryview(data)
    out: list[Page] = []
    pos = 0
    while pos + HEADER.size <= len(view):
        capture, version, flags, granule, serial, sequence, checksum, nseg = HEADER.unpack_from(view, pos)
        if capture != CAPTURE or version != 0:
            break
        table_end = pos + HEADER.size + nseg
        if table_end > len(view):
            break
        end = table_end + sum(view[pos + HEADER.size : table_end])
        if end > len(view):
            break
        page = bytearray(view[pos:end])
        page[22:26] = b"\0\0\0\0"
        if crc(page) != checksum:
            break
        out.append(Page(pos, end - pos, flags, granule, serial, sequence, table_end))
        pos = end
    return out


def with_eos(page: bytes | bytearray | memoryview) -> bytes:
    """The page with its end-of-stream flag set and its CRC recomputed."""
    out = bytearray(page)
    out[5] |= FLAG_EOS
    out[22:26] = b"\0\0\0\0"
    out[22:26] = struct.pack("<I", crc(out))
    return bytes(out)


@dataclass(frozen=True, slots=True)
class Link:
    """One logical Opus stream of a (possibly chained) file."""

    serial: int
    first: int  # index of its first page in the page list
    last: int  # index of its last page
    pre_skip: int  # 48 kHz samples the decoder drops at the start
    input_rate: int  # the rate the audio was encoded from (OpusHead), e.g. 8000
    channels: int
    granule: int  # the last page's granule position, 48 kHz
    audio_pages: int  # pages after OpusHead and OpusTags

    def samples(self, rate: int) -> int:
        """How many samples at ``rate`` a decoder outputs for this link."""
        return max(0, self.granule - self.pre_skip) * rate // OPUS_RATE


def links(data: bytes | bytearray | memoryview, found: list[Page]) -> list[Link]:
    """The logical streams in ``found`` (the pages of ``data``), in file order. A stream whose first
    page is not a BOS page carrying OpusHead ends the list: what follows is not a recording we made."""
    view = memoryview(data)
    out: list[Link] = []
    i = 0
    while i < len(found):
        head = found[i]
        body = bytes(view[head.body_offset : head.end])
        if not head.flags & FLAG_BOS or not body.startswith(b"OpusHead") or len(body) < 19:
            break
        pre_skip, input_rate = struct.unpack_from("<HI", body, 10)
        j = i
        while j + 1 < len(found) and found[j + 1].serial == head.serial:
            j += 1
        granule = max((p.granule for p in found[i : j + 1] if p.granule >= 0), default=0)
        out.append(Link(head.serial, i, j, pre_skip, input_rate, body[9], granule, max(0, j - i - 1)))
        i = j + 1
    return out


@dataclass(frozen=True, slots=True)
class Repair:
    """What to do to a damaged Ogg/Opus file: keep ``keep`` bytes, then (if ``last_page`` is set)
    overwrite the bytes from ``last_offset`` with it (the last page again, with its EOS flag)."""

    keep: int
    last_offset: int
    last_page: bytes | None
    links: list[Link]
    clean: bool  # nothing to change: complete pages only, every link ends with EOS


def plan_repair(data: bytes | bytearray | memoryview) -> Repair:
    """How to make ``data`` a properly closed Ogg/Opus file holding every complete page of audio.

    Torn pages at the end go; so does a trailing link without audio (its headers alone would be an empty
    stream some readers reject); the last kept page gets its EOS flag. A file without one complete
    OpusHead and OpusTags keeps nothing (``keep == 0``): it held no audio."""
    found = pages(data)
    found_links = links(data, found)
    while found_links and found_links[-1].audio_pages == 0:
        found_links.pop()
    if not found_links:
        return Repair(0, 0, None, [], len(data) == 0)
    last = found[found_links[-1].last]
    keep = last.end
    # Every earlier link must end with EOS too (a recovered chain was closed by this module already).
    unfinished = [link for link in found_links if not found[link.last].flags & FLAG_EOS]
    clean = keep == len(data) and not unfinished
    page = None if last.flags & FLAG_EOS else with_eos(memoryview(data)[last.offset : last.end])
    return Repair(keep, last.offset, page, found_links, clean)


def page(serial: int, sequence: int, granule: int, packets: Sequence[bytes], *, flags: int = 0) -> bytes:
    """One page holding ``packets`` whole (RFC 3533 lacing: 255-byte segments, a shorter one ending each
    packet), its CRC set. At most 255 segments: the caller splits its packets across pages."""
    table = bytearray()
    for packet in packets:
        table += b"\xff" * (len(packet) // 255) + bytes([len(packet) % 255])
    if len(table) > 255:
        raise ValueError(f"{len(table)} segments do not fit one Ogg page (255)")
    out = bytearray(HEADER.pack(CAPTURE, 0, flags, granule, serial, sequence, 0, len(table)))
    out += table
    for packet in packets:
        out += packet
    out[22:26] = struct.pack("<I", crc(out))
    return bytes(out)


def segments(packet: bytes) -> int:
    """Lacing values ``packet`` takes in a page's segment table."""
    return len(packet) // 255 + 1


def opus_head(channels: int, pre_skip: int, input_rate: int) -> bytes:
    """RFC 7845 section 5.1: version 1, no output gain, channel mapping family 0 (mono or stereo)."""
    return b"OpusHead" + struct.pack("<BBHIhB", 1, channels, pre_skip, input_rate, 0, 0)


def opus_tags(vendor: str) -> bytes:
    """RFC 7845 section 5.2: the encoder's name, no user comments."""
    name = vendor.encode()
    return b"OpusTags" + struct.pack("<I", len(name)) + name + struct.pack("<I", 0)


class OpusStream:
    """One logical Ogg/Opus stream being written: packets in, whole pages out.

    :meth:`headers` gives the two header pages; :meth:`add` collects audio packets and returns a page
    once they hold ``page_samples`` (48 kHz; default one second, so a killed writer loses at most that
    much from its encoder's output), else ``b""``; :meth:`flush` closes a page early (the writer's flush);
    :meth:`close` gives the last page, with EOS and the granule position that trims the padding
    the encoder added at the end (RFC 7845 section 4.5).
    """

    def __init__(
        self, serial: int, channels: int, pre_skip: int, input_rate: int, vendor: str, page_samples: int = OPUS_RATE
    ) -> None:
        self.serial = serial
        self._head = opus_head(channels, pre_skip, input_rate)
        self._tags = opus_tags(vendor)
        self._page_samples = page_samples
        self._sequence = 0
        self._granule = 0  # 48 kHz samples in the packets so far, pre-skip included
        self._pending: list[bytes] = []
        self._pending_segments = 0
        self._pending_samples = 0

    def headers(self) -> bytes:
        """The OpusHead page (beginning of stream) and the OpusTags page: each on a page of its own."""
        assert self._sequence == 0, "headers come first, once"
        out = page(self.serial, 0, 0, [self._head], flags=FLAG_BOS)
        out += page(self.serial, 1, 0, [self._tags])
        self._sequence = 2
        return out

    @property
    def granule(self) -> int:
        """48 kHz samples in every packet added so far, pre-skip included."""
        return self._granule

    def add(self, packet: bytes, samples: int) -> bytes:
        """Queue an audio packet holding ``samples`` (48 kHz); the pages it completes, or ``b""``."""
        out = self.flush() if self._pending_segments + segments(packet) > 255 else b""
        self._pending.append(packet)
        self._pending_segments += segments(packet)
        self._pending_samples += samples
        self._granule += samples
        if self._pending_samples >= self._page_samples:
            out += self.flush()
        return out

    def flush(self) -> bytes:
        """The queued packets as one page (``b""`` when none are queued)."""
        return self._take(self._granule, 0) if self._pending else b""

    def close(self, end_granule: int) -> bytes:
        """The last page, with the queued packets and EOS. ``end_granule`` (pre-skip plus the samples
        really written, at 48 kHz) trims the padding: it may not exceed :attr:`granule`."""
        if not 0 <= end_granule <= self._granule:
            raise ValueError(f"end granule {end_granule} outside 0..{self._granule}")
        return self._take(end_granule, FLAG_EOS)

    def _take(self, granule: int, flags: int) -> bytes:
        out = page(self.serial, self._sequence, granule, self._pending, flags=flags)
        self._sequence += 1
        self._pending, self._pending_segments, self._pending_samples = [], 0, 0
        return out
