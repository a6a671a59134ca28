"""Barge-in (pure): what the caller's voice and keys do to the audio the bot is playing.

Defaults (per call, changed by a ``configure`` action):

1. Caller speech starts while interruptible audio plays (``interrupt`` speech or any): the playout
   **pauses** (stops sending, clears what the carrier holds, remembers what was heard).
2. ``min_words`` recognised words (partial or final transcript) **confirm** it: the rest of the
   reply is dropped and ``playback.interrupted`` says what was heard. So does a key press on audio
   whose ``interrupt`` is dtmf or any.
3. No words ``false_interruption_timeout`` seconds after the caller stopped speaking (a cough, a
   door): playback **resumes** where it paused. A caller who keeps talking without words for
   ``MAX_PAUSE`` seconds gets the reply back as well.
4. Echo: speech that starts less than ``echo_guard_ms`` after playback started, or whose words are
   the words being played right then (a speakerphone playing the bot back into the line), is not
   an interruption (counted in ``echo_ignored``).

Without speech events from the STT, a transcript of ``min_words`` during playback interrupts at once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from bridge.reply.actions import BargeIn as BargeInUpdate
from bridge.reply.playout import Output, Playout

MAX_PAUSE = 10.0  # seconds a pause may last while the caller makes sounds without words
_WORD = re.compile(r"[a-z0-9']+")


@dataclass(frozen=True, slots=True)
class BargeInPolicy:
    enabled: bool = True
    min_words: int = 2
    false_interruption_timeout: float = 2.0
    echo_guard_ms: int = 300

    def updated(self, update: BargeInUpdate) -> BargeInPolicy:
        changes = {k: v for k, v in update.model_dump().items() if v is not None}
        return replace(self, **changes)


def words_of(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def is_echo(heard: list[str], playing: str) -> bool:
    """Whether the caller's words are the bot's own words coming back: most of them (at least two
    thirds, and at least two) are in what was just played (the sentence playing and the ones before
    it: after a pause the words that came back are those already heard)."""
    if len(heard) < 2:
        return False
    played = set(words_of(playing))
    return sum(w in played for w in heard) * 3 >= len(heard) * 2


@dataclass(slots=True)
class BargeInCounters:
    resumed: int = 0  # false interruptions
    echo_ignored: int = 0


class BargeIn:
    """Drives a :class:`Playout` from the caller's speech events, words and keys."""

    def __init__(self, playout: Playout, policy: BargeInPolicy | None = None) -> None:
        self.playout = playout
        self.policy = policy or BargeInPolicy()
        self.counters = BargeInCounters()
        self._paused_at: float | None = None  # paused by caller speech at
        self._speech_ended_at: float | None = None
        self._heard = False

    @property
    def paused_by_speech(self) -> bool:
        return self._paused_at is not None

    def _interruptible(self, kind: str) -> bool:
        current = self.playout.current_interrupt
        return current is not None and current in (kind, "any")

    def speech_started(self, now: float) -> list[Output]:
        if not self.policy.enabled or self._paused_at is not None:
            return []
        self._speech_ended_at = None
        if not self.playout.playing or self.playout.paused or not self._interruptible("speech"):
            return []
        since = self.playout.run_started_at
        if since is not None and (now - since) * 1000.0 < self.policy.echo_guard_ms:
            self.counters.echo_ignored += 1
            return []
        self._paused_at = now
        return self.playout.pause(now)

    def speech_ended(self, now: float) -> list[Output]:
        if self._paused_at is not None:
            self._speech_ended_at = now
        return []

    def words(self, text: str, now: float) -> list[Output]:
        """A transcript (partial or final) of the caller's speech."""
        if not self.policy.enabled:
            return []
        heard = words_of(text)
        if len(heard) < self.policy.min_words:
            return []
        if self._paused_at is None and not (self.playout.playing and self._interruptible("speech")):
            return []
        if is_echo(heard, self.playout.recent_text(now)):
            self.counters.echo_ignored += 1
            return []
        self._paused_at = self._speech_ended_at = None
        return self.playout.interrupt(now, "speech")

    def dtmf(self, now: float) -> list[Output]:
        if not (self.playout.playing and self._interruptible("dtmf")):
            return []
        self._paused_at = self._speech_ended_at = None
        return self.playout.interrupt(now, "dtmf")

    def next_due(self) -> float | None:
        """When :meth:`tick` may resume a paused reply; None when nothing is paused."""
        if self._paused_at is None:
            return None
        limit = self._paused_at + MAX_PAUSE
        if self._speech_ended_at is not None:
            limit = min(limit, self._speech_ended_at + self.policy.false_interruption_timeout)
        return limit

    def tick(self, now: float) -> list[Output]:
        if self._paused_at is None:
            return []
        quiet = self._speech_ended_at is not None and now - self._speech_ended_at >= (
            self.policy.false_interruption_timeout
        )
        if quiet or now - self._paused_at >= MAX_PAUSE:
            self._paused_at = self._speech_ended_at = None
            self.counters.resumed += 1
            return self.playout.resume(now)
        return []

    def stopped(self) -> None:
        """The playout was interrupted some other way (stop, replace, hang-up): nothing is paused."""
        self._paused_at = self._speech_ended_at = None
