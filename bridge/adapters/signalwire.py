"""SignalWire cXML ``<Stream>``, sans-I/O: Twilio's message shapes with SignalWire's differences.

Differences handled: stream and call ids are UUIDs; ``mediaFormat`` may be ``audio/x-L16`` (16-bit
little-endian PCM) at 8000/16000/24000 Hz (``codec="L16@16000h"`` on ``<Stream>``) besides mu-law,
and ``channels`` 2 with ``track="both_tracks"``; SignalWire's document wraps each event as
``{"timestamp", "direction", "eventType", ["streamSid", "callSid", "sequenceNumber"], "rawEvent":
{...}}`` (which form is on the wire is not confirmed), so both are accepted; when wrapped, the
envelope's ``sequenceNumber``/``streamSid`` stand in for the ones a ``rawEvent`` lacks (its DTMF has
no ``sequenceNumber``). A ``clear`` acknowledgement is passive. Authentication: ``authBearerToken`` on
``<Stream>`` arrives as ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

from typing import Any

from bridge.adapters.carrier import Capabilities, Carrier, FrameRules, plain
from bridge.adapters.common import json_object
from bridge.adapters.stream_auth import stream_token
from bridge.adapters.twilio import TwilioAdapter
from bridge.audio import ULAW_8K, AudioFormat
from bridge.errors import PhoneProtocolError

L16_RATES = (8000, 16000, 24000)
ENVELOPE_KEYS = ("sequenceNumber", "streamSid")  # what the wrapper may carry for its rawEvent


class SignalWireAdapter(TwilioAdapter):
    carrier = "signalwire"
    dialect = "SignalWire"
    passive_events = frozenset({"connected", "clear"})  # "clear": SignalWire acknowledging ours

    def _parse(self, message: str | bytes) -> dict[str, Any]:
        msg = json_object(message, "SignalWire")
        raw = msg.get("rawEvent")
        if "event" in msg or not isinstance(raw, dict):
            return msg
        inner = dict(raw)
        for key in ENVELOPE_KEYS:
            if key not in inner and key in msg:
                inner[key] = msg[key]
        return inner

    def _audio_format(self, media_format: dict[str, Any]) -> AudioFormat:
        encoding = str(media_format.get("encoding", "audio/x-mulaw"))
        rate = media_format.get("sampleRate", 8000)
        channels = media_format.get("channels", 1)
        # "Typically 1 (mono), or 2 for both_tracks configurations" (SignalWire's <Stream> page). Each
        # media message names its track and outbound ones are dropped, so each payload is taken as one
        # mono track. UNVERIFIED: how a payload is laid out when channels is 2 is not documented.
        if channels not in (1, 2) or isinstance(channels, bool):
            raise PhoneProtocolError(f"unsupported mediaFormat: {channels} channels (1 or 2 accepted)", 1003)
        if encoding.lower() == "audio/x-mulaw" and rate == 8000:
            return ULAW_8K
        if encoding.lower() == "audio/x-l16" and rate in L16_RATES:
            return AudioFormat("pcm16", int(rate))
        raise PhoneProtocolError(
            f"unsupported mediaFormat {encoding}/{rate}: audio/x-mulaw 8000 or "
            f"audio/x-L16 {'/'.join(map(str, L16_RATES))} accepted",
            1003,
        )


CARRIER = Carrier(
    "signalwire",
    "SignalWire cXML <Stream>",
    SignalWireAdapter,
    plain(SignalWireAdapter),
    stream_token("signalwire"),
    # transfer: LaML call update (Url) to the bridge's <Dial>, briefing by <Number url>, return by <Dial action>
    # (https://developer.signalwire.com/compatibility-api/client-sdks/methods/calls/update, .../xml/voice/dial)
    Capabilities(two_tracks=True, transfer="rest", announce=True, return_to_bot=True),
    FrameRules(ULAW_8K, twilio_like=True),
)
