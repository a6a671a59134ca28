"""The call's sensitive pause (the I/O shell around :mod:`bridge.reply.sensitive`): its timer, its log lines,
its one event.

``configure {"sensitive": true}`` holds the pause and ``{"sensitive": false}`` lets it go; a sensitive
``gather`` holds it while it runs (:meth:`Pausing.hushed`, read for every frame of the caller's audio, is
where the gather's hold is taken and given back). While it runs:

* the caller's audio reaches speech-to-text as silence (the call reads :meth:`Pausing.hushed`), so the
  recording's caller channel, which is that audio, is silent too, and when the pause ends the recording
  is told its span (``on_span``) to silence the other channel (the bot's playout, the other party);
* no transcript row is kept of an utterance that overlaps a pause (:meth:`covers`);
* the caller's keys still reach the bot, as sensitive events (in memory only, never on disk).

It never outlives the call (:meth:`end`) nor ``reply.sensitive_max_s``: then it ends by itself, with a
``reply.sensitive_timed_out`` log line and a ``sensitive.ended`` event (``reason: "timeout"``). The log
lines say who held it and for how long; never what was said or keyed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import structlog

from bridge.reply.sensitive import SensitivePause

log = structlog.get_logger("bridge.reply")

Emit = Callable[[str, dict[str, Any]], None]


class Pausing:
    """See the module docstring. ``audio_time``: the call's audio position in seconds (utterance times' clock);
    ``on_span``: a pause's span in that clock once it ended (the recording silences it)."""

    __slots__ = ("_emit", "_timer", "audio_time", "core", "on_span")

    def __init__(self, max_s: float, emit: Emit) -> None:
        self.core = SensitivePause(max_s)
        self._emit = emit
        self._timer: asyncio.TimerHandle | None = None
        self.audio_time: Callable[[], float] = lambda: 0.0
        self.on_span: Callable[[float, float], object] | None = None

    @property
    def active(self) -> bool:
        return self.core.active

    def set(self, on: bool, holder: str) -> None:
        """``holder`` (``configure``, ``gather``) wants the pause on or lets it go."""
        now, at = time.monotonic(), self.audio_time()
        if on:
            if self.core.hold(holder, now, at):
                log.info("reply.sensitive_started", by=holder, max_s=self.core.max_s)
                self._timer = asyncio.get_running_loop().call_later(self.core.max_s, self._timed_out)
        elif (seconds := self.core.release(holder, now, at)) is not None:
            log.info("reply.sensitive_ended", by=holder, paused_s=round(seconds, 3))
            self._ended()

    def hushed(self, gather: bool) -> bool:
        """Whether the caller's audio is silenced now; ``gather``: a sensitive gather runs (its hold)."""
        if gather != ("gather" in self.core.holders):
            self.set(gather, "gather")
        return self.core.active

    def covers(self, start: float, end: float) -> bool:
        """An utterance over ``start``-``end`` (call seconds) touches a pause: it is not kept."""
        return self.core.covers(start, end)

    def paused_s(self) -> float:
        """Seconds paused so far (``call.ended``'s ``sensitive_s``)."""
        return round(self.core.paused_s(time.monotonic()), 3)

    def end(self) -> None:
        """The call is over: a running pause ends with it."""
        if self.core.end_all(time.monotonic(), self.audio_time()) is not None:
            log.info("reply.sensitive_ended", by="call_end")
            self._ended()

    def _timed_out(self) -> None:
        self._timer = None
        seconds = self.core.end_all(time.monotonic(), self.audio_time(), timed_out=True)
        if seconds is None:
            return
        log.warning("reply.sensitive_timed_out", paused_s=round(seconds, 3), max_s=self.core.max_s)
        self._ended()
        self._emit("sensitive.ended", {"reason": "timeout", "paused_s": round(seconds, 3)})

    def _ended(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.on_span is not None and self.core.spans:
            self.on_span(*self.core.spans[-1])
