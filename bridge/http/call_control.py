"""The routes a carrier calls back while the bridge transfers a call (thin shell over bridge.control).

==================================  =================================================================
``POST /{carrier}/after-stream``    the stream has closed (Twilio ``<Connect action>``; Plivo's
                                    ``<Redirect>`` after a returned stream). The answer a transfer
                                    left on the desk (its ``<Dial>``), else Twilio: a ``<Redirect>`` to
                                    ``TWILIO_AFTER_STREAM_URL`` or ``<Hangup/>``; Plivo: ``<Hangup/>``
``POST /{carrier}/transfer``        the markup a REST hand-over pointed the carrier at (SignalWire
                                    ``Url``, Plivo ``aleg_url``, jambonz ``call_hook``): the ``<Dial>``
                                    (or ``dial`` verb) in the carrier's dialect
``POST /{carrier}/dial-status``     the dial's report (Twilio ``DialCallStatus``, Plivo ``DialStatus``,
                                    jambonz ``dial_call_status``, Vonage ``status``, Telnyx's webhooks).
                                    Answered: the call ends (``transfer.completed``). Nobody answered
                                    and the bot asked ``on_no_answer: return``: the markup of a fresh
                                    stream back to the bridge (the call's resume token, the transfer's
                                    id and status as its parameters), or for Telnyx, whose caller never
                                    left the stream, ``transfer.failed`` at once; else the end
                                    (``transfer.failed``, ``end_reason: transfer_failed``). With
                                    ``answered=1`` it is Twilio's ``<Number statusCallback>`` or
                                    Plivo's ``<Dial callbackUrl>`` (``DialAction=answer``)
``POST|GET /{carrier}/announce``    the briefing markup run on the person's leg (``<Number url>``,
                                    ``confirmSound``, ``confirmHook``, ``onAnswer``): play the audio
``GET /transfer/announce.wav``      the briefing, spoken in the bridge's own voice (WAV; Telnyx's
                                    ``audio_url`` too)
==================================  =================================================================

Twilio's requests are checked like ``/twilio/voice`` (``X-Twilio-Signature`` over the public URL when
``TWILIO_AUTH_TOKEN`` is set). Every URL the bridge gave a carrier carries one token it signed
(:mod:`bridge.control.tokens`, under ``BRIDGE_SECRET``) holding the transfer's order
(:class:`bridge.control.ways.Order`): a bad or expired one gets the carrier's hang-up (the safe end),
403 on the audio. The answers need nothing but the request and the token, so any worker or instance
gives them; the desk's entry and the call's own outcome are found by :func:`_desk_answer` and
:func:`_transfer_of` (another worker's or instance's under ``--workers`` and in fleet mode).
"""

from __future__ import annotations

import time
from typing import Any

import structlog
from aiohttp import web

from bridge.app_keys import RESUME_SECRET, SETTINGS
from bridge.call.resume import RESUME_PARAMETER, resume_token
from bridge.call.transfer import STATUS_PARAMETER, TRANSFER_PARAMETER
from bridge.control import tokens, ways
from bridge.control.telnyx_webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, public_key, signed_by_telnyx
from bridge.control.twiml import redirect_twiml
from bridge.errors import TtsError
from bridge.http.twiml import public_base, signed_form, stream_parameters, stream_url
from bridge.reply.tts import SPEAKER
from bridge.transfer_reach import TransferOutcome, take_answer, transfer_of
from bridge.untrusted import loads
from bridge.wav import pcm16_wav

log = structlog.get_logger("bridge.transfer")

CARRIERS = frozenset({"twilio", "signalwire", "telnyx", "plivo", "vonage", "audiofork"})
MAX_ANNOUNCE_SECONDS = 60.0


def markup_response(markup: ways.Markup) -> web.Response:
    """A carrier's markup as its answer: JSON (NCCO, jambonz verbs) or XML (TwiML, Plivo XML)."""
    if isinstance(markup.body, list):
        return web.json_response(markup.body)
    return web.Response(text=markup.body, content_type=markup.content_type)


def _carrier(request: web.Request) -> str:
    carrier = request.match_info["carrier"]
    if carrier not in CARRIERS:
        raise web.HTTPNotFound(text=f"no call-control route for {carrier[:32]!r}\n")
    return carrier


