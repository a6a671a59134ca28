"""What the binary-audio dialects (Vonage, jambonz/FreeSWITCH forks, Asterisk) share (pure): text
control messages, binary audio frames once the stream started, no stop message (the socket closing
ends the call). A dialect supplies its names and two methods: :meth:`_text` (a control message) and,
when a first binary frame may start the stream, :meth:`_binary_first`.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from bridge.adapters.base import Audio, Outbound, PhoneEvent, StreamCounters, StreamState
from bridge.audio import AudioFormat
from bridge.errors import PhoneProtocolError


class L16Frames:
    """Raw little-endian 16-bit PCM frames -> Audio events, keeping sample alignment. Stereo (both call
    legs, FreeSWITCH's read leg left: the caller) becomes one event per leg, track 0 and track 1."""

    def __init__(self, counters: StreamCounters, channels: int = 1) -> None:
        self.counters = counters
        self.channels = channels
        self._rest = b""

    def feed(self, data: bytes) -> list[PhoneEvent]:
        data = self._rest + data
        frame = 2 * self.channels
        usable = len(data) - len(data) % frame
        self._rest = data[usable:]
        if not usable:
            return []
        pcm = data[:usable] if usable != len(data) else data
        self.counters.audio_frames += 1
        self.counters.audio_bytes += usable
        if self.channels == 1:
            return [Audio(pcm)]
        legs = np.frombuffer(pcm, dtype="<i2").reshape(-1, self.channels)
        return [Audio(legs[:, 0].tobytes(), 0), Audio(legs[:, 1].tobytes(), 1)]


class BinaryDialectAdapter(Outbound):
    carrier: str
    start_name: ClassVar[str]  # the message that starts a stream, for error messages
    subprotocols: tuple[str, ...] = ()
    close_ends_call = True

    def __init__(self, audio_format: AudioFormat) -> None:
        self.state = StreamState.AWAITING_START
        self.counters = StreamCounters()
        self.audio_format = audio_format
        self._l16: L16Frames | None = None  # set for 16-bit PCM (sample alignment kept); else frames pass as they are

    def receive(self, message: str | bytes) -> list[PhoneEvent]:
        """Parse one message; see :meth:`bridge.adapters.base.PhoneAdapter.receive`."""
        self.counters.messages += 1
        if isinstance(message, str):
            return self._text(message)
        events = self._binary_first(message) if self.state is StreamState.AWAITING_START else []
        if self._l16 is not None:
            events.extend(self._l16.feed(message))
        elif message:
            self.counters.audio_frames += 1
            self.counters.audio_bytes += len(message)
            events.append(Audio(message))
        return events

    def _text(self, text: str) -> list[PhoneEvent]:
        raise NotImplementedError  # each dialect reads its own control messages

    def _binary_first(self, data: bytes) -> list[PhoneEvent]:
        """A binary frame before the stream started: refused, unless the dialect can start on one."""
        raise PhoneProtocolError(f"audio before {self.start_name}", 1008)
