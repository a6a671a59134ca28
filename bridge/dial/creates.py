"""Each platform's create request for an outbound call (pure): the builders
:func:`bridge.dial.carriers.create_request` dispatches to, and the checks they share (a credential named
when missing, the numbers and SIP URIs each platform takes, the values an ESL command can carry). The
table of what each platform gets is :mod:`bridge.dial.carriers`'s."""

from __future__ import annotations

import base64
import re
import uuid
from typing import Any
from urllib.parse import urlencode

from pydantic import SecretStr

from bridge.adapters.twilio import connect_stream_twiml
from bridge.control import ncco, twiml
from bridge.control.allow import destination
from bridge.control.rest import HttpRequest, _base, _basic, _bearer, _form, _json, segment, vonage_jwt
from bridge.dial.links import DialLinks, EslOriginate
from bridge.dial.order import DialOrder
from bridge.errors import ControlError
from bridge.setting_sections import ControlSettings, OutboundSettings

TWIML_MAX_CHARS = 4000  # Twilio: "Max 4000 characters" for Twiml (twilio-python@306691e calls create docstring)
# One form field per event, as the twilio SDK sends a list (serialize.map); default would be "completed" only.
STATUS_EVENTS = ("initiated", "ringing", "answered", "completed")
TWILIO_AMD = {"detect": "Enable", "detect_message_end": "DetectMessageEnd"}
# telnyx call_dial_params.py: "detect" sends call.machine.detection.ended; "greeting_end" adds
# call.machine.greeting.ended once a machine's greeting ends "with a beep or silence" (voicemail drop).
TELNYX_AMD = {"detect": "detect", "detect_message_end": "greeting_end"}
# vonage_voice models/common.py AdvancedMachineDetection: mode default|detect|detect_beep, beep_timeout 45-120.
VONAGE_AMD = {"detect": "detect", "detect_message_end": "detect_beep"}
VONAGE_BEEP_TIMEOUT = 45  # s: the lowest the SDK's model allows
VONAGE_CONTENT_TYPE = "audio/l16;rate=16000"
PLIVO_CONTENT_TYPE = "audio/x-mulaw;rate=8000"
FORK_RATE = 8000  # Hz: FreeSWITCH's fork ("8k") and jambonz's listen
# Plivo's create: the SDK sends its defaults for these whatever the caller passes (plivo-python@a0cd323
# plivo/resources/calls.py Calls.create); the bridge sends them too, so its request is the SDK's.
PLIVO_SDK_DEFAULTS: dict[str, Any] = {
    "ring_method": "POST",
    "hangup_method": "POST",
    "fallback_method": "POST",
    "machine_detection_time": 5000,
    "machine_detection_method": "POST",
    "error_if_parent_not_found": False,
}
# What may not stand in an originate's {} variable list or dial string: a space ends the argument, a quote
# or backquote opens or closes one, "," separates variables (and simultaneous dial targets), "|" sequential
# targets, {} [] open or close a variable block, "$" expands a variable (${...}), "^" changes the list's
# separator (^^:), a backslash escapes.
_ESL_UNSAFE = re.compile(r"[\s'\"`,|{}\[\]$^\\\x00-\x1f\x7f]")
UUID_FORM = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
MAX_MESSAGE_CHARS = 200
MAX_ID_CHARS = 256


def secret(value: SecretStr | None, name: str) -> str:
    text = value.get_secret_value() if value is not None else ""
    if not text:
        raise ControlError(f"outbound calls need {name}")
    return text


def setting(value: str, name: str) -> str:
    if not value:
        raise ControlError(f"outbound calls need {name}")
    return value


def _kind(value: str, carrier: str, what: str) -> str:
    """``number`` (E.164) or ``sip`` (a SIP URI), else ControlError (an order built past its validation)."""
    try:
        return destination(value)
    except ValueError:
        raise ControlError(f"{carrier}: {what} {value[:64]!r} is neither an E.164 number nor a SIP URI") from None


def _number(value: str, carrier: str, what: str) -> str:
    """An E.164 number as digits without "+" (Plivo's and Vonage's REST APIs write numbers so)."""
    if _kind(value, carrier, what) != "number":
        raise ControlError(f"{carrier}: {what} must be an E.164 number, not {value[:64]!r}")
    return value.removeprefix("+")


