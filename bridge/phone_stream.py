"""One carrier media stream (one phone WebSocket): its adapter, its transcoder and its own bounds.

A call can outlive its stream (a restarted stream carries it on), so what belongs to the socket lives
here and what belongs to the call lives in :class:`bridge.call.Call`:

* :meth:`PhoneStream.wait_for_start` reads the socket (bounded by ``server.start_timeout``) until the
  carrier's ``start``: the call's ids, parameters and native audio format;
* :meth:`PhoneStream.audio` turns one message's audio into the call's Gladia format, after checking
  that the stream is not faster than real time; :meth:`PhoneStream.party_audio` does the same for a
  stream of both parties, whose two tracks become the two channels of one stream
  (:class:`bridge.tracks.BothParties`);
* :meth:`PhoneStream.note` logs what concerns the stream only (sequence gaps, carrier errors,
  unknown events), aggregated so a flood of them is a few lines.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import structlog

from bridge.adapters.base import (
    Audio,
    CallStarted,
    CallStopped,
    CarrierError,
    Gap,
    Ignored,
    PhoneAdapter,
    PhoneEvent,
)
from bridge.audio import AudioFormat, Passthrough, Transcoder, make_transcoder
from bridge.errors import PhoneProtocolError
from bridge.settings import ServerSettings
from bridge.stats import EndReason
from bridge.tracks import BothParties

AudioPath = Transcoder | BothParties  # one track, or both parties as two channels

log = structlog.get_logger("bridge.call")


@dataclass(frozen=True, slots=True)
class CallResult:
    """How the phone side ended; the shell closes the socket with ``close_code`` if still open."""

    reason: EndReason
    close_code: int = 1000
    message: str = ""


class MessageSource(Protocol):
    """A phone socket's messages once the call has it (:class:`bridge.phone_connection.PhoneConnection`)."""

    async def deliver(self, handler: Callable[[str | bytes], bool]) -> bool:
        """Hand each message to ``handler`` until the stream ends; True when ``handler`` returned True."""
        ...


@dataclass(frozen=True, slots=True)
class StreamStart:
    """The carrier's ``start``, and the events that came in the same message after it (a fork's first
    binary frame is its start and its first audio at once)."""

    started: CallStarted
    rest: list[PhoneEvent]


