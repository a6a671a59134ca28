"""Vonage Voice API WebSocket, sans-I/O: one text frame, then binary 16-bit PCM frames.

The first frame is ``{"event": "websocket:connected", "content-type": "audio/l16;rate=16000", ...}``
with the NCCO's ``headers`` flattened into it (that is where an application passes the call's
uuid, numbers and anything else). Then binary L16 little-endian mono frames, 20 ms each (320 bytes
at 8 kHz, 640 at 16 kHz). Text events: ``websocket:dtmf`` (documented flat,
``{"event": "websocket:dtmf", "digit": "5", "duration": 260}``; a nested ``"dtmf": {"digit": ...}`` is read too,
and a DTMF without a readable digit is ignored, never fatal), ``websocket:notify`` (a notify action was
reached), ``websocket:cleared``. There is no stop message: the socket closing ends the call.
Outbound: binary L16 frames, ``{"action": "clear"}``, ``{"action": "notify", "payload": ...}``.

Also here: Vonage's signed WebSocket request (:func:`vonage_jwt_valid`) and the carrier's description.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import uuid
from typing import Any

from bridge.adapters.base import (
    CallStarted,
    Dtmf,
    Ignored,
    MarkReached,
    OutboundFraming,
    PhoneEvent,
    StreamState,
)
from bridge.adapters.binary import BinaryDialectAdapter, L16Frames
from bridge.adapters.carrier import Capabilities, Carrier, FrameRules, plain
from bridge.adapters.common import count, json_object
from bridge.adapters.stream_auth import Refusal, Secrets, Upgrade, check_stream_token
from bridge.audio import AudioFormat
from bridge.errors import PhoneProtocolError

_RATE = re.compile(r"rate\s*=\s*(\d+)")
_ID_HEADERS = ("uuid", "call_uuid", "conversation_uuid", "callSid", "call_id")
_UNREADABLE_DTMF = "websocket:dtmf without a digit"


def _readable_digit(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None
    digit = str(value).strip()
    return digit or None


def _dtmf_digit(msg: dict[str, Any]) -> str | None:
    """The digit of a ``websocket:dtmf``: documented flat ``digit``, else a nested ``dtmf.digit`` (seen in
    integrations), else ``dtmf`` itself when it is a scalar; None when none of them holds a digit."""
    digit = _readable_digit(msg.get("digit"))
    if digit is not None:
        return digit
    nested = msg.get("dtmf")
    if isinstance(nested, dict):
        return _readable_digit(nested.get("digit"))
    return _readable_digit(nested)


class VonageAdapter(BinaryDialectAdapter):
    carrier = "vonage"
    start_name = "'websocket:connected'"

    def __init__(self) -> None:
        super().__init__(AudioFormat("pcm16", 16000))
        self._l16 = L16Frames(self.counters)

    def _text(self, message: str) -> list[PhoneEvent]:
        msg = json_object(message, "Vonage")
        event = msg.get("event")
        if event == "websocket:connected":
            return [self._start(msg)]
        if self.state is StreamState.AWAITING_START:
            raise PhoneProtocolError(f"{event!r} before 'websocket:connected'", 1008)
        if event == "websocket:dtmf":
            digit = _dtmf_digit(msg)
            if digit is None:  # one odd DTMF must not end the call: note it and go on
                count(self.counters.ignored, _UNREADABLE_DTMF)
                return [Ignored(_UNREADABLE_DTMF, unknown=True)]
            return [Dtmf(digit)]
        if event == "websocket:notify":
            payload = msg.get("payload")
            name = payload.get("name") if isinstance(payload, dict) else payload
            return [MarkReached(str(name))]
        if event == "websocket:cleared":
            return [Ignored("cleared")]
        count(self.counters.ignored, str(event))
        return [Ignored(str(event), unknown=True)]

    def _start(self, msg: dict[str, Any]) -> CallStarted:
        if self.state is not StreamState.AWAITING_START:
            raise PhoneProtocolError("second 'websocket:connected'", 1008)
        content_type = str(msg.get("content-type", "audio/l16;rate=16000")).lower()
        match = _RATE.search(content_type)
        rate = int(match.group(1)) if match else 16000
        if not content_type.startswith("audio/l16") or rate not in (8000, 16000, 24000):
            raise PhoneProtocolError(f"unsupported content-type {content_type!r}", 1003)
        self.audio_format = AudioFormat("pcm16", rate)
        headers = {
            k: str(v) for k, v in msg.items() if k not in ("event", "content-type") and isinstance(v, (str, int, float))
        }
        call_id = next((headers[k] for k in _ID_HEADERS if headers.get(k)), None) or f"vonage-{uuid.uuid4().hex}"
        self.state = StreamState.STREAMING
        return CallStarted(
            carrier=self.carrier,
            call_sid=call_id,
            stream_sid=call_id,
            account_sid=None,
            parameters=headers,
            audio_format=self.audio_format,
            caller=headers.get("from"),
            called=headers.get("to"),
        )

    def _framing(self) -> OutboundFraming:
        # Vonage: "each message is 320 or 640 bytes and contains 20ms of audio", exactly.
        return OutboundFraming(self.audio_format.bytes_for_ms(20), max_frames=1)

    def _audio_chunk_message(self, chunk: bytes) -> bytes:
        return chunk

    def mark_message(self, name: str) -> str:
        return json.dumps({"action": "notify", "payload": {"name": name}})

    def clear_message(self) -> str:
        self._drop_held_audio()
        return json.dumps({"action": "clear"})


# -- the carrier's description -------------------------------------------------------------


def vonage_jwt_valid(secret: str, authorization: str | None, now: float) -> bool:
    """Vonage's signed WebSocket request (NCCO ``authorization: {type: "vonage"}``): ``Bearer <JWT>``
    signed HS256 with the account's signature secret, as Vonage signs its webhooks (the SDKs'
    ``verify_webhook_token``), not expired. UNVERIFIED that the WebSocket uses that very scheme: it is
    what Vonage documents for signed requests; a static token (``VONAGE_STREAM_TOKEN``) also works."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer" or token.count(".") != 2:
        return False
    head_b64, body_b64, sig_b64 = token.split(".")
    try:
        header = json.loads(_b64url(head_b64))
        claims = json.loads(_b64url(body_b64))
        signature = _b64url(sig_b64)
    except (ValueError, binascii.Error):
        return False
    if not isinstance(header, dict) or header.get("alg") != "HS256" or not isinstance(claims, dict):
        return False
    want = hmac.new(secret.encode(), f"{head_b64}.{body_b64}".encode(), hashlib.sha256).digest()
    if not hmac.compare_digest(signature, want):
        return False
    exp, nbf = claims.get("exp"), claims.get("nbf")
    if isinstance(exp, int | float) and now >= exp:
        return False
    return not (isinstance(nbf, int | float) and now < nbf - 60)


def _b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def authenticate(upgrade: Upgrade, secrets: Secrets) -> Refusal | None:
    """``VONAGE_STREAM_TOKEN`` (a custom authorization value), or with ``VONAGE_SIGNATURE_SECRET`` set a
    JWT signed with it."""
    secret = secrets.vonage_signature_secret
    if secret is None:
        return check_stream_token("vonage", upgrade, secrets)
    return check_stream_token(
        "vonage", upgrade, secrets, lambda: vonage_jwt_valid(secret, upgrade.headers.get("Authorization"), upgrade.now)
    )


CARRIER = Carrier(
    "vonage",
    "Vonage Voice API websocket",
    VonageAdapter,
    plain(VonageAdapter),
    authenticate,
    # transfer: PUT /v1/calls/{uuid} to an NCCO connect, briefing by a phone endpoint's onAnswer (none for
    # SIP), return by eventType synchronous (vonage-python-sdk voice.py transfer_call_ncco, models/ncco.py)
    Capabilities(two_tracks=False, transfer="rest", announce=True, return_to_bot=True),
    FrameRules(AudioFormat("pcm16", 16000), sends_stop=False, own_stream_id=False),
)
