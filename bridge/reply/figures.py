"""The reply's figures: what one call's way back counts as it goes (:class:`ReplyCounters`) and what it
reports (:class:`ReplyFigures`, its part of ``call.ended``'s summary, the stats and the metrics, each field
under its public name)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence

    from bridge.reply.actions import Action
    from bridge.reply.playout import Playout


@dataclass(slots=True)
class ReplyCounters:
    """Counted by the reply itself (the playout and the barge-in count the rest)."""

    actions: int = 0  # accepted
    failed: int = 0  # action.failed sent
    played_ms: float = 0.0  # heard by the caller
    interrupted: int = 0  # playback.interrupted sent by the playout


@dataclass(frozen=True, slots=True)
class ReplyFigures:
    """The reply's figures at one moment, over every phone stream of the call."""

    reply_actions: int = 0  # bot actions accepted
    reply_failed: int = 0  # action.failed (TTS, fetch, stale, a capability the carrier lacks)
    reply_played_ms: int = 0  # audio the caller heard from the bot
    reply_interrupted: int = 0  # playback.interrupted
    reply_underruns: int = 0  # gaps over 40 ms inside a reply (audio came late)
    reply_cleared_ms: int = 0  # sent to the carrier, then cleared before it played
    barge_in_resumed: int = 0  # false interruptions: paused, then played on
    sensitive_s: float = 0.0  # seconds of sensitive pauses (configure sensitive, a sensitive gather)


def reply_figures(
    counters: ReplyCounters, underruns: int, cleared_ms: float, resumed: int, sensitive_s: float = 0.0
) -> ReplyFigures:
    """The reply loop's part of ``call.ended``'s summary: its counters and the playouts' figures."""
    return ReplyFigures(
        reply_actions=counters.actions,
        reply_failed=counters.failed,
        reply_played_ms=round(counters.played_ms),
        reply_interrupted=counters.interrupted,
        reply_underruns=underruns,
        reply_cleared_ms=round(cleared_ms),
        barge_in_resumed=resumed,
        sensitive_s=sensitive_s,
    )


def reply_state(playout: Playout | None, producing: Action | None, pending: Sequence[Action]) -> dict[str, Any]:
    """For ``GET /v1/calls/{id}``: listening, speaking or paused; the queue (what plays, what is being
    made into audio, what waits); what was heard."""
    now = time.monotonic()
    if playout is not None and playout.paused:
        status = "paused"
    elif (playout is not None and playout.playing) or producing is not None or pending:
        status = "speaking"
    else:
        status = "listening"
    queue = playout.queued_actions if playout is not None else []
    queue += [a.id for a in ([producing] if producing else []) + list(pending) if a.id not in queue]
    return {"state": status, "queue": queue, "played_ms": round(playout.heard_ms(now)) if playout is not None else 0}
