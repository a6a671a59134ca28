"""What one call's speech-to-text stream tells the call (typed events, never awaited): a final
utterance in call time, a Gladia session replaced by a new one, the stream given up."""

from __future__ import annotations

from dataclasses import dataclass

from bridge.stt.protocol import Utterance


@dataclass(frozen=True, slots=True)
class FinalUtterance:
    """A final transcript, with times moved to call time (seconds since the call's first audio)."""

    id: str
    utterance: Utterance
    session_id: str
    call_start: float
    call_end: float


@dataclass(frozen=True, slots=True)
class SessionReplaced:
    old_session_id: str | None
    new_session_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class SttGaveUp:
    reason: str


SttNotice = FinalUtterance | SessionReplaced | SttGaveUp
