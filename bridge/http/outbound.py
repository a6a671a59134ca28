"""The routes of calls the bridge places (thin shell over :mod:`bridge.dial`).

=====================================  ==============================================================
``POST /v1/calls``                     the bot orders a call -> ``201 {"id", "status": "queued",
                                       "carrier_call_id": null}``; the carrier's id comes in
                                       ``call.dialing``. 403 (a setting refuses it: named), 413, 422 (a
                                       bad field: named), 429 with ``Retry-After`` (``outbound.max_pending``)
``DELETE /v1/calls/{call_id}``         cancels a call still ringing (``202 {"status": "canceled"}``) or
                                       hangs up a live one (``202 {"status": "ending"}``); 404, 409 ended
``POST /{carrier}/call-status``        the carrier's status callbacks (Twilio ``StatusCallback``, Telnyx
                                       and Vonage webhooks, Plivo ``ring_url``/``hangup_url``, jambonz
                                       ``call_status_hook``)
``POST /{carrier}/amd``                its answering-machine verdicts (Twilio ``AsyncAmdStatusCallback``,
                                       Plivo ``machine_detection_url``, jambonz ``amd.actionHook``)
``POST|GET /{carrier}/outbound-answer``  the markup run when the callee answers (Plivo ``answer_url``,
                                       jambonz ``call_hook``): the stream to the bridge
=====================================  ==============================================================

``/v1/`` takes the bot's bearer token (:func:`bridge.http.bot_api.authorized`) and ``Idempotency-Key``:
a repeated order gets the first answer and places nothing. Every URL given to a carrier carries the
call's claim (``?t=``, :func:`bridge.dial.order.claim_token`): a callback whose token is bad, expired, or
for another carrier's route is refused (403) and changes nothing; Twilio's also need a valid
``X-Twilio-Signature`` when ``TWILIO_AUTH_TOKEN`` is set. A callback for a call this process does not
hold (another worker's, or one long over) is answered and logged.
"""

from __future__ import annotations

import json
import time
from typing import Any

import structlog
from aiohttp import web

from bridge.app_keys import FLEET, RESUME_SECRET, SETTINGS
from bridge.call.registry import CALLS
from bridge.control.ways import Markup
from bridge.dial.carriers import answer_markup
from bridge.dial.links import DialLinks
from bridge.dial.order import (
    DIAL_CARRIERS,
    MAX_ORDER_BYTES,
    STREAM_ROUTE,
    Claim,
    DialError,
    keyed_call_id,
    parse_order,
    read_claim,
    refusal,
)
from bridge.dial.report_fields import report_fields
from bridge.dial.reports import DialReport, read_report
from bridge.dialing import DIAL_WORD, DIALER, END_WORD
from bridge.errors import FleetUnavailable
from bridge.http.bot_api import MAX_KEY_CHARS, authorized
from bridge.http.call_control import carrier_fields, markup_response
from bridge.http.call_events import EVENT_TAP
from bridge.http.twiml import public_base, stream_url
from bridge.ids import is_call_id
from bridge.reply.actions import Hangup
from bridge.siblings import SIBLINGS

log = structlog.get_logger("bridge.dial")

CALLBACK_CARRIERS = frozenset({"twilio", "signalwire", "telnyx", "plivo", "vonage", "jambonz"})


def _error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers or None)


def _json(body: dict[str, Any], status: int) -> web.Response:
    return web.json_response(body, status=status, dumps=lambda o: json.dumps(o, separators=(",", ":")))


def _stream_url(request: web.Request, carrier: str) -> str:
    """The ws(s) URL of a platform's stream route, with its stream token when it has one."""
    route = STREAM_ROUTE.get(carrier, carrier)
    url = stream_url(request, route)
    token = request.app[SETTINGS].carriers.tokens.get(route)
    return url + "?token=" + token.get_secret_value() if token is not None else url


async def create_call(request: web.Request) -> web.Response:
    """``POST /v1/calls``."""
    refused = authorized(request)
    if refused is not None:
        return refused
    key = request.headers.get("Idempotency-Key")
    if key is not None and not 0 < len(key) <= MAX_KEY_CHARS:
        return _error(422, f"Idempotency-Key must be 1 to {MAX_KEY_CHARS} characters")
    dialer = request.app[DIALER]
    first = dialer.repeat(key) if key is not None else None
    if first is not None:
        return _json(first, 201)
    # A keyed order's call id is the key's (signed under the secret every worker and instance shares): a
    # repeat that reaches another worker finds the call there instead of placing it again.
    call_id = keyed_call_id(request.app[RESUME_SECRET], key) if key is not None else None
    siblings, fleet = request.app.get(SIBLINGS), request.app[FLEET]
    if call_id is not None and fleet is not None:
        try:
            known: bool | None = await fleet.call_state(call_id) is not None
        except FleetUnavailable as exc:
            return _error(503, str(exc))
        if known:
            return _json({"id": call_id, "status": "queued", "carrier_call_id": None}, 201)
    elif call_id is not None and siblings is not None:
        known = await siblings.knows(request, call_id)
        if known is None:
            return _error(503, "another worker did not answer in time; try again", **{"Retry-After": "1"})
        if known:
            return _json({"id": call_id, "status": "queued", "carrier_call_id": None}, 201)
    body = bytearray()
    async for block in request.content.iter_chunked(65536):
        body += block
        if len(body) > MAX_ORDER_BYTES:
            return _error(413, f"request body over {MAX_ORDER_BYTES // 1024} KiB")
    settings = request.app[SETTINGS]
    try:
        order = parse_order(bytes(body))
    except DialError as exc:
        return _error(exc.status, str(exc))
    why = refusal(order, settings.outbound, settings.control, twilio_token=settings.twilio.auth_token is not None)
    if why is not None:
        log.info("dial.refused", carrier=order.carrier, reason=why)
        return _error(403, why)
    try:
        url = _stream_url(request, order.carrier)
        answer = dialer.place(order, base=public_base(request), stream_url=url, key=key, call_id=call_id)
        request.app[EVENT_TAP].open(answer["id"])  # its events can be followed from the 201 on
    except DialError as exc:
        wait = {"Retry-After": "1"} if exc.status == 429 else {}
        return _error(exc.status, str(exc), **wait)
    return _json(answer, 201)


