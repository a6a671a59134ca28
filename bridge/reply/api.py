"""The bot's REST API (``/v1/``): actions on a running call, and what calls are doing.

=========================================  =========================================================
``POST /v1/calls/{call_id}/actions``       ``{"actions": [...]}`` -> ``202 {"actions": [{"id", "status"}]}``
``GET /v1/calls``                          the active calls (with ``?since=``: recent calls on record,
                                           see bridge.transcript_api)
``GET /v1/calls/{call_id}``                one call: ``state`` (listening, speaking, paused), ``queue``,
                                           ``played_ms``
=========================================  =========================================================

``Authorization: Bearer <BRIDGE_API_TOKEN>``, compared in constant time; with no token configured
every ``/v1/`` request gets 403 saying the API is disabled. ``Idempotency-Key`` on a POST makes a
repeat return the first answer without applying anything twice. Errors: 401 bad token, 404 unknown
call, 409 a call that has ended, 413 a body over the bound, 422 a body that is not a valid action
list (the message names the field). Every error body is ``{"error": "..."}``.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from bridge.app_keys import SETTINGS, STATE
from bridge.errors import ActionError, FleetUnavailable
from bridge.reply.actions import MAX_REQUEST_BYTES, parse_actions

MAX_KEY_CHARS = 200

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers or None)


def authorized(request: web.Request) -> web.Response | None:
    """None when the request carries the API token; else the answer to give (403 API off, 401)."""
    token = request.app[SETTINGS].reply.api_token
    if token is None:
        return _error(403, "the bot API is disabled: set BRIDGE_API_TOKEN to enable /v1/")
    scheme, _, given = (request.headers.get("Authorization") or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.get_secret_value().encode()):
        return _error(401, "missing or wrong bearer token", **{"WWW-Authenticate": 'Bearer realm="bridge"'})
    return None


def _call_json(call: Any) -> dict[str, Any]:
    return {
        "id": call.id,
        "provider": call.started.provider,
        "call_sid": call.started.call_sid,
        "stream_sid": call.started.stream_sid,
        **call.reply.state(),
    }


async def list_calls(request: web.Request) -> web.Response:
    refused = authorized(request)
    if refused is not None:
        return refused
    calls = request.app[STATE].live_calls.values()
    return web.json_response({"calls": [_call_json(c) for c in calls]})


def _find(request: web.Request) -> Any:
    state = request.app[STATE]
    call_id = request.match_info["call_id"]
    call = state.live_calls.get(call_id)
    if call is None and state.suspended is not None:
        call = state.suspended.find(call_id)
    if call is not None:
        return call
    if call_id in state.ended_calls:
        return _error(409, f"call {call_id} has ended")
    return _error(404, f"no call {call_id}")


async def get_call(request: web.Request) -> web.Response:
    refused = authorized(request)
    if refused is not None:
        return refused
    call = _find(request)
    fleet = request.app[STATE].fleet
    if isinstance(call, web.Response) and fleet is not None and call.status == 404:
        # fleet mode: a call another instance owns
        call_id = request.match_info["call_id"]
        try:
            record = await fleet.call_state(call_id)
        except FleetUnavailable as exc:
            return _error(503, str(exc))
        if record is None:
            return _error(404, f"no call {call_id}")
        if record["state"] == "ended":
            return _error(409, f"call {call_id} has ended")
        return web.json_response(record)
    if isinstance(call, web.Response):
        return call
    return web.json_response(_call_json(call))


async def post_actions(request: web.Request) -> web.Response:
    refused = authorized(request)
    if refused is not None:
        return refused
    fleet = request.app[STATE].fleet
    call = None if fleet is not None else _find(request)  # fleet mode: Redis knows every call
    if isinstance(call, web.Response):
        return call
    key = request.headers.get("Idempotency-Key")
    if key is not None and not 0 < len(key) <= MAX_KEY_CHARS:
        return _error(422, f"Idempotency-Key must be 1 to {MAX_KEY_CHARS} characters")
    body = bytearray()
    async for block in request.content.iter_chunked(65536):
        body += block
        if len(body) > MAX_REQUEST_BYTES:
            return _error(413, f"request body over {MAX_REQUEST_BYTES // (1024 * 1024)} MiB")
    try:
        actions = parse_actions(bytes(body))
    except ActionError as exc:
        return _error(413 if exc.too_large else 422, str(exc))
    if fleet is not None:
        # To the call's action stream, whichever instance owns it (this one too: one order for all).
        status, answer = await fleet.route(request.match_info["call_id"], bytes(body), actions, key)
        return web.json_response(answer, status=status, dumps=lambda o: json.dumps(o, separators=(",", ":")))
    assert call is not None
    results = call.reply.apply(actions, key=f"rest:{key}" if key is not None else None)
    return web.json_response(
        {"actions": [r.json() for r in results]}, status=202, dumps=lambda o: json.dumps(o, separators=(",", ":"))
    )


def add_routes(app: web.Application, *, recent_calls: Handler | None = None) -> None:
    """The ``/v1/calls`` routes. ``recent_calls``, when given, answers ``GET /v1/calls?since=...``
    (a ``GET /v1/calls`` without ``since`` lists the active calls either way)."""

    async def calls(request: web.Request) -> web.StreamResponse:
        if recent_calls is not None and "since" in request.query:
            return await recent_calls(request)
        return await list_calls(request)

    app.router.add_get("/v1/calls", calls)
    app.router.add_get("/v1/calls/{call_id}", get_call)
    app.router.add_post("/v1/calls/{call_id}/actions", post_actions)
