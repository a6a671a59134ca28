"""Gladia live v2 wire format, sans-I/O: server messages in, typed events out.

Shapes follow Gladia's OpenAPI ``StreamingRequest`` and the live v2 WebSocket messages. Every
server message is a JSON text frame with ``type`` (and usually ``session_id``, ``created_at``,
``data``). Tolerances, on purpose:

* ``data`` may be ``null`` when ``error`` is set (an acknowledgment refused for quota, a failed
  add-on): that becomes :class:`ServerError`, never a crash.
* A standalone ``{"type": "error"}`` message is not in the spec but is handled, in any shape.
* Unknown types become :class:`OtherMessage` so a new server feature cannot break a call.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from bridge.errors import SttProtocolError
from bridge.stt.addons import (
    POST_ADDONS,
    POST_KINDS,
    REALTIME_ADDONS,
    REALTIME_KINDS,
    AddonEvent,
    parse_addon,
    requested_addons,
)
from bridge.stt.utterance import Utterance, Word, _num, parse_utterance

__all__ = ["Utterance", "Word", "parse_utterance"]  # re-exported: their home is bridge.stt.utterance


@dataclass(frozen=True, slots=True)
class Transcript:
    id: str
    is_final: bool
    utterance: Utterance


@dataclass(slots=True)  # not frozen: built for every chunk, and frozen dataclasses are slow to build
class Ack:
    """Audio acknowledged: session-wide ``byte_range`` and ``time_range``."""

    byte_start: int
    byte_end: int
    time_start: float
    time_end: float


@dataclass(frozen=True, slots=True)
class StopAck:
    recording_duration: float | None
    recording_left_to_process: float | None


@dataclass(frozen=True, slots=True)
class SpeechStart:
    time: float
    channel: int


@dataclass(frozen=True, slots=True)
class SpeechEnd:
    time: float
    channel: int


@dataclass(frozen=True, slots=True)
class Lifecycle:
    """``start_session``, ``start_recording``, ``end_recording`` or ``end_session``."""

    kind: str


@dataclass(frozen=True, slots=True)
class PostProcessing:
    """``post_transcript``, ``post_final_transcript`` and other ``post_*`` results (kept raw)."""

    kind: str
    data: Any


@dataclass(frozen=True, slots=True)
class ServerError:
    """An ``error`` carried by a message (or a standalone error message)."""

    kind: str
    message: str


@dataclass(frozen=True, slots=True)
class OtherMessage:
    kind: str


SttEvent = (
    Transcript
    | Ack
    | StopAck
    | SpeechStart
    | SpeechEnd
    | Lifecycle
    | PostProcessing
    | ServerError
    | OtherMessage
    | AddonEvent
)

_LIFECYCLE = frozenset({"start_session", "start_recording", "end_recording", "end_session"})


def _error_text(error: Any) -> str:
    if isinstance(error, Mapping):
        msg = error.get("message") or error.get("exception") or json.dumps(error)[:500]
        return str(msg)
    return str(error)[:500]


def parse_server_message(text: str | bytes | bytearray | memoryview) -> SttEvent:
    """Turn one server WebSocket message into an event.

    Raises:
        SttProtocolError: not JSON, not an object, or no string ``type``.
    """
    try:
        msg = orjson.loads(text)
    except (ValueError, RecursionError, UnicodeDecodeError):
        raise SttProtocolError("server message is not valid JSON") from None
    if type(msg) is dict and msg.get("type") == "audio_chunk":  # one per chunk sent: the hot path
        data, error = msg.get("data"), msg.get("error")
        if type(data) is dict and (error is None or error is False) and msg.get("acknowledged") is not False:
            br, tr = data.get("byte_range"), data.get("time_range")
            if type(br) is list and len(br) == 2 and type(br[0]) is int and type(br[1]) is int:  # not bool
                if type(tr) is list and len(tr) == 2:
                    t0, t1 = tr
                    return Ack(
                        br[0],
                        br[1],
                        float(t0) if type(t0) is float or type(t0) is int else 0.0,  # _num, inline
                        float(t1) if type(t1) is float or type(t1) is int else 0.0,
                    )
                return Ack(br[0], br[1], 0.0, 0.0)
        # anything else about it (an error, no byte_range...) is read below, as any message is
    if not isinstance(msg, dict):
        raise SttProtocolError("server message is not a JSON object")
    kind = msg.get("type")
    if not isinstance(kind, str):
        raise SttProtocolError("server message has no 'type'")
    data = msg.get("data")
    error = msg.get("error")

    if kind == "error":
        return ServerError(kind, _error_text(error if error is not None else data))
    if kind in REALTIME_KINDS or kind in POST_KINDS:  # add-ons: an error is the add-on's, not the session's
        addon = parse_addon(kind, data, error)
        return addon if addon is not None else ServerError(kind, "add-on message without its fields")
    if error is not None and error is not False and not isinstance(data, Mapping):
        return ServerError(kind, _error_text(error))
    if kind == "audio_chunk":
        if msg.get("acknowledged") is False or not isinstance(data, Mapping):
            return ServerError(kind, _error_text(error) if error else "audio chunk not acknowledged")
        br, tr = data.get("byte_range"), data.get("time_range")
        if type(br) is not list or len(br) != 2 or type(br[0]) is not int or type(br[1]) is not int:  # not bool
            return ServerError(kind, "acknowledgment without a valid byte_range")
        if type(tr) is list and len(tr) == 2:
            return Ack(br[0], br[1], _num(tr[0]), _num(tr[1]))
        return Ack(br[0], br[1], 0.0, 0.0)
    if kind == "transcript":
        if not isinstance(data, Mapping) or not isinstance(data.get("utterance"), Mapping):
            return ServerError(kind, "transcript without data.utterance")
        return Transcript(str(data.get("id", "")), bool(data.get("is_final")), parse_utterance(data["utterance"]))
    if kind == "stop_recording":
        d = data if isinstance(data, Mapping) else {}
        return StopAck(
            _num(d.get("recording_duration")) if "recording_duration" in d else None,
            _num(d.get("recording_left_to_process")) if "recording_left_to_process" in d else None,
        )
    if kind in ("speech_start", "speech_end"):
        d = data if isinstance(data, Mapping) else {}
        cls = SpeechStart if kind == "speech_start" else SpeechEnd
        channel = d.get("channel", 0)
        return cls(_num(d.get("time")), channel if isinstance(channel, int) else 0)
    if kind in _LIFECYCLE:
        return Lifecycle(kind)
    if kind.startswith("post_"):
        return PostProcessing(kind, data)
    return OtherMessage(kind)


def init_request(profile_body: Mapping[str, Any], metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The ``POST /v2/live`` body for one call.

    The profile's fields pass through; ``custom_metadata`` gets the call ids (merged over any the
    profile has), and acknowledgments and final transcripts are forced on, because resume needs
    the acknowledged byte offset and the bridge exists to deliver finals. Realtime add-on messages
    are on when the profile asks for a realtime add-on (the bot gets them). Post-processing messages
    are on only when it asks for a post-processing add-on (summarization, chapterization): they
    also repeat the whole call's transcript at the end (``post_transcript``, megabytes for a long
    call), which Gladia has no switch for, so the connection skips a message over its bound unread
    and the bridge reads what it needs with ``GET /v2/live/{id}`` instead (:mod:`bridge.stt.analysis`).
    """
    body = dict(profile_body)
    body["custom_metadata"] = {**(body.get("custom_metadata") or {}), **metadata}
    addons = requested_addons(body)
    messages = dict(body.get("messages_config") or {})
    messages["receive_acknowledgments"] = True
    messages["receive_final_transcripts"] = True
    if REALTIME_ADDONS.intersection(addons):
        messages["receive_realtime_processing_events"] = True
    messages["receive_post_processing_events"] = bool(POST_ADDONS.intersection(addons))
    body["messages_config"] = messages
    return body


STOP_RECORDING = json.dumps({"type": "stop_recording"})
