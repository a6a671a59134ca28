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

from bridge.adapters.base import (
    Audio,
    CallStarted,
    Dtmf,
    Gap,
    Ignored,
    MarkReached,
    PhoneEvent,
    StreamCounters,
    StreamState,
)
from bridge.adapters.common import SequenceCheck, b64_payload, count, int_field, json_object, require
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


class PlivoAdapter:
    provider = "plivo"
    subprotocols: tuple[str, ...] = ()
    close_ends_call = True

    def __init__(self) -> None:
        self.state = StreamState.AWAITING_START
        self.counters = StreamCounters()
        self.stream_id: str | None = None
        self.audio_format: AudioFormat = ULAW_8K
        self._sequence = SequenceCheck("sequenceNumber")

    def receive(self, message: str | bytes) -> list[PhoneEvent]:
        self.counters.messages += 1
        msg = json_object(message, "Plivo")
        event = msg.get("event")
        if not isinstance(event, str):
            raise PhoneProtocolError("message has no 'event' string")
        events: list[PhoneEvent] = []
        skipped = self._sequence.check(msg)
        if skipped is not None:
            self.counters.gaps += 1
            events.append(Gap(*skipped))
        if event == "start":
            events.append(self._start(msg))
            return events
        if event not in ("media", "dtmf", "playedStream", "clearedAudio"):
            count(self.counters.ignored, event)
            return [*events, Ignored(event, unknown=True)]
        if self.state is StreamState.AWAITING_START:
            raise PhoneProtocolError(f"{event!r} before 'start'", 1008)
        sid = msg.get("streamId")
        if sid is not None and sid != self.stream_id:
            raise PhoneProtocolError(f"streamId {sid!r} does not match the stream's", 1008)
        if event == "media":
            media = require(msg, "media", dict, "media")
            payload = b64_payload(media.get("payload"), "media.payload")
            if media.get("track", "inbound") != "inbound":
                count(self.counters.ignored, "outbound_media")
                return [*events, Ignored("outbound_media")]
            self.counters.audio_frames += 1
            self.counters.audio_bytes += len(payload)
            events.append(Audio(payload))
        elif event == "dtmf":
            events.append(Dtmf(require(require(msg, "dtmf", dict, "dtmf"), "digit", str, "dtmf")))
        elif event == "playedStream":
            events.append(MarkReached(require(msg, "name", str, "playedStream")))
        else:
            events.append(Ignored("clearedAudio"))
        return events

    def _start(self, msg: dict[str, Any]) -> CallStarted:
        if self.state is not StreamState.AWAITING_START:
            raise PhoneProtocolError("second 'start' on one stream", 1008)
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
        self.stream_id = stream_id
        self.state = StreamState.STREAMING
        account = start.get("accountId")
        return CallStarted(provider=self.provider, call_sid=call_id, stream_sid=stream_id,
                           account_sid=account if isinstance(account, str) else None,
                           parameters=parse_extra_headers(msg.get("extra_headers")),
                           audio_format=self.audio_format,
                           tracks=tuple(str(t) for t in start.get("tracks") or ["inbound"]))

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
