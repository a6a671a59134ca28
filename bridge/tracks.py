"""Both parties of a call: two mono tracks -> one interleaved two-channel stream for Gladia (pure).

A carrier that streams both legs of a call (Twilio/SignalWire ``both_tracks``, Telnyx ``both_tracks``,
Plivo ``audioTrack="both"``) sends each leg as its own mono media messages, each with a timestamp;
FreeSWITCH/jambonz ``stereo`` sends the two legs already side by side (no timestamps, always together).
Gladia takes one stream with ``channels: 2``, interleaved sample by sample, and tells the channels
apart in its utterances. :class:`TrackInterleaver` builds that stream:

* **Aligned by the carrier's timestamps.** A frame's place on its track is its timestamp (relative to
  the first one the stream sent, on either track) in samples. A frame within ``tolerance_ms`` of where
  its track ends now is appended right there (timestamps in whole milliseconds wobble; the sample count
  is the truth), so nothing drifts however long the call: a track's position is its samples, and the
  two channels stay within the tolerance of the carrier's clock.
* **Gaps become silence, late frames are put back in order.** A frame further ahead waits (a frame
  before it may still come: Telnyx does not promise order), and its track is filled with silence up
  to it only when the stream has moved on by ``max_delay_ms`` without it. A frame that comes after its
  place was filled, or repeats audio the track already has, is dropped; both are counted.
* **A silent leg does not hold the other back.** A track may stop sending altogether (a leg on hold,
  a fork that streams only when there is audio): once the other track is ``max_delay_ms`` ahead, the
  quiet one is filled with silence to keep up, so Gladia gets the talking leg at most that late.
* **Bounded.** What is held waiting is at most ``max_delay_ms`` per track. A timestamp that jumps more
  than ``MAX_GAP_MS`` ahead of its track (a carrier clock reset, a stream paused and resumed) is taken
  as a discontinuity, not minutes of silence to invent: the track carries on from where it is, and
  the jump is counted. So is one more than a second (or three delays) behind its track: no frame is
  that late, but a leg whose clock starts at zero when it joins a call already under way is, and it
  is placed where it arrives instead of being dropped as late for the rest of the call.

The output is whole frames (one sample of each channel) in the tracks' format; resume and replay work
on these bytes as on a mono stream, with the frame as the unit.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field, replace

from bridge.audio import AudioFormat, make_transcoder

MAX_GAP_MS = 10_000  # a timestamp further ahead than this on its own track is a discontinuity

_SILENCE = {"ulaw": b"\xff", "alaw": b"\xd5", "pcm16": b"\x00\x00"}


@dataclass(slots=True)
class TrackCounters:
    """What one track needed to fit the other, in samples (and jumps, in events)."""

    samples: int = 0  # audio placed
    silence: int = 0  # silence filled in (gaps, a quiet leg)
    dropped: int = 0  # audio that came after its place was filled, or repeated
    jumps: int = 0  # timestamps that jumped more than MAX_GAP_MS ahead


@dataclass(slots=True)
class _Track:
    audio: bytearray = field(default_factory=bytearray)  # from the interleaver's output position on
    end: int = 0  # the sample position where the placed audio ends
    shift: int = 0  # samples added to this track's timestamps after a jump
    pending: list[tuple[int, bytes]] = field(default_factory=list)  # frames ahead of `end`, by position
    head: int = 0  # the furthest position this track has audio for, placed or waiting
    counters: TrackCounters = field(default_factory=TrackCounters)


class TrackInterleaver:
    """Two mono tracks of ``fmt`` in, one interleaved two-channel stream of ``fmt`` out.

    :meth:`push` takes one frame of one track (already in the output format) and returns the
    interleaved bytes that are now ready (often none, sometimes several frames' worth);
    :meth:`flush` returns the rest at the end of the call, the shorter track padded with silence.
    """

    def __init__(self, fmt: AudioFormat, *, max_delay_ms: float = 300.0, tolerance_ms: float = 10.0) -> None:
        if fmt.channels != 1:
            raise ValueError("the tracks are mono; the output has two channels")
        self.format = fmt
        self.width = fmt.sample_width
        self._rate = fmt.sample_rate
        self._silence = _SILENCE[fmt.codec]
        self.max_delay = int(fmt.sample_rate * max_delay_ms / 1000)
        self.tolerance = int(fmt.sample_rate * tolerance_ms / 1000)
        self._max_gap = int(fmt.sample_rate * MAX_GAP_MS / 1000)
        self._max_back = max(fmt.sample_rate, 3 * self.max_delay)  # later than this is not lateness
        self._tracks = (_Track(), _Track())
        self._origin_ms: float | None = None
        self.emitted = 0  # samples per channel already returned

    @property
    def counters(self) -> tuple[TrackCounters, TrackCounters]:
        return self._tracks[0].counters, self._tracks[1].counters

    @property
    def held_samples(self) -> int:
        """Samples per channel waiting (placed but not yet matched by the other track)."""
        return max(t.end for t in self._tracks) - self.emitted

    def push(self, track: int, payload: bytes, timestamp_ms: float | None = None) -> bytes:
        """One frame of ``track`` (0 or 1) with the carrier's timestamp, if it gives one."""
        t = self._tracks[track]
        usable = len(payload) - len(payload) % self.width
        if usable <= 0:
            return b""
        data = payload[:usable] if usable != len(payload) else payload
        if timestamp_ms is None:
            pos = t.head  # no clock: contiguous with what the track already has
        else:
            if self._origin_ms is None:
                self._origin_ms = timestamp_ms
            pos = round((timestamp_ms - self._origin_ms) * self._rate / 1000) + t.shift
            if pos - t.head > self._max_gap or t.end - pos > self._max_back:
                # A jump (ahead: not minutes of silence to invent; back: a leg whose clock started
                # on its own, long after the other's): carry on from where the track is.
                t.counters.jumps += 1
                t.shift -= pos - t.head
                pos = t.head
        t.head = max(t.head, pos + usable // self.width)
        if pos <= t.end + self.tolerance:
            self._place(t, pos, data)
            self._drain(t)
        else:
            bisect.insort(t.pending, (pos, data))
        self._keep_up()
        return self._emit()

    def flush(self) -> bytes:
        """Everything held: gaps filled, the shorter track padded with silence to the longer one."""
        horizon = max(t.head for t in self._tracks)
        for t in self._tracks:
            self._fill_to(t, horizon)
        return self._emit()

    # -- internals -------------------------------------------------------------------------------

    def _place(self, t: _Track, pos: int, data: bytes) -> None:
        """Put a frame at ``pos``: snapped onto the track's end when within the tolerance, its part
        that repeats audio the track already has cut off."""
        n = len(data) // self.width
        if pos < t.end - self.tolerance:
            overlap = t.end - pos
            if overlap >= n:
                t.counters.dropped += n
                return
            t.counters.dropped += overlap
            data = data[overlap * self.width :]
            n -= overlap
        t.audio += data
        t.end += n
        t.head = max(t.head, t.end)
        t.counters.samples += n

    def _drain(self, t: _Track) -> None:
        """Place the waiting frames that now join the track's end."""
        while t.pending and t.pending[0][0] <= t.end + self.tolerance:
            pos, data = t.pending.pop(0)
            self._place(t, pos, data)

    def _fill_to(self, t: _Track, target: int) -> None:
        """Silence up to ``target``, placing the waiting frames met on the way."""
        while t.end < target:
            stop = min(t.pending[0][0], target) if t.pending else target
            if stop > t.end:
                self._silence_to(t, stop)
            self._drain(t)
            if not t.pending:
                break
        if t.end < target:
            self._silence_to(t, target)

    def _silence_to(self, t: _Track, stop: int) -> None:
        n = stop - t.end
        t.audio += self._silence * n
        t.end = stop
        t.head = max(t.head, stop)
        t.counters.silence += n

    def _keep_up(self) -> None:
        """No track more than ``max_delay`` behind the furthest audio known (its own, waiting
        behind a gap, or the other leg's)."""
        horizon = max(self._tracks[0].head, self._tracks[1].head)
        for t in self._tracks:
            if horizon - t.end > self.max_delay:
                self._fill_to(t, horizon - self.max_delay)

    def _emit(self) -> bytes:
        a, b = self._tracks
        n = min(a.end, b.end) - self.emitted
        if n <= 0:
            return b""
        size = n * self.width
        out = bytearray(2 * size)
        if self.width == 1:
            out[0::2] = a.audio[:size]
            out[1::2] = b.audio[:size]
        else:
            with memoryview(out) as o, memoryview(a.audio) as x, memoryview(b.audio) as y:
                view, left, right = o.cast("H"), x[:size].cast("H"), y[:size].cast("H")
                view[0::2], view[1::2] = left, right
                for v in (view, left, right):
                    v.release()
        del a.audio[:size]
        del b.audio[:size]
        self.emitted += n
        return bytes(out)


class BothParties:
    """A call's two tracks in the phone's format -> one two-channel stream in the call's Gladia format:
    each track through its own transcoder (filters keep their state per leg), then interleaved."""

    def __init__(self, source: AudioFormat, target: AudioFormat, *, max_delay_ms: float = 300.0) -> None:
        self.source = source
        self.target = replace(target, channels=2)
        self._legs = (make_transcoder(source, target), make_transcoder(source, target))
        self.interleaver = TrackInterleaver(target, max_delay_ms=max_delay_ms)

    def feed(self, track: int, payload: bytes, timestamp_ms: float | None) -> bytes:
        return self.interleaver.push(track, self._legs[track].feed(payload), timestamp_ms)

    def flush(self) -> bytes:
        """The legs' filter tails, then everything the interleaver holds."""
        out = b"".join(self.interleaver.push(i, leg.flush()) for i, leg in enumerate(self._legs))
        return out + self.interleaver.flush()