async def carrier_fields(request: web.Request, carrier: str) -> dict[str, Any]:
    """A carrier's callback: Twilio's signed form (403 when the signature is wrong), another form, JSON
    (Vonage, jambonz, Telnyx: an object, else nothing; 400 not JSON, 413 over the body bound), or a GET's
    query (a markup fetch)."""
    if carrier == "twilio":
        return dict(await signed_form(request))
    if carrier == "telnyx":
        _telnyx_signed(request, await request.read())  # (aiohttp keeps the body for the reads below)
    if request.content_type == "application/json":
        raw = await request.read()  # whole, however many reads it takes; over client_max_size: 413
        try:
            data = loads(raw)  # nested deeper than MAX_JSON_DEPTH: refused before parsing
        except ValueError:
            raise web.HTTPBadRequest(text="not JSON\n") from None
        return data if isinstance(data, dict) else {}
    if request.method == "GET":
        return dict(request.query)
    form = await request.post()
    return {k: str(v) for k, v in form.items() if isinstance(v, str)}


def _telnyx_signed(request: web.Request, body: bytes) -> None:
    """With ``TELNYX_PUBLIC_KEY`` set, a Telnyx callback must carry Telnyx's signature (403 otherwise)."""
    key = request.app[SETTINGS].control.telnyx_public_key
    if not key:
        return
    signature, timestamp = request.headers.get(SIGNATURE_HEADER), request.headers.get(TIMESTAMP_HEADER)
    if not signed_by_telnyx(public_key(key), body, signature, timestamp, time.time()):
        log.warning("telnyx.bad_signature", path=request.path)
        raise web.HTTPForbidden(text="invalid telnyx-signature-ed25519\n")


def _order(request: web.Request) -> ways.Order | None:
    fields = tokens.verify(request.app[RESUME_SECRET], request.query.get("t", ""), time.time())
    return ways.Order.from_fields(fields) if fields is not None else None


async def _desk_answer(request: web.Request, carrier: str, call_sid: str) -> str | None:
    """The answer a transfer left for this call's next fetch (taken once; another worker's, or Redis's)."""
    return await take_answer(request.app, carrier, call_sid) if call_sid else None


async def _transfer_of(request: web.Request, call_id: str) -> TransferOutcome | None:
    """The transfer of a call (waiting suspended, or on its stream: Telnyx), here or where it is held."""
    return await transfer_of(request.app, call_id)


async def after_stream(request: web.Request) -> web.Response:
    carrier = _carrier(request)
    data = await carrier_fields(request, carrier)
    call_sid = str(data.get("CallSid") or data.get("CallUUID") or "")
    answer = await _desk_answer(request, carrier, call_sid)
    if answer is not None:
        log.info("transfer.dialing", carrier=carrier, call_sid=call_sid)
        return web.Response(text=answer, content_type="text/xml")
    after = request.app[SETTINGS].twilio.after_stream_url
    if carrier == "twilio" and after:
        return web.Response(text=redirect_twiml(after), content_type="text/xml")
    return markup_response(ways.hangup(carrier))


async def transfer_markup(request: web.Request) -> web.Response:
    carrier = _carrier(request)
    await carrier_fields(request, carrier)
    order = _order(request)
    if order is None or order.carrier != carrier:
        log.warning("transfer.bad_token", path=request.path)
        return markup_response(ways.hangup(carrier))
    links = ways.Links(public_base(request), request.query["t"], announced=order.announce is not None)
    log.info("transfer.dialing", carrier=carrier, call_id=order.call_id, action_id=order.action_id)
    return markup_response(ways.dial(order, links))


async def dial_status(request: web.Request) -> web.Response:
    carrier = _carrier(request)
    data = await carrier_fields(request, carrier)
    order = _order(request)
    if order is None or order.carrier != carrier:
        log.warning("transfer.bad_token", path=request.path)
        return markup_response(ways.hangup(carrier))
    transfer = await _transfer_of(request, order.call_id)
    if request.query.get("answered") == "1":  # Twilio's <Number statusCallback>, Plivo's <Dial callbackUrl>
        # Plivo's also comes when the person hangs up (DialAction=hangup): only "answer" is the answer
        answer = carrier != "plivo" or "answer" in (data.get("DialAction"), data.get("DialBLegStatus"))
        if transfer is not None and answer:
            transfer.answered(order.action_id, order.to)
        return web.Response(text='<?xml version="1.0" encoding="UTF-8"?><Response/>', content_type="text/xml")
    outcome = ways.dial_outcome(carrier, data)
    log.info("transfer.dial_report", call_id=order.call_id, action_id=order.action_id, outcome=outcome)
    if outcome is None:  # not an end (ringing, started...)
        return web.Response(status=204)
    if outcome == "answered":
        if transfer is not None:
            transfer.answered(order.action_id, order.to)
        if carrier in ("telnyx", "vonage"):
            # Vonage: a synchronous connect's eventUrl "can return an NCCO that overrides the current NCCO":
            # none, so the caller stays with the person (an empty NCCO could end the call, UNVERIFIED)
            return web.Response(status=204)
        return markup_response(ways.hangup(carrier))
    if order.on_no_answer != "return":
        if transfer is not None:
            transfer.gave_up(order.action_id, outcome)
        return markup_response(ways.hangup(carrier)) if carrier != "telnyx" else web.Response(status=204)
    if carrier == "telnyx":  # the caller never left the stream: the bot has the call again
        if transfer is not None:
            transfer.not_answered(order.action_id, outcome)
        return web.Response(status=204)
    return markup_response(_returning(request, carrier, order, data, outcome))


