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
from collections.abc import Iterator, Mapping
from typing import Any

from bridge.adapters.base import CallStarted, Dtmf, Ignored, MarkReached, PhoneEvent
from bridge.adapters.common import b64_payload, int_field, require, string_map
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
        return CallStarted(provider=self.provider, call_sid=call_id, stream_sid=stream_id,
                           account_sid=account if isinstance(account, str) else None,
                           parameters=parameters,
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
        if event == "stop":
            # The Java SDK's StopEvent reads a top-level "reason"; the Go example's stop{} has none.
            stop = msg.get("stop")
            reason = msg.get("reason") or (stop.get("reason") if isinstance(stop, dict) else None)
            return [self._stopped(reason if isinstance(reason, str) and reason else "stop")]
        return [Ignored("clearedAudio")]

    def _audio_chunk_message(self, chunk: bytes) -> str:
        content = "audio/x-mulaw" if self.audio_format.codec == "ulaw" else "audio/x-l16"
        return json.dumps({"event": "playAudio", "media": {
            "contentType": content, "sampleRate": self.audio_format.sample_rate,
            "payload": base64.b64encode(chunk).decode()}})

    def mark_message(self, name: str) -> str:
        return json.dumps({"event": "checkpoint", "streamId": self.stream_id, "name": name})

    def clear_message(self) -> str:
        self._drop_held_audio()
        return json.dumps({"event": "clearAudio", "streamId": self.stream_id})


class PlivoStreamWriter:
    """Plivo's side of a stream: ``start``, ``media``/``dtmf``, and (``send_stop``) a final ``stop``.

    ``parameters`` travel as ``extra_headers`` ("k=v;k2=v2"), ``custom_parameters`` (when given) as
    ``start.customParameters``. ``send_stop`` ends the stream as Plivo does (``bridge call`` uses it);
    without it the stream ends by the socket closing, which Plivo may also do.
    """

    def __init__(self, call_id: str, stream_id: str, parameters: dict[str, str] | None = None,
                 sample_rate: int | None = None, *, custom_parameters: Mapping[str, str] | None = None,
                 send_stop: bool = False, account_id: str = "MA0000") -> None:
        self.call_id, self.stream_id = call_id, stream_id
        self.parameters = parameters or {}
        self.custom_parameters = dict(custom_parameters) if custom_parameters is not None else None
        self.sample_rate = sample_rate
        self.send_stop = send_stop
        self.account_id = account_id
        self.bytes_per_ms = sample_rate * 2 // 1000 if sample_rate else 8
        self.epoch_ms = 1_700_000_000_000  # media.timestamp is the wall clock, in ms
        self._seq = 0
        self._chunk = 0
        self._audio_ms = 0.0

    def _next(self) -> int:
        self._seq += 1
        return self._seq

    @property
    def extra_headers(self) -> str:
        return ";".join(f"{k}={v}" for k, v in self.parameters.items())

    def start(self) -> str:
        fmt = ({"encoding": "audio/x-l16", "sampleRate": self.sample_rate} if self.sample_rate
               else {"encoding": "audio/x-mulaw", "sampleRate": 8000})
        start: dict[str, Any] = {"callId": self.call_id, "streamId": self.stream_id, "accountId": self.account_id,
                                 "tracks": ["inbound"], "mediaFormat": fmt}
        if self.custom_parameters is not None:
            start["customParameters"] = self.custom_parameters
        return json.dumps({"event": "start", "sequenceNumber": self._next(), "start": start,
                           "extra_headers": self.extra_headers})

    def media(self, payload: bytes) -> str:
        self._chunk += 1
        msg = json.dumps({"event": "media", "sequenceNumber": self._next(), "streamId": self.stream_id,
                          "media": {"track": "inbound", "timestamp": str(self.epoch_ms + int(self._audio_ms)),
                                    "chunk": self._chunk, "payload": base64.b64encode(payload).decode()},
                          "extra_headers": self.extra_headers})
        self._audio_ms += len(payload) / self.bytes_per_ms
        return msg

    def dtmf(self, digit: str) -> str:
        return json.dumps({"event": "dtmf", "sequenceNumber": self._next(), "streamId": self.stream_id,
                           "dtmf": {"track": "inbound", "digit": digit,
                                    "timestamp": str(self.epoch_ms + int(self._audio_ms))}})

    def stop(self, reason: str | None = None) -> str:
        msg: dict[str, Any] = {"event": "stop", "sequenceNumber": self._next(), "streamId": self.stream_id,
                               "stop": {"callId": self.call_id, "streamId": self.stream_id, "tracks": ["inbound"]}}
        if reason is not None:
            msg["reason"] = reason
        return json.dumps(msg)

    def call(self, audio: bytes, frame_bytes: int) -> Iterator[str]:
        yield self.start()
        for i in range(0, len(audio), frame_bytes):
            yield self.media(audio[i:i + frame_bytes])
        if self.send_stop:
            yield self.stop()
