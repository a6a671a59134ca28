"""``GET /v1/calls/{call_id}/recording`` when recordings are in object storage (fleet mode): the parts the
shared index lists, joined (:mod:`bridge.recording.parts`) and streamed, with ``Range`` (206, 416) and
``If-Range`` against the layout's ``ETag``, so a browser's player seeks. Any instance answers for any
call: the index is in the shared record and the parts in the bucket.

409 while the recording is not complete (:mod:`bridge.recording.index`: the call still runs somewhere,
or its last parts are being uploaded), 404 when the index lists none, 503 when the record cannot be
read, 502 when object storage fails before the first byte (after it, the connection is cut: a reader
sees a short body against its ``Content-Length``). Reads run on the record's read threads, never the
default executor (whose threads make the calls' reply audio).
"""

from __future__ import annotations

import structlog
from aiohttp import web

from bridge.blocking import BlockingPool, PoolFull
from bridge.http.transcripts import TRANSCRIPT_READS
from bridge.recording.objects import ObjectStore, ObjectStoreError
from bridge.recording.parts import Layout, Piece
from bridge.recording.service import CONTENT_TYPE, RecordingService

log = structlog.get_logger("bridge.recording")

CHUNK = 1 << 20  # bytes per ranged GET of a part


def _error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers or None)


def byte_range(request: web.Request, layout: Layout) -> tuple[int, int] | web.Response | None:
    """The bytes asked for as ``(start, end)`` (end exclusive), None for the whole, or a 416."""
    if "Range" not in request.headers:
        return None
    if_range = request.headers.get("If-Range")
    if if_range is not None and if_range.strip() != f'"{layout.etag}"':
        return None  # the reader's copy is another version: send the whole
    size = layout.size
    try:
        asked = request.http_range
    except ValueError:  # several ranges, or not a byte range: 416, as aiohttp's FileResponse (a local file)
        return _error(416, "one byte range only (bytes=a-b, a- or -n)", **{"Content-Range": f"bytes */{size}"})
    start, stop = asked.start, asked.stop
    if start is None:
        start = 0
    if start < 0:  # a suffix: the last -start bytes
        start, stop = max(0, size + start), size
    stop = size if stop is None else min(stop, size)
    if start >= size or stop <= start:
        return _error(416, "range not satisfiable", **{"Content-Range": f"bytes */{size}"})
    return start, stop


async def serve_from_objects(request: web.Request, service: RecordingService, call_id: str) -> web.StreamResponse:
    remote = service.remote
    assert remote is not None
    if call_id in service.open_calls:
        return _error(409, f"the recording of call {call_id[:64]} is still being written")
    pool = request.app[TRANSCRIPT_READS]
    store = remote.store
    try:
        found = await pool.run(lambda: remote.indexed([call_id]))
    except PoolFull:
        return _error(503, "too many reads are waiting; try again", **{"Retry-After": "1"})
    except Exception as exc:  # the store's errors (sqlite3.Error, psycopg.Error): which store is not known here
        if store is None or not isinstance(exc, store.ERRORS):
            raise
        log.warning("recording.index_unreadable", reason=f"{type(exc).__name__}: {exc}"[:200])
        return _error(503, "the call record cannot be read now; try again")
    entry = found.get(call_id)
    if entry is None:
        return _error(404, f"no recording for call {call_id[:64]}")
    if not entry.complete:
        return _error(409, f"the recording of call {call_id[:64]} is still being written")
    layout = entry.layout
    asked = byte_range(request, layout)
    if isinstance(asked, web.Response):
        return asked
    start, stop = asked if asked is not None else (0, layout.size)
    headers = {
        "Content-Type": CONTENT_TYPE[layout.format],
        "Cache-Control": "private, no-store",
        "Accept-Ranges": "bytes",
        "ETag": f'"{layout.etag}"',
        "Content-Length": str(stop - start),
    }
    if asked is not None:
        headers["Content-Range"] = f"bytes {start}-{stop - 1}/{layout.size}"
    chunks = _chunks(layout.slice(start, stop))
    objects = remote.objects
    ahead = 2 if chunks and chunks[0].key is None else 1  # the first object's bytes before the status goes
    try:
        first = b"".join([await _fetch(pool, objects, chunk) for chunk in chunks[:ahead]])
    except (ObjectStoreError, PoolFull) as exc:
        log.warning("recording.object_unreadable", call_id=call_id, reason=str(exc)[:200])
        return _error(502, "object storage cannot be read now; try again", **{"Retry-After": "1"})
    resp = web.StreamResponse(status=206 if asked is not None else 200, headers=headers)
    await resp.prepare(request)
    if request.method == "HEAD":
        return resp
    await resp.write(first)
    for chunk in chunks[ahead:]:
        try:
            data = await _fetch(pool, objects, chunk)
        except (ObjectStoreError, PoolFull) as exc:
            log.warning("recording.object_unreadable", call_id=call_id, reason=str(exc)[:200])
            if request.transport is not None:
                request.transport.abort()
            return resp
        await resp.write(data)
    await resp.write_eof()
    return resp


def _chunks(pieces: list[Piece]) -> list[Piece]:
    """Pieces cut to at most :data:`CHUNK` bytes each (memory per reader stays bounded)."""
    out: list[Piece] = []
    for piece in pieces:
        if piece.key is None:
            out.append(piece)
            continue
        for a in range(piece.start, piece.end, CHUNK):
            out.append(Piece(piece.key, a, min(piece.end, a + CHUNK)))
    return out


async def _fetch(pool: BlockingPool, objects: ObjectStore, piece: Piece) -> bytes:
    if piece.key is None:
        return piece.data
    key = piece.key
    return await pool.run(lambda: objects.get(key, piece.start, piece.end))
