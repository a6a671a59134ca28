"""Asterisk chan_websocket (20.16/21.11/22.6/23.0 and later), sans-I/O: text control messages and
binary media frames in the channel's codec.

Control messages come as plain text (``MEDIA_START connection_id:abc channel:PJSIP/x format:ulaw
optimal_frame_size:160``) or, from 20.18/22.8/23.2, as JSON (``{"event": "MEDIA_START", ...}``);
both are read. ``MEDIA_START`` gives the format (``ulaw``, ``alaw``, ``slin`` (8 kHz) or
``slin16``/``slin24``/... 16-bit PCM), then binary frames carry raw audio (160 bytes per 20 ms for
G.711). ``DTMF_END`` carries digits, ``MEDIA_MARK_PROCESSED`` reports a mark; flow-control and
status messages are ignored. Hang-up closes the socket. Outbound: binary audio frames,
``FLUSH_MEDIA`` (barge-in) and ``MARK_MEDIA``, in the style (plain or JSON) Asterisk used.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from bridge.adapters.base import (
    Audio,
    CallStarted,
    Dtmf,
    Ignored,
    MarkReached,
    PhoneEvent,
    StreamCounters,
    StreamState,
)
from bridge.adapters.binary import L16Frames
from bridge.adapters.common import count
from bridge.audio import ALAW_8K, ULAW_8K, AudioFormat
from bridge.errors import PhoneProtocolError

_SLIN_RATES = {"slin": 8000, "slin12": 12000, "slin16": 16000, "slin24": 24000, "slin32": 32000,
               "slin44": 44100, "slin48": 48000, "slin96": 96000, "slin192": 192000}
_IGNORED = frozenset({"MEDIA_XOFF", "MEDIA_XON", "STATUS", "QUEUE_DRAINED", "MEDIA_BUFFERING_COMPLETED",
                      "DTMF_BEGIN"})


def parse_control(text: str) -> dict[str, Any]:
    """A control message, plain (``NAME key:value ...``) or JSON, as a dict with ``event``."""
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            msg = json.loads(stripped)
        except (ValueError, RecursionError):
            raise PhoneProtocolError("control message is not valid JSON") from None
        if not isinstance(msg, dict) or not isinstance(msg.get("event"), str):
            raise PhoneProtocolError("JSON control message without 'event'")
        msg["_json"] = True
        return msg
    name, *pairs = stripped.split()
    if not name or not name.replace("_", "").isalpha():
        raise PhoneProtocolError("control message without a name")
    out: dict[str, Any] = {"event": name}
    for pair in pairs:
        key, sep, value = pair.partition(":")
        if sep:
            out[key] = value
    return out


class AsteriskAdapter:
    provider = "asterisk"
    subprotocols: tuple[str, ...] = ()
    close_ends_call = True

    def __init__(self) -> None:
        self.state = StreamState.AWAITING_START
        self.counters = StreamCounters()
        self.audio_format = ULAW_8K
        self._json_style = False
        self._l16: L16Frames | None = None

    def receive(self, message: str | bytes) -> list[PhoneEvent]:
        self.counters.messages += 1
        if isinstance(message, bytes):
            if self.state is not StreamState.STREAMING:
                raise PhoneProtocolError("media before MEDIA_START", 1008)
            if self._l16 is not None:
                audio = self._l16.feed(message)
                return [audio] if audio is not None else []
            self.counters.audio_frames += 1
            self.counters.audio_bytes += len(message)
            return [Audio(message)]
        if not message.strip():
            raise PhoneProtocolError("empty control message")
        msg = parse_control(message)
        event = msg["event"]
        if event == "MEDIA_START":
            return [self._start(msg)]
        if self.state is StreamState.AWAITING_START:
            raise PhoneProtocolError(f"{event!r} before MEDIA_START", 1008)
        if event == "DTMF_END":
            digit = msg.get("digit")
            if not isinstance(digit, str) or not digit:
                raise PhoneProtocolError("DTMF_END without a digit")
            return [Dtmf(digit)]
        if event == "MEDIA_MARK_PROCESSED":
            return [MarkReached(str(msg.get("correlation_id", "")))]
        kind = str(event)
        if kind not in _IGNORED:
            count(self.counters.ignored, kind)
        return [Ignored(kind, unknown=kind not in _IGNORED)]

    def _start(self, msg: dict[str, Any]) -> CallStarted:
        if self.state is not StreamState.AWAITING_START:
            raise PhoneProtocolError("second MEDIA_START", 1008)
        fmt = str(msg.get("format", "ulaw")).lower()
        if fmt == "ulaw":
            self.audio_format = ULAW_8K
        elif fmt == "alaw":
            self.audio_format = ALAW_8K
        elif fmt in _SLIN_RATES:
            self.audio_format = AudioFormat("pcm16", _SLIN_RATES[fmt])
            self._l16 = L16Frames(self.counters)
        else:
            raise PhoneProtocolError(f"unsupported format {fmt!r} (use ulaw, alaw or slin*)", 1003)
        self._json_style = bool(msg.get("_json"))
        connection = str(msg.get("connection_id") or msg.get("channel_id") or "asterisk")
        call_id = str(msg.get("channel_id") or msg.get("channel") or connection)
        variables = msg.get("channel_variables")
        params = {str(k): str(v) for k, v in variables.items()} if isinstance(variables, dict) else {}
        if msg.get("channel"):
            params.setdefault("channel", str(msg["channel"]))
        self.state = StreamState.STREAMING
        return CallStarted(provider=self.provider, call_sid=call_id, stream_sid=connection, account_sid=None,
                           parameters=params, audio_format=self.audio_format,
                           caller=params.get("CALLERID(num)"), called=params.get("EXTEN"))

    def _command(self, name: str, **fields: str) -> str:
        if self._json_style:
            return json.dumps({"command": name, **fields})
        return " ".join([name, *(f"{k}:{v}" for k, v in fields.items())])

    def audio_message(self, payload: bytes) -> bytes:
        return payload

    def mark_message(self, name: str) -> str:
        return self._command("MARK_MEDIA", correlation_id=name)

    def clear_message(self) -> str:
        return self._command("FLUSH_MEDIA")


class AsteriskStreamWriter:
    def __init__(self, channel_id: str, fmt: str = "ulaw", json_style: bool = False, caller: str = "+15550100",
                 called: str = "+15550199") -> None:
        self.channel_id, self.fmt, self.json_style = channel_id, fmt, json_style
        self.caller, self.called = caller, called

    def call(self, audio: bytes, frame_bytes: int) -> Iterator[str | bytes]:
        if self.json_style:
            yield json.dumps({"event": "MEDIA_START", "connection_id": "conn-1", "channel": "PJSIP/caller-00000001",
                              "channel_id": self.channel_id, "format": self.fmt, "optimal_frame_size": frame_bytes,
                              "ptime": 20, "channel_variables": {"CALLERID(num)": self.caller, "EXTEN": self.called}})
        else:
            yield (f"MEDIA_START connection_id:conn-1 channel:PJSIP/caller-00000001 channel_id:{self.channel_id} "
                   f"format:{self.fmt} optimal_frame_size:{frame_bytes} ptime:20")
        for i in range(0, len(audio), frame_bytes):
            yield audio[i:i + frame_bytes]
