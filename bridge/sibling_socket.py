"""The internal side of :mod:`bridge.siblings`: each worker serves the ``/v1/`` handlers on its own
unix socket (apart from that module, which the handlers import: no import cycle), and what a sibling
asks of a transferring or restarted call held here:

===================================  ===============================================================
``POST /internal/transfer-desk``     take the transfer desk's answer left here for a carrier call
                                     (``{"carrier", "call_sid"}``): 200 the markup, 404 none
``POST /internal/transfer-outcome``  the carrier's word on a transfer (:mod:`bridge.transfer_reach`),
                                     applied to the call waiting here: 200, 404 not here
``GET /internal/suspended``          ``?carrier=&call_sid=``: 200 when a call of that carrier call id
                                     waits here for a restarted stream, else 404
``GET /internal/outbound``           ``?call=``: 200 when this worker is placing that outbound call
                                     (its stream is relayed here), else 404
``POST /internal/dial-report``       a carrier's callback on an outbound call placed here (the
                                     report's fields and ``call``): 200 applied, 404 not here
``GET /{carrier}/stream``            a restarted stream another worker relays here (already
                                     authenticated there): :func:`bridge.http.phone.relayed_stream`
===================================  ===============================================================
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp import web

from bridge.app_keys import RESUME_SECRET, SETTINGS
from bridge.call.desk import DESK
from bridge.call.registry import CALLS
from bridge.dial.report_fields import report_from_fields
from bridge.dialing import DIALER
from bridge.http.all_events import add_routes as add_event_streams
from bridge.http.bot_api import add_routes as add_bot_api
from bridge.http.outbound import add_routes as add_outbound
from bridge.http.phone import relayed_stream
from bridge.http.transcripts import add_routes as add_transcript_api
from bridge.siblings import (
    FORWARD_TIMEOUT,
    INTERNAL_DESK,
    INTERNAL_DIAL_REPORT,
    INTERNAL_OUTBOUND,
    INTERNAL_OUTCOME,
    INTERNAL_SUSPENDED,
    SIBLINGS,
    Siblings,
    socket_path,
)
from bridge.transfer_reach import apply_outcome

MAX_INTERNAL_BODY = 4096  # bytes of an internal request's JSON (a carrier call id, a transfer's outcome)


async def _fields(request: web.Request) -> dict[str, str]:
    """An internal request's JSON object of strings (400 otherwise)."""
    if request.content_length is not None and request.content_length > MAX_INTERNAL_BODY:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_INTERNAL_BODY, actual_size=request.content_length)
    try:
        raw: Any = json.loads(await request.content.read(MAX_INTERNAL_BODY + 1))
    except ValueError:
        raw = None
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        raise web.HTTPBadRequest(text="a JSON object of strings\n")
    return raw


async def _take_desk(request: web.Request) -> web.Response:
    fields = await _fields(request)
    answer = await request.app[DESK].take(fields.get("carrier", ""), fields.get("call_sid", ""))
    return web.Response(text=answer, content_type="text/xml") if answer is not None else web.Response(status=404)


async def _transfer_outcome(request: web.Request) -> web.Response:
    applied = apply_outcome(request.app[CALLS], await _fields(request))
    return web.Response(status=200 if applied else 404)


async def _outbound(request: web.Request) -> web.Response:
    outbound = request.app[DIALER].find(request.query.get("call", ""))
    return web.Response(status=200 if outbound is not None and outbound.pending else 404)


async def _dial_report(request: web.Request) -> web.Response:
    fields = await _fields(request)
    report = report_from_fields(fields)
    applied = report is not None and request.app[DIALER].report(fields.get("call", ""), report)
    return web.Response(status=200 if applied else 404)


async def _suspended(request: web.Request) -> web.Response:
    key = (request.query.get("carrier", ""), request.query.get("call_sid", ""))
    return web.Response(status=200 if request.app[CALLS].suspended.waiting(key) else 404)


def internal_app(app: web.Application) -> web.Application:
    """The ``/v1/`` handlers over ``app``'s resources (the same objects under the same typed keys), without
    :data:`SIBLINGS` (never forwards). Call it once ``app`` has started: its resources are set up then."""
    internal = web.Application()
    add_bot_api(internal)  # no ?since=: the asking worker reads the shared file itself
    add_transcript_api(internal)
    internal.router.add_post(INTERNAL_DESK, _take_desk)
    internal.router.add_post(INTERNAL_OUTCOME, _transfer_outcome)
    internal.router.add_get(INTERNAL_SUSPENDED, _suspended)
    internal.router.add_get(INTERNAL_OUTBOUND, _outbound)
    internal.router.add_post(INTERNAL_DIAL_REPORT, _dial_report)
    add_outbound(internal)  # DELETE /v1/calls/{id} sent here by a sibling
    # a call's event stream, piped by a sibling; this worker's calls' events, merged by one (bridge.http.merged_events)
    add_event_streams(internal)
    internal.router.add_get("/{carrier}/stream", relayed_stream)
    for key in app:  # settings, the call registry, the stores, and what the handlers keep (first answers)
        if key is not SIBLINGS:
            internal[key] = app[key]
    return internal


def workers_secret(run_dir: Path, index: int) -> bytes:
    """The key of the calls' resume tokens and of the transfer links when ``BRIDGE_SECRET`` is unset: one
    per ``bridge serve``, the same in every worker (a restarted stream, a carrier's callback may reach
    any of them). The first worker to start makes it, in the run dir (0700, the file 0600); the others
    read it. Linking a file already written makes it whole or absent, never half written."""
    final, mine = run_dir / "secret", run_dir / f"secret.w{index}"
    fd = os.open(mine, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(secrets.token_bytes(32))
    try:
        os.link(mine, final)
    except FileExistsError:
        pass  # another worker's came first: every worker uses that one
    finally:
        mine.unlink(missing_ok=True)
    return final.read_bytes()


def install(app: web.Application, run_dir: Path, index: int, count: int, *, timeout: float = FORWARD_TIMEOUT) -> None:
    """Worker ``index`` of ``count``: ask siblings for calls not held here, and serve the internal app on
    this worker's socket, for the app's lifetime (a ``cleanup_ctx``, last in, first out). Call it
    before the app starts."""
    siblings = app[SIBLINGS] = Siblings(run_dir, index, count, timeout)
    if app[SETTINGS].server.secret is None:
        app[RESUME_SECRET] = workers_secret(run_dir, index)

    async def serve(app: web.Application) -> AsyncIterator[None]:
        runner = web.AppRunner(internal_app(app), access_log=None, handle_signals=False)
        await runner.setup()
        path = socket_path(run_dir, index)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # a socket left by a worker that was killed
        await web.UnixSite(runner, str(path)).start()
        os.chmod(path, 0o600)
        siblings.open()
        try:
            yield
        finally:
            await siblings.close()
            await runner.cleanup()

    app.cleanup_ctx.append(serve)
