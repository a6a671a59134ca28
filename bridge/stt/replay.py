"""The replay buffer: every byte of a Gladia session that the server has not acknowledged.

Sans-I/O. Offsets are *session* byte offsets, the numbers Gladia puts in ``byte_range``:

    acked <= base <= cursor <= end
    |  acked: bytes the server confirmed (it keeps these across a reconnect)
    |  base:  session offset of the first byte still held here
    |  cursor: next byte to send on the current connection
    |  end:   offset after the newest byte appended

After a drop, :meth:`rewind` moves the cursor back to the acknowledged offset, so the next
connection resends exactly what the server does not have: nothing lost, nothing duplicated.

Bounded: at most ``max_bytes`` are held. When more arrive (Gladia unreachable for longer than the
bound) the oldest are dropped and counted in ``overflow_bytes``; if such bytes were never
acknowledged, the next :meth:`rewind` renumbers the held audio to start at the server's offset and
counts the skipped audio in ``lost_bytes``, so offsets always stay in the server's numbering.

``byte_range`` end: the official SDKs read it as exclusive, Gladia's asyncapi as inclusive
(UNVERIFIED which the server sends). The buffer remembers the offsets at which its chunks ended
and learns the convention from the first acknowledgment that lands on one of them; until then it
assumes exclusive, as the spec example and the SDKs do.
"""

from __future__ import annotations

from collections import deque

# Gladia closes with 1009 on frames over 1 MiB; the SDKs resend in 512 KiB pieces. Stay under.
MAX_PIECE_BYTES = 500 * 1024


