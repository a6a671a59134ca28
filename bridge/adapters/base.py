"""Provider-neutral phone events and the adapter interface every carrier dialect implements.

Pure: no asyncio, no aiohttp, no logging. Adapters return events or raise
:class:`~bridge.errors.PhoneProtocolError` (which carries the close code to answer with).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Protocol

from bridge.audio import AudioFormat, silence


class StreamState(enum.Enum):
    AWAITING_START = "awaiting_start"
    STREAMING = "streaming"
    ENDED = "ended"


@dataclass(frozen=True, slots=True)
class CallStarted:
    """The stream's metadata is known: ids, custom parameters and the native audio format."""

    carrier: str
    call_sid: str
    stream_sid: str
    account_sid: str | None
    parameters: dict[str, str]
    audio_format: AudioFormat
    tracks: tuple[str, ...] = ()
    caller: str | None = None  # the calling number, when the carrier says it
    called: str | None = None  # the called number, when the carrier says it
    channels: int = 1  # 2: the stream carries both parties, each on its own track (see bridge.tracks)


@dataclass(slots=True)  # not frozen: built for every frame, and frozen dataclasses are slow to build
class Audio:
    """Audio in the stream's native format (``CallStarted.audio_format``, mono): the caller's (track 0)
    or, on a stream of both parties (``CallStarted.channels == 2``), the other party's (track 1), with
    the carrier's timestamp in milliseconds when it gives one (two-track streams only)."""

    payload: bytes
    track: int = 0
    timestamp_ms: float | None = None


@dataclass(frozen=True, slots=True)
class Dtmf:
    digit: str


@dataclass(frozen=True, slots=True)
class MarkReached:
    """A mark the bridge sent was reached (its audio played, or was cleared)."""

    name: str


@dataclass(frozen=True, slots=True)
class Gap:
    """Messages were lost or reordered on the phone side (sequence numbers skipped)."""

    expected: int
    received: int


@dataclass(frozen=True, slots=True)
class Ignored:
    """A message the adapter understood but the bridge does not use (e.g. outbound-track audio),
    or an event type it does not know; ``kind`` says which, for counting and logging."""

    kind: str
    unknown: bool = False


@dataclass(frozen=True, slots=True)
class CarrierError:
    """The carrier reports an error (usually about a message the bridge sent): logged, not fatal."""

    detail: str


@dataclass(frozen=True, slots=True)
class CallStopped:
    """The carrier ended the stream (hang-up or stream stopped)."""

    reason: str = "stop"


@dataclass(frozen=True, slots=True)
class FlowControl:
    """The carrier's playback queue is full (``paused``) or has room again: Asterisk's MEDIA_XOFF/XON."""

    paused: bool


PhoneEvent = CallStarted | Audio | Dtmf | MarkReached | Gap | Ignored | CarrierError | CallStopped | FlowControl


@dataclass(slots=True)
class StreamCounters:
    messages: int = 0
    audio_frames: int = 0
    audio_bytes: int = 0
    gaps: int = 0
    ignored: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class OutboundFraming:
    """How a carrier wants the audio it plays cut into messages: whole frames of ``frame_bytes`` (its
    unit, in the outbound format), at least ``min_frames`` and at most ``max_frames`` per message."""

    frame_bytes: int
    min_frames: int = 1
    max_frames: int = 50


