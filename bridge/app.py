"""The aiohttp application: its routes, its shared resources (one ``cleanup_ctx`` each, under the typed
keys of :mod:`bridge.app_keys`), its server bounds, and graceful shutdown (:func:`drain_calls`)."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import secrets
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import structlog
from aiohttp import web

from bridge.app_keys import CLOCK, FLEET, HTTP_CLIENT, RESUME_SECRET, SETTINGS, WORKER
from bridge.call.desk import DESK, LocalDesk
from bridge.call.registry import CALLS, CallRegistry
from bridge.call.services import CALL_SERVICES, CallServices
from bridge.clock import SYSTEM_CLOCK, Clock
from bridge.delivery import DELIVERY, Delivery, EventStore
from bridge.delivery.outbox import OUTBOX, Outbox, OutboxWriter
from bridge.dialing import DIALER, Dialer
from bridge.errors import ConfigError
from bridge.http import all_events
from bridge.http.bot_api import add_routes as add_bot_api
from bridge.http.call_control import add_routes as add_call_control
from bridge.http.call_events import EVENT_TAP
from bridge.http.health import add_routes as add_health_routes
from bridge.http.outbound import add_routes as add_outbound
from bridge.http.phone import phone_stream
from bridge.http.recordings import RECORDINGS, install_recordings
from bridge.http.transcripts import TRANSCRIPTS, recent_calls, transcript_store
from bridge.http.transcripts import add_routes as add_transcript_api
from bridge.http.twiml import twilio_voice
from bridge.metrics import METRICS, Metrics
from bridge.reply.bot_resend import resend_left_over
from bridge.reply.tts import SPEAKER, OpenAiSpeech, PiperSpeech, Speaker
from bridge.settings import Settings
from bridge.stt.admission import ADMISSION, Admission
from bridge.transfer_reach import apply_outcome

log = structlog.get_logger("bridge.app")


def create_app(
    settings: Settings, worker: tuple[int, int] | None = None, *, clock: Clock = SYSTEM_CLOCK
) -> web.Application:
    """Build the bridge application from validated settings.

    Args:
        worker: ``(index, count)`` when this is one of several worker processes sharing the port;
            each keeps its own outbox file, and worker 0 takes over the files of workers that no
            longer exist.
        clock: wall time and sleep for webhook ages and retries (tests pass a virtual one).
    """
    if settings.gladia.api_url is None:
        raise ConfigError(
            "gladia.api_url: no Gladia server (set GLADIA_API_URL or GLADIA_API_KEY; `bridge serve` "
            "runs the local one when neither is set)"
        )
    app = web.Application(client_max_size=64 * 1024)
    secret = settings.server.secret
    app[SETTINGS], app[CLOCK], app[WORKER] = settings, clock, worker
    app[RESUME_SECRET] = secret.get_secret_value().encode() if secret else secrets.token_bytes(32)
    app[METRICS] = Metrics()
    app[ADMISSION] = Admission(settings.gladia.max_sessions)
    app[CALLS] = CallRegistry(settings.server.max_suspended_calls)
    add_bot_api(app, recent_calls=recent_calls)
    add_transcript_api(app)
    add_health_routes(app)
    app.router.add_post("/twilio/voice", twilio_voice)
    add_call_control(app)
    add_outbound(app)
    all_events.add_routes(app)  # GET /v1/calls/{id}/events and /v1/events, the tap every call publishes to
    app[DESK] = LocalDesk()
    app.router.add_get("/{carrier}/stream", phone_stream)
    # One cleanup_ctx per resource, each after what it uses: set up in this order, closed in the reverse.
    install_recordings(app)  # GET /v1/calls/{id}/recording; the writer, closed after everything else
    app.cleanup_ctx.append(transcript_store)  # first in, last out: open before any call, closed after all
    app.cleanup_ctx.append(_fleet)  # before the HTTP client (its outbox is the fleet's), closed after it
    app.cleanup_ctx.append(_http_client)
    app.cleanup_ctx.append(_speaker_engine)
    app.cleanup_ctx.append(_sqlite_outbox)
    app.cleanup_ctx.append(_delivery)
    app.cleanup_ctx.append(_call_services)
    app.cleanup_ctx.append(_metrics_updates)
    app.on_shutdown.append(drain_calls)
    return app


class _CappedServer(web.Server):
    """aiohttp's connection manager, with a cap. Over ``limit`` connections, the oldest *idle* one (no
    request in progress: an idle keep-alive, or a client still sending its headers) is closed to make room;
    only when none is idle is the new one closed: a flood of idle sockets never keeps a call or ``/healthz``
    out. One log line per 10 s while the cap is being hit."""

    limit = 10_000
    evicted = 0
    _logged_at = -1e9

    def connection_made(self, handler: web.RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        connections = self.connections
        if len(connections) <= self.limit:
            return
        # RequestHandler._current_request is set while a request (a call's WebSocket) is handled.
        victim = next(
            (h for h in connections if h is not handler and getattr(h, "_current_request", 1) is None), handler
        )
        victim.force_close()
        self.evicted += 1
        now = asyncio.get_running_loop().time()
        if now - self._logged_at >= 10.0:
            self._logged_at = now
            log.warning(
                "server.connection_cap",
                max_connections=self.limit,
                closed_so_far=self.evicted,
                closed="an idle connection" if victim is not handler else "the new connection",
            )


class BridgeRunner(web.AppRunner):
    """The app's runner with the bridge's bounds on what an outsider can hold: keep-alive and header reads
    end after ``server.keepalive_timeout`` (aiohttp's: an hour), at most ``max_connections`` connections."""

    def __init__(
        self, app: web.Application, settings: Settings, max_connections: int | None = None, **kwargs: Any
    ) -> None:
        kwargs.setdefault("access_log", None)
        kwargs.setdefault("handle_signals", False)
        super().__init__(app, keepalive_timeout=settings.server.keepalive_timeout, **kwargs)
        self.max_connections = max_connections or settings.server.max_connections

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _CappedServer  # same object, with the capped connection_made
        server.limit = self.max_connections  # type: ignore[attr-defined]
        return server


def raise_descriptor_limit(wanted_connections: int) -> int:
    """Raise this process's soft limit on open files to the hard limit; return how many connections
    fit under it (leaving room for Gladia sockets, webhooks and files: a call needs two descriptors)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    usable = max(16, (soft - 256) // 2) if soft != resource.RLIM_INFINITY else wanted_connections
    if usable < wanted_connections:
        log.warning(
            "server.descriptor_limit",
            open_files=soft,
            max_connections=usable,
            detail="server.max_connections lowered to fit the open-file limit (ulimit -n); a call needs "
            "two descriptors (the phone and Gladia)",
        )
    return min(wanted_connections, usable)


async def _http_client(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: one client session (Gladia, webhooks, TTS) for the app's lifetime."""
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, ttl_dns_cache=300)
    async with aiohttp.ClientSession(connector=connector) as http:
        app[HTTP_CLIENT] = http
        yield


