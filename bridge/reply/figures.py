"""The reply's figures: what one call's way back counts as it goes (:class:`ReplyCounters`) and what it
reports (:class:`ReplyFigures`, its part of ``call.ended``'s summary, the stats and the metrics, each field
under its public name)."""

from __future__ import annotations

from dataclasses import dataclass


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
