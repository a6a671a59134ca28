"""jambonz ``listen`` and FreeSWITCH mod_audio_fork / mod_audio_stream, sans-I/O: an optional JSON
metadata text frame, then binary 16-bit PCM frames.

jambonz asks for the subprotocol ``audio.jambonz.org`` and mod_audio_fork for ``audio.drachtio.org``
(mod_audio_stream for none); the bridge accepts all three. The metadata (jambonz: ``callSid``,
``from``, ``to``, ``sampleRate``, ``mixType`` and the application's ``metadata``; mod_audio_fork:
whatever the application passed) gives the call's ids and rate; without it the configured default
rate applies. ``mixType: stereo`` (both legs, interleaved) is mixed down to mono. jambonz sends DTMF
as ``{"event": "dtmf", "dtmf": "5"}`` text. There is no stop message: the socket closing ends the call.
Outbound (jambonz): ``playAudio`` (base64 raw PCM) and ``killAudio``; marks do not exist here.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from typing import Any

from bridge.adapters.base import (
    CallStarted,
    Dtmf,
    Ignored,
    PhoneEvent,
    StreamCounters,
    StreamState,
    UnsupportedOperation,
)
from bridge.adapters.binary import L16Frames
from bridge.adapters.common import count
from bridge.audio import AudioFormat
from bridge.errors import PhoneProtocolError

SUBPROTOCOLS = ("audio.jambonz.org", "audio.drachtio.org")
RATES = (8000, 16000, 24000, 32000, 44100, 48000, 64000)


class AudioForkAdapter:
    provider = "audiofork"
    subprotocols: tuple[str, ...] = SUBPROTOCOLS
    close_ends_call = True

    def __init__(self, default_sample_rate: int = 8000) -> None:
        self.state = StreamState.AWAITING_START
        self.counters = StreamCounters()
        self.default_sample_rate = default_sample_rate
        self.audio_format = AudioFormat("pcm16", default_sample_rate)
        self._frames = L16Frames(self.counters)

    def receive(self, message: str | bytes) -> list[PhoneEvent]:
        self.counters.messages += 1
        events: list[PhoneEvent] = []
        if isinstance(message, bytes):
            if self.state is StreamState.AWAITING_START:
                events.append(self._start({}))  # mod_audio_stream may send no metadata at all
            audio = self._frames.feed(message)
            if audio is not None:
                events.append(audio)
            return events
        try:
            msg: Any = json.loads(message)
        except (ValueError, RecursionError):
            msg = None
        if self.state is StreamState.AWAITING_START:
            return [self._start(msg if isinstance(msg, dict) else {"metadata": message})]
        if isinstance(msg, dict) and msg.get("event") == "dtmf":
            digit = msg.get("dtmf", msg.get("digit"))
            if isinstance(digit, (str, int)) and not isinstance(digit, bool):
                return [Dtmf(str(digit))]
            raise PhoneProtocolError("dtmf event without a digit")
        kind = str(msg.get("event") or msg.get("type")) if isinstance(msg, dict) else "text"
        count(self.counters.ignored, kind)
        return [Ignored(kind, unknown=True)]

    def _start(self, meta: dict[str, Any]) -> CallStarted:
        rate_value = meta.get("sampleRate", meta.get("sample_rate", self.default_sample_rate))
        try:
            rate = int(rate_value)
        except (TypeError, ValueError):
            raise PhoneProtocolError(f"sampleRate {rate_value!r} is not a number") from None
        if rate not in RATES:
            raise PhoneProtocolError(f"unsupported sampleRate {rate}", 1003)
        mix = str(meta.get("mixType", "mono"))
        self._frames.channels = 2 if mix == "stereo" else 1
        self.audio_format = AudioFormat("pcm16", rate)
        call_id = meta.get("callSid") or meta.get("call_sid") or meta.get("uuid") or f"audiofork-{uuid.uuid4().hex}"
        params: dict[str, str] = {}
        for key, value in meta.items():
            if isinstance(value, (str, int, float)) and not isinstance(value, bool):
                params[key] = str(value)
            elif isinstance(value, dict):  # jambonz passes the application's metadata as an object
                params.update({f"{key}.{k}": str(v) for k, v in value.items() if isinstance(v, (str, int, float))})
        self.state = StreamState.STREAMING
        caller, called = meta.get("from"), meta.get("to")
        return CallStarted(provider=self.provider, call_sid=str(call_id), stream_sid=str(call_id), account_sid=None,
                           parameters=params, audio_format=self.audio_format,
                           caller=caller if isinstance(caller, str) else None,
                           called=called if isinstance(called, str) else None)

    def audio_message(self, payload: bytes) -> str:
        return json.dumps({"type": "playAudio", "data": {
            "audioContent": base64.b64encode(payload).decode(), "audioContentType": "raw",
            "sampleRate": self.audio_format.sample_rate}})

    def mark_message(self, name: str) -> str:
        raise UnsupportedOperation("jambonz/FreeSWITCH audio forks have no marks")

    def clear_message(self) -> str:
        return json.dumps({"type": "killAudio"})


class AudioForkStreamWriter:
    """A jambonz ``listen`` stream: metadata text, then binary L16 frames."""

    subprotocol = "audio.jambonz.org"

    def __init__(self, call_sid: str, sample_rate: int = 8000, caller: str = "+15550100",
                 called: str = "+15550199", metadata: dict[str, str] | None = None) -> None:
        self.call_sid, self.sample_rate, self.caller, self.called = call_sid, sample_rate, caller, called
        self.metadata = metadata or {}

    def call(self, pcm: bytes, frame_bytes: int) -> Iterator[str | bytes]:
        yield json.dumps({"callSid": self.call_sid, "from": self.caller, "to": self.called,
                          "sampleRate": self.sample_rate, "mixType": "mono", "metadata": self.metadata})
        for i in range(0, len(pcm), frame_bytes):
            yield pcm[i:i + frame_bytes]
