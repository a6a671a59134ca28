"""A call's two-channel recording timeline at one sample rate (pure: no threads, no I/O, no clock).

Channel 0 is the caller (the carrier's inbound track), channel 1 the other party: the outbound track of
a both-tracks stream, or the audio the bridge played, placed where the playout clock says the caller
heard it. Everything is addressed in *call time*, counted in samples at :attr:`Timeline.rate` from the
recording's origin; the caller of this class owns that clock and says where each piece starts.

Why a timeline and not "append what arrives": bot playout arrives ahead of time and in pieces, may be
cut short (barge-in clears audio the caller never heard), and the caller's audio may have gaps; a
recording must put each sample where it was heard and put silence where nothing was. Audio is kept
until :meth:`Timeline.take` emits it as interleaved stereo; until then it can still be cleared or
silenced in memory, which is why emission usually lags real time by a short *settle* delay: a late
silencing (a sensitive pause reported a moment after it began, a redaction of words just recognised)
that lands before emission costs nothing, and one that lands after is returned as spans for the writer
to patch in the file (exact for WAV; Ogg/Opus cannot be patched, so a longer settle matters there).

Choices, so nobody has to guess:

* Overlapping writes on one channel: the later write wins (playout never overlaps itself and the caller's
  audio never overlaps, so an overlap is a re-sent piece, and the newer copy is the one to keep).
* Missing audio is zeros, on either channel.
* Memory is bounded: a channel keeps at most ``max_buffered_s`` of audio ahead of what was taken. What
  would go past that is dropped and counted (:attr:`Timeline.overflow_samples`), as is audio that arrives
  for a span already emitted (:attr:`Timeline.late_samples`); nothing is lost silently.
"""

from __future__ import annotations

import numpy as np

RATES = (8000, 16000)
_I16 = np.dtype("<i2")