def fresh_uuid(given: str | None) -> str:
    value = given if given is not None else str(uuid.uuid4())
    if not UUID_FORM.fullmatch(value):
        raise ControlError(f"a channel uuid must be a lower-case uuid, not {value[:64]!r}")
    return value


# --- Twilio and SignalWire ----------------------------------------------------------------------------


def _twiml_fields(order: DialOrder, links: DialLinks, carrier: str, markup: str) -> list[tuple[str, str]]:
    """The create form (twilio-python@306691e ``rest/api/v2010/account/call/__init__.py`` ``create``; SignalWire's
    Compatibility API takes the same fields, https://signalwire.com/docs/compatibility-api/rest/calls/create-a-call).

    AMD is asynchronous (``AsyncAmd=true``): the stream starts at once and the verdict is POSTed to the AMD
    route (https://www.twilio.com/docs/voice/answering-machine-detection)."""
    if len(markup) > TWIML_MAX_CHARS:
        raise ControlError(f"{carrier}: the call's TwiML is {len(markup)} characters, over {TWIML_MAX_CHARS}")
    fields = [("To", order.to), ("From", order.from_), ("Twiml", markup), ("StatusCallback", links.status_url(carrier))]
    fields += [("StatusCallbackEvent", event) for event in STATUS_EVENTS]
    fields += [("StatusCallbackMethod", "POST"), ("Timeout", str(order.ring_timeout_s))]
    if order.machine_detection != "off":
        fields += [
            ("MachineDetection", TWILIO_AMD[order.machine_detection]),
            ("AsyncAmd", "true"),
            ("AsyncAmdStatusCallback", links.amd_url(carrier)),
            ("AsyncAmdStatusCallbackMethod", "POST"),
        ]
    return fields


def twilio_create(order: DialOrder, control: ControlSettings, links: DialLinks, auth_token: str) -> HttpRequest:
    # <Connect action>: when the stream ends Twilio asks /twilio/after-stream what comes next, as for the
    # bridge's own answer to an inbound call (bridge.http.twiml).
    markup = twiml.return_twiml(links.stream_url, links.stream_parameters(), links.after_stream_url("twilio"))
    sid = setting(control.twilio_account_sid, "TWILIO_ACCOUNT_SID")
    auth = _basic(sid, setting(auth_token, "TWILIO_AUTH_TOKEN"))
    url = f"{_base(control.twilio_api_url)}/2010-04-01/Accounts/{segment(sid)}/Calls.json"
    return _form(url, auth, _twiml_fields(order, links, "twilio", markup))


def signalwire_create(order: DialOrder, control: ControlSettings, links: DialLinks) -> HttpRequest:
    # SignalWire documents <Connect> without attributes, so no action: the <Redirect> after </Connect> is the
    # fetch point once the stream ends (call-control.md §2; that it runs after a server-closed stream is
    # UNVERIFIED, Twilio's behaviour assumed; without it the call ends, which is also a safe end).
    markup = connect_stream_twiml(
        links.stream_url, links.stream_parameters(), after_url=links.after_stream_url("signalwire")
    )
    project = setting(control.signalwire_project_id, "SIGNALWIRE_PROJECT_ID")
    auth = _basic(project, secret(control.signalwire_api_token, "SIGNALWIRE_API_TOKEN"))
    base = _base(setting(control.signalwire_api_url, "SIGNALWIRE_API_URL"))
    url = f"{base}/api/laml/2010-04-01/Accounts/{segment(project)}/Calls.json"
    return _form(url, auth, _twiml_fields(order, links, "signalwire", markup))


# --- Telnyx -------------------------------------------------------------------------------------------


