"""Vonage Voice API WebSocket, sans-I/O: one text frame, then binary 16-bit PCM frames.

The first frame is ``{"event": "websocket:connected", "content-type": "audio/l16;rate=16000", ...}``
with the NCCO's ``headers`` flattened into it (that is where an application passes the call's
uuid, numbers and anything else). Then binary L16 little-endian mono frames, 20 ms each (320 bytes
at 8 kHz, 640 at 16 kHz). Text events: ``websocket:dtmf``, ``websocket:notify`` (a notify action was
reached), ``websocket:cleared``. There is no stop message: the socket closing ends the call.
Outbound: binary L16 frames, ``{"action": "clear"}``, ``{"action": "notify", "payload": ...}``.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

from bridge.adapters.base import (
    CallStarted,
    Dtmf,
    Ignored,
    MarkReached,
    PhoneEvent,
    StreamCounters,
    StreamState,
)
from bridge.adapters.binary import L16Frames
from bridge.adapters.common import count, json_object
from bridge.audio import AudioFormat
from bridge.errors import PhoneProtocolError

_RATE = re.compile(r"rate\s*=\s*(\d+)")
_ID_HEADERS = ("uuid", "call_uuid", "conversation_uuid", "callSid", "call_id")


class VonageAdapter:
    provider = "vonage"
    subprotocols: tuple[str, ...] = ()
    close_ends_call = True

    def __init__(self) -> None:
        self.state = StreamState.AWAITING_START
        self.counters = StreamCounters()
        self._frames = L16Frames(self.counters)
        self.audio_format = AudioFormat("pcm16", 16000)

    def receive(self, message: str | bytes) -> list[PhoneEvent]:
        self.counters.messages += 1
        if isinstance(message, bytes):
            if self.state is not StreamState.STREAMING:
                raise PhoneProtocolError("audio before 'websocket:connected'", 1008)
            audio = self._frames.feed(message)
            return [audio] if audio is not None else []
        msg = json_object(message, "Vonage")
        event = msg.get("event")
        if event == "websocket:connected":
            return [self._start(msg)]
        if self.state is StreamState.AWAITING_START:
            raise PhoneProtocolError(f"{event!r} before 'websocket:connected'", 1008)
        if event == "websocket:dtmf":
            digit = msg.get("digit", msg.get("dtmf"))
            if not isinstance(digit, (str, int)) or isinstance(digit, bool):
                raise PhoneProtocolError("websocket:dtmf without a digit")
            return [Dtmf(str(digit))]
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
        headers = {k: str(v) for k, v in msg.items()
                   if k not in ("event", "content-type") and isinstance(v, (str, int, float))}
        call_id = next((headers[k] for k in _ID_HEADERS if headers.get(k)), None) or f"vonage-{uuid.uuid4().hex}"
        self.state = StreamState.STREAMING
        return CallStarted(provider=self.provider, call_sid=call_id, stream_sid=call_id, account_sid=None,
                           parameters=headers, audio_format=self.audio_format,
                           caller=headers.get("from"), called=headers.get("to"))

    def audio_message(self, payload: bytes) -> bytes:
        return payload

    def mark_message(self, name: str) -> str:
        return json.dumps({"action": "notify", "payload": {"name": name}})

    def clear_message(self) -> str:
        return json.dumps({"action": "clear"})


class VonageStreamWriter:
    def __init__(self, call_id: str, sample_rate: int = 16000, headers: dict[str, str] | None = None) -> None:
        self.call_id, self.sample_rate, self.headers = call_id, sample_rate, headers or {}

    def call(self, pcm: bytes, frame_bytes: int) -> Iterator[str | bytes]:
        yield json.dumps({"event": "websocket:connected", "content-type": f"audio/l16;rate={self.sample_rate}",
                          "uuid": self.call_id, **self.headers})
        for i in range(0, len(pcm), frame_bytes):
            yield pcm[i:i + frame_bytes]
