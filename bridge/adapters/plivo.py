"""Plivo Audio Streams, sans-I/O: camelCase JSON with base64 audio; no ``connected``, no ``stop``.

Messages: ``start`` (``start{callId, streamId, accountId, tracks, mediaFormat{encoding:
audio/x-mulaw | audio/x-l16, sampleRate: 8000 | 16000}}``, optional ``extra_headers`` "k=v;k2=v2"),
``media`` (``sequenceNumber`` and ``chunk`` are numbers, ``timestamp`` is epoch ms), ``dtmf``,
``playedStream`` (a checkpoint was reached) and ``clearedAudio``. The socket closing is the end of
the call. Outbound: ``playAudio``, ``checkpoint``, ``clearAudio``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

from bridge.adapters.base import CallStarted, Dtmf, Ignored, MarkReached, PhoneEvent
from bridge.adapters.common import b64_payload, int_field, require
from bridge.adapters.json_dialect import JsonDialectAdapter
from bridge.audio import ULAW_8K, AudioFormat
from bridge.errors import PhoneProtocolError


def parse_extra_headers(value: Any) -> dict[str, str]:
    if not isinstance(value, str) or not value:
        return {}
    out = {}
    for part in value.split(";"):
        key, sep, val = part.partition("=")
        if sep and key.strip():
            out[key.strip()] = val.strip()
    return out


class PlivoAdapter(JsonDialectAdapter):
    provider = "plivo"
    dialect = "Plivo"
    stream_key = "streamId"
    sequence_key = "sequenceNumber"
    stream_events = frozenset({"media", "dtmf", "playedStream", "clearedAudio"})
    close_ends_call = True

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
        return CallStarted(provider=self.provider, call_sid=call_id, stream_sid=stream_id,
                           account_sid=account if isinstance(account, str) else None,
                           parameters=parse_extra_headers(msg.get("extra_headers")),
                           audio_format=self.audio_format,
                           tracks=tuple(str(t) for t in start.get("tracks") or ["inbound"]))

    def _stream_event(self, event: str, msg: dict[str, Any]) -> list[PhoneEvent]:
        if event == "media":
            media = require(msg, "media", dict, "media")
            payload = b64_payload(media.get("payload"), "media.payload")
            if media.get("track", "inbound") != "inbound":
                return [self._ignored("outbound_media")]
            return [self._audio(payload)]
        if event == "dtmf":
            return [Dtmf(require(require(msg, "dtmf", dict, "dtmf"), "digit", str, "dtmf"))]
        if event == "playedStream":
            return [MarkReached(require(msg, "name", str, "playedStream"))]
        return [Ignored("clearedAudio")]

    def audio_message(self, payload: bytes) -> str:
        content = "audio/x-mulaw" if self.audio_format.codec == "ulaw" else "audio/x-l16"
        return json.dumps({"event": "playAudio", "media": {
            "contentType": content, "sampleRate": self.audio_format.sample_rate,
            "payload": base64.b64encode(payload).decode()}})

    def mark_message(self, name: str) -> str:
        return json.dumps({"event": "checkpoint", "streamId": self.stream_id, "name": name})

    def clear_message(self) -> str:
        return json.dumps({"event": "clearAudio", "streamId": self.stream_id})


class PlivoStreamWriter:
    """Plivo's side of a stream: ``start`` then ``media``; the call ends when the socket closes."""

    def __init__(self, call_id: str, stream_id: str, parameters: dict[str, str] | None = None,
                 sample_rate: int | None = None) -> None:
        self.call_id, self.stream_id = call_id, stream_id
        self.parameters = parameters or {}
        self.sample_rate = sample_rate
        self._seq = 0

    def _next(self) -> int:
        self._seq += 1
        return self._seq

    def start(self) -> str:
        fmt = ({"encoding": "audio/x-l16", "sampleRate": self.sample_rate} if self.sample_rate
               else {"encoding": "audio/x-mulaw", "sampleRate": 8000})
        return json.dumps({"event": "start", "sequenceNumber": self._next(),
                           "start": {"callId": self.call_id, "streamId": self.stream_id, "accountId": "MA0000",
                                     "tracks": ["inbound"], "mediaFormat": fmt},
                           "extra_headers": ";".join(f"{k}={v}" for k, v in self.parameters.items())})

    def media(self, payload: bytes) -> str:
        seq = self._next()
        return json.dumps({"event": "media", "sequenceNumber": seq, "streamId": self.stream_id,
                           "media": {"track": "inbound", "timestamp": str(1_700_000_000_000 + 20 * seq),
                                     "chunk": seq - 1, "payload": base64.b64encode(payload).decode()}})

    def call(self, audio: bytes, frame_bytes: int) -> Iterator[str]:
        yield self.start()
        for i in range(0, len(audio), frame_bytes):
            yield self.media(audio[i:i + frame_bytes])
