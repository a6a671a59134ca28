"""SignalWire cXML ``<Stream>``, sans-I/O: Twilio's message shapes with SignalWire's differences.

Differences handled: stream and call ids are UUIDs; ``mediaFormat`` may be ``audio/x-L16`` (16-bit
little-endian PCM) at 8000/16000/24000 Hz (``codec="L16@16000h"`` on ``<Stream>``) besides mu-law;
some of SignalWire's documents wrap each event as ``{"timestamp", "direction", "eventType",
"rawEvent": {...}}`` (which form is on the wire is not confirmed), so both are accepted.
Authentication: ``authBearerToken`` on ``<Stream>`` arrives as ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

from typing import Any

from bridge.adapters.common import json_object
from bridge.adapters.twilio import TwilioAdapter, TwilioStreamWriter
from bridge.audio import ULAW_8K, AudioFormat
from bridge.errors import PhoneProtocolError

L16_RATES = (8000, 16000, 24000)


class SignalWireAdapter(TwilioAdapter):
    provider = "signalwire"
    dialect = "SignalWire"

    def _parse(self, message: str | bytes) -> dict[str, Any]:
        msg = json_object(message, "SignalWire")
        raw = msg.get("rawEvent")
        if "event" not in msg and isinstance(raw, dict):
            return raw
        return msg

    def _audio_format(self, media_format: dict[str, Any]) -> AudioFormat:
        encoding = str(media_format.get("encoding", "audio/x-mulaw"))
        rate = media_format.get("sampleRate", 8000)
        channels = media_format.get("channels", 1)
        if channels != 1:
            raise PhoneProtocolError(f"unsupported mediaFormat: {channels} channels", 1003)
        if encoding.lower() == "audio/x-mulaw" and rate == 8000:
            return ULAW_8K
        if encoding.lower() == "audio/x-l16" and rate in L16_RATES:
            return AudioFormat("pcm16", int(rate))
        raise PhoneProtocolError(f"unsupported mediaFormat {encoding}/{rate}", 1003)


class SignalWireStreamWriter(TwilioStreamWriter):
    """SignalWire's side of a stream: Twilio's messages with UUID ids and, optionally, L16 audio."""

    def __init__(self, call_sid: str, stream_sid: str, parameters: dict[str, str] | None = None,
                 sample_rate: int | None = None) -> None:
        super().__init__(call_sid, stream_sid, account_sid="00000000-0000-0000-0000-000000000001",
                         parameters=parameters)
        if sample_rate is not None:
            self.media_format = {"encoding": "audio/x-L16", "sampleRate": sample_rate,  # type: ignore[misc]
                                 "channels": 1}
            self.bytes_per_ms = sample_rate * 2 // 1000
