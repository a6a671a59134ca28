"""jambonz ``listen`` and FreeSWITCH mod_audio_fork / mod_audio_stream, sans-I/O: an optional JSON
metadata text frame, then binary 16-bit PCM frames.

jambonz asks for the subprotocol ``audio.jambonz.org`` and mod_audio_fork for ``audio.drachtio.org``
(mod_audio_stream for none); the bridge accepts all three. The metadata is optional (mod_audio_stream
may start with audio). jambonz sends ``sampleRate``, ``mixType``, its call info (``callSid``, ``from``,
``to``, ``callId`` (the SIP Call-ID), ``sipStatus``...) and the application's metadata merged in;
mod_audio_fork sends whatever the application passed, e.g. its README's ``{"to", "from", "callid"}``.
The call id is ``callSid``, else ``callid``/``callId``/``call_id``/``uuid``, else a synthetic one. The rate
and channel mix are arguments of the FreeSWITCH command, not on the wire: the adapter's defaults (the
route's ``?rate=&mix=``) apply unless the metadata says ``sampleRate``/``sample_rate`` and ``mixType``.
``mixed`` is one mono channel (FreeSWITCH mixed both legs); ``stereo`` two interleaved channels (one per
leg), which are mixed down to mono. jambonz sends DTMF as ``{"event": "dtmf", "dtmf": "5"}`` text. There
is no stop message: the socket closing ends the call.
Outbound (jambonz): ``playAudio`` (base64 raw PCM) and ``killAudio``; marks do not exist here.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator, Mapping
from typing import Any, Literal

from bridge.adapters.base import (
    CallStarted,
    Dtmf,
    Ignored,
    Outbound,
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
# callSid first: jambonz sends both its own callSid and callId, the SIP Call-ID.
_ID_KEYS = ("callSid", "call_sid", "callid", "callId", "call_id", "uuid")


def _call_id(meta: Mapping[str, Any]) -> str | None:
    for key in _ID_KEYS:
        value = meta.get(key)
        if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value).strip():
            return str(value).strip()
    return None


class AudioForkAdapter(Outbound):
    provider = "audiofork"
    subprotocols: tuple[str, ...] = SUBPROTOCOLS
    close_ends_call = True

    def __init__(self, default_sample_rate: int = 8000, default_mix: str = "mono") -> None:
        self.state = StreamState.AWAITING_START
        self.counters = StreamCounters()
        self.default_sample_rate = default_sample_rate
        self.default_mix = default_mix
        self.audio_format = AudioFormat("pcm16", default_sample_rate)
        self._frames = L16Frames(self.counters)
        self.subprotocol: str | None = None  # as negotiated: which module is on the other end

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
        mix = str(meta.get("mixType") or self.default_mix).strip().lower()
        self._frames.channels = 2 if mix == "stereo" else 1  # mono and mixed are one channel
        self.audio_format = AudioFormat("pcm16", rate)
        call_id = _call_id(meta) or f"audiofork-{uuid.uuid4().hex}"
        params: dict[str, str] = {}
        for key, value in meta.items():
            if isinstance(value, (str, int, float)) and not isinstance(value, bool):
                params[key] = str(value)
            elif isinstance(value, dict):  # jambonz's customerData and headers (SIP) are objects
                params.update({f"{key}.{k}": str(v) for k, v in value.items() if isinstance(v, (str, int, float))})
        self.state = StreamState.STREAMING
        caller, called = meta.get("from"), meta.get("to")
        return CallStarted(provider=self.provider, call_sid=str(call_id), stream_sid=str(call_id), account_sid=None,
                           parameters=params, audio_format=self.audio_format,
                           caller=caller if isinstance(caller, str) else None,
                           called=called if isinstance(called, str) else None)

    def _audio_chunk_message(self, chunk: bytes) -> str:
        audio = base64.b64encode(chunk).decode()
        rate = self.audio_format.sample_rate
        if self.subprotocol is None:
            # No subprotocol: amigniter's mod_audio_stream, which understands only streamAudio.
            return json.dumps({"type": "streamAudio", "data": {
                "audioDataType": "raw", "sampleRate": rate, "audioData": audio}})
        # jambonz and drachtio's mod_audio_fork: playAudio (sampleRate a number: the module reads an int).
        return json.dumps({"type": "playAudio", "data": {
            "audioContent": audio, "audioContentType": "raw", "sampleRate": rate}})

    def mark_message(self, name: str) -> str:
        raise UnsupportedOperation("jambonz/FreeSWITCH audio forks have no marks")

    def clear_message(self) -> str:
        if self.subprotocol is None:
            raise UnsupportedOperation("mod_audio_stream has no message that stops playback")
        self._drop_held_audio()
        return json.dumps({"type": "killAudio"})


WriterStyle = Literal["jambonz", "audio_fork", "audio_stream"]
_WRITER_SUBPROTOCOLS: dict[str, tuple[str, ...]] = {
    "jambonz": ("audio.jambonz.org",), "audio_fork": ("audio.drachtio.org",), "audio_stream": ()}


class AudioForkStreamWriter:
    """An audio fork's side of a call: optional metadata text, then binary L16 frames; no stop.

    ``style`` picks the sender and its metadata, as each documents it:

    - ``jambonz`` (default): ``listen``'s ``{sampleRate, mixType}`` + the call info (``callSid``, ``direction``,
      ``from``, ``to``, ``callId``, ``sbcCallid``, ``sipStatus`` (a number), ...) + the verb's ``metadata``
      merged in at the top level, as ``lib/tasks/listen.js`` builds it; subprotocol ``audio.jambonz.org``.
    - ``audio_fork``: drachtio's mod_audio_fork with its README's metadata ``{to, from, callid}`` (plus
      ``metadata``); subprotocol ``audio.drachtio.org``.
    - ``audio_stream``: amigniter's mod_audio_stream, no subprotocol; its metadata is whatever the application
      passed (``metadata`` as JSON).

    ``send_metadata=False`` starts with audio (mod_audio_stream's and mod_audio_fork's metadata are optional).
    ``call_id`` is the SIP Call-ID (jambonz ``callId``, mod_audio_fork ``callid``).
    """

    subprotocol = "audio.jambonz.org"  # kept for callers that offer one subprotocol; see ``subprotocols``

    def __init__(self, call_sid: str, sample_rate: int = 8000, caller: str = "+15550100",
                 called: str = "+15550199", metadata: Mapping[str, Any] | None = None, *,
                 style: WriterStyle = "jambonz", send_metadata: bool = True, mix_type: str = "mono",
                 call_id: str | None = None) -> None:
        self.call_sid, self.sample_rate, self.caller, self.called = call_sid, sample_rate, caller, called
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.style, self.send_metadata, self.mix_type = style, send_metadata, mix_type
        self.call_id = call_id or f"{call_sid}@192.0.2.10"
        self.subprotocols = _WRITER_SUBPROTOCOLS[style]  # what the sender offers on the upgrade
        if self.subprotocols:
            self.subprotocol = self.subprotocols[0]

    def metadata_message(self) -> str:
        if self.style == "jambonz":
            return _compact({
                "sampleRate": self.sample_rate, "mixType": self.mix_type,
                "callSid": self.call_sid, "direction": "inbound", "from": self.caller, "to": self.called,
                "callId": self.call_id, "sbcCallid": f"sbc-{self.call_id}", "sipStatus": 200, "sipReason": "OK",
                "callStatus": "in-progress", "accountSid": "bb845d4b-83a9-4cde-a6e9-50f3743bab3f",
                "traceId": "f0c1d2e3a4b5c6d7e8f9a0b1c2d3e4f5",
                "applicationSid": "0dddaabf-0a30-43e3-84e8-426873b1a78b", "fsSipAddress": "10.0.0.12:5060",
                **self.metadata})
        if self.style == "audio_fork":
            return _compact({"to": self.called, "from": self.caller, "callid": self.call_id, **self.metadata})
        return _compact(self.metadata)

    def call(self, pcm: bytes, frame_bytes: int) -> Iterator[str | bytes]:
        if self.send_metadata:
            yield self.metadata_message()
        for i in range(0, len(pcm), frame_bytes):
            yield pcm[i:i + frame_bytes]


def _compact(obj: Mapping[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"))  # as JSON.stringify writes it
