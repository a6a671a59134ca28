"""Provider-neutral phone events and the adapter interface every carrier dialect implements.

Pure: no asyncio, no aiohttp, no logging. Adapters return events or raise
:class:`~bridge.errors.PhoneProtocolError` (which carries the close code to answer with).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Protocol

from bridge.audio import AudioFormat


class StreamState(enum.Enum):
    AWAITING_START = "awaiting_start"
    STREAMING = "streaming"
    ENDED = "ended"


@dataclass(frozen=True, slots=True)
class CallStarted:
    """The stream's metadata is known: ids, custom parameters and the native audio format."""

    provider: str
    call_sid: str
    stream_sid: str
    account_sid: str | None
    parameters: dict[str, str]
    audio_format: AudioFormat
    tracks: tuple[str, ...] = ()
    caller: str | None = None  # the calling number, when the carrier says it
    called: str | None = None  # the called number, when the carrier says it


@dataclass(frozen=True, slots=True)
class Audio:
    """Caller audio in the stream's native format (``CallStarted.audio_format``)."""

    payload: bytes


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
class CallStopped:
    """The carrier ended the stream (hang-up or stream stopped)."""

    reason: str = "stop"


PhoneEvent = CallStarted | Audio | Dtmf | MarkReached | Gap | Ignored | CallStopped


@dataclass(slots=True)
class StreamCounters:
    messages: int = 0
    audio_frames: int = 0
    audio_bytes: int = 0
    gaps: int = 0
    ignored: dict[str, int] = field(default_factory=dict)


class UnsupportedOperation(Exception):
    """The dialect has no such outbound message (e.g. marks on jambonz)."""


class PhoneAdapter(Protocol):
    """One phone stream's protocol state machine.

    Class attributes: ``provider`` (the route name), ``subprotocols`` (WebSocket subprotocols the
    carrier asks for), ``close_ends_call`` (the dialect has no stop message: the socket closing is
    the normal end of the call).
    """

    provider: str
    subprotocols: tuple[str, ...]
    close_ends_call: bool
    state: StreamState
    counters: StreamCounters

    def receive(self, message: str | bytes) -> list[PhoneEvent]:
        """Parse one WebSocket message into events.

        Raises:
            PhoneProtocolError: the message breaks the dialect; close with its ``close_code``.
        """
        ...

    def audio_message(self, payload: bytes) -> str | bytes:
        """A message that plays ``payload`` (native format) to the caller."""
        ...

    def mark_message(self, name: str) -> str | bytes:
        """A message asking the carrier to report when playback reaches this point."""
        ...

    def clear_message(self) -> str | bytes:
        """A message that drops audio queued for playback (barge-in)."""
        ...
