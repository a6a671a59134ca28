"""A call's figures in one place: where each one comes from, written once.

:class:`CallFigures` is a view of a live call's parts (its phone streams' counters, its STT stream, its
delivery, its reply), made when asked for: each field of :class:`~bridge.stats.CallStats` is one of its
properties or attributes, under the field's public name. The frozen snapshot (``call.ended``'s summary,
:meth:`CallFigures.snapshot`) and what the metrics task reads every second (:meth:`Meter.of` on the
view: a few counters, not the whole snapshot) both read it, so no figure is listed twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from operator import attrgetter

from bridge.adapters.base import StreamCounters
from bridge.delivery.queue import DeliveryCounters
from bridge.reply.figures import ReplyFigures
from bridge.stats import CallStats, EndReason, Meter
from bridge.stt.stream import SttStream


@dataclass(slots=True)
class EarlierStreams:
    """The phone counters of a call's earlier streams (a restarted stream counts from zero)."""

    audio_frames: int = 0
    audio_bytes: int = 0
    gaps: int = 0

    def add(self, counters: StreamCounters) -> None:
        """A stream stopped carrying the call: keep what it counted."""
        self.audio_frames += counters.audio_frames
        self.audio_bytes += counters.audio_bytes
        self.gaps += counters.gaps


# Every CallStats field after end_reason, in its order: what a snapshot reads from the view.
_SNAPSHOT = attrgetter(*tuple(CallStats.__dataclass_fields__)[1:])


class CallFigures:
    """See the module docstring. Made per reading (cheap): the reply's figures are asked for once."""

    __slots__ = (
        "_delivery",
        "_earlier",
        "_phone",
        "_reply",
        "_reply_figures",
        "_started_at",
        "_stt",
        "carrier",
        "dtmf",
        "phone_streams",
        "stt_bytes_per_second",
        "utterances",
    )

    def __init__(
        self,
        *,
        phone: StreamCounters,
        earlier: EarlierStreams,
        stt: SttStream,
        delivery: DeliveryCounters,
        reply: Callable[[], ReplyFigures],
        streams: int,
        utterances: int,
        dtmf: int,
        carrier: str,
        started_at: float,
    ) -> None:
        """``phone``: the current stream's counters; ``reply``: how to get the reply's figures;
        ``started_at``: the call's start on the monotonic clock."""
        self._phone = phone
        self._earlier = earlier
        self._stt = stt
        self._delivery = delivery
        self._reply = reply
        self._reply_figures: ReplyFigures | None = None
        self._started_at = started_at
        self.phone_streams = streams
        self.utterances = utterances
        self.dtmf = dtmf
        self.carrier = carrier
        self.stt_bytes_per_second = stt.audio_format.bytes_per_second

    def snapshot(self, end_reason: EndReason | None = None) -> CallStats:
        """Every figure now, as one frozen snapshot (``call.ended``'s summary is one)."""
        return CallStats(end_reason, *_SNAPSHOT(self))

    def meter(self) -> Meter:
        """The counters Prometheus adds up."""
        return Meter.of(self)

    def ack_lag(self) -> float | None:
        """How far Gladia's acknowledgments lag behind the audio sent, in seconds (None before the
        first connection)."""
        bps = self.stt_bytes_per_second
        return self._stt.replay.unacked / bps if self._stt.counters.connections and bps else None

    @property
    def duration_s(self) -> float:
        return round(time.monotonic() - self._started_at, 3)

    # -- the phone ---------------------------------------------------------------------------

    @property
    def phone_frames(self) -> int:
        return self._earlier.audio_frames + self._phone.audio_frames

    @property
    def phone_bytes(self) -> int:
        return self._earlier.audio_bytes + self._phone.audio_bytes

    @property
    def phone_gaps(self) -> int:
        return self._earlier.gaps + self._phone.gaps

    # -- speech to text ----------------------------------------------------------------------

    @property
    def stt_bytes(self) -> int:
        return self._stt.replay.appended_bytes

    @property
    def stt_bytes_sent(self) -> int:
        return self._stt.replay.sent_bytes

    @property
    def stt_sessions(self) -> int:
        return self._stt.counters.sessions

    @property
    def stt_session_id(self) -> str | None:
        return self._stt.session_id

    @property
    def stt_connections(self) -> int:
        return self._stt.counters.connections

    @property
    def stt_reconnects(self) -> int:
        return self._stt.counters.reconnects

    @property
    def stt_resent_bytes(self) -> int:
        return self._stt.replay.resent_bytes

    @property
    def stt_unacked_bytes(self) -> int:
        return self._stt.replay.unacked

    @property
    def stt_overflow_bytes(self) -> int:
        return self._stt.replay.overflow_bytes

    @property
    def stt_lost_bytes(self) -> int:
        return self._stt.replay.lost_bytes

    @property
    def stt_duplicate_finals_dropped(self) -> int:
        return self._stt.duplicate_finals

    @property
    def stt_ended_normally(self) -> bool:
        return self._stt.ended_normally

    @property
    def stt_gave_up(self) -> str | None:
        return self._stt.gave_up

    @property
    def stt_queued_s(self) -> float:
        return self._stt.counters.queued_seconds

    @property
    def stt_keepalive_bytes(self) -> int:
        return self._stt.counters.keepalive_bytes

    @property
    def stt_recovered_finals(self) -> int:
        return self._stt.counters.recovered_finals

    @property
    def stt_finals(self) -> int:
        return self._stt.counters.finals

    # -- the bot's webhook -------------------------------------------------------------------

    @property
    def webhook_delivered(self) -> int:
        return self._delivery.delivered

    @property
    def webhook_failed(self) -> int:
        return self._delivery.failed

    @property
    def webhook_dropped(self) -> int:
        return self._delivery.dropped

    # -- the reply ---------------------------------------------------------------------------

    def _replied(self) -> ReplyFigures:
        if self._reply_figures is None:
            self._reply_figures = self._reply()
        return self._reply_figures

    @property
    def reply_actions(self) -> int:
        return self._replied().reply_actions

    @property
    def reply_failed(self) -> int:
        return self._replied().reply_failed

    @property
    def reply_played_ms(self) -> int:
        return self._replied().reply_played_ms

    @property
    def reply_interrupted(self) -> int:
        return self._replied().reply_interrupted

    @property
    def reply_underruns(self) -> int:
        return self._replied().reply_underruns

    @property
    def reply_cleared_ms(self) -> int:
        return self._replied().reply_cleared_ms

    @property
    def barge_in_resumed(self) -> int:
        return self._replied().barge_in_resumed

    @property
    def sensitive_s(self) -> float:
        return self._replied().sensitive_s
