"""Every call's events as one live stream: ``GET /v1/events`` (server-sent events).

What a supervisor tool, a CRM or the console page (issue 32) reads to follow every call of the bridge
without knowing their ids first. The :class:`~bridge.event_feed.EventFeed` of the process's
:class:`~bridge.event_tap.EventTap` holds the events; this module serves them::

    id: <the feed's id>
    event: <type>
    data: <the event's JSON body, exactly what the webhook gets: its ``call.id`` says whose>

and the notices (``speech.started``, ``utterance.partial``, bodies with ``call_id``) with no ``id`` line.
Resuming: ``Last-Event-ID`` (or ``?after=``) names the last id a reader got; it gets every kept event after
it, then the live ones; without either, live events only (``?after=0``: every event kept). ``?types=a,b``
keeps those types (``call.*`` for a family). The stream does not end by itself: it ends when the reader
falls behind or the bridge stops (a comment says which), and the reader reconnects with the last id.

The id is the feed's counter (:mod:`bridge.event_feed` says why not the call's ``sequence``). Under ``bridge
serve --workers N`` each worker has its own; the worker that answers merges its siblings' streams
(:mod:`bridge.http.merged_events`) and the id is then every worker's position, dotted in the order of the
workers (``<w0>.<w1>...``), which a reconnecting reader sends back as it got it, whichever worker answers.
In fleet mode an instance's stream holds its own calls (each worker of ``--workers`` being an instance,
merged as above): follow each instance directly to see the whole fleet.

Bounds: as the call stream's (:mod:`bridge.http.call_events`), a reader gets 1000 events of lead at most and
``send_timeout_s`` for each write, then its stream ends; at most 200 readers (429 with ``Retry-After``);
a ``: keepalive`` comment every 15 s of quiet.
"""

from __future__ import annotations

import asyncio
import functools
import re

import structlog
from aiohttp import web

from bridge.event_feed import FeedFollower, FeedLimit
from bridge.event_tap import COALESCE_S, POLL_S, RETRY_AFTER, EventTap
from bridge.http.bot_api import authorized
from bridge.http.call_events import (
    ENDINGS,
    EVENT_TAP,
    FROM_HEADER,
    UNKNOWN_ID,
    Gone,
    drained,
    event_stream,
    send,
    send_frames,
    sse_frame,
)
from bridge.http.call_events import add_routes as add_call_events
from bridge.siblings import SIBLINGS

log = structlog.get_logger("bridge.all_events")

MAX_TYPES = 32
_TYPE = re.compile(r"[a-z][a-z0-9_]*(\.[a-z0-9_]+)*(\.\*)?")


def _error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers or None)


def positions(given: str | None, workers: int) -> list[int] | str | None:
    """The resume point: one id per worker (None: none given, live from now), or why it is wrong. A single
    number stands for every worker (``0``: everything kept)."""
    if given is None:
        return None
    parts = given.split(".")
    if len(parts) not in (1, workers) or not all(p.isascii() and p.isdigit() and len(p) <= 18 for p in parts):
        return f"Last-Event-ID (or ?after=) must be an id of this stream: a number, or {workers} dotted"
    values = [int(p) for p in parts]
    return values * workers if len(values) == 1 else values


def event_types(given: str | None) -> frozenset[str] | str | None:
    """``?types=a,b``: the types kept (None: all), or why the list is wrong."""
    if given is None:
        return None
    names = [t.strip() for t in given.split(",") if t.strip()]
    if not names or len(names) > MAX_TYPES or not all(len(t) <= 64 and _TYPE.fullmatch(t) for t in names):
        return f"?types= takes 1 to {MAX_TYPES} comma-separated event types (e.g. utterance.final,call.*)"
    return frozenset(names)


async def all_events(request: web.Request) -> web.StreamResponse:
    """``GET /v1/events``: every call's events as server-sent events (see the module docstring).

    401/403 as every ``/v1/`` route; 400 a bad ``Last-Event-ID``, ``?after=`` or ``?types=``; 429 too many
    readers; else 200 ``text/event-stream`` until the reader falls behind, goes away, or the bridge stops.
    """
    refused = authorized(request)
    if refused is not None:
        return refused
    siblings = request.app.get(SIBLINGS)
    workers = 1 if siblings is None else len(siblings.others) + 1
    after = positions(request.headers.get("Last-Event-ID") or request.query.get("after"), workers)
    types = event_types(request.query.get("types"))
    if isinstance(after, str) or isinstance(types, str):
        return _error(400, after if isinstance(after, str) else str(types))
    tap = request.app[EVENT_TAP]
    if siblings is not None:
        from bridge.http.merged_events import merged_events

        return await merged_events(request, siblings, tap, after, types)
    try:
        follower = tap.feed.follow(None if after is None else after[0], types)
    except FeedLimit as exc:
        return _error(429, str(exc), **{"Retry-After": RETRY_AFTER})
    resp = event_stream()
    resp.headers[FROM_HEADER] = str(follower.position)
    sent = 0
    try:
        await resp.prepare(request)
        sent = await _stream(request, resp, follower, tap)
    except (Gone, ConnectionError):
        pass  # the reader went away: nothing more to write
    finally:
        follower.close()
    log.debug("all_events.done", after=after, sent=sent, reason=follower.reason)
    return resp


@functools.lru_cache(maxsize=1024)
def feed_frame(event_id: int, type_: str, body: str) -> str:
    """An event's frame, made once for all its readers (the body's hash is cached by the string itself, and
    a hit compares the same objects: a lookup costs less than the framing)."""
    return sse_frame(event_id, type_, body)


async def _stream(request: web.Request, resp: web.StreamResponse, follower: FeedFollower, tap: EventTap) -> int:
    """Write the follower's events until it ends or the reader goes (raises :class:`Gone`); events sent."""
    loop = asyncio.get_running_loop()
    sent = 0
    if follower.lost_upto:
        await send(request, resp, f": events up to id {follower.lost_upto} are no longer kept\n\n", 5.0)
    elif follower.unknown:
        await send(request, resp, f": {UNKNOWN_ID}\n\n", 5.0)
    last_write = loop.time() - COALESCE_S
    while True:
        since = loop.time() - last_write
        if since < COALESCE_S and follower.waiting():  # a write just went: let a few more events join the next
            await asyncio.sleep(COALESCE_S - since)
        events = follower.take()
        if events:
            frames = (feed_frame(event_id, type_, body) for event_id, _, type_, body in events)
            await send_frames(request, resp, frames, tap.send_timeout_s)
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
        if drained(request.app):
            follower.end("stopping")
            continue
        await follower.wait(min(POLL_S, tap.keepalive_s - idle))
    ending = ENDINGS.get(follower.reason or "")
    if ending is not None:
        await send(request, resp, ending, tap.send_timeout_s)
    return sent


def add_routes(app: web.Application) -> None:
    """``GET /v1/calls/{call_id}/events`` (:func:`bridge.http.call_events.add_routes`, which sets the app's
    :data:`EVENT_TAP`) and ``GET /v1/events``."""
    add_call_events(app)
    app.router.add_get("/v1/events", all_events, allow_head=False)
