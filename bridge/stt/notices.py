"""What one call's speech-to-text stream tells the call (typed events, never awaited): a final
utterance in call time, an add-on's result about one, a Gladia session replaced by a new one, the
stream given up."""

from __future__ import annotations

from dataclasses import dataclass

from bridge.stt.addons import AddonFailed, Entities, Sentiments, Translation
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


@dataclass(frozen=True, slots=True)
class CallerSpeech:
    """The caller started (``started``) or stopped speaking, by Gladia's speech events: what barge-in
    reacts to before any word is recognised. ``channel``: 0 the caller; 1 the other party, on a call
    of both parties (which barge-in ignores: on a stereo stream that plays back, it is the bot)."""

    started: bool
    channel: int = 0


@dataclass(frozen=True, slots=True)
class PartialUtterance:
    """A partial transcript (when the profile asks for them): words before the final."""

    text: str
    channel: int = 0


@dataclass(frozen=True, slots=True)
class AddonResult:
    """A realtime add-on's result (or its failure), after the final it is about was delivered (see
    :mod:`bridge.stt.addon_links`): ``channel`` is that final's (None: a failure naming no final), and
    ``origin`` the session's start in call seconds (a session's times plus it are call times)."""

    result: Translation | Entities | Sentiments | AddonFailed
    session_id: str
    channel: int | None
    origin: float


SttNotice = FinalUtterance | SessionReplaced | SttGaveUp | CallerSpeech | PartialUtterance | AddonResult