async def end_call(request: web.Request) -> web.Response:
    """``DELETE /v1/calls/{call_id}``."""
    refused = authorized(request)
    if refused is not None:
        return refused
    call_id = request.match_info["call_id"]
    if not is_call_id(call_id):
        return _error(404, f"no call {call_id[:64]}")
    dialer, calls, fleet = request.app[DIALER], request.app[CALLS], request.app[FLEET]
    ended = dialer.end(call_id)  # an outbound call: cancelled ringing, or hung up (the carrier told too)
    if ended is not None:
        return _json({"id": call_id, "status": ended}, 202)
    call = calls.find(call_id)
    if call is not None:  # an inbound call: the bot's hang-up
        call.reply.apply([Hangup(type="hangup", after="now")])
        return _json({"id": call_id, "status": "ending"}, 202)
    outbound = dialer.find(call_id)
    if calls.has_ended(call_id) or (outbound is not None and outbound.ended and outbound.state != "handed"):
        return _error(409, f"call {call_id} has ended")
    if fleet is not None:  # the owner, wherever it is, ends it (a ringing call's placer, a live call's holder)
        if await fleet.transfers.send(call_id, {"call": call_id, "kind": END_WORD}):
            return _json({"id": call_id, "status": "ending"}, 202)
        try:
            record = await fleet.call_state(call_id)
        except FleetUnavailable as exc:
            return _error(503, str(exc))
        return _error(409, f"call {call_id} has ended") if record is not None else _error(404, f"no call {call_id}")
    siblings = request.app.get(SIBLINGS)
    if siblings is not None:  # --workers: the worker that has it
        return await siblings.end_call(request) or _error(404, f"no call {call_id}")
    return _error(404, f"no call {call_id}")


def _carrier(request: web.Request) -> str:
    carrier = request.match_info["carrier"]
    if carrier not in DIAL_CARRIERS:
        raise web.HTTPNotFound(text=f"no outbound-call route for {carrier[:32]!r}\n")
    return carrier


def _claim(request: web.Request, carrier: str) -> Claim:
    claim = read_claim(request.app[RESUME_SECRET], request.query.get("t", ""), time.time())
    if claim is None or claim.carrier != carrier:
        log.warning("dial.bad_token", path=request.path)
        raise web.HTTPForbidden(text="a bad or expired call link\n")
    return claim


async def _tell(request: web.Request, call_id: str, report: DialReport) -> None:
    """A carrier's report to the process placing (or carrying) the call: this one, else under ``--workers``
    the sibling placing it, in fleet mode the call's owner through its action stream."""
    if request.app[DIALER].report(call_id, report):
        return
    siblings, fleet, fields = request.app.get(SIBLINGS), request.app[FLEET], report_fields(report)
    told = False
    if fleet is not None:  # the call's owner: the instance placing it, or carrying it since
        told = await fleet.transfers.send(call_id, {**fields, "call": call_id, "kind": DIAL_WORD})
    elif siblings is not None:  # --workers: the worker placing it
        told = await siblings.dial_report(call_id, fields)
    if not told:
        log.info("dial.report_not_here", status=report.status, answered_by=report.answered_by)


async def callback(request: web.Request) -> web.Response:
    """A status or answering-machine callback: read, then told to the call (if this process holds it)."""
    carrier = _carrier(request)
    if carrier not in CALLBACK_CARRIERS:
        raise web.HTTPNotFound(text=f"{carrier} sends no callbacks\n")
    claim = _claim(request, carrier)
    report = read_report(carrier, await carrier_fields(request, carrier))
    with structlog.contextvars.bound_contextvars(call_id=claim.call_id, provider=carrier):
        if report != DialReport():
            await _tell(request, claim.call_id, report)
    return web.Response(status=204)


async def answer(request: web.Request) -> web.Response:
    """The markup the callee's answer runs (Plivo ``answer_url``, jambonz ``call_hook``)."""
    carrier = _carrier(request)
    claim = _claim(request, carrier)
    await carrier_fields(request, carrier)
    links = DialLinks(public_base(request), _stream_url(request, carrier), request.query["t"])
    try:
        markup: Markup = answer_markup(carrier, links)
    except ValueError:
        raise web.HTTPNotFound(text=f"{carrier} calls carry their markup inline\n") from None
    await _tell(request, claim.call_id, DialReport(status="answered"))
    log.info("dial.answer_markup", call_id=claim.call_id, provider=carrier)
    return markup_response(markup)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/calls", create_call)
    app.router.add_delete("/v1/calls/{call_id}", end_call)
    app.router.add_post("/{carrier}/call-status", callback)
    app.router.add_post("/{carrier}/amd", callback)
    app.router.add_post("/{carrier}/outbound-answer", answer)
    app.router.add_get("/{carrier}/outbound-answer", answer)
