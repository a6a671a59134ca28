"""The bot's REST API (``/v1/``): actions on a running call, and what calls are doing.

=========================================  =========================================================
``POST /v1/calls/{call_id}/actions``       ``{"actions": [...]}`` -> ``202 {"actions": [{"id", "status"}]}``
``GET /v1/calls``                          the active calls (with ``?since=``: recent calls on record,
                                           see bridge.http.transcripts)
``GET /v1/calls/{call_id}``                one call: ``from``, ``to``, ``direction``, ``duration_s`` (so
                                           far), ``state`` (listening, speaking, paused), ``queue``,
                                           ``played_ms``
=========================================  =========================================================

``Authorization: Bearer <BRIDGE_API_TOKEN>``, compared in constant time; with no token configured
every ``/v1/`` request gets 403 saying the API is disabled. ``Idempotency-Key`` on a POST makes a
repeat return the first answer without applying anything twice. Errors: 401 bad token, 404 unknown
call, 409 a call that has ended, 413 a body over the bound, 422 a body that is not a valid action
list (the message names the field). Every error body is ``{"error": "..."}``.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from bridge.app_keys import FLEET, SETTINGS
from bridge.call.registry import CALLS
from bridge.dialing import DIALER
from bridge.errors import ActionError, FleetUnavailable
from bridge.ids import is_call_id
from bridge.reply.actions import MAX_REQUEST_BYTES, parse_actions
from bridge.siblings import SIBLINGS
from bridge.untrusted import same_secret

MAX_KEY_CHARS = 200
MAX_FIRST_ANSWERS = 10_000  # first answers of keyed POSTs kept (any call): a repeat after the end gets it


class FirstAnswers:
    """The first answer to each ``Idempotency-Key`` of each call, kept past the call's end (bounded,
    oldest forgotten first), so a repeat after the call ended returns it instead of 409."""

    def __init__(self, limit: int = MAX_FIRST_ANSWERS) -> None:
        self.limit = limit
        self._answers: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()

    def get(self, call_id: str, key: str) -> dict[str, Any] | None:
        return self._answers.get((call_id, key))

    def keep(self, call_id: str, key: str, answer: dict[str, Any]) -> None:
        self._answers.setdefault((call_id, key), answer)
        while len(self._answers) > self.limit:
            self._answers.popitem(last=False)


FIRST_ANSWERS = web.AppKey("bot_api_first_answers", FirstAnswers)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers or None)


def authorized(request: web.Request) -> web.Response | None:
    """None when the request carries the API token; else the answer to give (403 API off, 401)."""
    token = request.app[SETTINGS].reply.api_token
    if token is None:
        return _error(403, "the bot API is disabled: set BRIDGE_API_TOKEN to enable /v1/")
    scheme, _, given = (request.headers.get("Authorization") or "").partition(" ")
    # same_secret: a header that is not UTF-8 (surrogate escapes) is a wrong token, not a 500
    if scheme.lower() != "bearer" or not same_secret(given.strip(), token.get_secret_value()):
        return _error(401, "missing or wrong bearer token", **{"WWW-Authenticate": 'Bearer realm="bridge"'})
    return None


def _call_json(call: Any) -> dict[str, Any]:
    about = call.call_json()  # the ``call`` object of its events: the numbers and the direction too
    return {
        "id": call.id,
        "provider": call.started.carrier,
        "call_sid": call.started.call_sid,
        "stream_sid": call.started.stream_sid,
        "from": about["from"],
        "to": about["to"],
        "direction": about["direction"],
        "duration_s": call.stats().duration_s,
        "capabilities": call.transfer.capabilities(),
        **call.reply.state(),
    }


async def list_calls(request: web.Request) -> web.Response:
    refused = authorized(request)
    if refused is not None:
        return refused
    calls = [_call_json(c) for c in request.app[CALLS].live.values()]
    fleet = request.app.get(FLEET)
    if fleet is not None:  # fleet mode: the instance holding each call (the console shows it)
        for call in calls:
            call["instance"] = fleet.instance_id
    siblings = request.app.get(SIBLINGS)
    if siblings is not None:  # --workers: every worker's calls (bridge.siblings)
        others = await siblings.live_calls(request)
        if isinstance(others, web.Response):
            return others
        calls += others
    return web.json_response({"calls": calls})


def _find(request: web.Request) -> Any:
    calls = request.app[CALLS]
    call_id = request.match_info["call_id"]
    call = calls.find(call_id)
    if call is not None:
        return call
    dialer = request.app.get(DIALER)
    outbound = dialer.find(call_id) if dialer is not None else None
    if outbound is not None and outbound.pending:  # ordered, not answered yet (POST /v1/calls)
        if request.method == "GET":
            return web.json_response({**outbound.call_json(), "state": outbound.state})
        return _error(409, f"call {call_id} has not been answered yet: actions apply from call.started on")
    if calls.has_ended(call_id):
        return _error(409, f"call {call_id} has ended")
    return _error(404, f"no call {call_id}")


async def get_call(request: web.Request) -> web.Response:
    refused = authorized(request)
    if refused is not None:
        return refused
    if not is_call_id(request.match_info["call_id"]):  # never a store's key (bridge.ids)
        return _error(404, f"no call {request.match_info['call_id'][:64]}")
    call = _find(request)
    fleet = request.app[FLEET]
    if isinstance(call, web.Response) and call.status == 200:  # a call being placed (bridge.dial)
        return call
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
    siblings = request.app.get(SIBLINGS)
    if isinstance(call, web.Response) and fleet is None and call.status == 404 and siblings is not None:
        return await siblings.call_state(request) or call  # --workers: another worker's call, maybe
    if isinstance(call, web.Response):
        return call
    return web.json_response(_call_json(call))


async def post_actions(request: web.Request) -> web.Response:
    refused = authorized(request)
    if refused is not None:
        return refused
    if not is_call_id(request.match_info["call_id"]):  # never a store's key (bridge.ids)
        return _error(404, f"no call {request.match_info['call_id'][:64]}")
    fleet = request.app[FLEET]
    key = request.headers.get("Idempotency-Key")
    if key is not None and not 0 < len(key) <= MAX_KEY_CHARS:
        return _error(422, f"Idempotency-Key must be 1 to {MAX_KEY_CHARS} characters")
    first = request.app[FIRST_ANSWERS].get(request.match_info["call_id"], key) if key is not None else None
    if first is not None and fleet is None:  # a repeat: the first answer, even once the call has ended
        return web.json_response(first, status=202, dumps=lambda o: json.dumps(o, separators=(",", ":")))
    call = None if fleet is not None else _find(request)  # fleet mode: Redis knows every call
    # --workers: a call this worker does not hold may be another's (bridge.siblings), which validates
    siblings = request.app.get(SIBLINGS) if isinstance(call, web.Response) and call.status == 404 else None
    if isinstance(call, web.Response) and siblings is None:
        return call
    body = bytearray()
    async for block in request.content.iter_chunked(65536):
        body += block
        if len(body) > MAX_REQUEST_BYTES:
            return _error(413, f"request body over {MAX_REQUEST_BYTES // (1024 * 1024)} MiB")
    if siblings is not None:
        assert isinstance(call, web.Response)  # this worker's 404
        return await siblings.actions(request, bytes(body)) or call
    try:
        actions = parse_actions(bytes(body))
    except ActionError as exc:
        return _error(413 if exc.too_large else 422, str(exc))
    if fleet is not None:
        # To the call's action stream, whichever instance owns it (this one too: one order for all).
        status, answer = await fleet.route(request.match_info["call_id"], bytes(body), actions, key)
        wait = {"Retry-After": "1"} if status == 429 else None  # the call's budget: once its actions are applied
        return web.json_response(
            answer, status=status, headers=wait, dumps=lambda o: json.dumps(o, separators=(",", ":"))
        )
    assert call is not None
    results = call.reply.apply(actions, key=f"rest:{key}" if key is not None else None)
    answer = {"actions": [r.json() for r in results]}
    if key is not None:
        request.app[FIRST_ANSWERS].keep(call.id, key, answer)
    return web.json_response(answer, status=202, dumps=lambda o: json.dumps(o, separators=(",", ":")))


def add_routes(app: web.Application, *, recent_calls: Handler | None = None) -> None:
    """The ``/v1/calls`` routes. ``recent_calls``, when given, answers ``GET /v1/calls?since=...``
    (a ``GET /v1/calls`` without ``since`` lists the active calls either way)."""

    async def calls(request: web.Request) -> web.StreamResponse:
        if recent_calls is not None and "since" in request.query:
            return await recent_calls(request)
        return await list_calls(request)

    app[FIRST_ANSWERS] = FirstAnswers()
    app.router.add_get("/v1/calls", calls)
    app.router.add_get("/v1/calls/{call_id}", get_call)
    app.router.add_post("/v1/calls/{call_id}/actions", post_actions)
