"""What the JSON media-stream dialects (Twilio, SignalWire, Telnyx, Plivo, Exotel) have in common (pure).

Each message is a JSON object with an ``event``. Every dialect applies the same rules: nothing after
``stop``; a counter per message whose skips are reported as :class:`Gap`; one ``start`` that names the
stream; stream events only after it, and only for that stream; unknown events reported, not fatal.
A dialect supplies its names (class attributes) and two methods: :meth:`_start` (parse the start
message into :class:`CallStarted`) and :meth:`_stream_event` (media, dtmf, marks, stop).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from bridge.adapters.base import (
    Audio,
    CallStarted,
    CallStopped,
    Gap,
    Ignored,
    Outbound,
    PhoneEvent,
    StreamCounters,
    StreamState,
)
from bridge.adapters.common import SequenceCheck, count, json_object
from bridge.audio import ULAW_8K
from bridge.errors import PhoneProtocolError


class JsonDialectAdapter(Outbound):
    carrier: str
    dialect: ClassVar[str]  # for error messages: "Twilio", "Telnyx", ...
    stream_key: ClassVar[str]  # the stream id field of each message
    sequence_key: ClassVar[str | None] = None  # the per-message counter, if the dialect has one
    stream_events: ClassVar[frozenset[str]]  # events that need a started stream
    passive_events: ClassVar[frozenset[str]] = frozenset({"connected"})  # acknowledged, nothing to do
    subprotocols: tuple[str, ...] = ()
    close_ends_call = False
    both_parties = False  # the stream carries both parties as two tracks (known at start)

    def __init__(self) -> None:
        self.state = StreamState.AWAITING_START
        self.counters = StreamCounters()
        self.stream_id: str | None = None
        self.audio_format = ULAW_8K  # until start says
        self._sequence = SequenceCheck(self.sequence_key) if self.sequence_key else None

    def receive(self, message: str | bytes) -> list[PhoneEvent]:
        """Parse one message; see :meth:`bridge.adapters.base.PhoneAdapter.receive`."""
        self.counters.messages += 1
        msg = self._parse(message)
        event = msg.get("event")
        if not isinstance(event, str):
            raise PhoneProtocolError("message has no 'event' string")
        if self.state is StreamState.STREAMING and event in self.stream_events:
            # The hot path (media, 50 a second): the same checks as below, in the same order.
            skipped = self._sequence.check(msg) if self._sequence is not None else None
            sid = msg.get(self.stream_key)
            if sid is not None and sid != self.stream_id:
                raise PhoneProtocolError(
                    f"{self.stream_key} {sid!r} does not match the stream's {self.stream_id!r}", 1008
                )
            if skipped is None:
                return self._stream_event(event, msg)
            self.counters.gaps += 1
            return [Gap(*skipped), *self._stream_event(event, msg)]
        if self.state is StreamState.ENDED:
            raise PhoneProtocolError(f"{event!r} after stop", 1008)
        events: list[PhoneEvent] = []
        if self._sequence is not None:
            skipped = self._sequence.check(msg)
            if skipped is not None:
                self.counters.gaps += 1
                events.append(Gap(*skipped))
        if event in self.passive_events:
            events.append(Ignored(event))
        elif event == "start":
            if self.state is not StreamState.AWAITING_START:
                raise PhoneProtocolError("second 'start' on one stream", 1008)
            started = self._start(msg)
            self.stream_id = started.stream_sid
            self.audio_format = started.audio_format
            self.state = StreamState.STREAMING
            events.append(started)
        elif event not in self.stream_events:
            count(self.counters.ignored, event)
            events.append(Ignored(event, unknown=True))
        elif self.state is StreamState.AWAITING_START:
            raise PhoneProtocolError(f"{event!r} before 'start'", 1008)
        else:
            sid = msg.get(self.stream_key)
            if sid is not None and sid != self.stream_id:
                raise PhoneProtocolError(
                    f"{self.stream_key} {sid!r} does not match the stream's {self.stream_id!r}", 1008
                )
            events.extend(self._stream_event(event, msg))
        return events

    # -- what a dialect provides -------------------------------------------------------------

    def _parse(self, message: str | bytes) -> dict[str, Any]:
        return json_object(message, self.dialect)

    def _start(self, msg: dict[str, Any]) -> CallStarted:
        raise NotImplementedError

    def _stream_event(self, event: str, msg: dict[str, Any]) -> list[PhoneEvent]:
        raise NotImplementedError

    # -- helpers for dialects ----------------------------------------------------------------

    def _audio(self, data: bytes) -> Audio:
        self.counters.audio_frames += 1
        self.counters.audio_bytes += len(data)
        return Audio(data)

    def _track_audio(self, data: bytes, media: dict[str, Any], inbound: bool) -> Audio:
        """One track's audio on a stream of both parties: track 0 the caller (inbound), 1 the other
        party (outbound), with the message's ``timestamp`` in ms (a JSON string or number; absent or
        not a number: the interleaver places the frame after the track's last)."""
        self.counters.audio_frames += 1
        self.counters.audio_bytes += len(data)
        stamp = media.get("timestamp")
        try:
            ms = float(stamp) if isinstance(stamp, str | int | float) and not isinstance(stamp, bool) else None
        except ValueError:
            ms = None
        if ms is not None and not math.isfinite(ms):
            ms = None
        return Audio(data, 0 if inbound else 1, ms)

    def _ignored(self, kind: str) -> Ignored:
        count(self.counters.ignored, kind)
        return Ignored(kind)

    def _stopped(self, reason: str = "stop") -> CallStopped:
        self.state = StreamState.ENDED
        return CallStopped(reason)