def telnyx_create(
    order: DialOrder, control: ControlSettings, outbound: OutboundSettings, links: DialLinks
) -> HttpRequest:
    """Call Control "dial" (team-telnyx/telnyx-python ``resources/calls/calls.py`` ``dial``,
    ``types/call_dial_params.py``): the stream opens on answer, bidirectional RTP in PCMU (the Telnyx
    adapter's mu-law); the call's webhooks, AMD's included, go to ``webhook_url``; ``client_state`` (the
    claim, base64 as Telnyx requires) comes back on every one of them."""
    payload: dict[str, Any] = {
        "connection_id": setting(outbound.telnyx_connection_id, "TELNYX_CONNECTION_ID"),
        "to": order.to,
        "from": order.from_,
        "stream_url": links.claimed_stream_url(),
        "stream_track": "inbound_track",
        "stream_bidirectional_mode": "rtp",
        "stream_bidirectional_codec": "PCMU",
        "timeout_secs": order.ring_timeout_s,
        "webhook_url": links.status_url("telnyx"),
        "webhook_url_method": "POST",
        "client_state": base64.b64encode(links.token.encode()).decode("ascii"),
    }
    if order.machine_detection != "off":
        payload["answering_machine_detection"] = TELNYX_AMD[order.machine_detection]
    auth = _bearer(secret(control.telnyx_api_key, "TELNYX_API_KEY"))
    return _json("POST", f"{_base(control.telnyx_api_url)}/v2/calls", auth, payload)


# --- Plivo --------------------------------------------------------------------------------------------


def plivo_create(order: DialOrder, control: ControlSettings, links: DialLinks) -> HttpRequest:
    """ "Make an outbound call" (plivo-python@a0cd323 ``plivo/resources/calls.py`` ``Calls.create``, JSON, the
    trailing ``/``). Numbers are written without "+": Plivo's API reference writes ``from`` and ``to`` as
    "the country code followed by the number. Example: 14157654321"
    (https://www.plivo.com/docs/voice/api/call/make-a-call); the SDK passes them as given (its ``from_``
    check is a string check), so the SDK sends exactly this when given the same digits. A SIP URI ``to``
    is sent as it is. ``machine_detection`` ``true`` (not ``hangup``): the bridge wants the verdict, at
    ``machine_detection_url`` (asynchronous, https://plivo.com/docs/voice/api/call/asynchronous-machine-detection)."""
    auth_id = setting(control.plivo_auth_id, "PLIVO_AUTH_ID")
    auth = _basic(auth_id, secret(control.plivo_auth_token, "PLIVO_AUTH_TOKEN"))
    to = order.to if _kind(order.to, "plivo", "to") == "sip" else _number(order.to, "plivo", "to")
    payload: dict[str, Any] = {
        "from": _number(order.from_, "plivo", "from"),
        "to": to,
        "answer_url": links.answer_url("plivo"),
        "answer_method": "POST",
        "ring_url": links.status_url("plivo"),
        "hangup_url": links.status_url("plivo"),
        "ring_timeout": order.ring_timeout_s,
        **PLIVO_SDK_DEFAULTS,
    }
    if order.machine_detection != "off":
        payload["machine_detection"] = "true"
        payload["machine_detection_url"] = links.amd_url("plivo")
    url = f"{_base(control.plivo_api_url)}/v1/Account/{segment(auth_id)}/Call/"
    return _json("POST", url, auth, payload)


# --- Vonage -------------------------------------------------------------------------------------------


def vonage_create(order: DialOrder, control: ControlSettings, links: DialLinks, *, now: float, jti: str) -> HttpRequest:
    """Create an outbound call (Vonage/vonage-python-sdk@b308cb1 ``voice/src/vonage_voice/voice.py``
    ``create_call``, ``models/requests.py`` ``CreateCallRequest``): an NCCO ``connect`` to the bridge's
    WebSocket (as :func:`bridge.control.ncco.return_ncco` writes it, with ``from`` as the SDK's model wants),
    events to the status route, ``advanced_machine_detection`` ``behavior: continue`` (the bridge decides
    what a machine means). Numbers are digits without "+" (the SDK's phone pattern)."""
    from_number = _number(order.from_, "vonage", "from")
    to: dict[str, str]
    if _kind(order.to, "vonage", "to") == "sip":
        to = {"type": "sip", "uri": order.to}
    else:
        to = {"type": "phone", "number": _number(order.to, "vonage", "to")}
    payload: dict[str, Any] = {
        "to": [to],
        "from": {"type": "phone", "number": from_number},
        "ncco": ncco.return_ncco(
            links.claimed_stream_url(), content_type=VONAGE_CONTENT_TYPE, headers={}, from_number=from_number
        ),
        "event_url": [links.status_url("vonage")],
        "event_method": "POST",
        "ringing_timer": order.ring_timeout_s,
    }
    if order.machine_detection != "off":
        payload["advanced_machine_detection"] = {
            "behavior": "continue",
            "mode": VONAGE_AMD[order.machine_detection],
            "beep_timeout": VONAGE_BEEP_TIMEOUT,
        }
    token = vonage_jwt(
        setting(control.vonage_application_id, "VONAGE_APPLICATION_ID"),
        secret(control.vonage_private_key, "VONAGE_PRIVATE_KEY"),
        now=now,
        jti=jti,
    )
    return _json("POST", f"{_base(control.vonage_api_url)}/v1/calls", _bearer(token), payload)


