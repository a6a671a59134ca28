"""``bridge serve``: the bridge as a process (one, or several workers sharing the port), its signals,
its start-up checks, and the embedded STT server when no Gladia is configured."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
from pathlib import Path
from typing import Any

import structlog

from bridge import __version__
from bridge.log import configure_logging
from bridge.loop import run_loop
from bridge.settings import Settings


def serve(settings: Settings) -> int:
    log = structlog.get_logger("bridge")
    if not settings.webhook.url:
        log.warning("bridge.no_webhook", detail="BOT_WEBHOOK_URL unset: events are written to the log")
    elif settings.webhook.secret is None:
        log.warning("bridge.unsigned_webhook", detail="BOT_WEBHOOK_SECRET unset: events are sent unsigned")
    if settings.twilio.auth_token is None:
        log.warning("bridge.no_twilio_auth", detail="TWILIO_AUTH_TOKEN unset: Twilio signatures are not checked")
    elif not settings.server.public_url:
        log.warning(
            "bridge.no_public_url",
            detail="BRIDGE_PUBLIC_URL unset: signatures are checked against the request's Host header",
        )
    log.info("bridge.starting", version=__version__, settings=settings.redacted())
    workers = settings.server.worker_count
    if workers > 1:
        return _serve_workers(settings, workers)
    run_loop(_run(settings))
    log.info("bridge.stopped")
    return 0


def _worker_main(settings: Settings, index: int, count: int, run_dir: Path) -> None:
    configure_logging(settings.log.level, settings.log.format)
    structlog.contextvars.bind_contextvars(worker=index)
    run_loop(_run(settings, (index, count), run_dir))


def _serve_workers(settings: Settings, count: int) -> int:
    """``--workers N``: N processes listening on the same port (the kernel spreads connections with
    SO_REUSEPORT). This process only supervises: it forwards SIGTERM/SIGINT and waits. It also makes
    the workers' run dir (0700), where each serves its internal socket (bridge.siblings)."""
    import multiprocessing as mp
    import shutil
    import tempfile

    log = structlog.get_logger("bridge")
    metrics_dir = settings.server.data_dir / f"prometheus-{os.getpid()}"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)  # inherited by the workers
    run_dir = Path(tempfile.mkdtemp(prefix="bridge-workers-"))  # short: a unix socket path has ~100 bytes
    ctx = mp.get_context("spawn")
    procs = [
        ctx.Process(target=_worker_main, args=(settings, i, count, run_dir), name=f"bridge-worker-{i}")
        for i in range(count)
    ]
    for p in procs:
        p.start()
    log.info("bridge.workers_started", workers=count, pids=[p.pid for p in procs])
    stopping = False

    def forward(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True
        for p in procs:
            if p.is_alive() and p.pid is not None:
                os.kill(p.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    code = 0
    while any(p.is_alive() for p in procs):
        for p in procs:
            p.join(timeout=0.5)
            if not p.is_alive() and p.exitcode not in (0, None) and not stopping:
                log.error("bridge.worker_died", pid=p.pid, exitcode=p.exitcode)
                code = 1
                forward(signal.SIGTERM, None)
    shutil.rmtree(metrics_dir, ignore_errors=True)
    shutil.rmtree(run_dir, ignore_errors=True)
    log.info("bridge.stopped")
    return code


def _settle_gc() -> None:
    """Everything alive once the server listens (modules, settings, the embedded STT model's objects)
    lives as long as the process: move it out of the collector's sight, so full collections during
    calls scan only the calls' own objects (they took 20-33 ms with 200 calls, stalling every call's
    audio meanwhile). Young collections run less often: the per-frame objects die young anyway."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)


async def _run(settings: Settings, worker: tuple[int, int] | None = None, run_dir: Path | None = None) -> None:
    """Serve until SIGTERM/SIGINT, then drain calls before aiohttp's shutdown (see drain_calls). A worker
    (``worker`` and ``run_dir`` given) also answers for its siblings' calls (bridge.siblings)."""
    from aiohttp import web

    from bridge.app import BridgeRunner, create_app, drain_calls, raise_descriptor_limit

    embedded = None
    log = structlog.get_logger("bridge")
    if settings.uses_embedded_stt:
        # No Gladia account configured: run the local Gladia-compatible server in this process.
        from bridge.local_stt.server import LocalSttServer, ServerOptions
        from bridge.loop import loopback_socket

        model = settings.local_stt.model
        embedded = web.AppRunner(LocalSttServer(ServerOptions(model=model)).app, handle_signals=False, access_log=None)
        await embedded.setup()
        sock = loopback_socket()
        await web.SockSite(embedded, sock).start()
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        settings = settings.with_embedded_engine(url)
        log.warning(
            "bridge.embedded_stt",
            api_url=url,
            model=model,
            detail=f"GLADIA_API_KEY and GLADIA_API_URL unset: using the local STT server (Whisper {model})",
        )
    app = create_app(settings, worker)
    if worker is not None and run_dir is not None:
        from bridge.sibling_socket import install

        install(app, run_dir, *worker)
    runner = BridgeRunner(
        app,
        settings,
        max_connections=raise_descriptor_limit(settings.server.max_connections),
        shutdown_timeout=settings.gladia.finish_timeout + 5,
    )
    await runner.setup()
    site = web.TCPSite(runner, settings.server.host, settings.server.port, reuse_port=worker is not None)
    await site.start()
    _settle_gc()
    structlog.get_logger("bridge").info("bridge.listening", host=settings.server.host, port=settings.server.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
        structlog.get_logger("bridge").info("bridge.stopping")
        # The listener stays open while the calls drain (runner.cleanup, which closes it, comes
        # after): /readyz and /healthz keep answering, with 503 "draining", and new calls get 503.
        await drain_calls(app)
    finally:
        await runner.cleanup()
        if embedded is not None:
            await embedded.cleanup()
