"""One call's figures at one moment, as a single frozen snapshot: the ``call.ended`` summary is this
snapshot, and the Prometheus metrics read the same snapshot (nothing else reaches into a call)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class CallStats:
    """Every counter of a call: its phone streams, its Gladia sessions and its bot events. The field
    names are the keys of ``call.ended``'s ``summary`` (public interface)."""

    end_reason: str | None
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
    # Not in the summary: what the metrics need besides it.
    provider: str = ""
    stt_finals: int = 0
    stt_bytes_per_second: int = 0

    def summary(self) -> dict[str, Any]:
        """The ``call.ended`` summary (and the ``call.ended`` log line)."""
        out = asdict(self)
        del out["provider"], out["stt_finals"], out["stt_bytes_per_second"]
        return out