def _returning(
    request: web.Request, carrier: str, order: ways.Order, data: dict[str, Any], outcome: str
) -> ways.Markup:
    """The markup of the stream that brings the caller back (any process may get it: the resume token
    proves it, the parameters say which transfer failed and how)."""
    secret = request.app[RESUME_SECRET]
    if carrier == "twilio":
        parameters = stream_parameters(request, {k: str(v) for k, v in data.items()})
    else:
        parameters = {RESUME_PARAMETER: resume_token(secret, carrier, order.call_sid)}
        if carrier == "vonage":
            parameters["uuid"] = order.call_sid  # the adapter's call id: the same call
        elif carrier == "audiofork":
            parameters["callSid"] = order.call_sid
    parameters[TRANSFER_PARAMETER], parameters[STATUS_PARAMETER] = order.action_id, outcome
    url = stream_url(request, carrier)
    token = request.app[SETTINGS].carriers.tokens.get(carrier)
    if token is not None:  # every carrier's stream takes ?token= (bridge.adapters.stream_auth)
        url += "?token=" + token.get_secret_value()
    after = f"{public_base(request)}/{carrier}/after-stream"
    return ways.returning(carrier, stream_url=url, parameters=parameters, after_url=after, caller_id=order.caller_id)


async def announce(request: web.Request) -> web.Response:
    carrier = _carrier(request)
    await carrier_fields(request, carrier)
    order = _order(request)
    if order is None or order.announce is None:
        log.warning("transfer.bad_token", path=request.path)
        return markup_response(ways.hangup(carrier))  # the person's leg: no briefing, no bridge
    return markup_response(
        ways.announce(carrier, f"{public_base(request)}/transfer/announce.wav?t={request.query['t']}")
    )


async def announce_audio(request: web.Request) -> web.StreamResponse:
    order = _order(request)
    if order is None or order.announce is None:
        raise web.HTTPForbidden(text="a bad or expired briefing link\n")
    speaker = request.app.get(SPEAKER)
    if speaker is None:
        raise web.HTTPServiceUnavailable(text="no speech engine: set TTS_API_URL or install the local extra\n")
    pcm, rate = bytearray(), 0
    try:
        async for speech in speaker.speak(order.announce):
            pcm += speech.pcm
            rate = speech.sample_rate
            if len(pcm) > MAX_ANNOUNCE_SECONDS * rate * 2:
                break
    except TtsError as exc:
        log.warning("transfer.announce_failed", error=str(exc)[:200])
        raise web.HTTPServiceUnavailable(text="the briefing could not be spoken\n") from None
    log.info("transfer.announce_served", call_id=order.call_id, seconds=round(len(pcm) / max(rate, 1) / 2, 1))
    return web.Response(body=pcm16_wav(bytes(pcm), rate or 8000), content_type="audio/wav")


def add_routes(app: web.Application) -> None:
    app.router.add_post("/{carrier}/after-stream", after_stream)
    app.router.add_post("/{carrier}/transfer", transfer_markup)
    app.router.add_post("/{carrier}/dial-status", dial_status)
    app.router.add_post("/{carrier}/announce", announce)
    # Vonage fetches an endpoint's onAnswer NCCO as it fetches answer URLs: GET unless told otherwise (its
    # method is not documented for onAnswer, UNVERIFIED): both are served.
    app.router.add_get("/{carrier}/announce", announce)
    app.router.add_get("/transfer/announce.wav", announce_audio)
