"""Exotel Stream / Voicebot applets and ExoML ``<StartStream>``, sans-I/O: snake_case JSON, base64 audio.

Messages: ``connected``, ``start`` (``start{stream_sid, call_sid, account_sid, from, to,
custom_parameters, media_format{encoding: "audio/x-raw", sample_rate: "8000", bit_rate: "16"}}``,
values as strings), ``media`` (about 100 ms each), ``dtmf``, ``mark`` and ``stop``. The applets
carry raw 16-bit PCM (8, 16 or 24 kHz); ExoML ``<StartStream>`` defaults to
``audio/x-mulaw;rate=8000``, passed through as 8 kHz mu-law. Authentication is HTTP Basic on the
upgrade (``wss://KEY:TOKEN@host/...``). Outbound (Voicebot): ``media``, ``mark``, ``clear``.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from bridge.adapters.base import CallStarted, Dtmf, MarkReached, OutboundFraming, PhoneEvent
from bridge.adapters.carrier import Capabilities, Carrier, FrameRules, plain
from bridge.adapters.common import b64_payload, int_field, require, string_map
from bridge.adapters.json_dialect import JsonDialectAdapter
from bridge.adapters.stream_auth import stream_token
from bridge.audio import ULAW_8K, AudioFormat
from bridge.errors import PhoneProtocolError

RAW_ENCODINGS = frozenset({"audio/x-raw", "raw", "slin"})
RAW_RATES = (8000, 16000, 24000)
# UNVERIFIED: Exotel documents mu-law only as ExoML's contentType default "audio/x-mulaw;rate=8000",
# not the media_format it then sends; every usual spelling of mu-law is accepted (a ";rate=8000"
# suffix too), with bit_rate 8 and sample_rate 8000, or either absent.
ULAW_ENCODINGS = frozenset({"audio/x-mulaw", "audio/mulaw", "mulaw", "ulaw", "audio/pcmu", "pcmu"})
ACCEPTED = (
    "audio/x-raw (16-bit, 8000/16000/24000 Hz) or audio/x-mulaw (8-bit, 8000 Hz; also mulaw, "
    "ulaw, audio/mulaw, audio/pcmu, pcmu)"
)


def media_format(fmt: dict[str, Any]) -> AudioFormat:
    """The audio format of a ``start.media_format``, or PhoneProtocolError 1003 naming what is accepted."""
    raw_encoding = fmt.get("encoding", "audio/x-raw")
    if not isinstance(raw_encoding, str):
        raise PhoneProtocolError(
            f"start.media_format.encoding {raw_encoding!r} is not a string; accepted: {ACCEPTED}", 1003
        )
    encoding, _, options = (part.strip() for part in raw_encoding.lower().partition(";"))
    rate = int_field(fmt, "sample_rate", "start.media_format")
    bits = int_field(fmt, "bit_rate", "start.media_format")
    if encoding in ULAW_ENCODINGS:
        if options.replace(" ", "") in ("", "rate=8000") and rate in (None, 8000) and bits in (None, 8):
            return ULAW_8K
    elif encoding in RAW_ENCODINGS and not options:
        rate = rate or 8000
        if (bits or 16) == 16 and rate in RAW_RATES:
            return AudioFormat("pcm16", rate)
    raise PhoneProtocolError(f"unsupported media_format {fmt}: accepted {ACCEPTED}", 1003)


class ExotelAdapter(JsonDialectAdapter):
    carrier = "exotel"
    dialect = "Exotel"
    stream_key = "stream_sid"
    sequence_key = "sequence_number"
    stream_events = frozenset({"media", "dtmf", "mark", "stop"})

    def __init__(self) -> None:
        super().__init__()
        self._rest = b""

    def _start(self, msg: dict[str, Any]) -> CallStarted:
        start = require(msg, "start", dict, "start")
        stream_sid = start.get("stream_sid") or msg.get("stream_sid")
        if not isinstance(stream_sid, str) or not stream_sid:
            raise PhoneProtocolError("start.stream_sid missing")
        call_sid = require(start, "call_sid", str, "start")
        fmt = start.get("media_format") or {}
        if not isinstance(fmt, dict):
            raise PhoneProtocolError("start.media_format is not an object")
        caller, called, account = start.get("from"), start.get("to"), start.get("account_sid")
        return CallStarted(
            carrier=self.carrier,
            call_sid=call_sid,
            stream_sid=stream_sid,
            account_sid=account if isinstance(account, str) else None,
            parameters=string_map(start.get("custom_parameters"), "start.custom_parameters"),
            audio_format=media_format(fmt),
            caller=caller if isinstance(caller, str) else None,
            called=called if isinstance(called, str) else None,
        )

    def _stream_event(self, event: str, msg: dict[str, Any]) -> list[PhoneEvent]:
        if event == "media":
            data = b64_payload(require(msg, "media", dict, "media").get("payload"), "media.payload")
            if self.audio_format.sample_width == 1:
                return [self._audio(data)]
            data = self._rest + data
            usable = len(data) - len(data) % 2  # whole 16-bit samples; an odd byte waits for the next chunk
            self._rest = data[usable:]
            return [self._audio(data[:usable])]
        if event == "dtmf":
            return [Dtmf(str(require(msg, "dtmf", dict, "dtmf").get("digit", "")))]
        if event == "mark":
            return [MarkReached(require(require(msg, "mark", dict, "mark"), "name", str, "mark"))]
        stop = msg.get("stop")
        reason = stop.get("reason") if isinstance(stop, dict) else None
        return [self._stopped(str(reason or "stop"))]

    def _framing(self) -> OutboundFraming:
        # Exotel plays chunks of 3.2 kB ("100ms data", which is 16 kHz; 200 ms at 8 kHz) to 100 kB, in
        # multiples of 320 bytes (the rule is stated in bytes, so it is applied as is to every format).
        return OutboundFraming(320, min_frames=10, max_frames=100_000 // 320)

    def _audio_chunk_message(self, chunk: bytes) -> str:
        return json.dumps(
            {"event": "media", "stream_sid": self.stream_id, "media": {"payload": base64.b64encode(chunk).decode()}}
        )

    def mark_message(self, name: str) -> str:
        return json.dumps({"event": "mark", "stream_sid": self.stream_id, "mark": {"name": name}})

    def clear_message(self) -> str:
        self._drop_held_audio()
        return json.dumps({"event": "clear", "stream_sid": self.stream_id})


CARRIER = Carrier(
    "exotel",
    "Exotel Stream / Voicebot",
    ExotelAdapter,
    plain(ExotelAdapter),
    stream_token("exotel"),
    # transfer: none; Exotel documents no live transfer of a Voicebot stream (only the flow's next applet)
    Capabilities(two_tracks=False, transfer=None),
    FrameRules(AudioFormat("pcm16", 8000), frame_ms=100),
)
