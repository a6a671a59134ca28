"""A call's sensitive moments (a PCI-style pause), pure: when they began and ended, and what they cover.

``configure {"sensitive": true}`` starts a pause and ``{"sensitive": false}`` ends it; a sensitive
``gather`` is one too, from its acceptance to its outcome. While one runs the call sends silence to
speech-to-text instead of the caller, keeps no transcript row of what overlaps it, silences its
recording, and still gives the bot the caller's keys (as sensitive events: in memory only). A pause
never outlives the call (it ends with it) nor ``reply.sensitive_max_s`` (then it ends by itself:
:meth:`SensitivePause.due` says when, and the shell ends it with a log line and an event).

Two clocks: ``now`` is the loop's monotonic time (what the maximum counts), ``at`` is the call's audio
time in seconds (what utterance times are in), so :meth:`SensitivePause.covers` can tell a final that
overlaps a pause after the fact: a final comes ``endpointing`` and a decode after its speech, and the
words said just before a pause began (or on its edge) are not kept either.

Several reasons may hold a pause at once (the bot's ``configure`` and a sensitive gather): it runs while
any holds it, and ends when the last lets go.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_SPANS = 1000  # spans remembered for covers(); a call with more keeps the latest (and counts the rest)
EDGE_S = 0.5  # an utterance ending this soon before a pause began is taken as part of it


@dataclass(slots=True)
class SensitivePause:
    max_s: float
    holders: set[str] = field(default_factory=set)  # "configure", "gather": who holds the pause
    began: float | None = None  # loop time of the running pause's start
    began_at: float = 0.0  # call audio time of it
    spans: list[tuple[float, float]] = field(default_factory=list)  # past pauses, call audio time
    forgotten: int = 0  # spans beyond MAX_SPANS
    total_s: float = 0.0  # seconds paused by the pauses that ended
    pauses: int = 0  # pauses begun
    timed_out: int = 0  # pauses ended by sensitive_max_s

    @property
    def active(self) -> bool:
        return self.began is not None

    def hold(self, holder: str, now: float, at: float) -> bool:
        """``holder`` wants the pause; True when this starts one (it was not running)."""
        self.holders.add(holder)
        if self.began is not None:
            return False
        self.began, self.began_at = now, at
        self.pauses += 1
        return True

    def release(self, holder: str, now: float, at: float) -> float | None:
        """``holder`` lets go; the seconds the pause ran when this ends it (the last holder), else None."""
        self.holders.discard(holder)
        if self.holders or self.began is None:
            return None
        return self._end(now, at)

    def end_all(self, now: float, at: float, *, timed_out: bool = False) -> float | None:
        """End the pause whoever holds it (the call ended, or ``sensitive_max_s``); its seconds, or None."""
        self.holders.clear()
        if self.began is None:
            return None
        self.timed_out += timed_out
        return self._end(now, at)

    def due(self) -> float | None:
        """The loop time the running pause must end by (``max_s`` after it began); None when none runs."""
        return None if self.began is None else self.began + self.max_s

    def paused_s(self, now: float) -> float:
        """Seconds paused so far, the running pause included."""
        return self.total_s + (0.0 if self.began is None else max(0.0, now - self.began))

    def covers(self, start: float, end: float) -> bool:
        """Whether an utterance over ``start``-``end`` (call audio time) touches a pause, the running one
        included, or ends within :data:`EDGE_S` before one began."""
        if self.began is not None and end >= self.began_at - EDGE_S:
            return True
        return any(end >= lo - EDGE_S and start <= hi for lo, hi in self.spans)

    def _end(self, now: float, at: float) -> float:
        assert self.began is not None
        seconds = max(0.0, now - self.began)
        self.total_s += seconds
        self.spans.append((self.began_at, max(at, self.began_at)))
        if len(self.spans) > MAX_SPANS:
            del self.spans[0]
            self.forgotten += 1
        self.began = None
        return seconds
