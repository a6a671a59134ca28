"""The phone's media-stream WebSocket endpoint (aiohttp handler; thin shell).

``GET /{carrier}/stream``: the media-stream WebSocket. Refused while draining or at capacity,
authenticated *before* the upgrade (403 and nothing else on a bad signature), counted in the call
registry while open, and handed to :func:`bridge.carry_call.carry_call`, which runs the call it carries.
Under ``--workers`` a restarted stream whose call waits in another worker is relayed there
(:mod:`bridge.sibling_relay`), where the worker's internal socket serves it as :func:`relayed_stream`.
(The Twilio voice webhook's TwiML is :mod:`bridge.http.twiml`.)

The socket is read by :class:`~bridge.phone_connection.PhoneConnection`: the handler's task pulls
messages until ``start``, then each message is pushed into the call as it arrives.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import structlog
from aiohttp import web

from bridge.adapters import CARRIERS
from bridge.adapters.stream_auth import Secrets, Upgrade
from bridge.app_keys import FLEET, SETTINGS
from bridge.call.registry import CALLS
from bridge.call.services import CALL_SERVICES
from bridge.carry_call import carry_call
from bridge.dial.order import OUTBOUND_QUERY
from bridge.dialing import DIALER
from bridge.http.twiml import public_base, stream_url
from bridge.metrics import METRICS
from bridge.phone_connection import PhoneConnection
from bridge.phone_stream import CallResult, PhoneStream
from bridge.sibling_relay import SiblingRelay
from bridge.siblings import SIBLINGS
from bridge.stt.admission import ADMISSION

if TYPE_CHECKING:
    from bridge.settings import Settings

log = structlog.get_logger("bridge.phone")


def _upgrade(request: web.Request, carrier: str) -> Upgrade:
    """What the upgrade shows a carrier's authentication: the stream URL as the carrier signed it."""
    return Upgrade(stream_url(request, carrier), request.path, request.headers, request.query, time.time())


def _secrets(settings: Settings) -> Secrets:
    """The settings' secrets a carrier may check an upgrade with."""
    twilio, vonage = settings.twilio.auth_token, settings.carriers.vonage_signature_secret
    return Secrets(
        twilio_auth_token=twilio.get_secret_value() if twilio is not None else None,
        vonage_signature_secret=vonage.get_secret_value() if vonage is not None else None,
        stream_tokens={name: token.get_secret_value() for name, token in settings.carriers.tokens.items()},
    )


async def phone_stream(request: web.Request) -> web.StreamResponse:
    """A carrier's media-stream WebSocket: one call per socket."""
    return await _phone_stream(request, relayed=False)


async def relayed_stream(request: web.Request) -> web.StreamResponse:
    """The same, on a worker's internal socket: a restarted stream another worker authenticated and
    relays here, where its call waits (:mod:`bridge.sibling_relay`). Never relayed again."""
    return await _phone_stream(request, relayed=True)


