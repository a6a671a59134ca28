"""One call's figures at one moment, as a single frozen snapshot: the ``call.ended`` summary is this
snapshot (built from the call's parts by :mod:`bridge.call.figures`). The Prometheus metrics read a
live call's :class:`Meter` every second (its counters alone) and its last snapshot at the end;
nothing else reaches into a call."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from operator import attrgetter
from typing import Any, Literal, NamedTuple

EndReason = Literal[
    "stop",  # the carrier's stop message (or its documented equivalent)
    "hangup",  # the socket closed on a dialect where that is the hang-up
    "socket_closed",  # the socket closed without a stop
    "stream_lost",  # the socket dropped and no restart came in time (or the bridge shut down)
    "shed",  # a suspended call ended early to make room for another
    "protocol_error",  # the carrier broke its protocol (close 1003/1007/1008/1009)
    "media_timeout",  # no media for server.media_timeout seconds
    "internal_error",  # a bug in the bridge (close 1011)
    "closed_before_start",  # the socket closed before the call's start
    "stopped_before_start",  # a stop before the start
    "start_timeout",  # no start in time
    "bridge_restarted",  # the process died mid-call; sent after the restart
    "not_answered",  # an outbound call that never connected (call.failed said why: busy, no-answer...)
    "bot_hangup",  # the bot's hangup action
    "transferred",  # the bot's transfer: the caller was handed to a person (bridge.call.transfer)
    "transfer_failed",  # the transfer found nobody and the bot asked on_no_answer=hangup
    "instance_lost",  # fleet mode: the owning instance died (sent by the one that took the call over),
    # or this instance lost the call to another (its own end is then not sent)
]


@dataclass(frozen=True, slots=True)
class CallStats:
    """Every counter of a call: its phone streams, its Gladia sessions and its bot events. The field
    names are the keys of ``call.ended``'s ``summary`` (public interface)."""

    end_reason: EndReason | None
    duration_s: float
    phone_streams: int
    phone_frames: int
    phone_bytes: int
    phone_gaps: int
    stt_bytes: int
    stt_bytes_sent: int
    stt_sessions: int
    stt_session_id: str | None
    stt_connections: int
    stt_reconnects: int
    stt_resent_bytes: int
    stt_unacked_bytes: int
    stt_overflow_bytes: int
    stt_lost_bytes: int
    stt_duplicate_finals_dropped: int
    stt_ended_normally: bool
    stt_gave_up: str | None
    stt_queued_s: float
    stt_keepalive_bytes: int
    stt_recovered_finals: int
    utterances: int
    dtmf: int
    webhook_delivered: int
    webhook_failed: int
    webhook_dropped: int
    reply_actions: int = 0  # bot actions accepted
    reply_failed: int = 0  # action.failed (TTS, fetch, stale, a capability the carrier lacks)
    reply_played_ms: int = 0  # audio the caller heard from the bot
    reply_interrupted: int = 0  # playback.interrupted
    reply_underruns: int = 0  # gaps over 40 ms inside a reply (audio came late)
    reply_cleared_ms: int = 0  # sent to the carrier, then cleared before it played
    barge_in_resumed: int = 0  # false interruptions: paused, then played on
    sensitive_s: float = 0.0  # seconds of sensitive pauses
    # Not in the summary: what the metrics need besides it.
    carrier: str = ""
    stt_finals: int = 0
    stt_bytes_per_second: int = 0

    def summary(self) -> dict[str, Any]:
        """The ``call.ended`` summary (and the ``call.ended`` log line)."""
        out = asdict(self)
        del out["carrier"], out["stt_finals"], out["stt_bytes_per_second"]
        return out


class Meter(NamedTuple):
    """The counters of a call that Prometheus adds up (each only grows), as the metrics task reads them
    every second: a few integers, not the whole :class:`CallStats` (which a call builds only when asked
    for its summary)."""

    frames: int
    phone_bytes: int
    gladia_bytes: int
    resent: int
    reconnects: int
    finals: int
    reply_actions: int
    reply_failed: int
    reply_played_ms: int
    reply_interrupted: int
    reply_underruns: int
    barge_in_resumed: int

    @classmethod
    def of(cls, figures: object) -> Meter:
        """The meter of a call's figures: a :class:`CallStats` snapshot, or a live call's
        :class:`~bridge.call.figures.CallFigures` (the same names, read without a snapshot)."""
        return cls._make(_METER_FIGURES(figures))


# The CallStats field behind each Meter field, in the Meter's order.
_METER_FIGURES = attrgetter(
    "phone_frames",
    "phone_bytes",
    "stt_bytes_sent",
    "stt_resent_bytes",
    "stt_reconnects",
    "stt_finals",
    "reply_actions",
    "reply_failed",
    "reply_played_ms",
    "reply_interrupted",
    "reply_underruns",
    "barge_in_resumed",
)
