"""The bot's request for an outbound call, checked (pure), and the claim its stream and callbacks carry.

``POST /v1/calls`` takes::

    {"to": "+15550142", "from": "+15550002", "carrier": "twilio", "parameters": {"campaign": "reminders"},
     "machine_detection": "detect", "ring_timeout_s": 30, "first_say": "Hello, this is the clinic calling."}

:func:`parse_order` reads it (422 naming the field), :func:`refusal` checks it against the operator's
settings (403 naming the setting). The call's id is made when the order is accepted; every URL the bridge
gives the carrier for that call, and the stream it connects, carry one token signed under ``BRIDGE_SECRET``
(:mod:`bridge.control.tokens`) that names the call: :func:`claim_token` and :func:`read_claim`. So the
stream's ``start`` (a ``bridge.outbound`` parameter, or ``?outbound=`` on the stream URL where the carrier
passes no parameters) is bound to the call the bot created, and a callback cannot speak for another call.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bridge.control import tokens
from bridge.control.allow import E164, sip_host, transfer_allowed
from bridge.setting_sections import ControlSettings, OutboundSettings
from bridge.untrusted import loads

MachineDetection = Literal["off", "detect", "detect_message_end"]
DialCarrier = Literal["twilio", "signalwire", "telnyx", "plivo", "vonage", "jambonz", "freeswitch", "asterisk"]
DIAL_CARRIERS: tuple[str, ...] = DialCarrier.__args__  # type: ignore[attr-defined]
# The media-stream route (bridge.adapters.CARRIERS) each platform's stream connects to.
STREAM_ROUTE = {"jambonz": "audiofork", "freeswitch": "audiofork"}

# Platforms whose own answering-machine detection the bridge asks for (the others: the bridge's own detector).
CARRIER_DETECTION = frozenset({"twilio", "signalwire", "telnyx", "plivo", "vonage", "jambonz"})
FIRST_SAY_ID = "first_say"  # the action id of an order's first_say (its playback.* events carry it)
OUTBOUND_PARAMETER = "bridge.outbound"  # the stream parameter (or ``?outbound=`` query value) with the claim
OUTBOUND_QUERY = "outbound"
MAX_ORDER_BYTES = 64 * 1024
MAX_PARAMETERS = 32
MAX_FIRST_SAY_CHARS = 1000
_PARAMETER_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


class DialError(Exception):
    """An order the bridge refuses: ``status`` is the HTTP answer (413, 422, 403), the message names the
    field or the setting."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class DialOrder(BaseModel):
    """One outbound call as the bot asked for it."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    to: str = Field(min_length=1, max_length=256)
    from_: str = Field(alias="from", min_length=1, max_length=256)
    carrier: DialCarrier
    parameters: dict[str, str] = {}
    machine_detection: MachineDetection = "off"
    ring_timeout_s: int = Field(30, ge=5, le=120)  # 120: Vonage's ringing_timer maximum, the lowest of all
    first_say: str | None = Field(None, min_length=1, max_length=MAX_FIRST_SAY_CHARS)
    voice: str | None = Field(None, min_length=1, max_length=128)  # first_say's voice (the reply's default)

    @field_validator("to")
    @classmethod
    def _to(cls, value: str) -> str:
        if not E164.fullmatch(value) and sip_host(value) is None:
            raise ValueError(f"{value[:64]!r} is neither an E.164 number (+15550142) nor a sip:/sips: URI")
        return value

    @field_validator("parameters")
    @classmethod
    def _parameters(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > MAX_PARAMETERS:
            raise ValueError(f"{len(value)} parameters; at most {MAX_PARAMETERS}")
        for name, text in value.items():
            if not _PARAMETER_NAME.fullmatch(name) or name.startswith(("bridge.", "stt.")):
                raise ValueError(
                    f"{name[:64]!r}: a name of 1 to 64 letters, digits, '_', '.', '-' not starting bridge. or stt."
                )
            if len(text) > 512:
                raise ValueError(f"{name}: a value of at most 512 characters")
        return value

    def body(self) -> dict[str, Any]:
        """The order as the bot wrote it (``from`` spelled so), for the call's record."""
        return self.model_dump(by_alias=True, exclude_none=True)


ORDER_FIELDS = frozenset(f.alias or name for name, f in DialOrder.model_fields.items())


def parse_order(body: bytes) -> DialOrder:
    """The bot's JSON to a :class:`DialOrder`.

    Raises:
        DialError: 413 over :data:`MAX_ORDER_BYTES`; 422 not JSON, not an object, an unknown or bad
            field (the message names it, e.g. ``ring_timeout_s: Input should be less than or equal to 120``).
    """
    if len(body) > MAX_ORDER_BYTES:
        raise DialError(413, f"request body over {MAX_ORDER_BYTES // 1024} KiB")
    try:
        data = loads(body)
    except ValueError as exc:
        raise DialError(422, f"body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise DialError(422, 'the body must be an object: {"to": ..., "from": ..., "carrier": ...}')
    unknown = sorted(set(data) - ORDER_FIELDS)
    if unknown:  # said first: {"ok": true} is a wrong body, not a missing "to"
        raise DialError(422, f"{unknown[0][:64]}: not a field of an order ({', '.join(sorted(ORDER_FIELDS))})")
    try:
        return DialOrder.model_validate(data)
    except ValidationError as exc:
        err = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(part) for part in err["loc"]) or "body"
        raise DialError(422, f"{where}: {str(err['msg']).removeprefix('Value error, ')}") from None
    except RecursionError:
        raise DialError(422, "body nested too deep") from None


