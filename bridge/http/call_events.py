"""A call's events as a live stream: ``GET /v1/calls/{call_id}/events`` (server-sent events).

:class:`EventTap` keeps the latest events of each call in memory (bounded) and hands them to followers;
:func:`call_events` serves them as ``text/event-stream``, one SSE event per bot event::

    id: <sequence>
    event: <type>
    data: <the event's JSON body, exactly what the webhook gets>

Who reads it: ``bridge dial`` (:mod:`bridge.tools.dial_command`) following the call it placed, the console
page (issue 32), a supervisor tool or a CRM. The same Bearer token as every ``/v1/`` route; a browser's
``EventSource`` cannot send that header, so the console reads the stream with ``fetch`` (which can, and can
send ``Last-Event-ID`` too); ``?after=<sequence>`` resumes where no header can be set. A reconnecting reader
gets every kept event after the one it names, so nothing is lost within the bounds below; events no longer
kept are announced by a comment line (``: events up to sequence N are no longer kept``).

Bounds, so a slow or vanished reader never slows a call: each follower has its own queue, at most
``max_behind`` (1000) events, beyond which it is ended (a comment says so; it resumes with ``Last-Event-ID``);
a write that the reader does not take within ``send_timeout_s`` ends the connection; at most 8 followers
per call and 200 in all (429 with ``Retry-After`` beyond). A ``: keepalive`` comment every 15 s keeps proxies
from closing an idle stream. Once the call has ended and everything after ``Last-Event-ID`` was sent, the
answer is 204 No Content, which tells an ``EventSource`` to stop reconnecting (WHATWG HTML, "server-sent
events", the 204 rule).

Under ``bridge serve --workers N`` the tap is per worker: a request that reaches a worker which does not
hold the call answers 404 (:mod:`bridge.siblings` relays whole answers within a few seconds, not streams;
how a stream should reach the call's worker is the lead's decision). Fleet mode likewise: one instance's calls.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType

import structlog
from aiohttp import web

from bridge.http.bot_api import authorized
from bridge.ids import is_call_id
from bridge.siblings import SIBLINGS

log = structlog.get_logger("bridge.call_events")

Event = tuple[int, str, str]  # (sequence, type, body)

KEEPALIVE_S = 15.0  # a comment line this often on an idle stream
SEND_TIMEOUT_S = 20.0  # a write the reader does not take this long ends the connection
LINGER_S = 2.0  # after call.ended, how long a follower waits for transcript.completed
POLL_S = 1.0  # how often an idle stream checks that its reader is still connected
MAX_BEHIND = 1000
FOLLOWERS_PER_CALL = 8
MAX_FOLLOWERS = 200
RETRY_AFTER = "2"
_LINE_BREAK = re.compile(r"\r\n|\r|\n")  # SSE's line terminators


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
        max_calls: calls kept; beyond it the oldest ended call is forgotten first (the oldest call when
            none has ended).
        keep_s: how long a call's events are kept after its ``call.ended``.
        clock: monotonic seconds (injected in tests).
        linger_s, max_behind, followers_per_call, max_followers, keepalive_s, send_timeout_s: the
            follower and stream bounds of the module docstring.
    """

    def __init__(
        self,
        per_call: int = 256,
        max_calls: int = 2000,
        keep_s: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
        *,
        linger_s: float = LINGER_S,
        max_behind: int = MAX_BEHIND,
        followers_per_call: int = FOLLOWERS_PER_CALL,
        max_followers: int = MAX_FOLLOWERS,
        keepalive_s: float = KEEPALIVE_S,
        send_timeout_s: float = SEND_TIMEOUT_S,
    ) -> None:
        if per_call < 1 or max_calls < 1 or max_behind < 1:
            raise ValueError("per_call, max_calls and max_behind must be at least 1")
        self.per_call, self.max_calls, self.keep_s, self.clock = per_call, max_calls, keep_s, clock
        self.linger_s, self.max_behind = linger_s, max_behind
        self.followers_per_call, self.max_followers = followers_per_call, max_followers
        self.keepalive_s, self.send_timeout_s = keepalive_s, send_timeout_s
        self._calls: OrderedDict[str, _Call] = OrderedDict()  # oldest first
        self._ended: OrderedDict[str, float] = OrderedDict()  # ended calls, in the order they ended
        self.followers = 0  # followers now, all calls
        self.dropped = 0  # events dropped from a call's ring, all calls
        self.out_of_order = 0  # events refused: a sequence not above the call's last
        self.ended_behind = 0  # followers ended for falling behind

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
            entry.dropped += 1
            entry.dropped_upto = entry.events[0][0]
            self.dropped += 1
        event = (sequence, type_, body)
        entry.events.append(event)  # a deque with maxlen: the oldest goes
        if type_ == "call.ended" and entry.ended_at is None:
            entry.ended_at, entry.ended_seq = now, sequence
            self._ended[call_id] = now
        elif type_ == "transcript.completed":
            entry.completed_seq = sequence
        for follower in tuple(entry.followers):  # at most followers_per_call
            follower._push(event)

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
        entry = self._calls[call_id] = _Call(deque(maxlen=self.per_call))
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


