"""A call's events as a live stream: ``GET /v1/calls/{call_id}/events`` (server-sent events).

:class:`EventTap` keeps the latest events of each call in memory (bounded) and hands them to followers;
:func:`call_events` serves them as ``text/event-stream``, one SSE event per bot event::

    id: <sequence>
    event: <type>
    data: <the event's JSON body, exactly what the webhook gets>

and the call's notices (``speech.started``, ``utterance.partial``: what the bot's socket gets live, with
``call_id`` and no ``sequence``) between them, as they happen, with no ``id`` line: a reader's last event
id stays the event's before, so a resume is by sequence alone and a notice is never sent again (a partial
of a gap is stale by then). Every call's events as one stream: ``GET /v1/events`` (:mod:`bridge.http.all_events`).

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

Under ``bridge serve --workers N`` the tap is per worker: a worker that does not hold the call pipes the
stream of the worker that does (:meth:`bridge.siblings.Siblings.events`). In fleet mode the instance
holding the call answers (another answers 404).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable

import structlog
from aiohttp import web

from bridge.app_keys import FLEET
from bridge.call.registry import CALLS
from bridge.event_tap import POLL_S, RETRY_AFTER, EventTap, Follower, FollowerLimit
from bridge.http.bot_api import authorized
from bridge.ids import is_call_id
from bridge.siblings import SIBLINGS

_LINE_BREAK = re.compile(r"\r\n|\r|\n")  # SSE's line terminators

log = structlog.get_logger("bridge.call_events")

Event = tuple[int, str, str]  # (sequence, type, body)

EVENT_TAP = web.AppKey("event_tap", EventTap)

UNKNOWN_ID = "that id is not one of this bridge's: following from now on"  # GET /v1/events, a comment
FROM_HEADER = "X-Events-From"  # the id a stream starts after (a merging worker reads its siblings')
ENDINGS = {
    "behind": ": behind: reconnect with Last-Event-ID\n\n",
    "stopping": ": the bridge is stopping: reconnect with Last-Event-ID\n\n",
}


def event_stream() -> web.StreamResponse:
    """An event stream's answer, not yet prepared: not to be cached, nor held back by a proxy (nginx buffers
    an answer unless ``X-Accel-Buffering: no``, which would hold events back until its buffer fills)."""
    resp = web.StreamResponse(headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    resp.content_type = "text/event-stream"
    resp.charset = "utf-8"
    return resp


def drained(app: web.Application) -> bool:
    """Whether the bridge is stopping and its calls are gone (:func:`bridge.app.drain_calls`): a reader
    of every call's events has seen them end, and its stream ends now (it never ends by itself, and
    aiohttp's shutdown would wait for it until its timeout)."""
    registry = app.get(CALLS)
    return registry is not None and registry.draining and not registry.streams


def sse_frame(sequence: int | str, type_: str, body: str) -> str:
    """One event in the SSE wire format: ``id``, ``event``, then a ``data`` line per line of ``body`` (a JSON
    body is one line; any CR, LF or CRLF in it still splits into data lines, which a reader joins with LF).
    A notice (``sequence`` 0) has no ``id`` line: a reader keeps the last id it had (WHATWG HTML, the last
    event ID buffer is only set by an ``id`` field), so resuming after a notice resumes after the event
    before it."""
    type_line = _LINE_BREAK.sub(" ", type_)
    data = "".join(f"data: {line}\n" for line in _LINE_BREAK.split(body))
    id_line = f"id: {sequence}\n" if sequence else ""
    return f"{id_line}event: {type_line}\n{data}\n"


def _error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers or None)


def _after(request: web.Request) -> int | web.Response:
    """Where to resume: ``Last-Event-ID`` (what a reconnecting reader sends) over ``?after=``, else 0."""
    given = request.headers.get("Last-Event-ID") or request.query.get("after") or "0"
    if not given.isascii() or not given.isdigit() or len(given) > 18:
        return _error(400, "Last-Event-ID (or ?after=) must be an event's sequence number")
    return int(given)


