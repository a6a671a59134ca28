"""The aiohttp application: routes, shared resources, and graceful shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import structlog
from aiohttp import web

from bridge.app_keys import SETTINGS, STATE, BridgeState
from bridge.call import SuspendedCalls
from bridge.delivery import Delivery
from bridge.outbox import Outbox
from bridge.phone_socket import healthz, phone_stream, twilio_voice
from bridge.settings import Settings
from bridge.stt.session import Admission

log = structlog.get_logger("bridge.app")


def create_app(settings: Settings) -> web.Application:
    """Build the bridge application from validated settings."""
    app = web.Application(client_max_size=64 * 1024)
    app[SETTINGS] = settings
    app[STATE] = BridgeState(suspended=SuspendedCalls(), admission=Admission(settings.gladia.max_sessions))
    app.router.add_get("/healthz", healthz)
    app.router.add_post("/twilio/voice", twilio_voice)
    app.router.add_get("/{carrier}/stream", phone_stream)
    app.cleanup_ctx.append(_http_client)
    app.on_shutdown.append(drain_calls)
    return app


async def _http_client(app: web.Application) -> AsyncIterator[None]:
    """One client session (Gladia and webhooks) for the app's lifetime."""
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, ttl_dns_cache=300)
    async with aiohttp.ClientSession(connector=connector) as http:
        state = app[STATE]
        settings = app[SETTINGS]
        state.http = http
        state.outbox = Outbox.in_dir(settings.server.data_dir) if settings.webhook.url else None
        state.delivery = Delivery(http, settings.webhook, state.outbox)
        state.delivery.recover()
        try:
            yield
            # Anything still queued after the calls drained gets one last bounded chance; what is
            # left stays in the outbox for the next start.
            await state.delivery.aclose(timeout=settings.webhook.timeout)
        finally:
            if state.outbox is not None:
                state.outbox.close()


async def drain_calls(app: web.Application) -> None:
    """SIGTERM: refuse new calls, let running ones finish within ``server.shutdown_timeout``,
    then close the rest with 1001 (their STT sessions still finish and their events are sent).

    Must run *before* aiohttp's own shutdown: once that starts, aiohttp stops reading every
    connection, WebSockets included, so a running call would hear nothing more from the phone.
    ``bridge serve`` calls it from its signal handler; it is also an ``on_shutdown`` hook (quick
    when the calls are already gone) for embedders that use ``web.run_app``.
    """
    settings = app[SETTINGS]
    state = app[STATE]
    calls = state.calls
    if not state.draining:
        log.info("bridge.draining", active_calls=len(calls), timeout=settings.server.shutdown_timeout)
    state.draining = True
    if state.suspended is not None:
        state.suspended.closed = True  # a stream dropping from now on ends its call
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.server.shutdown_timeout
    while calls and loop.time() < deadline:
        await asyncio.sleep(0.05)
    if calls:
        log.warning("bridge.closing_calls", active_calls=len(calls))
        await asyncio.gather(*(ws.close(code=1001, message=b"bridge shutting down")
                               for ws in list(calls.values())), return_exceptions=True)
        finish_deadline = loop.time() + settings.gladia.finish_timeout + 1.0
        while calls and loop.time() < finish_deadline:
            await asyncio.sleep(0.05)
    if state.suspended is not None:
        await state.suspended.end_all()
    assert state.delivery is not None
    await state.delivery.aclose(timeout=max(1.0, settings.webhook.timeout * 2))
