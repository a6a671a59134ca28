"""The phone side's HTTP and WebSocket endpoints (aiohttp handlers; thin shell).

* ``POST /twilio/voice``: a Twilio voice webhook; answers TwiML that connects the call to
  ``/twilio/stream`` with the caller's From/To as ``<Parameter>``s.
* ``GET /{carrier}/stream``: the media-stream WebSocket. Authenticated *before* the upgrade
  (403 and nothing else on a bad signature), then handed to a :class:`~bridge.call.Call`.

The handler's task is the only reader of the socket: it iterates messages into the call.
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import os
from collections.abc import AsyncIterator

import aiohttp
import structlog
from aiohttp import web

from bridge.adapters import ADAPTERS, make_adapter
from bridge.adapters.twilio import connect_stream_twiml, signature_valid
from bridge.app_keys import SETTINGS, STATE
from bridge.call import Call, CallResult

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
    twiml = connect_stream_twiml(stream_url(request, "twilio"), parameters)
    return web.Response(text=twiml, content_type="text/xml")


def stream_token_valid(expected: str, authorization: str | None, header_token: str | None,
                       query_token: str | None) -> bool:
    """A carrier's shared secret, from ``Authorization: Bearer``, HTTP Basic (the password), an
    ``X-Stream-Token`` header or ``?token=``; compared in constant time."""
    candidates = [header_token or "", query_token or ""]
    auth = (authorization or "").strip()
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer":
        candidates.append(value.strip())
    elif scheme.lower() == "basic":
        with contextlib.suppress(ValueError, UnicodeDecodeError):
            candidates.append(base64.b64decode(value.strip(), validate=True).decode().partition(":")[2])
    want = expected.encode()
    return any(hmac.compare_digest(c.encode(), want) for c in candidates if c)


async def _messages(ws: web.WebSocketResponse) -> AsyncIterator[str | bytes]:
    """Text and binary messages until the socket closes (errors end the iteration)."""
    async for msg in ws:
        if msg.type is aiohttp.WSMsgType.TEXT or msg.type is aiohttp.WSMsgType.BINARY:
            yield msg.data
        elif msg.type is aiohttp.WSMsgType.ERROR:
            log.warning("phone.socket_error", error=str(ws.exception()), close_code=ws.close_code)
            return


async def phone_stream(request: web.Request) -> web.StreamResponse:
    """A carrier's media-stream WebSocket: one call per socket."""
    app = request.app
    settings = app[SETTINGS]
    carrier = request.match_info["carrier"]
    adapter = make_adapter(carrier, settings.carriers.audiofork_sample_rate)
    if adapter is None:
        raise web.HTTPNotFound(text=f"unknown carrier {carrier!r}; known: {', '.join(ADAPTERS)}\n")
    state = app[STATE]
    if state.draining:
        raise web.HTTPServiceUnavailable(text="shutting down\n")
    if len(state.calls) >= settings.server.max_calls:
        log.warning("phone.capacity_refused", max_calls=settings.server.max_calls)
        raise web.HTTPServiceUnavailable(text="at capacity\n")
    token = settings.twilio.auth_token
    if carrier == "twilio" and token is not None:
        url = stream_url(request, carrier)
        if not signature_valid(token.get_secret_value(), url, request.headers.get("X-Twilio-Signature")):
            log.warning("twilio.bad_signature", path=request.path)
            raise web.HTTPForbidden(text="invalid X-Twilio-Signature\n")
    shared = settings.carriers.tokens.get(carrier)
    if shared is not None and not stream_token_valid(shared.get_secret_value(), request.headers.get("Authorization"),
                                                     request.headers.get("X-Stream-Token"),
                                                     request.query.get("token")):
        log.warning("phone.bad_token", carrier=carrier)
        raise web.HTTPForbidden(text="invalid or missing stream token\n")

    ws = web.WebSocketResponse(max_msg_size=settings.server.max_message_bytes, autoping=True,
                               protocols=adapter.subprotocols)
    await ws.prepare(request)
    assert state.http is not None and state.delivery is not None
    call = Call(adapter=adapter, settings=settings, http=state.http, delivery=state.delivery,
                suspended=state.suspended, admission=state.admission)
    state.calls[call] = ws
    try:
        result = await call.run(_messages(ws))
    except Exception:  # top of the call's task: a bug must end this call only, and say so
        log.exception("call.crashed", call_id=call.id)
        result = CallResult("internal_error", 1011, "internal error")
    finally:
        state.calls.pop(call, None)
    if state.metrics is not None:
        state.metrics.update_call(call, final=True)
        state.metrics.calls.labels(carrier, result.reason).inc()
    if not ws.closed:
        await ws.close(code=result.close_code, message=result.message.encode()[:120])
    return ws


async def healthz(request: web.Request) -> web.Response:
    """Liveness and state: ``ok``, ``degraded`` (working, with ``degraded`` saying what is wrong; still
    200, nothing a restart would fix) or ``draining`` (503)."""
    state = request.app[STATE]
    problems = []
    if state.outbox is not None and state.outbox.degraded:
        problems.append(f"outbox writes failing: {state.outbox.degraded}")
    status = "draining" if state.draining else ("degraded" if problems else "ok")
    body: dict[str, object] = {"status": status, "active_calls": len(state.calls)}
    if problems:
        body["degraded"] = problems
    if state.worker is not None:
        body["worker"] = {"index": state.worker[0], "of": state.worker[1], "pid": os.getpid()}
    if state.admission is not None and state.admission.limit:
        body["stt_sessions"] = {"active": state.admission.active, "waiting": state.admission.waiting,
                                "limit": state.admission.limit}
    if state.outbox is not None:
        body["outbox"] = {**state.outbox.counts(), "queued_writes": state.outbox.queued}
    return web.json_response(body, status=503 if state.draining else 200)
