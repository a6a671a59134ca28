"""The Twilio voice webhook's answer (TwiML), and the public URLs the bridge gives carriers.

``POST /twilio/voice``: a Twilio voice webhook; answers TwiML that connects the call to
``/twilio/stream`` with the caller's From/To as ``<Parameter>``s: ``<Connect><Stream>`` (a bot on the
call), or in fork mode (a call between people) ``<Start><Stream track="both_tracks">`` then ``<Dial>``
or ``<Redirect>``. The mode: ``?mode=`` on the voice URL, else the called number's entry in
``twilio.numbers``, else ``twilio.voice_mode``; the number to dial: ``?dial=``, else the entry's.
"""

from __future__ import annotations

import structlog
from aiohttp import web

from bridge.adapters.twilio import connect_stream_twiml, fork_stream_twiml, signature_valid
from bridge.app_keys import RESUME_SECRET, SETTINGS
from bridge.call.resume import RESUME_PARAMETER, resume_token
from bridge.settings import DIAL_NUMBER

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


async def signed_form(request: web.Request) -> dict[str, str]:
    """A Twilio request's form fields, its ``X-Twilio-Signature`` checked over the public URL when
    ``TWILIO_AUTH_TOKEN`` is set (403 otherwise)."""
    form = await request.post()
    fields = {k: str(v) for k, v in form.items() if isinstance(v, str)}
    token = request.app[SETTINGS].twilio.auth_token
    if token is not None:
        url = public_base(request) + request.path_qs
        if not signature_valid(token.get_secret_value(), url, request.headers.get("X-Twilio-Signature"), fields):
            log.warning("twilio.bad_signature", path=request.path)
            raise web.HTTPForbidden(text="invalid X-Twilio-Signature\n")
    return fields


def stream_parameters(request: web.Request, fields: dict[str, str]) -> dict[str, str]:
    """The ``<Parameter>``s of a stream for this call: the voice webhook's fields the bot sees (From,
    To...) and the call's resume token (a restarted stream proves with it that it is the same call)."""
    parameters = {name: fields[name] for name in _VOICE_PARAMETERS if fields.get(name)}
    if fields.get("CallSid"):
        parameters[RESUME_PARAMETER] = resume_token(request.app[RESUME_SECRET], "twilio", fields["CallSid"])
    return parameters


async def twilio_voice(request: web.Request) -> web.Response:
    """TwiML for a Twilio number's voice URL: connect the call's audio to the bridge."""
    settings = request.app[SETTINGS]
    fields = await signed_form(request)
    parameters = stream_parameters(request, fields)
    twilio = settings.twilio
    number = twilio.numbers.get(fields.get("To", ""))
    mode = request.query.get("mode") or (number.mode if number is not None else twilio.voice_mode)
    if mode == "connect":
        # <Connect action>: once the stream closes Twilio asks /twilio/after-stream what comes next (a
        # transfer's <Dial>, TWILIO_AFTER_STREAM_URL, or <Hangup/>: bridge.http.call_control)
        after = public_base(request) + "/twilio/after-stream"
        twiml = connect_stream_twiml(stream_url(request, "twilio"), parameters, action_url=after)
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