def configured(carrier: str, control: ControlSettings, outbound: OutboundSettings) -> str | None:
    """What a carrier lacks to place calls (the missing settings, named), or None when it has it all."""
    need: list[str] = []
    if carrier == "twilio":
        need = [n for n, v in (("TWILIO_ACCOUNT_SID", control.twilio_account_sid),) if not v]
    elif carrier == "signalwire":
        values = (("SIGNALWIRE_PROJECT_ID", control.signalwire_project_id),)
        need = [n for n, v in values if not v]
        need += ["SIGNALWIRE_API_TOKEN"] if control.signalwire_api_token is None else []
        need += ["SIGNALWIRE_API_URL"] if not control.signalwire_api_url else []
    elif carrier == "telnyx":
        need = ["TELNYX_API_KEY"] if control.telnyx_api_key is None else []
        need += ["TELNYX_CONNECTION_ID"] if not outbound.telnyx_connection_id else []
    elif carrier == "plivo":
        need = ["PLIVO_AUTH_ID"] if not control.plivo_auth_id else []
        need += ["PLIVO_AUTH_TOKEN"] if control.plivo_auth_token is None else []
    elif carrier == "vonage":
        need = ["VONAGE_APPLICATION_ID"] if not control.vonage_application_id else []
        need += ["VONAGE_PRIVATE_KEY"] if control.vonage_private_key is None else []
    elif carrier == "jambonz":
        need = [n for n, v in (("JAMBONZ_API_URL", control.jambonz_api_url),) if not v]
        need += ["JAMBONZ_ACCOUNT_SID"] if not control.jambonz_account_sid else []
        need += ["JAMBONZ_API_KEY"] if control.jambonz_api_key is None else []
    elif carrier == "freeswitch":
        need = ["FREESWITCH_ESL_URL"] if control.freeswitch_esl_url is None else []
    elif carrier == "asterisk":
        need = ["ASTERISK_ARI_URL"] if not control.asterisk_ari_url else []
        need += ["ASTERISK_ARI_USER"] if not control.asterisk_ari_user else []
        need += ["ASTERISK_ARI_PASSWORD"] if control.asterisk_ari_password is None else []
        need += ["outbound.asterisk_endpoint"] if not outbound.asterisk_endpoint else []
    return f"{carrier}: outbound calls need {', '.join(need)}" if need else None


def refusal(
    order: DialOrder, outbound: OutboundSettings, control: ControlSettings, *, twilio_token: bool
) -> str | None:
    """Why the operator's settings refuse the order (403; the message names the setting), or None.
    ``twilio_token``: TWILIO_AUTH_TOKEN is set (the password of Twilio's REST API)."""
    if not outbound.dial_to:
        return "outbound calls are off: set BRIDGE_DIAL_TO (the E.164 prefixes and SIP domains a call may reach)"
    if not transfer_allowed(order.to, outbound.dial_to):
        return f"{order.to} is not in BRIDGE_DIAL_TO"
    if order.from_ not in outbound.dial_from:
        return f"from={order.from_[:64]} is not one of BRIDGE_DIAL_FROM"
    if order.carrier == "freeswitch" and E164.fullmatch(order.to) and not control.freeswitch_dial:
        return "freeswitch: a number can only be dialled with control.freeswitch_dial set (a sip: URI can)"
    missing = configured(order.carrier, control, outbound)
    if missing is None and order.carrier == "twilio" and not twilio_token:
        missing = "twilio: outbound calls need TWILIO_AUTH_TOKEN"
    return missing


@dataclass(frozen=True, slots=True)
class Claim:
    """What an outbound call's token says: the call it names, its platform and its detection mode."""

    call_id: str
    carrier: str
    machine_detection: str


def keyed_call_id(secret: bytes, key: str) -> str:
    """The call id of an order made with ``Idempotency-Key: key``: the same in every worker and instance
    (an HMAC under the shared secret), so a repeat reaching another one finds the call instead of placing it."""
    return hmac.new(secret, b"dial-key:" + key.encode("utf-8", "surrogateescape"), hashlib.sha256).hexdigest()[:32]


def claim_token(secret: bytes, call_id: str, order: DialOrder, expires_at: float) -> str:
    """The token of one outbound call (stream parameter, stream query, every callback URL's ``?t=``)."""
    fields = {"use": "outbound", "call": call_id, "carrier": order.carrier, "md": order.machine_detection}
    return tokens.sign(secret, fields, int(expires_at))


def read_claim(secret: bytes, token: str, now: float) -> Claim | None:
    """The call a token names when it is one of :func:`claim_token`'s, valid now; else None."""
    if not secret or not token:
        return None
    fields = tokens.verify(secret, token, now)
    if fields is None or fields.get("use") != "outbound":
        return None
    call_id, carrier, mode = fields.get("call", ""), fields.get("carrier", ""), fields.get("md", "")
    if not re.fullmatch(r"[0-9a-f]{32}", call_id) or carrier not in DIAL_CARRIERS:
        return None
    return Claim(call_id, carrier, mode if mode in ("off", "detect", "detect_message_end") else "off")