async def _speaker_engine(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: speech for `say` (:func:`_speaker`), its engine closed at the end."""
    app[SPEAKER] = speaker = _speaker(app[SETTINGS], app[HTTP_CLIENT])
    try:
        yield
    finally:
        if speaker is not None:
            await speaker.engine.aclose()


async def _sqlite_outbox(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: the SQLite outbox, when this process keeps the bot's events on disk; started by
    :func:`_delivery` once what a previous process left is recovered, closed after the delivery."""
    settings, fleet = app[SETTINGS], app[FLEET]
    # Fleet mode with a webhook: the outbox is each call's Redis stream (a lost instance's calls are taken
    # over by the others); no SQLite outbox. Otherwise it keeps events for a bot: the webhook's, or the bot
    # socket's (in fleet mode a socket-only bridge keeps them in memory only: each BotSocket's window).
    in_redis = fleet is not None and bool(settings.webhook.url)
    durable = not in_redis and bool(settings.webhook.url or (settings.bot_ws.url and fleet is None))
    app[OUTBOX] = outbox = _outbox_writer(settings, app[WORKER]) if durable else None
    try:
        yield
    finally:
        if outbox is not None:
            await asyncio.to_thread(outbox.close, settings.webhook.timeout)


async def _delivery(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: the bot's events (webhook and/or bot socket) over the outbox: what a previous process
    left is recovered first; at the end, what is still queued gets one last bounded chance."""
    settings, clock, http = app[SETTINGS], app[CLOCK], app[HTTP_CLIENT]
    outbox, fleet = app[OUTBOX], app[FLEET]
    fleet_outbox = fleet.outbox if fleet is not None else None  # fleet mode with a webhook: in Redis
    store: EventStore | None = outbox if fleet_outbox is None else fleet_outbox
    app[DELIVERY] = delivery = Delivery(
        settings.webhook,
        store,
        metrics=app[METRICS],
        clock=clock.time,
        sleep=clock.sleep,
        gate=fleet.holds if fleet is not None else None,
        bot_socket=bool(settings.bot_ws.url),
    )
    resending: asyncio.Task[int] | None = None
    if delivery.context.socket_acks and outbox is not None:
        # socket-only: what a previous process left goes to the bot's socket (in the background)
        resending = asyncio.create_task(
            resend_left_over(
                settings.bot_ws,
                http,
                delivery.left_over(),
                outbox,
                max_age=settings.webhook.max_age,
                clock=clock.time,
            ),
            name="bot-socket-recovery",
        )
    else:
        delivery.recover()
    if outbox is not None:
        outbox.start()
    if fleet_outbox is not None:
        fleet_outbox.delivery = delivery
        fleet_outbox.start()
    try:
        yield
        # What is still queued once the calls drained gets one bounded chance; the rest stays in the outbox
        await delivery.aclose(timeout=settings.webhook.timeout)
        if fleet_outbox is not None:
            await fleet_outbox.aclose(timeout=settings.webhook.timeout)
    finally:
        if resending is not None and not resending.done():  # what it did not finish stays pending
            resending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await resending
        if delivery.context.client is not None:  # what was posted after the drain (the fleet's take-overs)
            await delivery.context.client.aclose()


async def _call_services(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: what every call uses, bundled once (:class:`~bridge.call.services.CallServices`)."""
    app[CALL_SERVICES] = CallServices(
        settings=app[SETTINGS],
        http=app[HTTP_CLIENT],
        delivery=app[DELIVERY],
        resume_secret=app[RESUME_SECRET],
        admission=app[ADMISSION],
        speaker=app[SPEAKER],
        transcripts=app[TRANSCRIPTS],
        desk=app[DESK],
        tap=(tap := app[EVENT_TAP]),
        stopping=asyncio.Event(),
        recordings=app[RECORDINGS],
    )
    calls, fleet = app[CALLS], app[FLEET]
    app[DIALER] = dialer = Dialer(app[CALL_SERVICES], call_ended=calls.call_ended, publish=tap.publish, fleet=fleet)
    if fleet is not None:  # a transfer's outcome, or an outbound call's word, on its call's owner
        fleet.transfers.apply = lambda word: dialer.apply_word(word) or apply_outcome(calls, word)
    yield
    await dialer.aclose()  # calls still ringing are cancelled (before the delivery closes: their last events)


async def _fleet(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: in fleet mode (``fleet.redis_url``), join the fleet (heartbeat, leases, the owner's
    action reader) for the app's lifetime; each worker process is its own instance. Else no fleet."""
    settings = app[SETTINGS]
    if settings.fleet.redis_url is None:
        app[FLEET] = None
        yield
        return
    from bridge.fleet.fleet import Fleet, default_instance_id

    worker, configured = app[WORKER], settings.fleet.instance_id
    index = worker[0] if worker is not None else None
    instance_id = (
        (configured + (f"-w{index}" if index is not None else "")) if configured else default_instance_id(index)
    )
    # With a webhook, the calls' undelivered events are kept in Redis (the fleet's outbox).
    outbox_max_queued = settings.webhook.max_pending_events * 10 if settings.webhook.url else None
    app[FLEET] = fleet = Fleet(settings.fleet, instance_id, outbox_max_queued=outbox_max_queued)
    app[DESK] = fleet.desk  # a transfer's <Dial> in Redis: the carrier's next fetch may reach any instance
    if (store := app[TRANSCRIPTS]) is not None:  # a call taken from a dead instance: ended on record here
        fleet.on_lost = lambda call_id: store.call_ended(call_id, app[CLOCK].time(), "instance_lost")
    await fleet.start()
    try:
        yield
    finally:
        await fleet.close()


def _speaker(settings: Settings, http: aiohttp.ClientSession) -> Speaker | None:
    """Speech for `say`: the configured TTS endpoint, else the embedded Piper voice (local extra)."""
    tts = settings.tts
    cache = tts.cache_mb * 1024 * 1024
    if tts.api_url:
        key = tts.api_key.get_secret_value() if tts.api_key else None
        return Speaker(
            OpenAiSpeech(
                http,
                tts.api_url,
                api_key=key,
                voice=tts.voice,
                model=tts.model,
                sample_rate=tts.sample_rate,
                timeout=tts.timeout,
            ),
            cache_bytes=cache,
        )
    if PiperSpeech.available():
        return Speaker(PiperSpeech(), cache_bytes=cache)
    log.info(
        "tts.unavailable",
        detail="no TTS_API_URL and no embedded voice (the local extra): `say` actions "
        "fail with action.failed; `play` and `audio` work",
    )
    return None


def _outbox_writer(settings: Settings, worker: tuple[int, int] | None) -> OutboxWriter:
    loop = asyncio.get_running_loop()

    def state_changed(reason: str | None) -> None:  # called from the writer thread
        if reason is None:
            loop.call_soon_threadsafe(lambda: log.info("outbox.recovered", detail="outbox writes work again"))
        else:
            loop.call_soon_threadsafe(
                lambda: log.error(
                    "outbox.degraded",
                    reason=reason,
                    detail="outbox writes fail: events are delivered from memory and kept queued until the disk "
                    "takes them",
                )
            )

    return OutboxWriter(
        _open_outbox(settings, worker),
        on_state_change=state_changed,
        commit_delay=settings.webhook.outbox_commit_ms / 1000,
    )


def _open_outbox(settings: Settings, worker: tuple[int, int] | None) -> Outbox:
    data_dir = settings.server.data_dir
    index, count = worker if worker is not None else (None, 1)
    outbox = Outbox.in_dir(data_dir, index)
    if index in (None, 0):
        # Files no running process owns: a single-process file under workers, worker files under a
        # single process, or workers beyond the current count.
        orphans = [
            p for p in data_dir.glob("outbox-w*.sqlite3") if index is None or int(p.stem.split("-w")[1]) >= count
        ]
        if index is not None:
            orphans.append(data_dir / "outbox.sqlite3")
        for path in orphans:
            if path.exists() and path != outbox.path:
                moved = outbox.merge_from(path)
                log.info("outbox.merged", path=str(path), events=moved)
    return outbox


METRICS_SLICES = 10  # the live calls are read in this many parts over each second


async def _metrics_updates(app: web.Application) -> AsyncIterator[None]:
    """Once a second: live calls' counters into Prometheus, active calls, outbox depth. The calls are read a
    tenth at a time, every 100 ms: reading them all at once stalled every call's audio for several ms each
    second with a few hundred calls (forward latency's p99). How late each wake-up comes is the loop's lag."""
    registry, metrics, outbox = app[CALLS], app[METRICS], app[OUTBOX]
    live = registry.live

    async def loop() -> None:
        clock = asyncio.get_running_loop().time
        tick = 1.0 / METRICS_SLICES
        while True:
            calls = list(live.values())
            step = -(-len(calls) // METRICS_SLICES)  # ceiling: every call within the second
            for k in range(METRICS_SLICES):
                due = clock() + tick
                await asyncio.sleep(tick)
                metrics.loop_lag.observe(max(0.0, clock() - due))
                for call in calls[k * step : (k + 1) * step]:
                    if live.get(call.id) is call:  # an ended call had its last update
                        metrics.update(call.id, *call.meter())
            metrics.flush()
            metrics.active_calls.set(len(registry.streams))
            metrics.suspended_calls.set(len(registry.suspended))
            if outbox is not None:
                metrics.update_outbox(outbox)

    task = asyncio.create_task(loop(), name="metrics")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def drain_calls(app: web.Application) -> None:
    """SIGTERM: refuse new calls, let running ones finish within ``server.shutdown_timeout``,
    then close the rest with 1001 (their STT sessions still finish and their events are sent).

    Must run *before* aiohttp's own shutdown: once that starts, aiohttp stops reading every
    connection, WebSockets included, so a running call would hear nothing more from the phone.
    ``bridge serve`` calls it from its signal handler; it is also an ``on_shutdown`` hook (quick
    when the calls are already gone) for embedders that use ``web.run_app``.
    """
    settings, registry, fleet = app[SETTINGS], app[CALLS], app[FLEET]
    calls, suspended = registry.streams, registry.suspended
    if not registry.draining:
        log.info("bridge.draining", active_calls=len(calls), timeout=settings.server.shutdown_timeout)
    registry.draining = True
    if (services := app.get(CALL_SERVICES)) is not None and services.stopping is not None:
        services.stopping.set()  # calls waiting for Gladia's post-call analysis: transcript.completed now
    if fleet is not None:
        # Fleet mode: suspended calls keep waiting through the drain, so a carrier that restarts a stream
        # elsewhere gets the call handed over (one Gladia socket at a time); no orphans are taken over.
        fleet.draining = True
    else:
        suspended.closed = True  # a stream dropping from now on ends its call
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.server.shutdown_timeout

    def busy() -> bool:
        return bool(calls) or (fleet is not None and len(suspended) > 0)

    while busy() and loop.time() < deadline:
        await asyncio.sleep(0.05)
    suspended.closed = True
    if calls:
        log.warning("bridge.closing_calls", active_calls=len(calls))
        await asyncio.gather(
            *(ws.close(code=1001, message=b"bridge shutting down") for ws in list(calls.values())),
            return_exceptions=True,
        )
        finish_deadline = loop.time() + settings.gladia.finish_timeout + 1.0
        while calls and loop.time() < finish_deadline:
            await asyncio.sleep(0.05)
    await suspended.end_all()
    await app[DELIVERY].aclose(timeout=max(1.0, settings.webhook.timeout * 2))
