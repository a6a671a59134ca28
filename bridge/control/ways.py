"""Each carrier's way to transfer a streamed call (pure): what the bridge sends to hand the call over,
the markup the carrier fetches to dial the person, how it reports the dial's end, and the markup that
brings the caller back to the bot.

A transfer's links carry a token the bridge signed (:mod:`bridge.control.tokens`) holding an
:class:`Order`: which call and transfer, the target, the ring time, what to do if nobody answers. Every
markup below is built from the order alone, so any worker or instance answers the carrier's requests.

==========  ===========================  =================================================================
carrier     hand-over                    then
==========  ===========================  =================================================================
twilio      the stream closes (markup)   ``<Connect action>`` fetches the ``<Dial>`` left on the desk; for
            or the REST call update      TwiML the bridge did not write, ``POST .../Calls/{CA}.json``
                                         with the same ``<Dial>`` inline (``Twiml``)
signalwire  LaML call update (``Url``)   ``/signalwire/transfer`` answers the ``<Dial>`` (cXML)
telnyx      Call Control ``transfer``    the stream stays; the B leg's webhooks come to
                                         ``/telnyx/dial-status``; nobody answered: the caller is still on
                                         the stream ("the original call will remain active")
plivo       ``Call/{uuid}/`` transfer    ``aleg_url`` (``/plivo/transfer``) answers ``<Dial>`` (Plivo XML)
vonage      ``PUT /v1/calls/{uuid}``     the NCCO ``connect`` (eventType synchronous) inline; its
                                         ``eventUrl`` (``/vonage/dial-status``) answers an NCCO back
audiofork   jambonz: call update with    ``/audiofork/transfer`` answers a ``dial`` verb; FreeSWITCH:
            ``call_hook``; FreeSWITCH:   ``uuid_transfer`` inline ``bridge`` (no briefing, no return:
            ESL ``uuid_transfer``        FreeSWITCH takes the call out of the fork)
asterisk    ARI ``continue`` into the    the dialplan context dials ``${EXTEN}`` (no briefing, no return)
            transfer context
exotel      none                         Exotel documents no live transfer of a Voicebot stream
==========  ===========================  =================================================================
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from bridge.adapters.plivo import BRIDGE_HEADERS, HEX_HEADERS
from bridge.control import jambonz_verbs, ncco, plivo_xml, twiml
from bridge.control.dial_status import (
    Outcome,
    jambonz_outcome,
    plivo_outcome,
    telnyx_outcome,
    twilio_outcome,
    vonage_outcome,
)

TWIML_CARRIERS = ("twilio", "signalwire")  # Twilio-shaped markup
FINAL_VONAGE = frozenset({"answered", "completed", "busy", "timeout", "unanswered", "failed", "rejected", "cancelled"})
# Plivo's extraHeaders allow A-Z, a-z, 0-9 only: the bridge's parameters travel under these names
# (values hex-encoded where they may hold other characters); the Plivo adapter reads them back.
PLIVO_NAMES = {name: header for header, name in BRIDGE_HEADERS.items()}


@dataclass(frozen=True, slots=True)
class Order:
    """A transfer as its links carry it (every field text: it travels in a signed token)."""

    call_id: str
    action_id: str
    carrier: str
    call_sid: str
    to: str
    caller_id: str | None
    ring_timeout_s: int
    on_no_answer: str  # return | hangup
    announce: str | None  # the briefing spoken to the person before the caller is connected

    def fields(self) -> dict[str, str]:
        return {
            "call": self.call_id,
            "act": self.action_id,
            "car": self.carrier,
            "sid": self.call_sid,
            "to": self.to,
            "cid": self.caller_id or "",
            "ring": str(self.ring_timeout_s),
            "ona": self.on_no_answer,
            "ann": self.announce or "",
        }

    @classmethod
    def from_fields(cls, fields: Mapping[str, str]) -> Order | None:
        """The order a verified token holds; None when it is not one (e.g. a briefing token)."""
        try:
            return cls(
                fields["call"], fields["act"], fields["car"], fields["sid"], fields["to"], fields["cid"] or None,
                int(fields["ring"]), fields["ona"], fields["ann"] or None,
            )  # fmt: skip
        except (KeyError, ValueError):
            return None


@dataclass(frozen=True, slots=True)
class Links:
    """The bridge's URLs for one transfer: ``base`` (its public URL) and the order's token (one token
    for all of them: the order holds the briefing's text too); ``announced``: there is a briefing."""

    base: str
    token: str
    announced: bool = False

    def route(self, carrier: str, name: str) -> str:
        return f"{self.base}/{carrier}/{name}?t={self.token}"

    def dial_status(self, carrier: str) -> str:
        return self.route(carrier, "dial-status")

    def announce(self, carrier: str) -> str | None:
        return self.route(carrier, "announce") if self.announced else None

    def audio(self) -> str | None:
        return f"{self.base}/transfer/announce.wav?t={self.token}" if self.announced else None


@dataclass(frozen=True, slots=True)
class Markup:
    body: str | list[dict[str, Any]]
    content_type: str  # text/xml, or application/json (NCCO, jambonz verbs)


def dial(order: Order, links: Links) -> Markup:
    """The markup that dials the person, in the carrier's dialect (``/{carrier}/transfer``, the desk)."""
    carrier = order.carrier
    if carrier in TWIML_CARRIERS:
        return Markup(
            twiml.dial_twiml(
                order.to, caller_id=order.caller_id, ring_timeout_s=order.ring_timeout_s,
                action_url=links.dial_status(carrier), announce_url=links.announce(carrier),
                answered_url=links.dial_status(carrier) + "&answered=1",
            ),
            "text/xml",
        )  # fmt: skip
    if carrier == "plivo":
        return Markup(
            plivo_xml.dial_xml(
                order.to, caller_id=order.caller_id, ring_timeout_s=order.ring_timeout_s,
                action_url=links.dial_status(carrier), confirm_sound_url=links.announce(carrier),
                callback_url=links.dial_status(carrier) + "&answered=1",
            ),
            "text/xml",
        )  # fmt: skip
    if carrier == "audiofork":  # jambonz
        return Markup(
            jambonz_verbs.dial_verbs(
                order.to, caller_id=order.caller_id, ring_timeout_s=order.ring_timeout_s,
                action_hook=links.dial_status(carrier), confirm_hook=links.announce(carrier),
            ),
            "application/json",
        )  # fmt: skip
    if carrier == "vonage":
        return Markup(
            ncco.transfer_ncco(
                order.to, from_number=order.caller_id, ring_timeout_s=order.ring_timeout_s,
                event_url=links.dial_status(carrier), announce_url=links.announce(carrier),
            ),
            "application/json",
        )  # fmt: skip
    raise ValueError(f"{carrier}: no dial markup")


def announce(carrier: str, audio_url: str) -> Markup:
    """The briefing run on the person's leg before the caller is connected: the bridge's audio."""
    if carrier in TWIML_CARRIERS:
        return Markup(twiml.announce_twiml(audio_url), "text/xml")
    if carrier == "plivo":
        return Markup(plivo_xml.announce_xml(audio_url), "text/xml")
    if carrier == "audiofork":
        return Markup(jambonz_verbs.announce_verbs(audio_url), "application/json")
    if carrier == "vonage":
        return Markup(ncco.announce_ncco(audio_url), "application/json")
    raise ValueError(f"{carrier}: no briefing markup")


def hangup(carrier: str) -> Markup:
    if carrier == "plivo":
        return Markup(plivo_xml.hangup_xml(), "text/xml")
    if carrier in ("audiofork", "vonage"):
        return Markup([{"verb": "hangup"}] if carrier == "audiofork" else [], "application/json")
    return Markup(twiml.hangup_twiml(), "text/xml")


Report = Literal["answered"] | Outcome | None


def dial_outcome(carrier: str, data: Mapping[str, Any]) -> Outcome | None:
    """How a carrier's report of the dial says it ended (None: not an end, e.g. ringing)."""
    if carrier in TWIML_CARRIERS:
        return twilio_outcome(str(data.get("DialCallStatus", "")))
    if carrier == "plivo":
        return plivo_outcome(str(data.get("DialStatus", "")))
    if carrier == "audiofork":
        return jambonz_outcome(str(data.get("dial_call_status", data.get("dialCallStatus", ""))))
    if carrier == "vonage":
        status = str(data.get("status", ""))
        return vonage_outcome(status) if status in FINAL_VONAGE else None
    if carrier == "telnyx":
        event = data.get("data")
        event = event if isinstance(event, dict) else {}
        kind = str(event.get("event_type", ""))
        payload = event.get("payload")
        payload = payload if isinstance(payload, dict) else {}
        # call.answered (the person picked up) comes before the briefing (audio_url, "played back when the
        # transfer destination answers before bridging") and the bridge, which either may still not survive:
        # only call.bridged hands the caller to the person (telnyx-python actions.py transfer's webhooks).
        if kind == "call.bridged":
            return "answered"
        if kind == "call.hangup":
            return telnyx_outcome(str(payload.get("hangup_cause", "")), bridged=False)
        return None
    raise ValueError(f"{carrier}: no dial report")


def returning(
    carrier: str,
    *,
    stream_url: str,
    parameters: Mapping[str, str],
    after_url: str,
    content_type: str = "",
    caller_id: str | None = None,
) -> Markup:
    """The caller back to the bot: a fresh stream to ``stream_url`` carrying ``parameters`` (the
    call's resume token, the transfer's id and status). ``caller_id``: the number the transfer dialled
    from (Vonage's connect wants ``from`` or ``randomFromNumber``)."""
    if carrier in TWIML_CARRIERS:
        return Markup(twiml.return_twiml(stream_url, parameters, after_url), "text/xml")
    if carrier == "plivo":
        headers = {PLIVO_NAMES.get(k, k): (v.encode().hex() if k in HEX_HEADERS else v) for k, v in parameters.items()}
        return Markup(
            plivo_xml.return_xml(
                stream_url, extra_headers=headers, content_type=content_type or "audio/x-mulaw;rate=8000",
                after_url=after_url,
            ),
            "text/xml",
        )  # fmt: skip
    if carrier == "audiofork":
        return Markup(jambonz_verbs.return_verbs(stream_url, metadata=parameters, sample_rate=8000), "application/json")
    if carrier == "vonage":
        return Markup(
            ncco.return_ncco(
                stream_url,
                content_type=content_type or "audio/l16;rate=16000",
                headers=parameters,
                from_number=caller_id,
            ),
            "application/json",
        )
    raise ValueError(f"{carrier}: the caller cannot come back")
