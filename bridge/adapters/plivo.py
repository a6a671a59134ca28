"""Plivo Audio Streams, sans-I/O: camelCase JSON with base64 audio; no ``connected``.

Messages (Plivo's stream SDKs, ``plivo-stream-sdk-java``/``-python``, and its example servers):
``start`` (``start{callId, streamId, accountId, tracks, mediaFormat{encoding: audio/x-mulaw |
audio/x-l16, sampleRate: 8000 | 16000}, customParameters{...}}``, and ``extra_headers`` "k=v;k2=v2"
beside it), ``media`` (``sequenceNumber`` and ``chunk`` are numbers, ``timestamp`` is epoch ms),
``dtmf``, ``playedStream`` (a checkpoint was reached), ``clearedAudio``, and ``stop``
(``stop{callId, streamId, tracks}``; the Java SDK also reads a ``reason``) before the socket closes.
The socket closing without a ``stop`` is the end of the call too. Outbound: ``playAudio``,
``checkpoint``, ``clearAudio``.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

from bridge.adapters.base import CallStarted, Dtmf, Ignored, MarkReached, PhoneEvent
from bridge.adapters.carrier import Capabilities, Carrier, FrameRules, plain
from bridge.adapters.common import b64_payload, int_field, require, string_map
from bridge.adapters.json_dialect import JsonDialectAdapter
from bridge.adapters.stream_auth import stream_token
from bridge.audio import ULAW_8K, AudioFormat
from bridge.errors import PhoneProtocolError

# The bridge's own stream parameters travel in extraHeaders under names Plivo allows (A-Z, a-z, 0-9
# only), the transfer's values hex-encoded (bridge.control.ways writes them): restored here.
BRIDGE_HEADERS = {
    "bridgeresume": "bridge.resume",
    "bridgetransfer": "bridge.transfer",
    "bridgetransferstatus": "bridge.transfer_status",
}
HEX_HEADERS = frozenset({"bridge.transfer", "bridge.transfer_status"})


def parse_extra_headers(value: Any) -> dict[str, str]:
    """``extra_headers`` as parameters. The ``<Stream extraHeaders>`` attribute is documented with
    commas and the stream's ``extra_headers`` with semicolons (UNVERIFIED which reaches the socket):
    both separate pairs here."""
    if not isinstance(value, str) or not value:
        return {}
    out = {}
    for part in re.split("[;,]", value):
        key, sep, val = part.partition("=")
        if sep and key.strip():
            name = BRIDGE_HEADERS.get(key.strip(), key.strip())
            out[name] = _unhex(val.strip()) if name in HEX_HEADERS else val.strip()
    return out


def _unhex(text: str) -> str:
    try:
        return bytes.fromhex(text).decode()
    except ValueError:  # UnicodeDecodeError is a ValueError
        return text


class PlivoAdapter(JsonDialectAdapter):
    carrier = "plivo"
    dialect = "Plivo"
    stream_key = "streamId"
    sequence_key = "sequenceNumber"
    stream_events = frozenset({"media", "dtmf", "playedStream", "clearedAudio", "stop"})
    close_ends_call = True  # a stream may end by the socket closing without a stop

    def __init__(self) -> None:
        super().__init__()
        self.audio_format: AudioFormat = ULAW_8K

    def _start(self, msg: dict[str, Any]) -> CallStarted:
        start = require(msg, "start", dict, "start")
        stream_id = require(start, "streamId", str, "start")
        call_id = require(start, "callId", str, "start")
        fmt = start.get("mediaFormat") or {}
        if not isinstance(fmt, dict):
            raise PhoneProtocolError("start.mediaFormat is not an object")
        encoding = str(fmt.get("encoding", "audio/x-mulaw")).lower()
        rate = int_field(fmt, "sampleRate", "start.mediaFormat") or 8000
        if encoding == "audio/x-mulaw" and rate == 8000:
            self.audio_format = ULAW_8K
        elif encoding == "audio/x-l16" and rate in (8000, 16000):
            self.audio_format = AudioFormat("pcm16", rate)
        else:
            raise PhoneProtocolError(f"unsupported mediaFormat {encoding}/{rate}", 1003)
        account = start.get("accountId")
        # Both carry the stream's parameters: extra_headers (a "k=v;k2=v2" string) and, in the SDKs'
        # model, start.customParameters (an object of strings); the object wins on a name in both.
        parameters = parse_extra_headers(msg.get("extra_headers"))
        parameters.update(string_map(start.get("customParameters"), "start.customParameters"))
        tracks = tuple(str(t) for t in start.get("tracks") or ["inbound"])
        # audioTrack="both": the caller (inbound) and the other party (outbound) as separate media
        # messages; start.tracks lists both (or says "both").
        self.both_parties = "both" in tracks or {"inbound", "outbound"} <= set(tracks)
        return CallStarted(
            carrier=self.carrier,
            call_sid=call_id,
            stream_sid=stream_id,
            account_sid=account if isinstance(account, str) else None,
            parameters=parameters,
            audio_format=self.audio_format,
            tracks=tracks,
            channels=2 if self.both_parties else 1,
        )

    def _stream_event(self, event: str, msg: dict[str, Any]) -> list[PhoneEvent]:
        if event == "media":
            media = require(msg, "media", dict, "media")
            payload = b64_payload(media.get("payload"), "media.payload")
            inbound = media.get("track", "inbound") == "inbound"
            if self.both_parties:
                return [self._track_audio(payload, media, inbound)]
            if not inbound:
                return [self._ignored("outbound_media")]
            return [self._audio(payload)]
        if event == "dtmf":
            return [Dtmf(require(require(msg, "dtmf", dict, "dtmf"), "digit", str, "dtmf"))]
        if event == "playedStream":
            return [MarkReached(require(msg, "name", str, "playedStream"))]
        if event == "stop":
            # The Java SDK's StopEvent reads a top-level "reason"; the Go example's stop{} has none.
            stop = msg.get("stop")
            reason = msg.get("reason") or (stop.get("reason") if isinstance(stop, dict) else None)
            return [self._stopped(reason if isinstance(reason, str) and reason else "stop")]
        return [Ignored("clearedAudio")]

    def _audio_chunk_message(self, chunk: bytes) -> str:
        content = "audio/x-mulaw" if self.audio_format.codec == "ulaw" else "audio/x-l16"
        return json.dumps(
            {
                "event": "playAudio",
                "media": {
                    "contentType": content,
                    "sampleRate": self.audio_format.sample_rate,
                    "payload": base64.b64encode(chunk).decode(),
                },
            }
        )

    def mark_message(self, name: str) -> str:
        return json.dumps({"event": "checkpoint", "streamId": self.stream_id, "name": name})

    def clear_message(self) -> str:
        self._drop_held_audio()
        return json.dumps({"event": "clearAudio", "streamId": self.stream_id})


CARRIER = Carrier(
    "plivo",
    "Plivo Audio Streams",
    PlivoAdapter,
    plain(PlivoAdapter),
    stream_token("plivo"),
    # transfer: Call/{uuid}/ aleg_url to the bridge's <Dial>, briefing by confirmSound, return by <Dial action>
    # (https://plivo.com/docs/voice/xml/dial; plivo-python plivo/resources/calls.py transfer)
    Capabilities(two_tracks=True, transfer="rest", announce=True, return_to_bot=True),
    FrameRules(ULAW_8K),
)