class ReplayBuffer:
    def __init__(self, max_bytes: int, chunk_bytes: int, frame_bytes: int = 1) -> None:
        """
        Args:
            max_bytes: the most unacknowledged audio held (e.g. 60 s of the session's format).
            chunk_bytes: live audio is sent in multiples of this (the configured chunk duration).
            frame_bytes: bytes per sample frame; pieces and drops keep this alignment.
        """
        if chunk_bytes <= 0 or chunk_bytes % frame_bytes:
            raise ValueError("chunk_bytes must be a positive multiple of frame_bytes")
        self.max_bytes = max(max_bytes - max_bytes % frame_bytes, chunk_bytes)
        self.chunk_bytes = chunk_bytes
        self.frame_bytes = frame_bytes
        self._buf = bytearray()
        self.acked = 0
        self.base = 0
        self.cursor = 0
        self.end = 0
        self._high_water = 0  # furthest offset sent on any connection of this session
        self._chunk_ends: deque[int] = deque(maxlen=512)
        self._chunk_end_set: set[int] = set()
        self.inclusive_ranges: bool | None = None
        # counters (whole call)
        self.appended_bytes = 0
        self.sent_bytes = 0
        self.resent_bytes = 0
        self.overflow_bytes = 0
        self.lost_bytes = 0
        self.ack_anomalies = 0

    # -- audio in ---------------------------------------------------------------------------

    def append(self, data: bytes) -> int:
        """Add audio at the end; returns how many old bytes had to be dropped to stay bounded."""
        self._buf += data
        self.end += len(data)
        self.appended_bytes += len(data)
        excess = len(self._buf) - self.max_bytes
        if excess <= 0:
            return 0
        excess += (-excess) % self.frame_bytes
        del self._buf[:excess]
        self.base += excess
        self.cursor = max(self.cursor, self.base)
        self.overflow_bytes += excess
        return excess

    @property
    def pending(self) -> int:
        """Bytes not yet sent on the current connection."""
        return self.end - self.cursor

    @property
    def unacked(self) -> int:
        return self.end - self.acked

    @property
    def held(self) -> int:
        return len(self._buf)

    def call_position_of_base(self) -> int:
        """How many bytes of the call's audio precede the first byte held here."""
        return self.appended_bytes - len(self._buf)

    # -- audio out --------------------------------------------------------------------------

    def pieces(self, flush: bool = False) -> list[bytes]:
        """Take what should be sent now, in order, advancing the cursor.

        Audio being resent after a :meth:`rewind` goes out at once, in pieces of at most
        ``MAX_PIECE_BYTES``. Live audio goes out in whole multiples of ``chunk_bytes``; with
        ``flush`` (hang-up) the remainder goes too.
        """
        cursor = self.cursor
        n = self.end - cursor
        if (
            n == self.chunk_bytes <= MAX_PIECE_BYTES
            and cursor >= self._high_water
            and self.inclusive_ranges is not None
        ):
            # The common case, each phone frame as it comes: one live chunk, nothing to resend, the
            # acknowledgment convention known. The same as the loop below, in fewer steps.
            start = cursor - self.base
            self.cursor = self._high_water = self.end
            self.sent_bytes += n
            return [bytes(self._buf[start : start + n])]
        out: list[bytes] = []
        while self.cursor < self.end:
            available = self.end - self.cursor
            resending = self.cursor < self._high_water
            n = min(available, MAX_PIECE_BYTES)
            if resending:
                n = min(n, self._high_water - self.cursor)
            elif not flush:
                n -= n % self.chunk_bytes
                if n == 0:
                    break
            start = self.cursor - self.base
            out.append(bytes(self._buf[start : start + n]))
            self.cursor += n
            self.sent_bytes += n
            if resending:
                self.resent_bytes += n
            self._remember_chunk_end(self.cursor)
        self._high_water = max(self._high_water, self.cursor)
        return out

    def _remember_chunk_end(self, offset: int) -> None:
        if self.inclusive_ranges is not None:
            return  # the convention is known: nothing more to learn
        if len(self._chunk_ends) == self._chunk_ends.maxlen:
            self._chunk_end_set.discard(self._chunk_ends[0])
        self._chunk_ends.append(offset)
        self._chunk_end_set.add(offset)

    # -- acknowledgments and reconnects ------------------------------------------------------

    def ack(self, byte_start: int, byte_end: int) -> None:
        """Record an acknowledgment's ``byte_range`` and forget the bytes it covers."""
        if self.inclusive_ranges is None:
            if byte_end in self._chunk_end_set:
                self.inclusive_ranges = False
            elif byte_end + 1 in self._chunk_end_set:
                self.inclusive_ranges = True
            if self.inclusive_ranges is not None:
                self._chunk_ends.clear()
                self._chunk_end_set.clear()
        acked_to = byte_end + 1 if self.inclusive_ranges else byte_end
        if acked_to > self.cursor or byte_start > byte_end:
            # The server claims bytes this connection never sent: keep everything, count it.
            self.ack_anomalies += 1
            acked_to = min(acked_to, self.cursor)
        if acked_to <= self.acked:
            return
        self.acked = acked_to
        if acked_to > self.base:
            del self._buf[: acked_to - self.base]
            self.base = acked_to

    def rewind(self) -> int:
        """Prepare a new connection to the same session; returns the bytes that will be resent.

        If the held audio no longer starts at the acknowledged offset (the buffer overflowed
        while unacknowledged), it is renumbered to start there and the gap is counted as lost.
        """
        if self.base > self.acked:
            gap = self.base - self.acked
            self.lost_bytes += gap
            self.base -= gap
            self.end -= gap
            self._high_water -= gap
        self.cursor = self.base
        self._high_water = max(self.base, min(self._high_water, self.end))
        self._chunk_ends.clear()
        self._chunk_end_set.clear()
        return self._high_water - self.cursor

    def start_at(self, offset: int, inclusive_ranges: bool | None = None) -> None:
        """Carry on a session another process streamed (fleet mode): ``offset`` bytes of it are
        acknowledged, and the next byte appended is the session's byte ``offset``."""
        self.acked = self.base = self.cursor = self.end = self._high_water = offset
        self.inclusive_ranges = inclusive_ranges
        self._buf.clear()
        self._chunk_ends.clear()
        self._chunk_end_set.clear()

    def restart_session(self) -> int:
        """Prepare a brand-new session: the held audio becomes its first bytes (offset 0).

        Returns the bytes that will be sent again (they may have reached the lost session).
        """
        resend = min(self._high_water, self.end) - self.base
        self.end -= self.base
        self._high_water = max(0, resend)
        self.acked = self.base = self.cursor = 0
        self.inclusive_ranges = None
        self._chunk_ends.clear()
        self._chunk_end_set.clear()
        return max(0, resend)
