"""``bridge call --answer``: the callee of an outbound call, behind a loopback fake of the carrier's call API.

:class:`FakeCarrierApi` serves the part of a carrier's REST API that places a call (Twilio's
``POST /2010-04-01/Accounts/{sid}/Calls.json``, Telnyx's ``POST /v2/calls``) on 127.0.0.1. On a create
request it does what the carrier does: answers with the carrier's call resource, reports the call's progress
to the status URL the request gave (Twilio's signed status callbacks, Telnyx's webhooks), and when the
callee answers connects the media stream the request named (Twilio: the TwiML's ``<Connect><Stream>`` with
its ``<Parameter>``s; Telnyx: ``stream_url``) as the carrier would, playing the callee's greeting
(:mod:`bridge.tools.greetings`) in real time, recording what the bridge plays back (marks echoed when the
audio before them has played, clears honoured), and posting the carrier's answering-machine verdict. The
callee's behaviour, the tests' fault switches, is an :class:`Answering`: a person, a voicemail greeting
with a beep, busy, no answer, a failed call, or the API refusing the request.

The bridge under test points its carrier API URL (``control.twilio_api_url`` / ``control.telnyx_api_url``)
at :meth:`FakeCarrierApi.start`'s URL; ``bridge call --answer human`` serves the same fake from the
command line (:func:`run_callee`).

Sources (call-control.md): Twilio §1.B (twilio/twilio-python@306691e ``rest/api/v2010/account/call``: the
create and update forms; AMD: https://www.twilio.com/docs/voice/answering-machine-detection), Telnyx §3.A
(team-telnyx/telnyx-python@6d68c8c ``types/call_dial_params.py`` and the webhook types ``call_initiated``,
``call_answered``, ``call_hangup``, ``call_machine_detection_ended``, ``call_machine_greeting_ended``).
What the sources leave open is marked UNVERIFIED where the fake decides it.

The parts: :mod:`bridge.tools.callee_calls` (the records and the detectors' timing, pure functions),
:mod:`bridge.tools.callee_line` (what every carrier's fake shares: calls, callbacks, the media stream),
:mod:`bridge.tools.callee_twilio` and :mod:`bridge.tools.callee_telnyx` (each carrier's API and call flow).

Not modelled: the ring timeout of the create (Twilio ``Timeout``, Telnyx ``timeout_secs``: ``no-answer`` comes
after ``ring_ms``), Telnyx's Ed25519 webhook signatures (the fake has no key), retries of a refused callback,
``<Dial>`` and call updates carrying new TwiML (logged; the call ends or goes on unchanged).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable
from typing import Literal, TextIO

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bridge.tools.callee_calls import (
    ANSWERS,
    Answering,
    CalleeCall,
    Greeter,
    default_greeter,
    telnyx_detection,
    twilio_answered_by,
    without_query,
)
from bridge.tools.callee_line import Line
from bridge.tools.callee_telnyx import TelnyxLine
from bridge.tools.callee_twilio import TwilioLine

CARRIERS = ("twilio", "telnyx")


class FakeCarrierApi:
    """A loopback fake of one carrier's call-placing API, whose calls the fake callee answers.

    ``start`` serves it; every call placed is in :attr:`calls` (its record fills in as the call goes);
    ``aclose`` ends the calls still going and stops serving. ``on_done`` is called with each call once it is
    over (``bridge call --answer`` prints it). ``answering`` may be changed between calls (a test's switch).
    """

    def __init__(
        self,
        carrier: Literal["twilio", "telnyx"],
        answering: Answering,
        *,
        auth_token: str = "",
        account_sid: str = "AC" + "0" * 32,
        api_key: str = "",
        on_done: Callable[[CalleeCall], None] | None = None,
        signing_key: Ed25519PrivateKey | None = None,
    ) -> None:
        """``signing_key``: Telnyx's webhooks are signed with it (the bridge checks them with ``TELNYX_PUBLIC_KEY``)."""
        if carrier not in CARRIERS:
            raise ValueError(f"{carrier}: the fake callee speaks {' and '.join(CARRIERS)}")
        kind = TwilioLine if carrier == "twilio" else TelnyxLine
        self.carrier = carrier
        self._line: Line = kind(
            answering,
            auth_token=auth_token,
            account_sid=account_sid,
            api_key=api_key,
            on_done=on_done,
            signing_key=signing_key,
        )
        self.base_url = ""
        self._runner: web.AppRunner | None = None

    @property
    def answering(self) -> Answering:
        return self._line.answering

    @answering.setter
    def answering(self, value: Answering) -> None:
        self._line.answering = value

    @property
    def calls(self) -> list[CalleeCall]:
        return self._line.calls

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve the API on ``host:port`` (0: a free port); its base URL, ``http://host:port`` (no trailing
        slash): the bridge's ``control.twilio_api_url`` / ``control.telnyx_api_url``.

        Raises:
            OSError: the address is taken or cannot be bound.
        """
        app = web.Application()
        self._line.add_routes(app)
        await self._line.open()
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        self.base_url = f"http://{host}:{self._runner.addresses[0][1]}"
        return self.base_url

    async def aclose(self) -> None:
        """End every call still going (an answered one as the callee hanging up, a ringing one as cancelled),
        then stop serving."""
        await self._line.close()
        if self._runner is not None:
            await self._runner.cleanup()


# -- the command ----------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``bridge call``'s callee options: ``--answer`` turns the command into the callee of outbound calls
    (it serves the fake carrier API instead of dialling)."""
    group = parser.add_argument_group("callee (--answer: serve a fake carrier API and answer its calls)")
    group.add_argument("--answer", choices=ANSWERS, default=None, help="answer outbound calls as this callee")
    group.add_argument("--api-port", type=int, default=8099, help="the fake API's port (default 8099)")
    group.add_argument("--api-host", default="127.0.0.1", help="the fake API's address (default 127.0.0.1)")
    group.add_argument("--variant", type=int, default=0, help="which greeting of its kind (default 0)")
    group.add_argument("--voice", default="piper", help="the greeting's voice (default piper)")
    group.add_argument("--ring-ms", type=int, default=200, help="ringing before the answer, ms (default 200)")
    group.add_argument("--amd-ms", type=int, default=1200, help="the carrier's AMD verdict after the answer, ms")
    group.add_argument("--stay", type=float, default=10.0, help="s the callee stays after its greeting (default 10)")


