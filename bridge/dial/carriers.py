"""Each platform's requests for an outbound call (pure): create, cancel or hang up, and the markup its
answer URL serves. Built and not sent (:mod:`bridge.control.send` sends them).

==========  ====================================================  ============================================
platform    create (the callee's audio streams to the bridge)    cancel (ringing) / hang up (answered)
==========  ====================================================  ============================================
twilio      ``POST .../Accounts/{AC}/Calls.json`` (form): inline  ``POST .../Calls/{CA}.json``
            ``Twiml`` ``<Connect action><Stream>`` with the       ``Status=canceled`` / ``completed``
            claim as a ``<Parameter>``; async AMD
signalwire  the same on ``/api/laml/...``; ``<Connect>`` has no   the same on ``/api/laml/...``
            ``action``: a ``<Redirect>`` after it
telnyx      ``POST /v2/calls`` with ``stream_url`` (RTP, PCMU)    ``POST /v2/calls/{id}/actions/hangup``
plivo       ``POST /v1/Account/{id}/Call/``; ``answer_url``       ``DELETE .../Request/{request_uuid}/`` /
            serves the ``<Stream>`` (:func:`answer_markup`)       ``DELETE .../Call/{CallUUID}/``
vonage      ``POST /v1/calls`` with an NCCO ``connect`` to the    ``PUT /v1/calls/{uuid}`` ``hangup``
            bridge's WebSocket; advanced machine detection
jambonz     ``POST /v1/Accounts/{a}/Calls``; ``call_hook``        ``POST .../Calls/{sid}`` ``call_status``
            serves the ``listen`` verb (:func:`answer_markup`)    ``no-answer`` / ``completed``
freeswitch  ESL ``originate {...api_on_answer='uuid_audio_fork    ``uuid_kill <uuid>``
            ...'}<dial> &park()``
asterisk    ARI ``POST /channels?endpoint=&context=&...``; the    ``DELETE /channels/{id}``
            operator's dialplan runs ``AMD()`` and
            ``Dial(WebSocket/...)`` to the claimed stream URL
==========  ====================================================  ============================================

Every request carries the call's claim (:func:`bridge.dial.order.claim_token`): in the stream (a
``bridge.outbound`` parameter, or ``?outbound=`` on the stream URL where the platform passes no stream
parameters) and in every callback URL (``?t=``), so the stream and the callbacks are bound to the call the
bot created. The tests compare each request with what the vendor's SDK sends for the same call (twilio,
telnyx, plivo, vonage) or with the platform's documented request (jambonz's swagger, ARI).

The two rules of :mod:`bridge.control.rest` hold here too: a carrier's id is one quoted path segment, and
credentials go only into the ``Authorization`` header, which :class:`HttpRequest`'s ``repr`` hides.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Any

from bridge.control import jambonz_verbs, plivo_xml
from bridge.control.esl import _argument as _esl_argument  # the api-argument check (private in esl.py)
from bridge.control.rest import HttpRequest, _base, _basic, _bearer, _form, _json, segment, vonage_jwt
from bridge.control.ways import Markup
from bridge.dial.creates import (
    FORK_RATE,
    MAX_ID_CHARS,
    MAX_MESSAGE_CHARS,
    PLIVO_CONTENT_TYPE,
    UUID_FORM,
    ari_base,
    asterisk_create,
    freeswitch_originate,
    fresh_uuid,
    jambonz_base,
    jambonz_create,
    plivo_create,
    secret,
    setting,
    signalwire_create,
    telnyx_create,
    twilio_create,
    vonage_create,
)
from bridge.dial.links import DialLinks, EslOriginate
from bridge.dial.order import DialOrder
from bridge.errors import ControlError
from bridge.setting_sections import ControlSettings, OutboundSettings


def create_request(
    order: DialOrder,
    call_id: str,
    control: ControlSettings,
    outbound: OutboundSettings,
    links: DialLinks,
    *,
    twilio_auth_token: str = "",
    now: float | None = None,
    fresh_id: str | None = None,
) -> HttpRequest | EslOriginate:
    """The request that places ``order``'s call: the callee's audio streams to ``links.stream_url``
    carrying the claim, the carrier's status (and AMD) callbacks come to ``links``' signed routes.

    Call it once the order is accepted and its claim made; send the :class:`HttpRequest` with
    :func:`bridge.control.send.send_request` and read its answer with :func:`created_call_id`, or run the
    :class:`EslOriginate`'s command with :func:`bridge.control.send.esl_api` (its uuid is the carrier id).

    Args:
        order: the bot's order (checked by :func:`bridge.dial.order.refusal`; the values are checked here
            again where the request's syntax needs it).
        call_id: the bridge's id of the call. Not on the wire: every URL carries it inside the claim.
        twilio_auth_token: ``TWILIO_AUTH_TOKEN`` (the twilio section's, not ``control``'s).
        now: the Vonage JWT's ``iat`` (default: the clock).
        fresh_id: a uuid4 (lower-case, dashed) for the Vonage JWT's ``jti``, FreeSWITCH's
            ``origination_uuid`` or Asterisk's ``channelId`` (default: a new one); given by tests.

    Raises:
        ControlError: a value the request cannot carry (a sip: ``from`` where a number is needed, a
            character that would break an ESL command, TwiML over 4000 characters) or a missing credential.
    """
    del call_id  # carried inside links.token
    carrier = order.carrier
    if carrier == "twilio":
        return twilio_create(order, control, links, twilio_auth_token)
    if carrier == "signalwire":
        return signalwire_create(order, control, links)
    if carrier == "telnyx":
        return telnyx_create(order, control, outbound, links)
    if carrier == "plivo":
        return plivo_create(order, control, links)
    if carrier == "vonage":
        jti = fresh_uuid(fresh_id)
        return vonage_create(order, control, links, now=time.time() if now is None else now, jti=jti)
    if carrier == "jambonz":
        return jambonz_create(order, control, links)
    if carrier == "freeswitch":
        return freeswitch_originate(order, control, links, fresh_uuid(fresh_id))
    if carrier == "asterisk":
        return asterisk_create(order, control, outbound, links, fresh_uuid(fresh_id))
    raise ControlError(f"{carrier}: no outbound calls")


# --- the create's answer ------------------------------------------------------------------------------


def _error_text(body: str) -> str:
    """The carrier's own words from an error answer: Twilio ``message``, Telnyx ``errors[0].detail``, Plivo
    ``error``, Vonage ``detail``/``title``, jambonz ``msg``, ARI ``message``; else the body as text."""
    text = body
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        data = None
    if isinstance(data, dict):
        errors = data.get("errors")
        first = errors[0] if isinstance(errors, list) and errors and isinstance(errors[0], dict) else {}
        for candidate in (
            data.get("message"),
            data.get("msg"),
            data.get("error"),
            data.get("detail"),
            first.get("detail"),
            first.get("title"),
            data.get("title"),
        ):
            if isinstance(candidate, str) and candidate.strip():
                text = candidate
                break
            if isinstance(candidate, dict) and candidate:
                text = json.dumps(candidate, ensure_ascii=False)
                break
    cleaned = " ".join(re.sub(r"[\x00-\x1f\x7f]", " ", text).split())
    return cleaned[:MAX_MESSAGE_CHARS]


def _id_at(data: Any, path: tuple[str, ...]) -> str | None:
    for key in path:
        data = data.get(key) if isinstance(data, dict) else None
    if not isinstance(data, str) or not data or len(data) > MAX_ID_CHARS:
        return None
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in data):
        return None
    return data


# Where each platform's create answer has the call's id.
CREATED_ID_PATH: dict[str, tuple[str, ...]] = {
    "twilio": ("sid",),  # the Call resource, 201
    "signalwire": ("sid",),
    "telnyx": ("data", "call_control_id"),  # telnyx types/call_dial_response.py
    "plivo": ("request_uuid",),  # {"message": "call fired", "request_uuid": ...}; CallUUID comes later
    "vonage": ("uuid",),  # vonage_voice CreateCallResponse
    "jambonz": ("sid",),  # createCall 201 {"sid"}
    "asterisk": ("id",),  # ARI Channel
}


def created_call_id(carrier: str, status: int, body: str) -> str:
    """The carrier's id of the call from its answer to :func:`create_request` (Plivo: the request uuid).

    For FreeSWITCH ``body`` is the ``originate``'s output (``+OK <uuid>``; ``status`` is not read).

    Raises:
        ControlError: the carrier refused (not 2xx, or ``-ERR``) or the answer has no id; the message has
            the status and the carrier's error text (at most 200 characters), never a credential.
    """
    if carrier == "freeswitch":
        reply = body.strip()
        if reply.startswith("+OK"):
            found = reply[3:].strip()
            if UUID_FORM.fullmatch(found):
                return found
        raise ControlError(f"freeswitch: originate answered {_error_text(reply) or 'nothing'}")
    path = CREATED_ID_PATH.get(carrier)
    if path is None:
        raise ControlError(f"{carrier}: no outbound calls")
    if not 200 <= status < 300:
        raise ControlError(f"{carrier} refused the call: HTTP {status}: {_error_text(body) or 'no message'}")
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        data = None
    found_id = _id_at(data, path)
    if found_id is None:
        where = ".".join(path)
        raise ControlError(f"{carrier}: HTTP {status} without a call id ({where}): {_error_text(body) or 'empty'}")
    return found_id


# --- cancel, hang up ----------------------------------------------------------------------------------


def end_request(
    carrier: str,
    control: ControlSettings,
    outbound: OutboundSettings,
    carrier_call_id: str,
    *,
    answered: bool,
    twilio_auth_token: str = "",
    now: float | None = None,
    jti: str | None = None,
) -> HttpRequest | str:
    """Cancel a call still ringing (``answered`` False) or hang up an answered one: an HTTP request, or
    the FreeSWITCH ``api`` command (a str).

    ``carrier_call_id`` is :func:`created_call_id`'s, except Plivo's answered call: its ``CallUUID`` (from
    the callbacks), not the request uuid. ``now``/``jti``: the Vonage JWT's (default: the clock, a uuid4).

    - Twilio/SignalWire: ``POST .../Calls/{sid}.json`` ``Status=canceled`` (ringing) or ``completed``
      (twilio-python ``calls(sid).update(status=...)``, whose update enum is those two; ``canceled`` ends a
      call queued or ringing and leaves one in progress alone, ``completed`` hangs one up: UNVERIFIED on a
      Twilio page here, read from the enum's names and client libraries);
    - Telnyx: ``POST /v2/calls/{id}/actions/hangup`` ``{}`` (telnyx-python ``calls.actions.hangup``);
    - Plivo: ringing ``DELETE /v1/Account/{id}/Request/{request_uuid}/`` (plivo-python ``calls.cancel``),
      answered ``DELETE /v1/Account/{id}/Call/{call_uuid}/`` (``calls.delete``, whose JSON body repeats
      ``call_uuid``);
    - Vonage: ``PUT /v1/calls/{uuid}`` ``{"action": "hangup"}`` (vonage_voice ``voice.hangup``);
    - jambonz: ``POST /v1/Accounts/{a}/Calls/{sid}`` ``{"call_status": "no-answer" | "completed"}``
      (swagger ``updateCall``, whose ``call_status`` enum is those two);
    - FreeSWITCH: ``uuid_kill <uuid>``;
    - Asterisk: ARI ``DELETE /channels/{id}`` (hang up a channel, in any state).

    Raises:
        ControlError: an id the request cannot carry, a missing credential, or a platform without calls.
    """
    call = segment(carrier_call_id)
    if carrier in ("twilio", "signalwire"):
        status_field = [("Status", "completed" if answered else "canceled")]
        if carrier == "twilio":
            sid = setting(control.twilio_account_sid, "TWILIO_ACCOUNT_SID")
            auth = _basic(sid, setting(twilio_auth_token, "TWILIO_AUTH_TOKEN"))
            url = f"{_base(control.twilio_api_url)}/2010-04-01/Accounts/{segment(sid)}/Calls/{call}.json"
        else:
            project = setting(control.signalwire_project_id, "SIGNALWIRE_PROJECT_ID")
            auth = _basic(project, secret(control.signalwire_api_token, "SIGNALWIRE_API_TOKEN"))
            base = _base(setting(control.signalwire_api_url, "SIGNALWIRE_API_URL"))
            url = f"{base}/api/laml/2010-04-01/Accounts/{segment(project)}/Calls/{call}.json"
        return _form(url, auth, status_field)
    if carrier == "telnyx":
        auth = _bearer(secret(control.telnyx_api_key, "TELNYX_API_KEY"))
        return _json("POST", f"{_base(control.telnyx_api_url)}/v2/calls/{call}/actions/hangup", auth, {})
    if carrier == "plivo":
        auth_id = setting(control.plivo_auth_id, "PLIVO_AUTH_ID")
        auth = _basic(auth_id, secret(control.plivo_auth_token, "PLIVO_AUTH_TOKEN"))
        account = f"{_base(control.plivo_api_url)}/v1/Account/{segment(auth_id)}"
        if answered:
            return _json("DELETE", f"{account}/Call/{call}/", auth, {"call_uuid": carrier_call_id})
        return HttpRequest(
            "DELETE", f"{account}/Request/{call}/", {"Authorization": auth, "Accept": "application/json"}, b""
        )
    if carrier == "vonage":
        token = vonage_jwt(
            setting(control.vonage_application_id, "VONAGE_APPLICATION_ID"),
            secret(control.vonage_private_key, "VONAGE_PRIVATE_KEY"),
            now=time.time() if now is None else now,
            jti=jti or str(uuid.uuid4()),
        )
        url = f"{_base(control.vonage_api_url)}/v1/calls/{call}"
        return _json("PUT", url, _bearer(token), {"action": "hangup"})
    if carrier == "jambonz":
        accounts, auth = jambonz_base(control)
        payload = {"call_status": "completed" if answered else "no-answer"}
        return _json("POST", f"{accounts}/Calls/{call}", auth, payload)
    if carrier == "freeswitch":
        return f"uuid_kill {_esl_argument(carrier_call_id, 'uuid')}"
    if carrier == "asterisk":
        base, auth = ari_base(control)
        return HttpRequest(
            "DELETE", f"{base}/channels/{call}", {"Authorization": auth, "Accept": "application/json"}, b""
        )
    raise ControlError(f"{carrier}: no outbound calls")


# --- the answer URL's markup --------------------------------------------------------------------------


def answer_markup(carrier: str, links: DialLinks) -> Markup:
    """What ``/{carrier}/outbound-answer`` serves when the callee answers (Plivo ``answer_url``, jambonz
    ``call_hook``): the stream to the bridge carrying the claim.

    - Plivo: ``<Stream bidirectional keepCallAlive contentType="audio/x-mulaw;rate=8000">`` to the claimed
      stream URL (the claim does not fit ``extraHeaders``, which allow only A-Z, a-z, 0-9), then a
      ``<Redirect>`` to ``/plivo/after-stream`` once it ends, as the bridge's transfer return writes it
      (:func:`bridge.control.plivo_xml.return_xml`);
    - jambonz: a ``listen`` to the claimed stream URL at 8000 Hz (:func:`bridge.control.jambonz_verbs.return_verbs`).

    Raises:
        ValueError: the carrier's calls carry their markup inline (Twilio, SignalWire, Vonage) or have none.
    """
    if carrier == "plivo":
        body = plivo_xml.return_xml(
            links.claimed_stream_url(),
            extra_headers={},
            content_type=PLIVO_CONTENT_TYPE,
            after_url=links.after_stream_url("plivo"),
        )
        return Markup(body, "text/xml")
    if carrier == "jambonz":
        return Markup(
            jambonz_verbs.return_verbs(links.claimed_stream_url(), metadata={}, sample_rate=FORK_RATE),
            "application/json",
        )
    raise ValueError(f"{carrier}: no answer markup (its calls carry their markup inline, or have none)")
