"""Call recordings over HTTP, and their place in the application (aiohttp; thin shell over
:mod:`bridge.recording.service`).

``GET /v1/calls/{call_id}/recording``   the call's recording (``audio/wav`` or ``audio/ogg``), with
                                        ``Range`` and ``If-Range`` (206 / 416: a browser's player seeks),
                                        ``Authorization: Bearer <BRIDGE_API_TOKEN>`` as the rest of ``/v1/``;
                                        404 when recordings are off or the call has none, 409 while its
                                        recording is still being written (the call runs on this process).

:func:`install_recordings` adds the route and the ``cleanup_ctx`` that owns the service: set up before the transcript
store (which hands it the calls its retention purges) and so closed after every other resource, once the
calls have ended. Recordings off (``recording.enabled`` false and no number on): no service, no thread.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from bridge.app_keys import SETTINGS, WORKER
from bridge.http.bot_api import authorized
from bridge.metrics import METRICS
from bridge.recording.service import CONTENT_TYPE, RECORDINGS, RecordingService
from bridge.recording.writer import DEGRADED

__all__ = ["RECORDINGS", "get_recording", "install_recordings", "recordings"]

log = structlog.get_logger("bridge.recording")

STOP_TIMEOUT = 10.0  # seconds the writer gets to write what is queued at shutdown


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def get_recording(request: web.Request) -> web.StreamResponse:
    refused = authorized(request)
    if refused is not None:
        return refused
    call_id = request.match_info["call_id"]
    service = request.app[RECORDINGS]
    if service is None:
        return _error(404, "recordings are off (BRIDGE_RECORDINGS=on to keep them)")
    if service.remote is not None:  # in object storage: any instance serves any call's
        from bridge.http.recording_objects import serve_from_objects

        return await serve_from_objects(request, service, call_id)
    if call_id in service.open_calls:
        return _error(409, f"the recording of call {call_id[:64]} is still being written")
    path = await asyncio.to_thread(service.path_of, call_id)
    if path is None:
        return _error(404, f"no recording for call {call_id[:64]}")
    fmt = "opus" if path.suffix == ".opus" else "wav"
    headers = {"Content-Type": CONTENT_TYPE[fmt], "Cache-Control": "private, no-store"}
    return web.FileResponse(path, headers=headers)


async def recordings(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: the recording service (:data:`RECORDINGS`, None when off), its metrics once a second."""
    settings = app[SETTINGS]
    config = settings.recording
    if not (config.enabled or any(config.numbers.values())):
        app[RECORDINGS] = None
        yield
        return
    service = RecordingService(config, settings.server.data_dir / "recordings", asyncio.get_running_loop())
    worker = app[WORKER]
    # Worker 0 (or the only process) repairs what a killed bridge left, at start-up, before any call.
    await asyncio.to_thread(service.start, worker is None or worker[0] == 0)
    app[RECORDINGS] = service
    log.info("recording.on", format=config.format, directory=str(service.directory), numbers=len(config.numbers))
    metrics = app[METRICS]

    async def report() -> None:
        while True:
            s = service.status()
            metrics.update_recordings(s.state == DEGRADED, s.open_recordings, s.dropped_bytes)
            await asyncio.sleep(1.0)

    task = asyncio.create_task(report(), name="recording-metrics")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await asyncio.to_thread(service.stop, STOP_TIMEOUT)


def install_recordings(app: web.Application) -> None:
    """The route and the service's ``cleanup_ctx`` (call it before the transcript store's is appended)."""
    app.router.add_get("/v1/calls/{call_id}/recording", get_recording)
    app.cleanup_ctx.append(recordings)
