"""How one call is handed to its carrier for a transfer: which way (markup, REST, ESL), what is
missing for it (named as the setting to set), and the request itself (:mod:`bridge.control.ways` has
the table per carrier; :mod:`bridge.control.rest` and :mod:`bridge.control.esl` build the requests).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from bridge.call.resume import restart_proven
from bridge.control import esl, rest, ways
from bridge.control.allow import destination

if TYPE_CHECKING:
    from bridge.adapters.base import CallStarted
    from bridge.settings import Settings

Method = Literal["twiml", "rest", "esl"]
CALLER_CHANNEL = "BRIDGE_CALLER_CHANNEL"  # Asterisk: the channel variable naming the caller's channel


@dataclass(frozen=True, slots=True)
class Way:
    """A call's way to be transferred. ``announce``/``returns``: whether a briefing can be played to
    the person, and whether a caller nobody answered comes back to the bot; ``stays``: the stream
    goes on while the person's phone rings (Telnyx: the caller stays on the call); ``closes``: once the
    carrier has taken the call, the bridge closes the stream itself, because the carrier may leave it
    open (Vonage: the WebSocket is a leg of its own, left behind when the phone leg is transferred;
    FreeSWITCH, Asterisk: what a transfer does to the fork or the WebSocket channel is UNVERIFIED,
    call-control.md sections 6, 8 and 9). Closing is safe either way: the carrier has the caller.
    Not for markup carriers (Plivo, SignalWire, jambonz): the carrier fetching the new markup ends
    the stream, and a stream closed before that would run the markup that follows it instead."""

    method: Method
    announce: bool = True
    returns: bool = True
    stays: bool = False
    closes: bool = False


def way(settings: Settings, secret: bytes, started: CallStarted, plays_audio: bool) -> Way | str:
    """This call's way, or why it has none (naming the setting to set)."""
    control, carrier = settings.control, started.carrier
    if carrier == "twilio":
        if plays_audio and restart_proven(secret, started):
            return Way("twiml")  # the bridge wrote the call's TwiML: <Connect action> comes back to it
        if control.twilio_account_sid and settings.twilio.auth_token is not None:
            return Way("rest")
        return (
            "twilio: this call's TwiML was not written by the bridge's /twilio/voice, so the transfer "
            "needs Twilio's REST API: set TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN"
        )
    if carrier == "signalwire":
        if control.signalwire_project_id and control.signalwire_api_token and control.signalwire_api_url:
            return Way("rest")
        return "signalwire: set SIGNALWIRE_API_URL, SIGNALWIRE_PROJECT_ID and SIGNALWIRE_API_TOKEN"
    if carrier == "telnyx":
        return Way("rest", stays=True) if control.telnyx_api_key else "telnyx: set TELNYX_API_KEY"
    if carrier == "plivo":
        if control.plivo_auth_id and control.plivo_auth_token:
            return Way("rest")
        return "plivo: set PLIVO_AUTH_ID and PLIVO_AUTH_TOKEN"
    if carrier == "vonage":
        if not (control.vonage_application_id and control.vonage_private_key):
            return "vonage: set VONAGE_APPLICATION_ID and VONAGE_PRIVATE_KEY"
        if started.call_sid.startswith("vonage-"):
            return "vonage: the stream names no call leg: add the phone leg's uuid as a `uuid` websocket header"
        return Way("rest", closes=True)
    if carrier == "audiofork":
        jambonz = control.jambonz_api_url and control.jambonz_account_sid and control.jambonz_api_key
        if jambonz and "callSid" in started.parameters:
            return Way("rest")
        if control.freeswitch_esl_url is not None:
            return Way("esl", announce=False, returns=False, closes=True)
        if jambonz:  # jambonz is set up, but this stream's metadata has no callSid: a FreeSWITCH fork
            return "audiofork: this stream names no jambonz callSid (a FreeSWITCH fork?): set FREESWITCH_ESL_URL"
        return (
            "audiofork: set JAMBONZ_API_URL, JAMBONZ_ACCOUNT_SID and JAMBONZ_API_KEY (jambonz), "
            "or FREESWITCH_ESL_URL (FreeSWITCH)"
        )
    if carrier == "asterisk":
        if not (control.asterisk_ari_url and control.asterisk_ari_user and control.asterisk_ari_password):
            return "asterisk: set ASTERISK_ARI_URL, ASTERISK_ARI_USER and ASTERISK_ARI_PASSWORD"
        if not started.parameters.get(CALLER_CHANNEL):
            return f"asterisk: the stream's channel variables name no caller channel (set {CALLER_CHANNEL})"
        return Way("rest", announce=False, returns=False, closes=True)
    return f"{carrier}: the carrier documents no way to transfer a streamed call"


