"""Under ``bridge serve --workers N``: ``GET /v1/events`` holds every worker's calls, whichever worker answers.

A call lives in the worker holding its phone stream, and each worker's :class:`~bridge.event_feed.EventFeed`
has only its own calls. The worker a reader reaches follows its own feed and each sibling's ``GET
/v1/events`` on the sibling's internal socket (:mod:`bridge.siblings`; the internal app never forwards), and
writes them as one stream in the order they reach it. Events of one call come from one worker, so they stay
in order; events of two workers are in the order this worker saw them.

The id of each event is every worker's position at that event, dotted in the workers' order (``<w0>.<w1>...``:
each worker's own feed id, read from the sibling's ``id`` lines and its ``X-Events-From`` header for where it
started). A reader that reconnects sends it back as it got it; the worker that answers, the same or another,
asks each worker for what came after that worker's part: nothing lost within the feeds' bounds, nothing twice.

Bounds: one queue per reader (the feed's ``max_behind`` events) between the sources and the writer. A sibling's
stream is read only as fast as the reader takes the merged one, so a slow reader backs up into the sibling's
socket, where the sibling's own bounds end it; the worker's own follower is ended when it falls behind. When
any source ends (behind, the sibling stopping, its socket gone), the merged stream ends with a comment and the
reader reconnects with its last id. A sibling with no socket (not serving) holds no call: its part of the id
stays as given. A sibling that does not answer within the forward timeout makes the answer 503.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib

import aiohttp
import structlog
from aiohttp import web

from bridge.event_feed import FeedFollower, FeedLimit
from bridge.event_tap import COALESCE_S, POLL_S, RETRY_AFTER, EventTap
from bridge.http.call_events import (
    ENDINGS,
    FROM_HEADER,
    UNKNOWN_ID,
    Gone,
    drained,
    event_stream,
    send,
    send_frames,
    sse_frame,
)
from bridge.siblings import RELAYED_HEADERS, Siblings, socket_path

log = structlog.get_logger("bridge.merged_events")

Item = tuple[int, int, str, str]  # (worker, id (0 a notice, -1 the source ended), type or comment, body)


def _error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers or None)


class SseBlocks:
    """The events of one of our own streams, fed in chunks: ``(id, type, body)`` per event (id 0: no id
    line), and ``(-1, comment, "")`` per comment line."""

    def __init__(self) -> None:
        self._buffer = ""

    def feed(self, text: str) -> list[tuple[int, str, str]]:
        self._buffer += text
        *blocks, self._buffer = self._buffer.split("\n\n")
        out: list[tuple[int, str, str]] = []
        for block in blocks:
            event_id, type_, data = 0, "message", []
            for line in block.split("\n"):
                name, _, value = line.partition(": ")
                if line.startswith(":"):
                    out.append((-1, line[1:].strip(), ""))
                elif name == "id":
                    event_id = int(value)
                elif name == "event":
                    type_ = value
                elif name == "data":
                    data.append(value)
            if data:
                out.append((event_id, type_, "\n".join(data)))
        return out


async def merged_events(
    request: web.Request,
    siblings: Siblings,
    tap: EventTap,
    after: list[int] | None,
    types: frozenset[str] | None,
) -> web.StreamResponse:
    """``GET /v1/events`` on a worker: its own feed and its siblings', as one stream (the module docstring)."""
    index, count = siblings.index, len(siblings.others) + 1
    try:
        follower = tap.feed.follow(None if after is None else after[index], types)
    except FeedLimit as exc:
        return _error(429, str(exc), **{"Retry-After": RETRY_AFTER})
    position = list(after) if after is not None else [0] * count
    position[index] = follower.position
    sessions: list[aiohttp.ClientSession] = []
    upstreams: dict[int, aiohttp.ClientResponse] = {}
    tasks: list[asyncio.Task[None]] = []
    resp = event_stream()
    try:
        refused = await _connect(request, siblings, after, sessions, upstreams, position)
        if refused is not None:
            return refused
        queue: asyncio.Queue[Item] = asyncio.Queue(maxsize=tap.feed.max_behind)
        tasks.append(asyncio.create_task(_pump_local(request.app, index, follower, queue)))
        tasks += [asyncio.create_task(_pump_sibling(i, upstream, queue)) for i, upstream in upstreams.items()]
        resp.headers[FROM_HEADER] = ".".join(map(str, position))
        await resp.prepare(request)
        with contextlib.suppress(Gone, ConnectionError):
            if follower.lost_upto:
                text = f": worker {index}: events up to id {follower.lost_upto} are no longer kept\n\n"
                await send(request, resp, text, 5.0)
            elif follower.unknown:
                await send(request, resp, f": worker {index}: {UNKNOWN_ID}\n\n", 5.0)
            await _write(request, resp, tap, queue, position)
        return resp
    finally:
        follower.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for upstream in upstreams.values():
            upstream.close()
        for http in sessions:
            await http.close()


