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

import base64
import json
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from bridge.adapters.common import json_object
from bridge.adapters.twilio import TwilioAdapter
from bridge.audio import ULAW_8K, AudioFormat
from bridge.errors import PhoneProtocolError

L16_RATES = (8000, 16000, 24000)
ENVELOPE_KEYS = ("sequenceNumber", "streamSid")  # what the wrapper may carry for its rawEvent


class SignalWireAdapter(TwilioAdapter):
    provider = "signalwire"
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
        raise PhoneProtocolError(f"unsupported mediaFormat {encoding}/{rate}: audio/x-mulaw 8000 or "
                                 f"audio/x-L16 {'/'.join(map(str, L16_RATES))} accepted", 1003)


class SignalWireStreamWriter:
    """SignalWire's side of a stream, as its ``<Stream>`` page shows the messages: ``connected``
    (version "0.2.0"), ``start``, ``media``, ``dtmf`` (``dtmf{duration, digit}``), ``stop``, and the
    ``mark``/``clear`` acknowledgements; mu-law, or L16 at ``sample_rate``.

    ``wrapped`` sends each one in the documented envelope (``timestamp``, ``direction``, ``eventType``,
    ``rawEvent``...). Unwrapped, each message is the ``rawEvent`` alone, except that a DTMF then keeps a
    ``sequenceNumber`` (in the envelope form only the envelope has it, and unwrapped there is none).
    """

    def __init__(self, call_sid: str, stream_sid: str, parameters: Mapping[str, str] | None = None,
                 sample_rate: int | None = None, *, wrapped: bool = False, channels: int = 1,
                 account_sid: str = "00000000-0000-0000-0000-000000000001") -> None:
        self.call_sid, self.stream_sid, self.account_sid = call_sid, stream_sid, account_sid
        self.parameters = dict(parameters or {})
        self.wrapped = wrapped
        self.media_format: dict[str, Any] = (
            {"encoding": "audio/x-L16", "sampleRate": sample_rate, "channels": channels} if sample_rate
            else {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": channels})
        self.tracks = ["inbound", "outbound"] if channels == 2 else ["inbound"]
        self.bytes_per_ms = sample_rate * 2 // 1000 if sample_rate else 8
        self.clock = datetime(2025, 9, 26, 16, 25, 4, 792000, tzinfo=UTC)  # the envelope's wall clock
        self._seq = 0
        self._chunk = 0
        self._audio_ms = 0.0

    def _next(self) -> str:
        self._seq += 1
        return str(self._seq)

    def _message(self, raw: dict[str, Any], envelope: dict[str, str], direction: str = "inbound") -> str:
        if not self.wrapped:
            return json.dumps(raw)
        now = self.clock + timedelta(milliseconds=self._audio_ms)
        return json.dumps({"timestamp": now.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                           "direction": direction, "eventType": raw["event"], **envelope, "rawEvent": raw})

    def connected(self) -> str:
        return self._message({"event": "connected", "protocol": "Call", "version": "0.2.0"}, {})

    def start(self) -> str:
        seq = self._next()
        start: dict[str, Any] = {"streamSid": self.stream_sid, "accountSid": self.account_sid,
                                 "callSid": self.call_sid, "tracks": self.tracks}
        if self.parameters:  # "Appears only when parameters are defined."
            start["customParameters"] = self.parameters
        start["mediaFormat"] = self.media_format
        return self._message({"event": "start", "sequenceNumber": seq, "start": start},
                             {"streamSid": self.stream_sid, "callSid": self.call_sid, "sequenceNumber": seq})

    def media(self, payload: bytes, track: str = "inbound") -> str:
        seq = self._next()
        self._chunk += 1
        raw = {"event": "media", "sequenceNumber": seq,
               "media": {"track": track, "chunk": str(self._chunk), "timestamp": str(int(self._audio_ms)),
                         "payload": base64.b64encode(payload).decode()}}
        msg = self._message(raw, {"streamSid": self.stream_sid, "sequenceNumber": seq})
        if track == "inbound":  # both tracks share one clock
            self._audio_ms += len(payload) / self.bytes_per_ms
        return msg

    def dtmf(self, digit: str, duration_ms: int = 2700) -> str:
        seq = self._next()
        raw: dict[str, Any] = {"event": "dtmf"}
        if not self.wrapped:
            raw["sequenceNumber"] = seq
        raw.update({"streamSid": self.stream_sid, "dtmf": {"duration": duration_ms, "digit": digit}})
        return self._message(raw, {"streamSid": self.stream_sid, "sequenceNumber": seq})

    def mark(self, name: str) -> str:
        """The acknowledgement of a mark the server sent (no sequenceNumber in the document's example)."""
        return self._message({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}},
                             {"streamSid": self.stream_sid})

    def clear(self) -> str:
        """The acknowledgement of a ``clear`` the server sent."""
        return self._message({"event": "clear", "streamSid": self.stream_sid}, {"streamSid": self.stream_sid},
                             direction="outbound")

    def stop(self) -> str:
        seq = self._next()
        return self._message({"event": "stop", "sequenceNumber": seq},
                             {"streamSid": self.stream_sid, "sequenceNumber": seq})

    def call(self, audio: bytes, frame_bytes: int = 160) -> Iterator[str]:
        """Every message of a whole call playing ``audio`` (in the stream's format)."""
        yield self.connected()
        yield self.start()
        for i in range(0, len(audio), frame_bytes):
            yield self.media(audio[i:i + frame_bytes])
        yield self.stop()