# --- jambonz ------------------------------------------------------------------------------------------


def jambonz_base(control: ControlSettings) -> tuple[str, str]:
    base = _base(setting(control.jambonz_api_url, "JAMBONZ_API_URL")).removesuffix("/v1")
    return f"{base}/v1/Accounts/{segment(setting(control.jambonz_account_sid, 'JAMBONZ_ACCOUNT_SID'))}", _bearer(
        secret(control.jambonz_api_key, "JAMBONZ_API_KEY")
    )


def jambonz_create(order: DialOrder, control: ControlSettings, links: DialLinks) -> HttpRequest:
    """``createCall`` (jambonz/jambonz-api-server@dd755f8 ``lib/swagger/swagger.yaml``: ``from``, ``to`` a
    ``Target``, ``call_hook`` and ``call_status_hook`` ``Webhook``s, ``timeout``; answered ``201 {"sid"}``).
    ``amd`` is not in the swagger: the feature server's ``rest:dial`` task takes it from the same body
    (jambonz-feature-server@389c65e ``lib/tasks/rest_dial.js``; ``actionHook`` "object|string" in
    verb-specifications@1b1452d ``specs.json``) and POSTs each AMD event there."""
    if _kind(order.to, "jambonz", "to") == "sip":
        target = {"type": "sip", "sipUri": order.to}
    else:
        target = {"type": "phone", "number": order.to}
    payload: dict[str, Any] = {
        "from": order.from_,
        "to": target,
        "call_hook": {"url": links.answer_url("jambonz"), "method": "POST"},
        "call_status_hook": {"url": links.status_url("jambonz"), "method": "POST"},
        "timeout": order.ring_timeout_s,
    }
    if order.machine_detection != "off":
        payload["amd"] = {"actionHook": links.amd_url("jambonz")}
    accounts, auth = jambonz_base(control)
    return _json("POST", f"{accounts}/Calls", auth, payload)


# --- FreeSWITCH ---------------------------------------------------------------------------------------


def _esl_safe(value: str, what: str) -> str:
    if not value or _ESL_UNSAFE.search(value):
        raise ControlError(f"freeswitch: the {what} {value[:64]!r} cannot stand in an originate command")
    return value


def _freeswitch_dial(to: str, template: str) -> str:
    if _kind(to, "freeswitch", "to") == "sip":  # as bridge.call.hand_over writes it: the URI without its scheme
        return "sofia/external/" + to.split(":", 1)[1]
    if not template:
        raise ControlError("freeswitch: a number can only be dialled with control.freeswitch_dial set")
    return template.replace("{to}", to)


