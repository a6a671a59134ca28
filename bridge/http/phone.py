"""The phone side's HTTP and WebSocket endpoints (aiohttp handlers; thin shell).

* ``POST /twilio/voice``: a Twilio voice webhook; answers TwiML that connects the call to
  ``/twilio/stream`` with the caller's From/To as ``<Parameter>``s: ``<Connect><Stream>`` (a bot on
  the call), or in fork mode (a call between people) ``<Start><Stream track="both_tracks">`` then
  ``<Dial>`` or ``<Redirect>``. The mode: ``?mode=`` on the voice URL, else the called number's entry
  in ``twilio.numbers``, else ``twilio.voice_mode``; the number to dial: ``?dial=``, else the entry's.
* ``GET /{carrier}/stream``: the media-stream WebSocket. Authenticated *before* the upgrade
  (403 and nothing else on a bad signature), then handed to a :class:`~bridge.call.Call`.

The socket is read by :class:`~bridge.phone_connection.PhoneConnection`: the handler's task pulls
messages until ``start``, then each message is pushed into the call as it arrives.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import aiohttp
import structlog
from aiohttp import web

from bridge.adapters import CARRIERS, make_adapter
from bridge.adapters.twilio import connect_stream_twiml, fork_stream_twiml, signature_valid
from bridge.app_keys import SETTINGS, STATE
from bridge.call import RESUME_PARAMETER, Call, CarriedCall, restart_proven, resume_token
from bridge.delivery import stored_event
from bridge.phone_connection import PhoneConnection
from bridge.phone_stream import CallResult, PhoneStream
from bridge.settings import DIAL_NUMBER
from bridge.stats import CallStats
from bridge.stt.stream import SessionState as SttSessionState
from bridge.untrusted import same_secret

if TYPE_CHECKING:
    from bridge.fleet.fleet import Adopted

log = structlog.get_logger("bridge.phone")

# Form fields of Twilio's voice webhook passed on to the stream as <Parameter>s.
_VOICE_PARAMETERS = ("From", "To", "CallSid", "Direction", "CallerName", "ForwardedFrom")


def public_base(request: web.Request) -> str:
    """External base URL: ``BRIDGE_PUBLIC_URL`` or, when unset, the request's own host and scheme."""
    configured = request.app[SETTINGS].server.public_url
    if configured:
        return configured
    proto = request.headers.get("X-Forwarded-Proto", request.scheme).split(",")[0].strip()
    return f"{proto}://{request.host}"


def stream_url(request: web.Request, carrier: str) -> str:
    base = public_base(request)
    scheme, rest = base.split("://", 1)
    ws_scheme = "wss" if scheme in ("https", "wss") else "ws"
    return f"{ws_scheme}://{rest}/{carrier}/stream"


async def twilio_voice(request: web.Request) -> web.Response:
    """TwiML for a Twilio number's voice URL: connect the call's audio to the bridge."""
    settings = request.app[SETTINGS]
    form = await request.post()
    fields = {k: str(v) for k, v in form.items() if isinstance(v, str)}
    token = settings.twilio.auth_token
    if token is not None:
        url = public_base(request) + request.path_qs
        if not signature_valid(token.get_secret_value(), url, request.headers.get("X-Twilio-Signature"), fields):
            log.warning("twilio.bad_signature", path=request.path)
            raise web.HTTPForbidden(text="invalid X-Twilio-Signature\n")
    parameters = {name: fields[name] for name in _VOICE_PARAMETERS if fields.get(name)}
    if fields.get("CallSid"):  # lets a restarted stream of this call prove it is the same call
        parameters[RESUME_PARAMETER] = resume_token(request.app[STATE].resume_secret, "twilio", fields["CallSid"])
    twilio = settings.twilio
    number = twilio.numbers.get(fields.get("To", ""))
    mode = request.query.get("mode") or (number.mode if number is not None else twilio.voice_mode)
    if mode == "connect":
        twiml = connect_stream_twiml(stream_url(request, "twilio"), parameters, twilio.after_stream_url)
    elif mode == "fork":
        dial = request.query.get("dial") or (number.dial if number is not None else "")
        if dial and not DIAL_NUMBER.fullmatch(dial):
            raise web.HTTPUnprocessableEntity(text=f"dial={dial[:40]!r} is not a phone number (+15551234567)\n")
        if not dial and not twilio.fork_redirect_url:
            log.warning("twilio.fork_without_target", to=fields.get("To"))
            raise web.HTTPUnprocessableEntity(
                text="fork mode needs a number to dial (?dial= or twilio.numbers) or TWILIO_FORK_REDIRECT_URL\n"
            )
        url = stream_url(request, "twilio")
        twiml = fork_stream_twiml(url, parameters, dial=dial, redirect_url="" if dial else twilio.fork_redirect_url)
    else:
        raise web.HTTPUnprocessableEntity(text=f"mode={mode[:40]!r}: connect or fork\n")
    return web.Response(text=twiml, content_type="text/xml")