class AudioOut:
    """Cuts outbound audio into chunks a carrier accepts (pure, one per stream).

    :meth:`push` returns the chunks it can make now and holds back the rest (less than a frame, or
    fewer than ``min_frames``) until more audio comes; :meth:`flush` pads what is held with silence up
    to the next acceptable size; :meth:`drop` forgets it (a ``clear``).
    """

    def __init__(self, framing: OutboundFraming, silence_byte: int) -> None:
        self.framing = framing
        self.silence_byte = silence_byte
        self._held = bytearray()

    @property
    def held(self) -> int:
        return len(self._held)

    def push(self, payload: bytes) -> list[bytes]:
        self._held += payload
        f = self.framing
        smallest = f.frame_bytes * f.min_frames
        out: list[bytes] = []
        while len(self._held) >= smallest:
            n = min(len(self._held) // f.frame_bytes, f.max_frames) * f.frame_bytes
            out.append(bytes(self._held[:n]))
            del self._held[:n]
        return out

    def flush(self) -> list[bytes]:
        if not self._held:
            return []
        f = self.framing
        size = max(-(-len(self._held) // f.frame_bytes), f.min_frames) * f.frame_bytes
        self._held += bytes([self.silence_byte]) * (size - len(self._held))
        out = self.push(b"")
        self._held.clear()
        return out

    def drop(self) -> int:
        dropped = len(self._held)
        self._held.clear()
        return dropped


class Outbound:
    """What every adapter shares for the way back: audio cut to the carrier's rules (an adapter says
    how to wrap one chunk, and its framing if the carrier has rules), and the end-of-stream hook."""

    audio_format: AudioFormat  # the stream's own format, known once it started
    subprotocol: str | None = None  # the WebSocket subprotocol negotiated (the shell sets it)
    _out: AudioOut | None = None

    @property
    def outbound_format(self) -> AudioFormat:
        return self.audio_format  # most carriers play back what they send

    def _framing(self) -> OutboundFraming:
        return OutboundFraming(self.outbound_format.bytes_for_ms(20))  # 20 ms frames, up to 1 s a message

    def _audio_chunk_message(self, chunk: bytes) -> str | bytes:
        raise NotImplementedError  # each dialect wraps a chunk its own way

    def _audio_out(self) -> AudioOut:
        if self._out is None:
            fmt = self.outbound_format
            self._out = AudioOut(self._framing(), silence(fmt, 20)[0])
        return self._out

    def audio_messages(self, payload: bytes) -> list[str | bytes]:
        return [self._audio_chunk_message(chunk) for chunk in self._audio_out().push(payload)]

    def flush_audio(self) -> list[str | bytes]:
        return [self._audio_chunk_message(chunk) for chunk in self._audio_out().flush()]

    def _drop_held_audio(self) -> None:
        if self._out is not None:
            self._out.drop()

    @property
    def outbound_framing(self) -> OutboundFraming:
        return self._framing()

    @property
    def supports_marks(self) -> bool:
        return True

    @property
    def supports_clear(self) -> bool:
        return True

    @property
    def plays_audio(self) -> bool:
        return True

    def hangup_message(self) -> str | bytes | None:
        return None  # closing the socket is the hang-up (or ends the stream; the carrier's app decides)

    def close(self) -> list[PhoneEvent]:
        return []


class PhoneAdapter(Protocol):
    """One phone stream's protocol state machine.

    Class attributes: ``carrier`` (the route name), ``subprotocols`` (WebSocket subprotocols the
    carrier asks for), ``close_ends_call`` (the dialect has no stop message: the socket closing is
    the normal end of the call).
    """

    carrier: str
    subprotocols: tuple[str, ...]
    subprotocol: str | None  # the one negotiated for this stream (set by the shell after the upgrade)
    close_ends_call: bool
    state: StreamState
    counters: StreamCounters

    def receive(self, message: str | bytes) -> list[PhoneEvent]:
        """Parse one WebSocket message into events.

        Raises:
            PhoneProtocolError: the message breaks the dialect; close with its ``close_code``.
        """
        ...

    def close(self) -> list[PhoneEvent]:
        """The stream is over (after ``stop``, or the socket closed without it): the events the
        adapter still holds (e.g. audio waiting to be put back in order), in order."""
        ...

    @property
    def outbound_format(self) -> AudioFormat:
        """The audio format the carrier plays back (what :meth:`audio_messages` takes)."""
        ...

    def audio_messages(self, payload: bytes) -> list[str | bytes]:
        """Messages that play ``payload`` (in :attr:`outbound_format`) to the caller, cut the way the
        carrier wants; audio short of its unit is held for the next call or :meth:`flush_audio`."""
        ...

    def flush_audio(self) -> list[str | bytes]:
        """Messages for the audio held back, padded with silence to the carrier's unit."""
        ...

    def mark_message(self, name: str) -> str | bytes:
        """A message asking the carrier to report when playback reaches this point.

        Raises:
            UnsupportedOperation: the dialect has no marks.
        """
        ...

    def clear_message(self) -> str | bytes:
        """A message that drops audio queued for playback (barge-in); audio held back is dropped too.

        Raises:
            UnsupportedOperation: the dialect cannot drop queued audio.
        """
        ...

    @property
    def outbound_framing(self) -> OutboundFraming:
        """How the carrier wants played audio cut: its frame, and fewest and most frames a message."""
        ...

    @property
    def supports_clear(self) -> bool:
        """Whether :meth:`clear_message` works (the carrier can drop audio it holds)."""
        ...

    @property
    def supports_marks(self) -> bool:
        """Whether :meth:`mark_message` works (the carrier echoes marks when playback reaches them)."""
        ...

    @property
    def plays_audio(self) -> bool:
        """Whether the stream takes anything back at all (False: a one-way fork that only listens)."""
        ...

    def hangup_message(self) -> str | bytes | None:
        """A message that hangs the call up, sent before the bridge closes the socket; None when
        closing the socket is how the dialect ends it."""
        ...
