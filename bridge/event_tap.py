"""The latest events of each call, kept in memory for whoever follows them live (the I/O-free heart of
``GET /v1/calls/{call_id}/events``, :mod:`bridge.http.call_events`): every call's events are published to
it as they are queued for the bot; followers read a call's kept events, then the live ones. Bounded in
events per call, calls, bytes and followers; a slow follower is ended, never waited for.

Every event published is also handed to the tap's :class:`~bridge.event_feed.EventFeed` (``GET
/v1/events``, all calls). Notices (``speech.started``, ``utterance.partial``: what the bot's socket gets
live, with no ``sequence``) reach the followers of their call and the feed's, live only: never kept, never
replayed (:meth:`EventTap.notice`). In a follower's queue a notice's sequence is 0."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType

from bridge.event_feed import EventFeed

Event = tuple[int, str, str]  # (sequence, type, body); sequence 0: a notice (live only)

KEEPALIVE_S = 15.0  # a comment line this often on an idle stream
SEND_TIMEOUT_S = 20.0  # a write the reader does not take this long ends the connection
LINGER_S = 2.0  # after call.ended, how long a follower waits for transcript.completed
POLL_S = 1.0  # how often an idle stream checks that its reader is still connected
# GET /v1/events: after a write, a reader's next one waits this long for more events to join it. One write (a
# syscall, a task switch) per reader and event cost 17 us of CPU per event and reader, 4 us with this
# (benchmarks/bench_sse.py: 20 readers, 200 events a second, a 2-core Xeon); for scale, a call costs the bridge
# about 3 ms per call-second (README, "Recording calls"). The price: an event waits up to 0.1 s.
COALESCE_S = 0.1
MAX_BEHIND = 1000
FOLLOWERS_PER_CALL = 8
MAX_FOLLOWERS = 200
RETRY_AFTER = "2"


class FollowerLimit(Exception):
    """Too many followers (of this call, or in all): the route answers 429."""


@dataclass(slots=True, eq=False)
class _Call:
    events: deque[Event]
    followers: list[Follower] = field(default_factory=list)
    last_seq: int = 0
    dropped: int = 0  # events dropped from the ring (oldest first)
    dropped_upto: int = 0  # the sequence of the last event dropped
    ended_at: float | None = None  # the tap's clock when call.ended was published
    ended_seq: int | None = None
    completed_seq: int | None = None  # transcript.completed's sequence


class EventTap:
    """The latest events of each call, in memory, for GET /v1/calls/{id}/events.

    Args:
        per_call: events kept per call (the oldest dropped first, counted in :attr:`dropped`).
        max_bytes: the bodies kept in all, at most (the calls ended longest ago are forgotten first, then
            the oldest events of the call publishing): the tap never holds more than this, however many
            calls run.
        max_calls: calls kept; beyond it the oldest ended call is forgotten first (the oldest call when
            none has ended).
        keep_s: how long a call's events are kept after its ``call.ended``.
        clock: monotonic seconds (injected in tests).
        feed: every call's events as one feed (default: a new :class:`~bridge.event_feed.EventFeed`).
        linger_s, max_behind, followers_per_call, max_followers, keepalive_s, send_timeout_s: the
            follower and stream bounds of the module docstring.
    """

    def __init__(
        self,
        per_call: int = 256,
        max_calls: int = 2000,
        max_bytes: int = 16 * 1024 * 1024,
        keep_s: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
        *,
        linger_s: float = LINGER_S,
        max_behind: int = MAX_BEHIND,
        followers_per_call: int = FOLLOWERS_PER_CALL,
        max_followers: int = MAX_FOLLOWERS,
        keepalive_s: float = KEEPALIVE_S,
        send_timeout_s: float = SEND_TIMEOUT_S,
        feed: EventFeed | None = None,
    ) -> None:
        if per_call < 1 or max_calls < 1 or max_behind < 1:
            raise ValueError("per_call, max_calls and max_behind must be at least 1")
        self.per_call, self.max_calls, self.keep_s, self.clock = per_call, max_calls, keep_s, clock
        self.max_bytes = max_bytes
        self.bytes = 0  # the bodies kept now, all calls
        self.linger_s, self.max_behind = linger_s, max_behind
        self.followers_per_call, self.max_followers = followers_per_call, max_followers
        self.keepalive_s, self.send_timeout_s = keepalive_s, send_timeout_s
        self._calls: OrderedDict[str, _Call] = OrderedDict()  # oldest first
        self._ended: OrderedDict[str, float] = OrderedDict()  # ended calls, in the order they ended
        self.followers = 0  # followers now, all calls
        self.dropped = 0  # events dropped from a call's ring, all calls
        self.out_of_order = 0  # events refused: a sequence not above the call's last
        self.ended_behind = 0  # followers ended for falling behind
        self.feed = feed if feed is not None else EventFeed(max_behind=max_behind)

    @property
    def held_bytes(self) -> int:
        """The bodies the tap keeps now: every call's and the feed's (each bounded by its own max_bytes)."""
        return self.bytes + self.feed.bytes

    def publish(self, call_id: str, sequence: int, type_: str, body: str) -> None:
        """One event of a call, as the bot gets it (``body``: :func:`bridge.delivery.context.event_body`).

        Called on the audio path's thread of control: O(1) (a handful of followers woken), never blocks,
        never awaits. A sensitive event (a gather's PIN) must never be published: that is the caller's duty
        (:attr:`bridge.delivery.context.PendingEvent.sensitive`), the tap cannot tell. A sequence not above
        the call's last is ignored (counted in :attr:`out_of_order`): followers resume by sequence.
        """
        now = self.clock()
        self._expire(now)
        entry = self._calls.get(call_id)
        if entry is None:
            entry = self._open(call_id)
        if sequence <= entry.last_seq:
            self.out_of_order += 1
            return
        entry.last_seq = sequence
        if len(entry.events) == self.per_call:
            self._drop_oldest(entry)
        event = (sequence, type_, body)
        entry.events.append(event)
        self.bytes += len(body)
        while self.bytes > self.max_bytes and entry.events:
            if self._ended and next(iter(self._ended)) != call_id:
                self._forget(next(iter(self._ended)))  # the call ended longest ago goes first
            else:
                self._drop_oldest(entry)
        if type_ == "call.ended" and entry.ended_at is None:
            entry.ended_at, entry.ended_seq = now, sequence
            self._ended[call_id] = now
        elif type_ == "transcript.completed":
            entry.completed_seq = sequence
        for follower in tuple(entry.followers):  # at most followers_per_call
            follower._push(event)
        self.feed.publish(call_id, type_, body)

    def hears(self, call_id: str) -> bool:
        """Whether a notice of this call would reach anybody now (its followers, or the feed's): the
        call builds a notice's body only then."""
        if self.feed.hears():
            return True
        entry = self._calls.get(call_id)
        return entry is not None and bool(entry.followers)

    def notice(self, call_id: str, type_: str, body: str) -> None:
        """A notice of a call (``speech.started``, ``utterance.partial``): to its followers and the feed's
        now, never kept (a resumed follower does not get it again). O(followers), never blocks."""
        entry = self._calls.get(call_id)
        if entry is not None:
            event = (0, type_, body)
            for follower in tuple(entry.followers):
                follower._push(event)
        self.feed.notice(call_id, type_, body)

    def _drop_oldest(self, entry: _Call) -> None:
        sequence, _, body = entry.events.popleft()
        self.bytes -= len(body)
        entry.dropped += 1
        entry.dropped_upto = sequence
        self.dropped += 1

    def open(self, call_id: str) -> None:
        """Know a call before its first event (``POST /v1/calls`` answers 201 before ``call.dialing`` is
        published), so a follower may start at once."""
        self._expire(self.clock())
        if call_id not in self._calls:
            self._open(call_id)

    def knows(self, call_id: str) -> bool:
        """Whether the tap holds the call (it has published or been opened, and is not forgotten)."""
        self._expire(self.clock())
        return call_id in self._calls

    def finished(self, call_id: str, after: int) -> bool:
        """Whether a follower starting after ``after`` would get nothing: the call has ended, no kept event
        is later, and ``transcript.completed`` came or the linger is over (the route answers 204)."""
        entry = self._calls.get(call_id)
        if entry is None or entry.ended_at is None or after < entry.last_seq:
            return False
        return entry.completed_seq is not None or self.clock() >= entry.ended_at + self.linger_s

    def follow(self, call_id: str, after: int = 0) -> Follower:
        """Follow a call: an async iterator of ``(sequence, type, body)``, the kept events with sequence above
        ``after`` then live ones as published. It ends after ``call.ended`` (and after ``transcript.completed``
        when that follows within ``linger_s``), when the call is forgotten, or when the follower falls more
        than ``max_behind`` events behind (it can come back with the last sequence it got). Close it
        (:meth:`Follower.close`, or ``async with``) when leaving early: it holds a follower's place until then.

        Raises:
            FollowerLimit: the call has ``followers_per_call`` followers, or the tap ``max_followers``.
        """
        self._expire(self.clock())
        entry = self._calls.get(call_id)
        if entry is not None and len(entry.followers) >= self.followers_per_call:
            raise FollowerLimit(
                f"call {call_id} has {len(entry.followers)} followers; at most {self.followers_per_call}"
            )
        if entry is not None and self.followers >= self.max_followers:
            raise FollowerLimit(f"{self.followers} followers; at most {self.max_followers} in all")
        return Follower(self, call_id, entry, after)

    def _open(self, call_id: str) -> _Call:
        entry = self._calls[call_id] = _Call(deque())
        while len(self._calls) > self.max_calls:
            oldest = next(iter(self._ended)) if self._ended else next(iter(self._calls))
            self._forget(oldest)
        return entry

    def _expire(self, now: float) -> None:
        """Forget the calls ended more than ``keep_s`` ago (in order of their end: O(1) when none is due)."""
        while self._ended:
            call_id, ended_at = next(iter(self._ended.items()))
            if now - ended_at < self.keep_s:
                return
            self._forget(call_id)

    def _forget(self, call_id: str) -> None:
        entry = self._calls.pop(call_id)
        self._ended.pop(call_id, None)
        self.bytes -= sum(len(body) for _, _, body in entry.events)
        for follower in tuple(entry.followers):
            follower._stop("forgotten")


class Follower:
    """One reader of one call's events (:meth:`EventTap.follow`). ``reason`` says why it ended: ``ended``
    (the call's last events were taken), ``forgotten``, ``behind``, ``closed``, or ``unknown`` (no such call).
    ``lost_upto``: events up to this sequence (above ``after``) were no longer kept when it started (0: none).
    """

    def __init__(self, tap: EventTap, call_id: str, entry: _Call | None, after: int) -> None:
        self.call_id = call_id
        self.position = after  # the last sequence taken (or ``after``)
        self.reason: str | None = None
        self._tap, self._entry = tap, entry
        self._pending: deque[Event] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._saw_completed = False
        self.lost_upto = 0
        if entry is None:
            self.reason = "unknown"
            return
        self._pending.extend(e for e in entry.events if e[0] > after)
        self.lost_upto = entry.dropped_upto if entry.dropped_upto > after else 0
        entry.followers.append(self)
        tap.followers += 1

    # -- what the tap calls -----------------------------------------------------------------------

    def _push(self, event: Event) -> None:
        if len(self._pending) >= self._tap.max_behind:
            self._tap.ended_behind += 1
            self._pending.clear()  # the memory goes now; the reader resumes from what it got
            self._stop("behind")
            return
        self._pending.append(event)
        self._wake()

    def _stop(self, reason: str) -> None:
        if self.reason is not None:
            return
        self.reason = reason
        if self._entry is not None:
            self._entry.followers.remove(self)
            self._tap.followers -= 1
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- what the reader calls --------------------------------------------------------------------

    def take(self) -> list[Event]:
        """Every event waiting for this follower, in order (never blocks)."""
        events = list(self._pending)
        self._pending.clear()
        for event in events:
            self._note(event)
        return events

    def finished(self) -> bool:
        """Whether the follower has ended with nothing left to take (see :meth:`EventTap.follow`)."""
        if self._pending:
            return False
        entry = self._entry
        if self.reason is None and entry is not None and entry.ended_seq is not None:
            assert entry.ended_at is not None
            if self.position >= entry.ended_seq and (
                self._saw_completed
                or (entry.completed_seq is not None and self.position >= entry.completed_seq)
                or self._tap.clock() >= entry.ended_at + self._tap.linger_s
            ):
                self._stop("ended")
        return self.reason is not None

    async def wait(self, timeout: float) -> None:
        """Wait until an event is waiting, the follower ends, the linger after ``call.ended`` is over, or
        ``timeout`` seconds pass (cancellation-safe)."""
        if self._pending or self.reason is not None:
            return
        entry = self._entry
        if entry is not None and entry.ended_at is not None and self.position >= (entry.ended_seq or 0):
            timeout = min(timeout, max(0.0, entry.ended_at + self._tap.linger_s - self._tap.clock()))
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = loop.call_later(timeout, self._wake)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    def close(self) -> None:
        """Leave (frees the follower's place); taking nothing more."""
        self._pending.clear()
        self._stop("closed")

    def _note(self, event: Event) -> None:
        if event[0]:  # a notice (0) moves no position: resuming is by sequence
            self.position = event[0]
        self._saw_completed = self._saw_completed or event[1] == "transcript.completed"

    def __aiter__(self) -> Follower:
        return self

    async def __anext__(self) -> Event:
        while True:
            if self._pending:
                event = self._pending.popleft()
                self._note(event)
                return event
            if self.finished():
                raise StopAsyncIteration
            await self.wait(3600.0)

    async def aclose(self) -> None:
        self.close()

    async def __aenter__(self) -> Follower:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
