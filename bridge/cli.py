"""The ``bridge`` command: ``bridge serve`` runs the bridge."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog

from bridge import __version__
from bridge.errors import ConfigError
from bridge.log import configure_logging
from bridge.settings import Settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bridge", description="Telephony media streams -> Gladia live v2 -> bot webhook")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the bridge (flags override the environment)")
    serve.add_argument("--config", type=Path, help="TOML file with defaults (default: config/bridge.toml)")
    serve.add_argument("--host", dest="server.host")
    serve.add_argument("--port", dest="server.port", type=int)
    serve.add_argument("--public-url", dest="server.public_url")
    serve.add_argument("--data-dir", dest="server.data_dir")
    serve.add_argument("--gladia-api-url", dest="gladia.api_url")
    serve.add_argument("--webhook-url", dest="webhook.url")
    serve.add_argument("--log-level", dest="log.level")
    serve.add_argument("--log-format", dest="log.format")
    return parser


def load_settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {k: v for k, v in vars(args).items() if "." in k and v is not None}
    return Settings.load(overrides=overrides, config_path=args.config)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(args)
    except ConfigError as exc:
        print(f"bridge: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log.level, settings.log.format)
    if args.command == "serve":
        return serve(settings)
    return 2


def serve(settings: Settings) -> int:
    log = structlog.get_logger("bridge")
    if settings.gladia.api_key is None and not settings.gladia_url_explicit:
        print("bridge: GLADIA_API_KEY is not set: set it, or point GLADIA_API_URL at a "
              "Gladia-compatible live server", file=sys.stderr)
        return 2
    if not settings.webhook.url:
        log.warning("bridge.no_webhook", detail="BOT_WEBHOOK_URL unset: events are written to the log")
    elif settings.webhook.secret is None:
        log.warning("bridge.unsigned_webhook", detail="BOT_WEBHOOK_SECRET unset: events are sent unsigned")
    if settings.twilio.auth_token is None:
        log.warning("bridge.no_twilio_auth", detail="TWILIO_AUTH_TOKEN unset: Twilio signatures are not checked")
    elif not settings.server.public_url:
        log.warning("bridge.no_public_url",
                    detail="BRIDGE_PUBLIC_URL unset: signatures are checked against the request's Host header")
    log.info("bridge.starting", version=__version__, settings=settings.redacted())
    asyncio.run(_run(settings))
    log.info("bridge.stopped")
    return 0


async def _run(settings: Settings) -> None:
    """Serve until SIGTERM/SIGINT, then drain calls before aiohttp's shutdown (see drain_calls)."""
    from aiohttp import web

    from bridge.app import create_app, drain_calls

    app = create_app(settings)
    runner = web.AppRunner(app, handle_signals=False, access_log=None,
                           shutdown_timeout=settings.gladia.finish_timeout + 5)
    await runner.setup()
    site = web.TCPSite(runner, settings.server.host, settings.server.port)
    await site.start()
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


if __name__ == "__main__":
    sys.exit(main())