async def _connect(
    request: web.Request,
    siblings: Siblings,
    after: list[int] | None,
    sessions: list[aiohttp.ClientSession],
    upstreams: dict[int, aiohttp.ClientResponse],
    position: list[int],
) -> web.Response | None:
    """Open every sibling's stream at once (into ``upstreams``, their start into ``position``); the answer
    to give instead when one refused or did not answer, else None."""
    headers = {"Authorization": request.headers.get("Authorization", "")}
    params: dict[str, str] = {"types": request.query["types"]} if "types" in request.query else {}

    async def open_one(i: int) -> tuple[int, aiohttp.ClientResponse | None]:
        http = aiohttp.ClientSession(
            connector=aiohttp.UnixConnector(path=str(socket_path(siblings.run_dir, i))),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=siblings.timeout, sock_read=None),
        )
        sessions.append(http)
        query = {**params, **({"after": str(after[i])} if after is not None else {})}
        try:
            get = http.get("http://worker/v1/events", params=query, headers=headers)
            upstream = await asyncio.wait_for(get, siblings.timeout)
        except aiohttp.ClientConnectorError:
            return i, None  # no socket: that worker is not serving, so it holds no call
        return i, upstream

    try:
        opened = await asyncio.gather(*(open_one(i) for i in siblings.others))
    except (aiohttp.ClientError, TimeoutError) as exc:
        log.warning("merged_events.no_answer", error=type(exc).__name__)
        return _error(503, "another worker did not answer in time; try again", **{"Retry-After": "1"})
    refused: web.Response | None = None
    for i, upstream in opened:
        if upstream is None:
            continue
        upstreams[i] = upstream
        if upstream.status != 200 and refused is None:
            relayed = {h: upstream.headers[h] for h in RELAYED_HEADERS if h in upstream.headers}
            refused = web.Response(status=upstream.status, body=await upstream.read(), headers=relayed)
        elif upstream.status == 200:
            position[i] = int(upstream.headers.get(FROM_HEADER, position[i]))
    return refused


async def _pump_local(app: web.Application, index: int, follower: FeedFollower, queue: asyncio.Queue[Item]) -> None:
    while True:
        for event_id, _, type_, body in follower.take():
            await queue.put((index, event_id, type_, body))
        if follower.finished():
            await queue.put((index, -1, follower.reason or "", ""))
            return
        if drained(app):
            follower.end("stopping")
            continue
        await follower.wait(POLL_S)


async def _pump_sibling(i: int, upstream: aiohttp.ClientResponse, queue: asyncio.Queue[Item]) -> None:
    blocks = SseBlocks()
    decoder = codecs.getincrementaldecoder("utf-8")()  # a chunk may end inside a character
    ending = "ended"
    try:
        async for chunk in upstream.content.iter_any():
            for event_id, type_, body in blocks.feed(decoder.decode(chunk)):
                if event_id >= 0:
                    await queue.put((i, event_id, type_, body))
                elif type_.startswith("behind"):
                    ending = "behind"
                elif type_.startswith("the bridge is stopping"):
                    ending = "stopping"
                elif type_ != "keepalive":  # what was lost, an id not of that worker: passed on, named
                    await queue.put((i, 0, "", f": worker {i}: {type_}\n\n"))
    except (aiohttp.ClientError, ConnectionError, UnicodeDecodeError) as exc:
        ending = type(exc).__name__
    await queue.put((i, -1, ending, ""))


async def _write(
    request: web.Request, resp: web.StreamResponse, tap: EventTap, queue: asyncio.Queue[Item], position: list[int]
) -> None:
    """Write what the sources queue until one ends or the reader goes (raises :class:`Gone`)."""
    loop = asyncio.get_running_loop()
    last_write = loop.time() - COALESCE_S
    while True:
        since = loop.time() - last_write
        if since < COALESCE_S and not queue.empty():  # a write just went: let a few more events join the next
            await asyncio.sleep(COALESCE_S - since)
        idle = loop.time() - last_write
        try:
            item = await asyncio.wait_for(queue.get(), max(0.0, min(POLL_S, tap.keepalive_s - idle)))
        except TimeoutError:
            transport = request.transport
            if transport is None or transport.is_closing():
                raise Gone from None
            if loop.time() - last_write >= tap.keepalive_s:
                await send(request, resp, ": keepalive\n\n", tap.send_timeout_s)
                last_write = loop.time()
            continue
        parts: list[str] = []
        ending: tuple[int, str] | None = None
        while True:
            worker, event_id, type_, body = item
            if event_id < 0:
                ending = (worker, type_)
                break
            if event_id > 0:
                position[worker] = event_id
                parts.append(sse_frame(".".join(map(str, position)), type_, body))
            elif type_:
                parts.append(sse_frame(0, type_, body))  # a notice: no id
            else:
                parts.append(body)  # a comment of a sibling's
            if queue.empty() or len(parts) >= 256:
                break
            item = queue.get_nowait()
        if parts:
            await send_frames(request, resp, parts, tap.send_timeout_s)
            last_write = loop.time()
        if ending is not None:
            worker, reason = ending
            text = ENDINGS.get(reason, f": worker {worker}'s stream ended ({reason}): reconnect with Last-Event-ID\n\n")
            await send(request, resp, text, tap.send_timeout_s)
            log.info("merged_events.ended", worker=worker, reason=reason)
            return
