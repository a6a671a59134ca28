"""Telnyx media streaming, sans-I/O: snake_case JSON with base64 RTP payloads, reordered by chunk.

Messages: ``connected``, ``start`` (``stream_id`` top-level; ``start.call_control_id``, ``from``,
``to``, ``media_format{encoding: PCMU|PCMA|L16 or audio/x-mulaw, sample_rate, channels}``), ``media``
(``media{track, chunk, timestamp, payload}``), ``dtmf``, ``mark``, ``error`` and ``stop``.
Telnyx does not guarantee order: media is re-ordered by ``chunk`` within a bounded window
(``REORDER_WINDOW`` chunks, 100 ms at 20 ms per chunk); a chunk that never comes within the window is
counted as a gap and the audio after it goes on.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

from bridge.adapters.base import CallStarted, Dtmf, Gap, MarkReached, PhoneEvent
from bridge.adapters.common import b64_payload, int_field, require, string_map
from bridge.adapters.json_dialect import JsonDialectAdapter
from bridge.audio import ALAW_8K, ULAW_8K, AudioFormat
from bridge.errors import PhoneProtocolError

REORDER_WINDOW = 5
_ENCODINGS = {"PCMU": "ulaw", "AUDIO/X-MULAW": "ulaw", "PCMA": "alaw", "AUDIO/X-ALAW": "alaw",
              "L16": "pcm16", "AUDIO/X-L16": "pcm16"}


class ChunkReorderer:
    """Puts numbered chunks back in order, holding at most ``window`` early ones (pure)."""

    def __init__(self, window: int = REORDER_WINDOW) -> None:
        self.window = window
        self.expected: int | None = None
        self._held: dict[int, bytes] = {}
        self.late = 0
        self.missing = 0

    def push(self, chunk: int, payload: bytes) -> list[tuple[bytes, int | None]]:
        """Returns ``(payload, gap_before)`` in order; ``gap_before`` is the first skipped chunk number."""
        if self.expected is None:
            # Numbering starts at 1; a chunk a little later than that may simply have overtaken chunk 1.
            self.expected = 1 if chunk <= self.window else chunk
        if chunk < self.expected or chunk in self._held:
            self.late += 1  # too late (or a duplicate): its place in the stream has passed
            return []
        self._held[chunk] = payload
        out: list[tuple[bytes, int | None]] = []
        while True:
            if self.expected in self._held:
                out.append((self._held.pop(self.expected), None))
                self.expected += 1
            elif len(self._held) > self.window:
                skipped_from = self.expected
                self.expected = min(self._held)
                self.missing += self.expected - skipped_from
                out.append((self._held.pop(self.expected), skipped_from))
                self.expected += 1
            else:
                return out


class TelnyxAdapter(JsonDialectAdapter):
    provider = "telnyx"
    dialect = "Telnyx"
    stream_key = "stream_id"
    stream_events = frozenset({"media", "dtmf", "mark", "stop"})
    passive_events = frozenset({"connected", "error"})  # errors are Telnyx telling us about our messages

    def __init__(self) -> None:
        super().__init__()
        self._reorder = ChunkReorderer()

    def _start(self, msg: dict[str, Any]) -> CallStarted:
        start = require(msg, "start", dict, "start")
        stream_id = msg.get("stream_id") or start.get("stream_id")
        if not isinstance(stream_id, str) or not stream_id:
            raise PhoneProtocolError("stream_id missing")
        call_id = start.get("call_control_id") or start.get("call_session_id")
        if not isinstance(call_id, str) or not call_id:
            raise PhoneProtocolError("start.call_control_id missing")
        fmt = start.get("media_format") or {}
        if not isinstance(fmt, dict):
            raise PhoneProtocolError("start.media_format is not an object")
        codec = _ENCODINGS.get(str(fmt.get("encoding", "PCMU")).upper())
        rate = int_field(fmt, "sample_rate", "start.media_format") or 8000
        if codec is None or fmt.get("channels", 1) != 1 or (codec != "pcm16" and rate != 8000):
            raise PhoneProtocolError(f"unsupported media_format {fmt}", 1003)
        audio_format = {"ulaw": ULAW_8K, "alaw": ALAW_8K}.get(codec) or AudioFormat("pcm16", rate)
        caller, called, user = start.get("from"), start.get("to"), start.get("user_id")
        return CallStarted(provider=self.provider, call_sid=call_id, stream_sid=stream_id,
                           account_sid=user if isinstance(user, str) else None,
                           parameters=string_map(start.get("custom_parameters"), "start.custom_parameters"),
                           audio_format=audio_format,
                           caller=caller if isinstance(caller, str) else None,
                           called=called if isinstance(called, str) else None)

    def _stream_event(self, event: str, msg: dict[str, Any]) -> list[PhoneEvent]:
        if event == "dtmf":
            return [Dtmf(require(require(msg, "dtmf", dict, "dtmf"), "digit", str, "dtmf"))]
        if event == "mark":
            return [MarkReached(require(require(msg, "mark", dict, "mark"), "name", str, "mark"))]
        if event == "stop":
            return [self._stopped()]
        media = require(msg, "media", dict, "media")
        payload = b64_payload(media.get("payload"), "media.payload")
        if media.get("track", "inbound") not in ("inbound", "inbound_track"):
            return [self._ignored("outbound_media")]
        chunk = int_field(media, "chunk", "media")
        ordered = [(payload, None)] if chunk is None else self._reorder.push(chunk, payload)
        events: list[PhoneEvent] = []
        for data, gap in ordered:
            if gap is not None:
                self.counters.gaps += 1
                events.append(Gap(gap, gap + 1))
            events.append(self._audio(data))
        return events

    def audio_message(self, payload: bytes) -> str:
        return json.dumps({"event": "media", "media": {"payload": base64.b64encode(payload).decode()}})

    def mark_message(self, name: str) -> str:
        return json.dumps({"event": "mark", "mark": {"name": name}})

    def clear_message(self) -> str:
        return json.dumps({"event": "clear"})


class TelnyxStreamWriter:
    """Telnyx's side of a stream (for ``bridge call --carrier telnyx`` and tests)."""

    def __init__(self, call_id: str, stream_id: str, caller: str = "+15550100", called: str = "+15550199",
                 encoding: str = "PCMU", sample_rate: int = 8000) -> None:
        self.call_id, self.stream_id, self.caller, self.called = call_id, stream_id, caller, called
        self.encoding, self.sample_rate = encoding, sample_rate
        self._seq = 0
        self._chunk = 0

    def _next(self) -> str:
        self._seq += 1
        return str(self._seq)

    def connected(self) -> str:
        return json.dumps({"event": "connected", "version": "1.0.0"})

    def start(self) -> str:
        return json.dumps({"event": "start", "sequence_number": self._next(), "stream_id": self.stream_id,
                           "start": {"user_id": "00000000-0000-0000-0000-000000000001",
                                     "call_control_id": self.call_id, "call_session_id": self.call_id,
                                     "from": self.caller, "to": self.called, "client_state": None,
                                     "media_format": {"encoding": self.encoding, "sample_rate": self.sample_rate,
                                                      "channels": 1}}})

    def media(self, payload: bytes) -> str:
        self._chunk += 1
        return json.dumps({"event": "media", "sequence_number": self._next(), "stream_id": self.stream_id,
                           "media": {"track": "inbound", "chunk": str(self._chunk), "timestamp": str(20 * self._chunk),
                                     "payload": base64.b64encode(payload).decode()}})

    def stop(self) -> str:
        return json.dumps({"event": "stop", "sequence_number": self._next(), "stream_id": self.stream_id,
                           "stop": {"user_id": "00000000-0000-0000-0000-000000000001",
                                    "call_control_id": self.call_id}})

    def call(self, audio: bytes, frame_bytes: int) -> Iterator[str]:
        yield self.connected()
        yield self.start()
        for i in range(0, len(audio), frame_bytes):
            yield self.media(audio[i:i + frame_bytes])
        yield self.stop()
