"""Exotel Stream / Voicebot applets, sans-I/O: snake_case JSON carrying raw 16-bit PCM in base64.

Messages: ``connected``, ``start`` (``start{stream_sid, call_sid, account_sid, from, to,
custom_parameters, media_format{encoding: "audio/x-raw", sample_rate: "8000", bit_rate: "16"}}``,
values as strings), ``media`` (about 100 ms each), ``dtmf``, ``mark`` and ``stop``. Authentication
is HTTP Basic on the upgrade (``wss://KEY:TOKEN@host/...``). Outbound (Voicebot): ``media``,
``mark``, ``clear``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

from bridge.adapters.base import CallStarted, Dtmf, MarkReached, PhoneEvent
from bridge.adapters.common import b64_payload, int_field, require, string_map
from bridge.adapters.json_dialect import JsonDialectAdapter
from bridge.audio import AudioFormat
from bridge.errors import PhoneProtocolError


class ExotelAdapter(JsonDialectAdapter):
    provider = "exotel"
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
        rate = int_field(fmt, "sample_rate", "start.media_format") or 8000
        bits = int_field(fmt, "bit_rate", "start.media_format") or 16
        encoding = fmt.get("encoding", "audio/x-raw")
        if encoding not in ("audio/x-raw", "raw", "slin") or bits != 16 or rate not in (8000, 16000, 24000):
            raise PhoneProtocolError(f"unsupported media_format {fmt}", 1003)
        caller, called, account = start.get("from"), start.get("to"), start.get("account_sid")
        return CallStarted(provider=self.provider, call_sid=call_sid, stream_sid=stream_sid,
                           account_sid=account if isinstance(account, str) else None,
                           parameters=string_map(start.get("custom_parameters"), "start.custom_parameters"),
                           audio_format=AudioFormat("pcm16", rate),
                           caller=caller if isinstance(caller, str) else None,
                           called=called if isinstance(called, str) else None)

    def _stream_event(self, event: str, msg: dict[str, Any]) -> list[PhoneEvent]:
        if event == "media":
            data = self._rest + b64_payload(require(msg, "media", dict, "media").get("payload"), "media.payload")
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

    def audio_message(self, payload: bytes) -> str:
        return json.dumps({"event": "media", "stream_sid": self.stream_id,
                           "media": {"payload": base64.b64encode(payload).decode()}})

    def mark_message(self, name: str) -> str:
        return json.dumps({"event": "mark", "stream_sid": self.stream_id, "mark": {"name": name}})

    def clear_message(self) -> str:
        return json.dumps({"event": "clear", "stream_sid": self.stream_id})


class ExotelStreamWriter:
    def __init__(self, call_sid: str, stream_sid: str, caller: str = "+15550100", called: str = "+15550199",
                 sample_rate: int = 8000, parameters: dict[str, str] | None = None) -> None:
        self.call_sid, self.stream_sid, self.caller, self.called = call_sid, stream_sid, caller, called
        self.sample_rate, self.parameters = sample_rate, parameters or {}
        self._seq = 0

    def _next(self) -> str:
        self._seq += 1
        return str(self._seq)

    def call(self, pcm: bytes, frame_bytes: int) -> Iterator[str]:
        yield json.dumps({"event": "connected"})
        yield json.dumps({"event": "start", "sequence_number": self._next(), "stream_sid": self.stream_sid,
                          "start": {"stream_sid": self.stream_sid, "call_sid": self.call_sid, "account_sid": "acc",
                                    "from": self.caller, "to": self.called, "custom_parameters": self.parameters,
                                    "media_format": {"encoding": "audio/x-raw", "sample_rate": str(self.sample_rate),
                                                     "bit_rate": "16"}}})
        for n, i in enumerate(range(0, len(pcm), frame_bytes)):
            yield json.dumps({"event": "media", "sequence_number": self._next(), "stream_sid": self.stream_sid,
                              "media": {"chunk": str(n + 1), "timestamp": str(n * 20),
                                        "payload": base64.b64encode(pcm[i:i + frame_bytes]).decode()}})
        yield json.dumps({"event": "stop", "sequence_number": self._next(), "stream_sid": self.stream_sid,
                          "stop": {"call_sid": self.call_sid, "account_sid": "acc", "reason": "callended"}})
