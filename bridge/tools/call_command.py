"""``bridge call``: a WAV file played into a running bridge as a carrier's call (the command's checks and
output; the call itself: :mod:`bridge.tools.player`, and for Twilio, TwiML and transfers included,
:mod:`bridge.tools.follow`)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any

from bridge.adapters import CARRIERS


def call_command(args: argparse.Namespace) -> int:
    """``bridge call`` with the arguments :mod:`bridge.cli` read; its exit status."""
    from bridge.errors import WavError
    from bridge.tools.dialects import two_tracks_unsupported
    from bridge.tools.player import play_call, print_reply, print_report, read_two_tracks, reply_wav
    from bridge.wav import read_wav, to_ulaw_8k

    both = args.tracks == "both"
    carrier = CARRIERS[args.carrier]  # one of them: argparse's choices
    if both and not carrier.capabilities.two_tracks:
        print(f"bridge call: --tracks both: {two_tracks_unsupported(args.carrier)}", file=sys.stderr)
        return 2
    if both and args.save_reply is not None:
        print("bridge call: --save-reply plays back into a one-track stream; not with --tracks both", file=sys.stderr)
        return 2
    outbound: bytes | None = None
    try:
        data = args.audio.read_bytes()
        if both:
            ulaw, outbound = read_two_tracks(data)
        else:
            ulaw = to_ulaw_8k(read_wav(data))
    except OSError as exc:
        print(f"bridge call: {args.audio}: {exc}", file=sys.stderr)
        return 2
    except WavError as exc:
        print(f"bridge call: {args.audio}: {'--tracks both: ' if both else ''}{exc}", file=sys.stderr)
        return 2
    params = {"From": "+15550100", "To": "+15550199"}
    for item in args.param:
        name, sep, value = item.partition("=")
        if not sep:
            print(f"bridge call: --param needs NAME=VALUE, got {item!r}", file=sys.stderr)
            return 2
        params[name] = value
    keys = _keys(args)
    if isinstance(keys, str):
        print(f"bridge call: --dtmf: {keys}", file=sys.stderr)
        return 2
    import websockets

    url = args.url or f"ws://127.0.0.1:8080/{args.carrier}/stream"
    if url.startswith(("http://", "https://")):
        url = "ws" + url[4:]  # http -> ws, https -> wss
    if args.save_reply is not None and (not carrier.frames.twilio_like or args.rate):
        print(
            "bridge call: --save-reply listens like a Twilio phone: --carrier twilio or signalwire, mu-law",
            file=sys.stderr,
        )
        return 2
    linger = args.linger if args.linger is not None else (10.0 if args.save_reply else 0.0)
    if args.carrier == "twilio" and not both:
        from bridge.tools.follow import http_base

        base = (args.http_url or http_base(url)).rstrip("/")
        return _twilio_call(args, url if not args.twiml else None, base, ulaw, params, keys, linger)
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
                linger=linger,
                outbound=outbound,
                keys=keys,
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


def _keys(args: argparse.Namespace) -> list[Any] | str:
    """The ``--dtmf`` key presses, or why they cannot be pressed (a bad schedule, a carrier with no DTMF)."""
    if args.dtmf is None:
        return []
    from bridge.tools.dialects import keys_unsupported
    from bridge.tools.keypad import parse_keys

    try:
        keys: list[Any] = parse_keys(args.dtmf)
    except ValueError as exc:
        return str(exc)
    return keys_unsupported(args.carrier) or keys


def _twilio_call(
    args: argparse.Namespace,
    stream_url: str | None,
    base: str,
    ulaw: bytes,
    params: dict[str, str],
    keys: list[Any],
    linger: float,
) -> int:
    """A Twilio call as Twilio runs it (:mod:`bridge.tools.follow`): TwiML, transfers, the way back."""
    import aiohttp
    import websockets

    from bridge.tools.follow import TwilioCall
    from bridge.tools.player import reply_wav

    async def run() -> tuple[int, TwilioCall]:
        async with aiohttp.ClientSession() as http:
            call = TwilioCall(
                http,
                base,
                ulaw,
                sys.stdout,
                progress=sys.stderr,
                auth_token=os.environ.get("TWILIO_AUTH_TOKEN") or None,
                parameters=params,
                keys=keys,
                dial_status=args.dial_status,
                announce_out=args.announce_out,
                play={"realtime": args.realtime, "listen_reply": True, "linger": linger},
            )
            return await call.run(stream_url), call

    try:
        code, call = asyncio.run(run())
    except (OSError, websockets.InvalidURI, websockets.InvalidHandshake, ValueError) as exc:
        print(f"bridge call: cannot stream: {exc}", file=sys.stderr)
        return 1
    ears = [r.ear for r in call.reports if r.ear is not None]
    if args.save_reply is not None and ears:
        args.save_reply.write_bytes(reply_wav(ears[0]))
        print(f"saved what the caller heard (first stream) to {args.save_reply}")
    return code