class Gone(Exception):
    """The reader went away or stopped reading."""


async def send(request: web.Request, resp: web.StreamResponse, text: str, timeout: float) -> None:
    try:
        await asyncio.wait_for(resp.write(text.encode()), timeout)
    except TimeoutError:
        transport = request.transport
        if transport is not None:
            transport.abort()  # a reader that takes nothing holds no buffer of ours
        raise Gone from None
    except ConnectionError:
        raise Gone from None


WRITE_BYTES = 64 * 1024  # frames are written this much at a time, each write awaited (drained)


async def send_frames(request: web.Request, resp: web.StreamResponse, frames: Iterable[str], timeout: float) -> None:
    """Write ``frames`` about :data:`WRITE_BYTES` at a time, each write within ``timeout``: what waits in the
    socket's buffer for a slow reader is one write's worth, never a whole backlog joined at once."""
    parts: list[str] = []
    size = 0
    for frame in frames:
        parts.append(frame)
        size += len(frame)
        if size >= WRITE_BYTES:
            await send(request, resp, "".join(parts), timeout)
            parts, size = [], 0
    if parts:
        await send(request, resp, "".join(parts), timeout)


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
    if not is_call_id(call_id):
        return _error(404, f"no call {call_id[:64]}")
    if not tap.knows(call_id):
        siblings = request.app.get(SIBLINGS)
        if siblings is not None and request.app[FLEET] is None:  # --workers: the stream of the call's worker
            piped = await siblings.events(request, call_id)
            if piped is not None:
                return piped
        return _error(404, f"no call {call_id}")
    after = _after(request)
    if isinstance(after, web.Response):
        return after
    if tap.finished(call_id, after):
        return web.Response(status=204)
    try:
        follower = tap.follow(call_id, after)
    except FollowerLimit as exc:
        return _error(429, str(exc), **{"Retry-After": RETRY_AFTER})
    resp = event_stream()
    sent = 0
    try:
        await resp.prepare(request)
        sent = await _stream(request, resp, follower, tap)
    except (Gone, ConnectionError):
        pass  # the reader went away: nothing more to write
    finally:
        follower.close()
    log.debug("call_events.done", call_id=call_id, after=after, sent=sent, reason=follower.reason)
    return resp


async def _stream(request: web.Request, resp: web.StreamResponse, follower: Follower, tap: EventTap) -> int:
    """Write the follower's events until it ends or the reader goes (raises :class:`Gone`); events sent."""
    loop = asyncio.get_running_loop()
    sent = 0
    if follower.lost_upto:
        await send(request, resp, f": events up to sequence {follower.lost_upto} are no longer kept\n\n", 5.0)
    last_write = loop.time()
    while True:
        events = follower.take()
        if events:
            await send_frames(request, resp, (sse_frame(*e) for e in events), tap.send_timeout_s)
            sent += len(events)
            last_write = loop.time()
            continue
        if follower.finished():
            break
        transport = request.transport
        if transport is None or transport.is_closing():
            raise Gone
        idle = loop.time() - last_write
        if idle >= tap.keepalive_s:
            await send(request, resp, ": keepalive\n\n", tap.send_timeout_s)
            last_write = loop.time()
            continue
        await follower.wait(min(POLL_S, tap.keepalive_s - idle))
    if follower.reason == "behind":
        await send(request, resp, ": behind: reconnect with Last-Event-ID\n\n", tap.send_timeout_s)
    return sent


def add_routes(app: web.Application) -> None:
    """``GET /v1/calls/{call_id}/events``, and the app's :data:`EVENT_TAP` (a new one unless already set)."""
    if EVENT_TAP not in app:
        app[EVENT_TAP] = EventTap()
    app.router.add_get("/v1/calls/{call_id}/events", call_events, allow_head=False)