# Headers some carriers put their shared secret in, raw (Telnyx's stream_auth_token, as independent
# integrations read it: Telnyx documents it only as "sent as part of the WebSocket connection").
_TOKEN_HEADERS = ("X-Stream-Token", "X-Telnyx-Streaming-Auth-Token")


def stream_token_valid(expected: str, headers: Mapping[str, str], query_token: str | None) -> bool:
    """A carrier's shared secret, compared in constant time, from: ``Authorization`` with any scheme
    (``Bearer <token>``, Vonage's custom ``ApiKey <token>``; the whole header value also counts, as
    Vonage sends a custom value verbatim), HTTP Basic (the password), an ``X-Stream-Token`` or
    ``X-Telnyx-Streaming-Auth-Token`` header, or ``?token=``."""
    candidates = [headers.get(name, "") for name in _TOKEN_HEADERS] + [query_token or ""]
    auth = (headers.get("Authorization") or "").strip()
    scheme, _, value = auth.partition(" ")
    candidates.append(auth)
    if scheme.lower() == "basic":
        with contextlib.suppress(ValueError):
            candidates.append(aiohttp.BasicAuth.decode(auth).password)
    elif value:
        candidates.append(value.strip())
    return any(same_secret(c, expected) for c in candidates if c)  # any bytes: a wrong token, not a 500