class PhoneStream:
    """See the module docstring. Built when the socket is upgraded, before anything is known."""

    def __init__(self, adapter: PhoneAdapter, settings: ServerSettings) -> None:
        self.adapter = adapter
        self.settings = settings
        self.counters = adapter.counters
        self.transcoder: Transcoder | None = None  # set by the call that takes the stream (one track)
        self.parties: BothParties | None = None  # ... or this, for a stream of both parties
        self.started: CallStarted | None = None
        self.forced_end: CallResult | None = None  # set by the shell when it ends the stream itself
        self.call_id: str | None = None  # the call it carries, once attached
        self.public_base = ""  # the bridge's base URL as the carrier reached it (links it gives the carrier)
        # The way back, set by the shell that owns the socket: send one message; end the stream
        # because the bot hung up (the socket closes, the call ends with `bot_hangup`).
        self.send: Callable[[str | bytes], Awaitable[None]] = _nowhere
        self.hang_up: Callable[[], None] = lambda: None
        self._t0 = time.monotonic()
        self._audio_bytes = 0
        self._audio_allowance = 0.0  # bytes the stream may have sent before the rate is checked again
        self._gap_logged_at = -1e9
        self._gaps_unlogged = 0
        self._carrier_errors = 0
        self._warned_unknown: set[str] = set()

    @property
    def carrier(self) -> str:
        return self.adapter.carrier

    @property
    def end_without_stop(self) -> CallResult:
        """What the socket closing without ``stop`` means for this dialect."""
        return CallResult("hangup" if self.adapter.close_ends_call else "socket_closed", 1000)

    async def wait_for_start(self, messages: AsyncIterator[str | bytes]) -> StreamStart | CallResult:
        """Read until the carrier's ``start``; a :class:`CallResult` when the stream ends first, sends
        something else it must not, or takes longer than ``server.start_timeout``."""
        try:
            async with asyncio.timeout(self.settings.start_timeout):
                while True:
                    try:
                        message = await messages.__anext__()
                    except StopAsyncIteration:
                        return CallResult("closed_before_start")
                    events = self.adapter.receive(message)
                    for i, event in enumerate(events):
                        if isinstance(event, CallStarted):
                            self.started = event
                            return StreamStart(event, events[i + 1 :])
                        if isinstance(event, CallStopped):
                            return CallResult("stopped_before_start")
        except TimeoutError:
            log.warning("call.no_start", timeout=self.settings.start_timeout)
            return CallResult("start_timeout", 1008, "no 'start' message in time")
        except PhoneProtocolError as exc:
            log.warning("call.bad_message", error=exc.reason, close_code=exc.close_code)
            return CallResult("protocol_error", exc.close_code, exc.reason)

    def use_transcoder(
        self, target: AudioFormat, previous: AudioPath | None = None, max_delay_ms: float = 300
    ) -> AudioPath:
        """Convert to ``target`` (mono; a stream of both parties gets two channels of it); a previous
        stream's converter of the same formats is kept (its filter state carries on)."""
        assert self.started is not None
        source = self.started.audio_format
        if self.started.channels == 2:
            if isinstance(previous, BothParties) and previous.source == source and previous.target.channels == 2:
                self.parties = previous
            else:
                self.parties = BothParties(source, target, max_delay_ms=max_delay_ms)
            return self.parties
        if not isinstance(previous, BothParties | None) and (previous.source, previous.target) == (source, target):
            self.transcoder = previous
            return previous
        self.transcoder = make_transcoder(source, target)
        return self.transcoder

    def audio(self, payload: bytes) -> bytes:
        """One message's audio in the call's Gladia format.

        Raises:
            PhoneProtocolError: the stream is faster than real time (1008).
        """
        self._audio_bytes += len(payload)
        if self._audio_bytes > self._audio_allowance:
            self._check_audio_rate()
        transcoder = self.transcoder
        assert transcoder is not None
        return payload if type(transcoder) is Passthrough else transcoder.feed(payload)

    def party_audio(self, event: Audio) -> bytes:
        """One track's message on a stream of both parties: the two-channel audio now ready (often
        none: the other leg's matching frame has not come yet).

        Raises:
            PhoneProtocolError: the stream is faster than real time (1008).
        """
        self._audio_bytes += len(event.payload)
        if self._audio_bytes > self._audio_allowance:
            self._check_audio_rate()
        assert self.parties is not None
        return self.parties.feed(event.track, event.payload, event.timestamp_ms)

    def _check_audio_rate(self) -> None:
        """No carrier sends audio faster than real time: a stream may be ahead of the clock by
        ``server.audio_burst_seconds`` (a jitter buffer flushing) and run at ``server.max_audio_speed``
        times real time; beyond that it is closed (1008). Checked only when the byte count passes the
        last allowance, so a stream at real time costs one comparison per frame."""
        server = self.settings
        if server.max_audio_speed <= 0 or self.started is None:
            self._audio_allowance = float("inf")
            return
        rate = self.started.audio_format.bytes_per_second * self.started.channels
        elapsed = time.monotonic() - self._t0
        allowance = rate * (server.audio_burst_seconds + server.max_audio_speed * elapsed)
        if self._audio_bytes > allowance:
            speed = self._audio_bytes / rate / max(elapsed, 1e-3)
            raise PhoneProtocolError(
                f"audio faster than real time ({self._audio_bytes / rate:.0f} s of audio in "
                f"{elapsed:.1f} s, {speed:.0f}x)",
                1008,
            )
        self._audio_allowance = allowance + rate  # look again after one more second of audio

    def note(self, event: Gap | CarrierError | Ignored) -> None:
        """Log what concerns the stream alone, aggregated."""
        match event:
            case Gap():
                # The first gap is logged, then one line per 10 s with the count since (a stream of 500
                # gaps is two lines, not 500); the summary has the total.
                self._gaps_unlogged += 1
                now = time.monotonic()
                if now - self._gap_logged_at >= 10.0:
                    log.info(
                        "call.sequence_gap", expected=event.expected, received=event.received, gaps=self._gaps_unlogged
                    )
                    self._gap_logged_at, self._gaps_unlogged = now, 0
            case CarrierError():
                self._carrier_errors += 1
                if self._carrier_errors <= 10:
                    log.warning("call.carrier_error", detail=event.detail[:300], count=self._carrier_errors)
            case Ignored():
                if event.unknown and event.kind not in self._warned_unknown and len(self._warned_unknown) < 20:
                    self._warned_unknown.add(event.kind)
                    log.warning("call.unknown_event", event_type=event.kind[:64])

    def flush(self) -> bytes:
        """The transcoder's last few milliseconds (and what the interleaver holds), at the end of the call."""
        if self.parties is not None:
            return self.parties.flush()
        return self.transcoder.flush() if self.transcoder is not None else b""


async def _nowhere(message: str | bytes) -> None:
    """A stream with no socket to answer on (tests of the reading side)."""