def describe(call: CalleeCall, answer: str) -> str:
    """One line for a finished call: who, how it was answered, what the callee heard."""
    heard = len(call.heard) / 8000
    amd = ", ".join(a.get("AnsweredBy") or a.get("result", "") for a in call.amd)
    return (
        f"{call.to} answer={answer} {call.state}: heard {heard:.1f} s of audio, {len(call.marks)} marks echoed, "
        f"{call.cleared} clears; statuses {' '.join(call.statuses) or '-'}" + (f"; amd {amd}" if amd else "")
    )


def run_callee(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """``bridge call --answer ...``: serve :class:`FakeCarrierApi` for ``args.carrier`` until Ctrl-C, printing
    one line per call. Credentials from the environment: TWILIO_ACCOUNT_SID / TWILIO_AUTH_TOKEN (Twilio),
    TELNYX_API_KEY (Telnyx). Exit status 2 for a carrier the fake does not speak."""
    stream = out if out is not None else sys.stdout
    carrier = getattr(args, "carrier", "twilio")
    if carrier not in CARRIERS:
        print(f"bridge call --answer: the fake callee speaks {' and '.join(CARRIERS)}, not {carrier}", file=sys.stderr)
        return 2
    api_key = os.environ.get("TELNYX_API_KEY", "")
    if carrier == "telnyx" and not api_key:
        print("bridge call --answer: --carrier telnyx needs TELNYX_API_KEY (the bridge's Bearer key)", file=sys.stderr)
        return 2
    answering = Answering(args.answer, args.ring_ms, args.amd_ms, args.stay, args.variant, args.voice)

    def done(call: CalleeCall) -> None:
        stream.write(describe(call, answering.answer) + "\n")
        stream.flush()

    async def serve() -> None:
        api = FakeCarrierApi(
            "twilio" if carrier == "twilio" else "telnyx",
            answering,
            auth_token=os.environ.get("TWILIO_AUTH_TOKEN", ""),
            account_sid=os.environ.get("TWILIO_ACCOUNT_SID") or "AC" + "0" * 32,
            api_key=api_key,
            on_done=done,
        )
        url = await api.start(args.api_host, args.api_port)
        setting = (
            "control.twilio_api_url (TWILIO_API_URL)"
            if carrier == "twilio"
            else "control.telnyx_api_url (TELNYX_API_URL)"
        )
        stream.write(
            f"fake {carrier} API at {url}: set the bridge's {setting} to it; answering {args.answer}. Ctrl-C ends.\n"
        )
        stream.flush()
        try:
            await asyncio.Event().wait()
        finally:
            await api.aclose()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        return 0
    except OSError as exc:
        print(f"bridge call --answer: cannot serve on {args.api_host}:{args.api_port}: {exc}", file=sys.stderr)
        return 1
    return 0


__all__ = [
    "ANSWERS",
    "Answering",
    "CalleeCall",
    "FakeCarrierApi",
    "Greeter",
    "add_arguments",
    "default_greeter",
    "describe",
    "run_callee",
    "telnyx_detection",
    "twilio_answered_by",
    "without_query",
]