class _Channel:
    """One channel's not-yet-taken audio: int16 LE bytes for the samples from the timeline's ``taken``
    on. A bytearray, because CPython deletes from its front without moving the rest."""

    __slots__ = ("data",)

    def __init__(self) -> None:
        self.data = bytearray()

    def put(self, pcm: bytes | bytearray | memoryview, offset: int) -> None:
        """Write ``pcm`` ``offset`` samples after the taken point; a gap before it becomes zeros."""
        start = 2 * offset
        if len(self.data) < start:
            self.data.extend(bytes(start - len(self.data)))
        self.data[start : start + len(pcm)] = pcm

    def cut(self, offset: int) -> None:
        if len(self.data) > 2 * offset:
            del self.data[2 * offset :]

    def pop(self, n: int) -> np.ndarray:
        """The next ``n`` samples (zeros where nothing was written), removed from the buffer."""
        out = np.zeros(n, dtype=_I16)
        have = min(n, len(self.data) // 2)
        if have:
            out[:have] = np.frombuffer(self.data, dtype=_I16, count=have)
            del self.data[: 2 * have]
        return out


class Timeline:
    """Assembles the caller and the other party into interleaved stereo int16 (little-endian).

    ``start`` is the first sample this timeline will emit (non-zero when a call moved and the new owner
    continues a recording). ``settle_s`` is the delay :meth:`take_settled` keeps behind ``now``.
    """

    def __init__(self, rate: int, *, start: int = 0, settle_s: float = 0.0, max_buffered_s: float = 20.0) -> None:
        if rate not in RATES:
            raise ValueError(f"recording rate must be one of {RATES}, not {rate}")
        if settle_s < 0 or max_buffered_s <= 0:
            raise ValueError("settle_s must be >= 0 and max_buffered_s > 0")
        self.rate = rate
        self.settle = round(settle_s * rate)
        self.cap = max(1, round(max_buffered_s * rate))
        self.taken = start  # first sample not yet emitted
        self._caller = _Channel()
        self._other = _Channel()
        self._spans: list[tuple[int, int]] = []  # pending silence, not yet (fully) emitted
        self._muted_from: int | None = None  # an open silence (sensitive moment still on)
        self.overflow_samples = 0  # dropped: past the buffer cap
        self.late_samples = 0  # dropped: arrived for a span already emitted
        self.late_silence_spans = 0  # silence that reached into emitted audio (returned to be patched)
        self.late_silence_samples = 0

    @property
    def dropped_samples(self) -> int:
        """Samples of either channel that never reached the recording (overflow + late), per channel sum."""
        return self.overflow_samples + self.late_samples

    @property
    def buffered_samples(self) -> int:
        """The longer channel's not-yet-taken length, in samples."""
        return max(len(self._caller.data), len(self._other.data)) // 2

    def caller(self, pcm: bytes | bytearray | memoryview, at: int) -> None:
        """The caller's audio (int16 LE mono at :attr:`rate`) starting at sample ``at`` of call time."""
        self._place(self._caller, pcm, at)

    def other(self, pcm: bytes | bytearray | memoryview, at: int) -> None:
        """The other party's audio (or the bridge's playout, placed on the playout clock) from ``at``."""
        self._place(self._other, pcm, at)

    def other_clear(self, at: int) -> None:
        """Drop other-channel audio placed at or after ``at`` that was not emitted yet (playout cleared:
        the caller never heard it). Emitted audio was heard and stays."""
        self._other.cut(max(0, at - self.taken))

    def silence(self, start: int, end: int) -> list[tuple[int, int]]:
        """Mute both channels over ``[start, end)``. Returns the part already emitted, as spans for the
        writer to patch in the file; the rest is applied at emission, whenever its audio arrives."""
        if end <= start:
            return []
        late = self._late(start, end)
        if end > self.taken:
            self._spans.append((max(start, self.taken), end))
        return late

    def mute(self, at: int) -> list[tuple[int, int]]:
        """Begin an open-ended silence (a sensitive moment) at ``at``; :meth:`unmute` ends it. Returns the
        already-emitted part to patch, as :meth:`silence` does. A second mute while muted keeps the first."""
        if self._muted_from is not None:
            return []
        self._muted_from = at
        return self._late(at, self.taken) if at < self.taken else []

    def unmute(self, at: int) -> None:
        """End the open silence at ``at``. Audio emitted while muted stays silent even if ``at`` is
        earlier than it (an unmute cannot bring back what was never written)."""
        if self._muted_from is None:
            return
        if at > self.taken:
            self._spans.append((max(self._muted_from, self.taken), at))
        self._muted_from = None

    @property
    def muted(self) -> bool:
        return self._muted_from is not None

    def settled(self, now: int) -> int:
        """The sample up to which emission is safe at call time ``now``: ``settle`` behind it."""
        return max(self.taken, now - self.settle)

    def take_settled(self, now: int) -> bytes:
        """Everything older than ``now - settle`` not yet taken (see :meth:`take`)."""
        return self.take(self.settled(now))

    def take(self, upto: int) -> bytes:
        """Interleaved stereo int16 LE for every sample in ``[taken, upto)``; missing audio is zeros,
        silenced spans are zeros. Returns ``b""`` when there is nothing new."""
        n = upto - self.taken
        if n <= 0:
            return b""
        out = np.empty(2 * n, dtype=_I16)
        out[0::2] = self._caller.pop(n)
        out[1::2] = self._other.pop(n)
        base = self.taken
        for start, end in self._spans:
            lo, hi = max(start, base), min(end, upto)
            if lo < hi:
                out[2 * (lo - base) : 2 * (hi - base)] = 0
        if self._muted_from is not None and self._muted_from < upto:
            out[2 * max(0, self._muted_from - base) :] = 0
        self.taken = upto
        self._spans = [s for s in self._spans if s[1] > upto]
        return out.tobytes()

    def _late(self, start: int, end: int) -> list[tuple[int, int]]:
        hi = min(end, self.taken)
        if start >= hi:
            return []
        self.late_silence_spans += 1
        self.late_silence_samples += hi - start
        return [(start, hi)]

    def _place(self, channel: _Channel, pcm: bytes | bytearray | memoryview, at: int) -> None:
        view = memoryview(pcm).cast("B")
        n = len(view) // 2
        view = view[: 2 * n]  # a stray odd byte is no sample
        offset = at - self.taken
        if offset < 0:
            late = min(n, -offset)
            self.late_samples += late
            view, n, offset = view[2 * late :], n - late, 0
        if n <= 0:
            return
        room = self.cap - offset
        if room <= 0:
            self.overflow_samples += n
            return
        if n > room:
            self.overflow_samples += n - room
            view, n = view[: 2 * room], room
        channel.put(view, offset)