def vonage_jwt_valid(secret: str, authorization: str | None, now: float) -> bool:
    """Vonage's signed WebSocket request (NCCO ``authorization: {type: "vonage"}``): ``Bearer <JWT>``
    signed HS256 with the account's signature secret, as Vonage signs its webhooks (the SDKs'
    ``verify_webhook_token``), not expired. UNVERIFIED that the WebSocket uses that very scheme: it is
    what Vonage documents for signed requests; a static token (``VONAGE_STREAM_TOKEN``) also works."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer" or token.count(".") != 2:
        return False
    head_b64, body_b64, sig_b64 = token.split(".")
    try:
        header = json.loads(_b64url(head_b64))
        claims = json.loads(_b64url(body_b64))
        signature = _b64url(sig_b64)
    except (ValueError, binascii.Error):
        return False
    if not isinstance(header, dict) or header.get("alg") != "HS256" or not isinstance(claims, dict):
        return False
    want = hmac.new(secret.encode(), f"{head_b64}.{body_b64}".encode(), hashlib.sha256).digest()
    if not hmac.compare_digest(signature, want):
        return False
    exp, nbf = claims.get("exp"), claims.get("nbf")
    if isinstance(exp, int | float) and now >= exp:
        return False
    return not (isinstance(nbf, int | float) and now < nbf - 60)


def _b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


async def phone_stream(request: web.Request) -> web.StreamResponse:
    """A carrier's media-stream WebSocket: one call per socket."""
    app = request.app
    settings = app[SETTINGS]
    carrier = request.match_info["carrier"]
    try:
        adapter = make_adapter(carrier, settings.carriers.audiofork_sample_rate, request.query)
    except ValueError as exc:
        raise web.HTTPBadRequest(text=f"{exc}\n") from None
    if adapter is None:
        raise web.HTTPNotFound(text=f"unknown carrier {carrier!r}; known: {', '.join(CARRIERS)}\n")
    state = app[STATE]
    if state.draining:
        raise web.HTTPServiceUnavailable(text="shutting down\n")
    suspended = state.suspended
    waiting = len(suspended) if suspended is not None else 0
    if len(state.calls) + waiting >= settings.server.max_calls and not (
        suspended is not None and suspended.shed_oldest("at server.max_calls")
    ):
        log.warning("phone.capacity_refused", max_calls=settings.server.max_calls, suspended_calls=waiting)
        raise web.HTTPServiceUnavailable(text="at capacity\n")
    admission = state.admission
    if (
        admission is not None
        and admission.limit
        and admission.active + admission.waiting >= admission.limit
        and suspended is not None
    ):
        suspended.shed_oldest("no free Gladia session (gladia.max_sessions)")
    token = settings.twilio.auth_token
    if carrier == "twilio" and token is not None:
        url = stream_url(request, carrier)
        if not signature_valid(token.get_secret_value(), url, request.headers.get("X-Twilio-Signature")):
            log.warning("twilio.bad_signature", path=request.path)
            raise web.HTTPForbidden(text="invalid X-Twilio-Signature\n")
    shared = settings.carriers.tokens.get(carrier)
    signing = settings.carriers.vonage_signature_secret if carrier == "vonage" else None
    if shared is not None or signing is not None:
        ok = shared is not None and stream_token_valid(
            shared.get_secret_value(), request.headers, request.query.get("token")
        )
        if not ok and signing is not None:
            ok = vonage_jwt_valid(signing.get_secret_value(), request.headers.get("Authorization"), time.time())
        if not ok:
            log.warning("phone.bad_token", carrier=carrier)
            raise web.HTTPForbidden(text="invalid or missing stream token\n")

    ws = PhoneConnection(
        protocols=tuple(adapter.subprotocols),
        max_message=settings.server.max_message_bytes,
        heartbeat=settings.server.ws_heartbeat,
    )
    await ws.accept(request)
    adapter.subprotocol = ws.ws_protocol
    stream = PhoneStream(adapter, settings.server)
    stream.send = ws.send
    stream.hang_up = lambda: _hang_up(stream, ws)
    state.calls[stream] = ws
    watchdog = _MediaWatchdog(stream, ws, settings.server.media_timeout) if settings.server.media_timeout else None
    structlog.contextvars.bind_contextvars(provider=adapter.provider)
    try:
        result = await _carry(app, stream, ws)
    finally:
        state.calls.pop(stream, None)
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


async def _carry(app: web.Application, stream: PhoneStream, messages: PhoneConnection) -> CallResult:
    """One stream, start to end: wait for ``start``, take the call it restarts or begin a new one, run
    it, then end the call or keep it suspended for a restart. Returns how the stream ended."""
    settings, state = app[SETTINGS], app[STATE]
    start = await stream.wait_for_start(messages)
    if isinstance(start, CallResult):
        return start
    started = start.started
    assert state.http is not None and state.delivery is not None and state.suspended is not None
    suspended = state.suspended
    key = (started.provider, started.call_sid)
    call = suspended.take(key, started)
    if call is None:
        if suspended.waiting(key):
            log.warning(
                "call.restart_refused",
                call_sid=started.call_sid,
                waiting=suspended.waiting(key),
                detail="a stream names a suspended call without its resume token (bridge.resume) or "
                "from another account: started as a call of its own",
            )
        deps: dict[str, Any] = {
            "settings": settings,
            "http": state.http,
            "delivery": state.delivery,
            "admission": state.admission,
            "resume_secret": state.resume_secret,
            "speaker": state.speaker,
            "transcripts": state.transcripts,
        }
        fleet = state.fleet
        box: list[Call] = []  # the call, once built (the fleet's callbacks need it)

        def apply(actions: list[Any], key: str) -> object:
            return box[0].reply.apply(actions, key=key)

        def session() -> dict[str, str] | None:
            now = box[0].stt.state()
            return None if now is None else {**now.fields(), **_call_shape(box[0])}

        async def hand_over() -> dict[str, str] | None:
            if not box or suspended.release(box[0].id) is None:
                return None  # its stream is live here (or it is gone): nothing to hand over
            now = await box[0].hand_over(timeout=settings.server.stream_restart_grace or 2.0)
            return {**(now.fields() if now is not None else {}), **_call_shape(box[0])}

        def lose() -> None:
            if box:
                box[0].lost_to_another_instance()

        carried = None
        if fleet is not None and restart_proven(state.resume_secret, started):
            # A restarted stream whose call another instance holds (or held): carry it on here.
            adopted = await fleet.adopt(
                started.provider, started.call_sid, apply, session, hand_over, lose, channels=started.channels
            )
            if adopted is not None:
                carried = _carried(adopted)
        if carried is not None:
            call = Call.carry_on(started, carried, **deps)
        else:
            call = Call.begin(started, **deps)
            if fleet is not None:  # this instance holds the carrier socket: it owns the call
                fleet.own(call.id, started.provider, started.call_sid, apply, session, hand_over, lose)
        box.append(call)
        metrics = state.metrics

        def ended(call_id: str, stats: CallStats) -> None:
            state.call_ended(call_id)
            if metrics is not None:
                metrics.call_ended(call_id, stats)
            if fleet is not None:
                fleet.call_over(call_id)

        call.on_ended = ended
    call.attach(stream)
    state.live_calls[call.id] = call
    result = stream.end_without_stop  # also what a cancelled handler (the peer vanished) means
    try:
        result = await call.run(stream, messages, start.rest)
    except Exception:  # top of the stream's task: a bug must end this call only, and say so
        log.exception("call.crashed", call_id=call.id)
        result = CallResult("internal_error", 1011, "internal error")
    finally:
        # Whatever happened (cancellation included), the call is either waiting for a restart or ended.
        state.live_calls.pop(call.id, None)
        grace = settings.server.stream_restart_grace
        if result.reason == "socket_closed" and grace > 0 and not suspended.closed:
            log.info("call.stream_lost", waiting_for_restart=grace)
            suspended.suspend(call, key, grace)
        else:
            # The end of a call (last finals, call.ended) runs as its own task, shielded: it completes
            # even if the server cancels the handler when the phone hangs up.
            end = asyncio.create_task(call.end(result), name=f"call-end-{call.id}")
            suspended.track(end)
            await asyncio.shield(end)
    return result