async def _phone_stream(request: web.Request, *, relayed: bool) -> web.StreamResponse:
    app = request.app
    settings = app[SETTINGS]
    carrier = request.match_info["carrier"]
    known = CARRIERS.get(carrier)
    if known is None:
        raise web.HTTPNotFound(text=f"unknown carrier {carrier!r}; known: {', '.join(CARRIERS)}\n")
    try:
        adapter = known.factory(request.query, settings.carriers.audiofork_sample_rate)
    except ValueError as exc:
        raise web.HTTPBadRequest(text=f"{exc}\n") from None
    calls = app[CALLS]
    if calls.draining:
        raise web.HTTPServiceUnavailable(text="shutting down\n")
    suspended = calls.suspended
    waiting = len(suspended)
    if len(calls.streams) + waiting >= settings.server.max_calls and not suspended.shed_oldest("at server.max_calls"):
        log.warning("phone.capacity_refused", max_calls=settings.server.max_calls, suspended_calls=waiting)
        raise web.HTTPServiceUnavailable(text="at capacity\n")
    admission = app[ADMISSION]
    if admission.limit and admission.active + admission.waiting >= admission.limit:
        suspended.shed_oldest("no free Gladia session (gladia.max_sessions)")
    refusal = None if relayed else known.authenticate(_upgrade(request, carrier), _secrets(settings))
    if refusal is not None:  # the carrier's own answer: its log event, 403 and nothing else
        log.warning(refusal.event, **refusal.fields)
        raise web.HTTPForbidden(text=refusal.body)

    ws = PhoneConnection(
        protocols=tuple(adapter.subprotocols),
        max_message=settings.server.max_message_bytes,
        heartbeat=settings.server.ws_heartbeat,
    )
    await ws.accept(request)
    adapter.subprotocol = ws.ws_protocol
    stream = PhoneStream(adapter, settings.server)
    stream.send = ws.send
    stream.public_base = public_base(request)
    stream.hang_up = lambda: _hang_up(stream, ws)
    calls.streams[stream] = ws
    watchdog = _MediaWatchdog(stream, ws, settings.server.media_timeout) if settings.server.media_timeout else None
    structlog.contextvars.bind_contextvars(provider=adapter.carrier)
    siblings = app.get(SIBLINGS)  # --workers: a restart whose call waits in a sibling is relayed there
    relay = (
        SiblingRelay(
            siblings,
            ws,
            request.path_qs,
            request.headers,
            settings.server,
            on_relay=watchdog.cancel if watchdog else None,
        )
        if siblings is not None and not relayed
        else None
    )
    try:
        result = await carry_call(
            stream, ws, calls, app[CALL_SERVICES], app[METRICS], app[FLEET], relay,
            dialer=app.get(DIALER), claim=request.query.get(OUTBOUND_QUERY),
        )  # fmt: skip
    finally:
        calls.streams.pop(stream, None)
        if watchdog is not None:
            watchdog.cancel()
        structlog.contextvars.unbind_contextvars("call_id", "provider", "call_sid", "stream_sid")
    # Our close frame (unless one went already), then the carrier's answer, bounded.
    await ws.close(code=result.close_code, message=result.message.encode()[:120])
    return ws


def _hang_up(stream: PhoneStream, ws: PhoneConnection) -> None:
    """The bot hung up: close the stream (Twilio then runs what follows </Connect>: <Hangup/>)."""
    if stream.forced_end is None:
        stream.forced_end = CallResult("bot_hangup", 1000, "hung up by the bot")
    if not ws.closed:
        task = asyncio.create_task(ws.close(code=1000, message=b"hung up by the bot"), name="phone-hangup")
        _closing.add(task)
        task.add_done_callback(_closing.discard)


_closing: set[asyncio.Task[bool]] = set()


class _MediaWatchdog:
    """Ends a stream that started but sends no audio for ``timeout`` seconds (every carrier streams
    continuously, silence included): one timer per stream, checked every ``timeout / 2`` seconds."""

    def __init__(self, stream: PhoneStream, ws: PhoneConnection, timeout: float) -> None:
        self.stream, self.ws, self.timeout = stream, ws, timeout
        self._frames = -1
        self._quiet_since = 0.0
        self._loop = asyncio.get_running_loop()
        self._handle = self._loop.call_later(timeout / 2, self._check)
        self._closing: asyncio.Task[bool] | None = None

    def _check(self) -> None:
        now = self._loop.time()
        frames = self.stream.counters.audio_frames
        if frames != self._frames or self.stream.started is None:  # before start: server.start_timeout
            self._frames, self._quiet_since = frames, now
        elif now - self._quiet_since >= self.timeout:
            message = f"no audio for {self.timeout:g} s"
            log.warning("call.media_timeout", call_id=self.stream.call_id, timeout=self.timeout)
            self.stream.forced_end = CallResult("media_timeout", 1008, message)
            self._closing = asyncio.create_task(self.ws.close(code=1008, message=message.encode()))
            return
        self._handle = self._loop.call_later(self.timeout / 2, self._check)

    def cancel(self) -> None:
        self._handle.cancel()
