"""The internal side of :mod:`bridge.siblings`: each worker serves the ``/v1/`` handlers on its own
unix socket (apart from that module, which the handlers import: no import cycle)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from bridge.http.bot_api import add_routes as add_bot_api
from bridge.http.transcripts import add_routes as add_transcript_api
from bridge.siblings import FORWARD_TIMEOUT, SIBLINGS, Siblings, socket_path


def internal_app(app: web.Application) -> web.Application:
    """The ``/v1/`` handlers over ``app``'s resources (the same objects under the same typed keys), without
    :data:`SIBLINGS` (never forwards). Call it once ``app`` has started: its resources are set up then."""
    internal = web.Application()
    add_bot_api(internal)  # no ?since=: the asking worker reads the shared file itself
    add_transcript_api(internal)
    for key in app:  # settings, the call registry, the stores, and what the handlers keep (first answers)
        if key is not SIBLINGS:
            internal[key] = app[key]
    return internal


def install(app: web.Application, run_dir: Path, index: int, count: int, *, timeout: float = FORWARD_TIMEOUT) -> None:
    """Worker ``index`` of ``count``: ask siblings for calls not held here, and serve the internal app on
    this worker's socket, for the app's lifetime (a ``cleanup_ctx``, last in, first out). Call it
    before the app starts."""
    siblings = app[SIBLINGS] = Siblings(run_dir, index, count, timeout)

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