def _call_shape(call: Call) -> dict[str, str]:
    """What a successor must know of a call besides its Gladia session: its streams and channels."""
    return {"streams": str(call.streams), "channels": str(call.stt_format.channels)}


def _carried(adopted: Adopted) -> CarriedCall:
    """What an adopted call brings (fleet mode): its Gladia session, sequence and undelivered events."""
    record = adopted.record
    events = [stored_event(adopted.call_id, entry_id, fields) for entry_id, fields in adopted.events]
    return CarriedCall(
        adopted.call_id,
        SttSessionState.from_fields(record),
        int(record.get("last_sequence") or 0),
        events,
        streams=int(record.get("streams") or 1),
    )


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


async def healthz(request: web.Request) -> web.Response:
    """Liveness and state: ``ok``, ``degraded`` (working, with ``degraded`` saying what is wrong; still
    200, nothing a restart would fix) or ``draining`` (503)."""
    state = request.app[STATE]
    problems = []
    if state.outbox is not None and state.outbox.degraded:
        problems.append(f"outbox writes failing: {state.outbox.degraded}")
    fleet = state.fleet
    if fleet is not None and fleet.redis_down is not None:
        problems.append(f"fleet Redis unreachable: {fleet.redis_down}")
    status = "draining" if state.draining else ("degraded" if problems else "ok")
    body: dict[str, object] = {
        "status": status,
        "active_calls": len(state.calls),
        "suspended_calls": len(state.suspended) if state.suspended is not None else 0,
    }
    if problems:
        body["degraded"] = problems
    if state.worker is not None:
        body["worker"] = {"index": state.worker[0], "of": state.worker[1], "pid": os.getpid()}
    if state.admission is not None and state.admission.limit:
        body["stt_sessions"] = {
            "active": state.admission.active,
            "waiting": state.admission.waiting,
            "limit": state.admission.limit,
        }
    if state.outbox is not None:
        body["outbox"] = {**state.outbox.counts(), "queued_writes": state.outbox.queued}
    if fleet is not None:
        body["fleet"] = {
            "instance_id": fleet.instance_id,
            "calls_held": len(fleet.owned),
            "takeovers": fleet.counters.takeovers,
            "leases_lost": fleet.counters.leases_lost,
            "redis_errors": fleet.counters.redis_errors,
        }
    return web.json_response(body, status=503 if state.draining else 200)
