"""Collecting the caller's keys (pure): one ``gather``, keys and the time in, its one outcome out.

A gather is what an IVR asks of a caller: a menu choice, an account number, a PIN. The bridge, not
the carrier, collects the keys (every carrier's stream already reports each key press), so a gather
works the same on every carrier and keeps the call's stream and speech-to-text running meanwhile.

It ends in exactly one :class:`Gathered`, whose ``reason`` says why:

- ``num_digits``: the caller pressed that many keys (a gather without ``num_digits`` ends the same
  way at :data:`MAX_DIGITS` keys, the largest ``num_digits`` a bot may ask for: what one gather holds
  is bounded, whatever a carrier sends);
- ``finish_on_key``: the caller pressed the finishing key (``#`` unless the bot chose another, or
  none); that key is not part of the digits;
- ``timeout``: no key ``timeout_ms`` after the prompt ended (the caller must hear the question before
  the clock runs; without a prompt the clock starts at once), or no further key
  ``inter_digit_timeout_ms`` after the last one;
- ``replaced``: the bot started another gather; ``hangup``: the call ended.

Times are seconds on one monotonic clock. The shell (bridge.reply.gathering) wakes at
:meth:`Gathering.next_due` and calls :meth:`Gathering.tick`; nothing here waits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

GatherReason = Literal["num_digits", "finish_on_key", "timeout", "hangup", "replaced"]
MAX_DIGITS = 64  # keys one gather holds (the largest num_digits a gather accepts)


@dataclass(frozen=True, slots=True)
class Gathered:
    """A gather's outcome. ``digits`` stays out of the repr: a PIN must not reach a log by accident."""

    action_id: str
    digits: str = field(repr=False)
    reason: GatherReason


class Gathering:
    """One running gather. ``waits_for_prompt``: its prompt plays first, and the first-key timeout
    starts at :meth:`prompt_done`; otherwise it starts at ``now``."""

    __slots__ = (
        "_clock_from",
        "_digits",
        "_done",
        "_last_key_at",
        "action_id",
        "finish_on_key",
        "inter_digit_timeout",
        "num_digits",
        "timeout",
    )

    def __init__(
        self,
        action_id: str,
        *,
        num_digits: int | None,
        finish_on_key: str,
        timeout_ms: int,
        inter_digit_timeout_ms: int,
        now: float,
        waits_for_prompt: bool = False,
    ) -> None:
        self.action_id = action_id
        self.num_digits = min(num_digits, MAX_DIGITS) if num_digits is not None else MAX_DIGITS
        self.finish_on_key = finish_on_key
        self.timeout = timeout_ms / 1000.0
        self.inter_digit_timeout = inter_digit_timeout_ms / 1000.0
        self._clock_from: float | None = None if waits_for_prompt else now  # the first-key timeout runs from
        self._last_key_at: float | None = None
        self._digits: list[str] = []
        self._done = False

    @property
    def running(self) -> bool:
        """No outcome yet: keys still go to this gather."""
        return not self._done

    @property
    def keys(self) -> int:
        """How many digits were collected so far (the finishing key is not one)."""
        return len(self._digits)

    def prompt_done(self, now: float) -> None:
        """The prompt ended (played to the end, interrupted, or failed): the first-key timeout starts.
        Only its first call counts; after a key, the inter-digit timeout applies instead."""
        if self._clock_from is None:
            self._clock_from = now

    def next_due(self) -> float | None:
        """When :meth:`tick` would end the gather by timeout; None once it has ended, or while the
        prompt plays and no key came yet."""
        if self._done:
            return None
        if self._last_key_at is not None:
            return self._last_key_at + self.inter_digit_timeout
        if self._clock_from is not None:
            return self._clock_from + self.timeout
        return None

    def tick(self, now: float) -> Gathered | None:
        """The outcome ``timeout`` once its time has come; None before (or once it has ended)."""
        due = self.next_due()
        if due is None or now < due:
            return None
        return self._finish("timeout")

    def key(self, digit: str, now: float) -> Gathered | None:
        """A key the caller pressed. Returns the outcome when this key ends the gather. A key that
        comes after the timeout's time (a timer that fired late) does not count: the outcome is then
        ``timeout`` without it. None after the end: the key is not this gather's."""
        if self._done:
            return None
        timed_out = self.tick(now)
        if timed_out is not None:
            return timed_out
        if self.finish_on_key and digit == self.finish_on_key:
            return self._finish("finish_on_key")
        self._digits.append(digit)
        self._last_key_at = now
        if len(self._digits) >= self.num_digits:
            return self._finish("num_digits")
        return None

    def end(self, reason: Literal["replaced", "hangup"], now: float) -> Gathered | None:
        """The gather ends from outside: another one replaced it, or the call ended. A timeout whose
        time had already come wins (it happened first). None when it had already ended."""
        if self._done:
            return None
        return self.tick(now) or self._finish(reason)

    def _finish(self, reason: GatherReason) -> Gathered:
        self._done = True
        return Gathered(self.action_id, "".join(self._digits), reason)