def freeswitch_originate(order: DialOrder, control: ControlSettings, links: DialLinks, channel: str) -> EslOriginate:
    """``originate {vars}<dial> &park()`` (signalwire/freeswitch@44f78e9 ``mod_commands.c``
    ``ORIGINATE_SYNTAX``), sent as a blocking ``api``: it answers ``+OK <uuid>`` once the callee answers, or
    ``-ERR <cause>``.

    - ``origination_uuid``: the bridge names the channel, so it can ``uuid_kill`` it while it rings;
    - ``originate_timeout``: the ring time;
    - ``api_on_answer``: "Execute an api (not an application) when the called party answers", its value
      single-quoted for its spaces as in FreeSWITCH's example
      (https://developer.signalwire.com/freeswitch/Channel-Variables-Catalog/api_on_answer_16352805); that
      it fires on a channel placed by ``originate`` (the example sets it on a ``bridge``) is UNVERIFIED;
    - the fork: ``uuid_audio_fork <uuid> start <url> mono 8k`` in mod_audio_fork's argument order
      ``start <wss-url> <mono|mixed|stereo> <8k|16k> [metadata]`` (telephony-media-streams.md §2.7, from
      drachtio/drachtio-freeswitch-modules ``modules/mod_audio_fork/README.md``; UNVERIFIED against a
      running module). The stream URL says ``rate=8000&mix=mono`` too: the fork does not say its format on
      the wire, the audiofork route reads it from the query (:func:`bridge.adapters.audiofork.adapter_for`).

    Every value is checked: no space, quote, comma, ``|``, braces, brackets, ``$``, ``^``, backslash or
    control character, any of which would end an argument, split the variable list or the dial string,
    expand a variable or start a second command.
    """
    if _kind(order.from_, "freeswitch", "from") != "number":
        raise ControlError(f"freeswitch: from must be an E.164 number (a caller id number), not {order.from_[:64]!r}")
    stream = _esl_safe(f"{links.claimed_stream_url()}&rate={FORK_RATE}&mix=mono", "stream URL")
    variables = ",".join(
        [
            f"origination_uuid={channel}",
            f"origination_caller_id_number={_esl_safe(order.from_, 'from')}",
            f"originate_timeout={int(order.ring_timeout_s)}",
            f"api_on_answer='uuid_audio_fork {channel} start {stream} mono {FORK_RATE // 1000}k'",
        ]
    )
    dial = _esl_safe(_freeswitch_dial(_esl_safe(order.to, "to"), control.freeswitch_dial), "dial string")
    if dial.startswith("-"):
        raise ControlError(f"freeswitch: the dial string {dial[:64]!r} cannot start with '-'")
    return EslOriginate(f"originate {{{variables}}}{dial} &park()", channel)


# --- Asterisk -----------------------------------------------------------------------------------------


def ari_base(control: ControlSettings) -> tuple[str, str]:
    base = _base(setting(control.asterisk_ari_url, "ASTERISK_ARI_URL"))
    user = setting(control.asterisk_ari_user, "ASTERISK_ARI_USER")
    return base, _basic(user, secret(control.asterisk_ari_password, "ASTERISK_ARI_PASSWORD"))


def asterisk_create(
    order: DialOrder, control: ControlSettings, outbound: OutboundSettings, links: DialLinks, channel: str
) -> HttpRequest:
    """ARI "create a new channel (originate)": ``POST /channels`` with the query ``endpoint``, ``extension``,
    ``context``, ``priority``, ``callerId``, ``timeout``, ``channelId`` and the JSON body
    ``{"variables": {...}}`` (https://docs.asterisk.org/Latest_API/API_Documentation/Asterisk_REST_Interface/Channels_REST_API/;
    the body's form is the one ARI client libraries send, UNVERIFIED against ``channels.json``). Answered,
    the channel runs the operator's dialplan at ``outbound.asterisk_context``/``asterisk_extension``, which
    runs ``AMD()`` and ``Dial(WebSocket/...)`` to ``${BRIDGE_STREAM_URL}`` (the claimed stream URL).
    ``channelId`` (a uuid the bridge chose) comes back as the Channel's ``id`` (:func:`created_call_id`)."""
    base, auth = ari_base(control)
    template = setting(outbound.asterisk_endpoint, "outbound.asterisk_endpoint")
    query = [
        ("endpoint", template.replace("{to}", order.to)),
        ("extension", outbound.asterisk_extension),
        ("context", outbound.asterisk_context),
        ("priority", "1"),
        ("callerId", order.from_),
        ("timeout", str(order.ring_timeout_s)),
        ("channelId", channel),
    ]
    variables = {"BRIDGE_OUTBOUND": links.token, "BRIDGE_STREAM_URL": links.claimed_stream_url()}
    return _json("POST", f"{base}/channels?{urlencode(query)}", auth, {"variables": variables})