def request(
    settings: Settings, started: CallStarted, order: ways.Order, links: ways.Links
) -> rest.HttpRequest | tuple[str, str]:
    """The request that hands the call over: HTTP, or (ESL URL, api command). Raises ControlError or
    ValueError (a target the carrier's markup cannot carry)."""
    control, carrier, sid = settings.control, started.carrier, started.call_sid
    if carrier == "twilio":
        token = settings.twilio.auth_token
        assert token is not None
        markup = ways.dial(order, links)
        assert isinstance(markup.body, str)
        return rest.twilio_call_update(
            control.twilio_api_url, control.twilio_account_sid, token.get_secret_value(), sid, twiml=markup.body
        )
    if carrier == "signalwire":
        assert control.signalwire_api_token is not None
        return rest.signalwire_call_update(
            control.signalwire_api_url, control.signalwire_project_id, control.signalwire_api_token.get_secret_value(),
            sid, url=links.route(carrier, "transfer"),
        )  # fmt: skip
    if carrier == "telnyx":
        assert control.telnyx_api_key is not None
        return rest.telnyx_transfer(
            control.telnyx_api_url, control.telnyx_api_key.get_secret_value(), sid, to=order.to,
            from_=order.caller_id, timeout_secs=order.ring_timeout_s, audio_url=links.audio(),
            webhook_url=links.dial_status(carrier), client_state=order.action_id,
        )  # fmt: skip
    if carrier == "plivo":
        assert control.plivo_auth_token is not None
        return rest.plivo_transfer(
            control.plivo_api_url, control.plivo_auth_id, control.plivo_auth_token.get_secret_value(), sid,
            aleg_url=links.route(carrier, "transfer"),
        )  # fmt: skip
    if carrier == "vonage":
        assert control.vonage_private_key is not None
        ncco = ways.dial(order, links).body
        assert isinstance(ncco, list)
        return rest.vonage_transfer(
            control.vonage_api_url, control.vonage_application_id, control.vonage_private_key.get_secret_value(),
            sid, ncco=ncco, now=time.time(), jti=str(uuid.uuid4()),
        )  # fmt: skip
    if carrier == "audiofork" and control.freeswitch_esl_url is not None and "callSid" not in started.parameters:
        return control.freeswitch_esl_url.get_secret_value(), esl.uuid_transfer(
            sid, esl.inline_bridge(_dial(settings, order.to))
        )
    if carrier == "audiofork":
        assert control.jambonz_api_key is not None
        return rest.jambonz_redirect(
            control.jambonz_api_url, control.jambonz_account_sid, control.jambonz_api_key.get_secret_value(), sid,
            call_hook_url=links.route(carrier, "transfer"),
        )  # fmt: skip
    if carrier == "asterisk":
        assert control.asterisk_ari_password is not None
        return rest.asterisk_continue(
            control.asterisk_ari_url, control.asterisk_ari_user, control.asterisk_ari_password.get_secret_value(),
            started.parameters[CALLER_CHANNEL], context=control.asterisk_context, extension=order.to, priority=1,
        )  # fmt: skip
    raise ValueError(f"{carrier}: no transfer request")


def _dial(settings: Settings, to: str) -> str:
    """FreeSWITCH's dial string for ``to``: the configured one for a number, ``sofia/external`` for SIP."""
    if destination(to) == "sip":
        return "sofia/external/" + to.split(":", 1)[1]
    template = settings.control.freeswitch_dial
    if not template:
        raise ValueError("freeswitch: set control.freeswitch_dial (e.g. sofia/gateway/gw1/{to}) to dial numbers")
    return template.replace("{to}", to)
