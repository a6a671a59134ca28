"""Asterisk chan_websocket (20.16/21.11/22.6/23.0 and later), sans-I/O: text control messages and
binary media frames in the channel's codec.

Control messages come as plain text (``MEDIA_START connection_id:abc channel:WebSocket/abc/0x1
channel_id:1761245643.1 format:ulaw optimal_frame_size:160 ptime:20``) or, from 20.18/22.8/23.2, as JSON
(``{"event": "MEDIA_START", ..., "channel_variables": {...}}``); both are read. ``MEDIA_START`` gives the
format (``ulaw``, ``alaw``, ``slin`` (8 kHz) or ``slin16``/``slin24``/... 16-bit PCM), then binary frames
carry raw audio (160 bytes per 20 ms for G.711). ``DTMF_END digit:n channel_id:...`` carries digits;
``MEDIA_MARK_PROCESSED <id>`` reports a mark (plain form positional: the id is the rest of the line;
JSON ``correlation_id``); ``ERROR channel_id:... error_text:<text>`` (JSON ``error_text``), Asterisk's answer
to a command it refused, is a carrier error (logged, not fatal); flow-control and status messages are
ignored. Hang-up closes the socket. Outbound: binary audio frames, ``FLUSH_MEDIA`` (barge-in) and
``MARK_MEDIA``, in the style (plain or JSON) Asterisk used.
"""

from __future__ import annotations

import json
from typing import Any

from bridge.adapters.base import (
    CallStarted,
    CarrierError,
    Dtmf,
    FlowControl,
    Ignored,
    MarkReached,
    OutboundFraming,
    PhoneEvent,
    StreamState,
)
from bridge.adapters.binary import BinaryDialectAdapter, L16Frames
from bridge.adapters.carrier import Capabilities, Carrier, FrameRules, plain
from bridge.adapters.common import count
from bridge.adapters.stream_auth import stream_token
from bridge.audio import ALAW_8K, ULAW_8K, AudioFormat
from bridge.errors import PhoneProtocolError

_SLIN_RATES = {
    "slin": 8000,
    "slin12": 12000,
    "slin16": 16000,
    "slin24": 24000,
    "slin32": 32000,
    "slin44": 44100,
    "slin48": 48000,
    "slin96": 96000,
    "slin192": 192000,
}
_IGNORED = frozenset({"STATUS", "QUEUE_DRAINED", "MEDIA_BUFFERING_COMPLETED", "DTMF_BEGIN"})


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


def rest_of_line(text: str) -> str:
    """A plain control message's text after its name (``MEDIA_MARK_PROCESSED a b:c`` -> ``a b:c``)."""
    parts = text.strip().split(maxsplit=1)
    return parts[1] if len(parts) > 1 else ""


def _mark_id(msg: dict[str, Any], text: str) -> str:
    """The id of ``MEDIA_MARK_PROCESSED``: JSON ``correlation_id``; plain, the rest of the line (what
    ``MARK_MEDIA <id>`` sent, spaces and colons included), or after ``correlation_id:`` as some versions echo."""
    if msg.get("_json"):
        value = msg.get("correlation_id")
        return "" if value is None else str(value)
    rest = rest_of_line(text)
    return rest.removeprefix("correlation_id:")


def _error_text(msg: dict[str, Any], text: str) -> str:
    """What an ``ERROR`` says: JSON ``error_text``; plain ``ERROR channel_id:<id> error_text:<text>`` (as
    chan_websocket builds it), or ``ERROR <text>``."""
    if msg.get("_json"):
        value = msg.get("error_text")
        detail = "" if value is None else str(value)
    else:
        rest = rest_of_line(text)
        _, sep, after = rest.partition("error_text:")
        detail = after if sep else rest
    return detail.strip() or "ERROR without a text"


MAX_MESSAGE = 65_500  # Asterisk hangs the call up on a bigger media message


class AsteriskAdapter(BinaryDialectAdapter):
    carrier = "asterisk"
    start_name = "MEDIA_START"

    def __init__(self) -> None:
        super().__init__(ULAW_8K)
        self._json_style = False
        self.optimal_frame_size = 0  # bytes, from MEDIA_START

    def _text(self, message: str) -> list[PhoneEvent]:
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
            return [MarkReached(_mark_id(msg, message))]
        if event in ("MEDIA_XOFF", "MEDIA_XON"):  # the frame queue is nearly full / has room again
            return [FlowControl(paused=event == "MEDIA_XOFF")]
        if event == "ERROR":
            return [CarrierError(_error_text(msg, message))]
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
        try:
            self.optimal_frame_size = max(0, int(msg.get("optimal_frame_size") or 0))
        except (TypeError, ValueError):
            self.optimal_frame_size = 0
        connection = str(msg.get("connection_id") or msg.get("channel_id") or "asterisk")
        call_id = str(msg.get("channel_id") or msg.get("channel") or connection)
        variables = msg.get("channel_variables")
        params = {str(k): str(v) for k, v in variables.items()} if isinstance(variables, dict) else {}
        if msg.get("channel"):
            params.setdefault("channel", str(msg["channel"]))
        self.state = StreamState.STREAMING
        return CallStarted(
            carrier=self.carrier,
            call_sid=call_id,
            stream_sid=connection,
            account_sid=None,
            parameters=params,
            audio_format=self.audio_format,
            caller=params.get("CALLERID(num)"),
            called=params.get("EXTEN"),
        )

    def _command(self, name: str, **fields: str) -> str:
        if self._json_style:
            return json.dumps({"command": name, **fields})
        return " ".join([name, *(f"{k}:{v}" for k, v in fields.items())])

    def _framing(self) -> OutboundFraming:
        # Asterisk plays whole frames of optimal_frame_size (it drops a partial one) and hangs up on
        # a message over 65,500 bytes.
        frame = self.optimal_frame_size or self.audio_format.bytes_for_ms(20)
        return OutboundFraming(frame, max_frames=max(1, min(50, MAX_MESSAGE // frame)))

    def _audio_chunk_message(self, chunk: bytes) -> bytes:
        return chunk

    def mark_message(self, name: str) -> str:
        if self._json_style:
            return self._command("MARK_MEDIA", correlation_id=name)
        return f"MARK_MEDIA {name}"  # plain form: positional, the id is the rest of the line

    def clear_message(self) -> str:
        self._drop_held_audio()
        return self._command("FLUSH_MEDIA")

    def hangup_message(self) -> str:
        return self._command("HANGUP")


CARRIER = Carrier(
    "asterisk",
    "Asterisk chan_websocket",
    AsteriskAdapter,
    plain(AsteriskAdapter),
    stream_token("asterisk"),
    # transfer: ARI POST /channels/{id}/continue into the transfer context; the dialplan dials, so no
    # briefing and no return (https://docs.asterisk.org/Latest_API/API_Documentation/Asterisk_REST_Interface/Channels_REST_API/)
    Capabilities(two_tracks=False, transfer="rest"),
    FrameRules(ULAW_8K, sends_stop=False, own_stream_id=False),
)