EVENT_TAP = web.AppKey("event_tap", EventTap)


def sse_frame(sequence: int, type_: str, body: str) -> str:
    """One event in the SSE wire format: ``id``, ``event``, then a ``data`` line per line of ``body`` (a JSON
    body is one line; any CR, LF or CRLF in it still splits into data lines, which a reader joins with LF)."""
    type_line = _LINE_BREAK.sub(" ", type_)
    data = "".join(f"data: {line}\n" for line in _LINE_BREAK.split(body))
    return f"id: {sequence}\nevent: {type_line}\n{data}\n"


def _error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers or None)


def _after(request: web.Request) -> int | web.Response:
    """Where to resume: ``Last-Event-ID`` (what a reconnecting reader sends) over ``?after=``, else 0."""
    given = request.headers.get("Last-Event-ID") or request.query.get("after") or "0"
    if not given.isascii() or not given.isdigit() or len(given) > 18:
        return _error(400, "Last-Event-ID (or ?after=) must be an event's sequence number")
    return int(given)


class _Gone(Exception):
    """The reader went away or stopped reading."""


async def _send(request: web.Request, resp: web.StreamResponse, text: str, timeout: float) -> None:
    try:
        await asyncio.wait_for(resp.write(text.encode()), timeout)
    except TimeoutError:
        transport = request.transport
        if transport is not None:
            transport.abort()  # a reader that takes nothing holds no buffer of ours
        raise _Gone from None
    except ConnectionError:
        raise _Gone from None


async def call_events(request: web.Request) -> web.StreamResponse:
    """``GET /v1/calls/{call_id}/events``: the call's events as server-sent events (see the module docstring).

    401/403 as every ``/v1/`` route; 404 for an id the bridge could not have made or a call the tap does not
    hold (under ``--workers``: a call of another worker too); 400 a bad ``Last-Event-ID``; 429 too many
    followers; 204 nothing more to come; else 200 ``text/event-stream`` until the call's events end or the
    reader goes away.
    """
    refused = authorized(request)
    if refused is not None:
        return refused
    call_id = request.match_info["call_id"]
    tap = request.app[EVENT_TAP]
    if not is_call_id(call_id) or not tap.knows(call_id):
        where = " on this worker" if request.app.get(SIBLINGS) is not None else ""
        return _error(404, f"no call {call_id[:64]}{where}")
    after = _after(request)
    if isinstance(after, web.Response):
        return after
    if tap.finished(call_id, after):
        return web.Response(status=204)
    try:
        follower = tap.follow(call_id, after)
    except FollowerLimit as exc:
        return _error(429, str(exc), **{"Retry-After": RETRY_AFTER})
    resp = web.StreamResponse(headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    resp.content_type = "text/event-stream"
    resp.charset = "utf-8"
    sent = 0
    try:
        await resp.prepare(request)
        sent = await _stream(request, resp, follower, tap)
    except (_Gone, ConnectionError):
        pass  # the reader went away: nothing more to write
    finally:
        follower.close()
    log.debug("call_events.done", call_id=call_id, after=after, sent=sent, reason=follower.reason)
    return resp


async def _stream(request: web.Request, resp: web.StreamResponse, follower: Follower, tap: EventTap) -> int:
    """Write the follower's events until it ends or the reader goes (raises :class:`_Gone`); events sent."""
    loop = asyncio.get_running_loop()
    sent = 0
    if follower.lost_upto:
        await _send(request, resp, f": events up to sequence {follower.lost_upto} are no longer kept\n\n", 5.0)
    last_write = loop.time()
    while True:
        events = follower.take()
        if events:
            await _send(request, resp, "".join(sse_frame(*e) for e in events), tap.send_timeout_s)
            sent += len(events)
            last_write = loop.time()
            continue
        if follower.finished():
            break
        transport = request.transport
        if transport is None or transport.is_closing():
            raise _Gone
        idle = loop.time() - last_write
        if idle >= tap.keepalive_s:
            await _send(request, resp, ": keepalive\n\n", tap.send_timeout_s)
            last_write = loop.time()
            continue
        await follower.wait(min(POLL_S, tap.keepalive_s - idle))
    if follower.reason == "behind":
        await _send(request, resp, ": behind: reconnect with Last-Event-ID\n\n", tap.send_timeout_s)
    return sent


def add_routes(app: web.Application) -> None:
    """``GET /v1/calls/{call_id}/events``, and the app's :data:`EVENT_TAP` (a new one unless already set)."""
    if EVENT_TAP not in app:
        app[EVENT_TAP] = EventTap()
    app.router.add_get("/v1/calls/{call_id}/events", call_events, allow_head=False)
