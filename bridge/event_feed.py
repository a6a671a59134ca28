"""Every call's events on this process as one feed (the I/O-free heart of ``GET /v1/events``,
:mod:`bridge.http.all_events`): :class:`bridge.event_tap.EventTap` hands it each event it publishes and each
notice (``speech.started``, ``utterance.partial``); followers read the kept events after an id, then the live
ones. Bounded in events, bytes and followers; a follower that falls behind is ended, never waited for.

Why a counter of its own: a call's ``sequence`` orders that call only, and the feed interleaves calls, so a
reader resuming the feed needs one position for all of them. Each event gets the next value of a counter that
only grows for the life of the process. It starts at the wall clock in microseconds, not at 1, so a bridge
restarted since a reader's last id does not hand out that id again for another event: the new process's ids
start above the old one's (unless the old one published more than a million events a second, or the clock was
set back). An id from before the process started, or one the feed never gave, is told to the reader (a
comment) rather than silently taken as a position.

Notices are live only: they get no id (0 here, no ``id:`` line on the wire), are not kept and are not
replayed on resume, like the bot socket's real-time events: a partial of a gap is stale once the gap is over.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

FeedEvent = tuple[int, str, str, str]  # (id, call_id, type, body); id 0: a notice (live only)

FEED_SIZE = 8192  # events kept for resuming readers, all calls
FEED_BYTES = 8 * 1024 * 1024  # bodies kept for resuming readers, at most
FEED_FOLLOWERS = 200  # readers of the whole feed at once (beyond: 429)
NOTICES = ("speech.started", "utterance.partial")  # the notices' types (live only, built only when heard)


class FeedLimit(Exception):
    """Too many followers of the feed: the route answers 429."""


class EventFeed:
    """Every call's events in publication order, for ``GET /v1/events`` (see the module docstring).

    Args:
        size, max_bytes: the events kept for resuming readers (the oldest dropped first, their ids
            remembered in :attr:`dropped_upto`).
        max_behind: events a follower may have waiting; one more ends it (reason ``behind``).
        max_followers: followers at once.
        start: the id before the first event (default: the wall clock in microseconds).
    """

    def __init__(
        self,
        size: int = FEED_SIZE,
        max_bytes: int = FEED_BYTES,
        max_behind: int = 1000,
        max_followers: int = FEED_FOLLOWERS,
        start: int | None = None,
    ) -> None:
        if size < 1 or max_behind < 1:
            raise ValueError("size and max_behind must be at least 1")
        self.size, self.max_bytes, self.max_behind, self.max_followers = size, max_bytes, max_behind, max_followers
        self.start = self.last_id = time.time_ns() // 1000 if start is None else start
        self.dropped_upto = self.start  # ids up to this one are not kept (before the process: never were)
        self.bytes = 0
        self.ended_behind = 0  # followers ended for falling behind
        self._ring: deque[FeedEvent] = deque()
        self._followers: list[FeedFollower] = []

    @property
    def followers(self) -> int:
        return len(self._followers)

    def hears(self) -> bool:
        """Whether a follower of the feed would take a notice now (a notice's body is built only then): one
        whose ``types`` keep a notice type (the console's live list, ``?types=call.*,...``, takes none)."""
        return any(f.notices for f in self._followers)

    def publish(self, call_id: str, type_: str, body: str) -> int:
        """One event of a call (never blocks; O(followers)); returns its id."""
        self.last_id += 1
        event = (self.last_id, call_id, type_, body)
        self._ring.append(event)
        self.bytes += len(body)
        while len(self._ring) > self.size or (self.bytes > self.max_bytes and len(self._ring) > 1):
            dropped = self._ring.popleft()
            self.bytes -= len(dropped[3])
            self.dropped_upto = dropped[0]
        for follower in tuple(self._followers):
            follower._push(event)
        return self.last_id

    def notice(self, call_id: str, type_: str, body: str) -> None:
        """A live-only event of a call (a partial, speech started): to the followers now, never kept."""
        event = (0, call_id, type_, body)
        for follower in tuple(self._followers):
            follower._push(event)

    def follow(self, after: int | None = None, types: frozenset[str] | None = None) -> FeedFollower:
        """Follow the feed: the kept events with an id above ``after`` (None: none, only what comes from
        now on), then the live ones, those of ``types`` only when given (a name, or ``prefix.*``).
        Close it when leaving (:meth:`FeedFollower.close`).

        Raises:
            FeedLimit: the feed has ``max_followers`` followers.
        """
        if len(self._followers) >= self.max_followers:
            raise FeedLimit(f"{len(self._followers)} followers of every call's events; at most {self.max_followers}")
        return FeedFollower(self, after, types)


def matches(types: frozenset[str] | None, type_: str) -> bool:
    """Whether ``type_`` is one of ``types`` (None: all), where ``call.*`` stands for every ``call.`` type."""
    if types is None or type_ in types:
        return True
    dot = type_.find(".")
    return dot > 0 and type_[: dot + 1] + "*" in types


class FeedFollower:
    """One reader of the feed (:meth:`EventFeed.follow`). ``reason`` says why it ended: ``behind``,
    ``stopping`` or ``closed``. ``lost_upto``: kept events up to this id (above ``after``) were already
    dropped, or came before this process (0: nothing lost). ``unknown``: ``after`` is above every id given
    (not this process's): it follows from now on."""

    def __init__(self, feed: EventFeed, after: int | None, types: frozenset[str] | None) -> None:
        self.types = types
        self.notices = any(matches(types, t) for t in NOTICES)  # whether it takes any notice
        self.reason: str | None = None
        self.lost_upto = 0
        self.unknown = after is not None and after > feed.last_id
        self.position = feed.last_id if after is None or self.unknown else after  # the last id taken
        self._feed = feed
        self._pending: deque[FeedEvent] = deque()
        self._waiter: asyncio.Future[None] | None = None
        if after is not None and not self.unknown:
            # after=0 asks for everything kept: a loss only when the ring dropped some of this process's
            if after < feed.dropped_upto and (after > 0 or feed.dropped_upto > feed.start):
                self.lost_upto = feed.dropped_upto
            self._pending.extend(e for e in feed._ring if e[0] > after and matches(types, e[2]))
        # the kept events it starts with (up to ``size``) do not count as falling behind until first taken
        self._allowance = len(self._pending)
        feed._followers.append(self)

    def _push(self, event: FeedEvent) -> None:
        if not matches(self.types, event[2]):
            return
        if len(self._pending) >= self._feed.max_behind + self._allowance:
            self._feed.ended_behind += 1
            self._pending.clear()  # the memory goes now; the reader resumes from the last id it got
            self._stop("behind")
            return
        self._pending.append(event)
        self._wake()

    def _stop(self, reason: str) -> None:
        if self.reason is not None:
            return
        self.reason = reason
        self._feed._followers.remove(self)
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def take(self) -> list[FeedEvent]:
        """Every event waiting for this follower, in order (never blocks)."""
        events = list(self._pending)
        self._pending.clear()
        self._allowance = 0
        for event in reversed(events):
            if event[0]:
                self.position = event[0]
                break
        return events

    def waiting(self) -> bool:
        """Whether events wait to be taken."""
        return bool(self._pending)

    def finished(self) -> bool:
        """Whether the follower has ended with nothing left to take."""
        return self.reason is not None and not self._pending

    async def wait(self, timeout: float) -> None:
        """Wait until an event is waiting, the follower ends, or ``timeout`` seconds pass."""
        if self._pending or self.reason is not None:
            return
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = loop.call_later(timeout, self._wake)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    def end(self, reason: str) -> None:
        """End the follower (e.g. ``stopping``): what it holds can still be taken, nothing more comes."""
        self._stop(reason)

    def close(self) -> None:
        """Leave (frees the follower's place)."""
        self._pending.clear()
        self._stop("closed")
