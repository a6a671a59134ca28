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
from collections.abc import Mapping
from typing import Any

from bridge.adapters.base import (
    CallStarted,
    Dtmf,
    Ignored,
    PhoneEvent,
    StreamState,
)
from bridge.adapters.binary import BinaryDialectAdapter, L16Frames
from bridge.adapters.carrier import Capabilities, Carrier, FrameRules
from bridge.adapters.common import count
from bridge.adapters.stream_auth import stream_token
from bridge.audio import AudioFormat
from bridge.errors import PhoneProtocolError, UnsupportedOperation

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


class AudioForkAdapter(BinaryDialectAdapter):
    carrier = "audiofork"
    start_name = "the metadata"
    subprotocols: tuple[str, ...] = SUBPROTOCOLS

    def __init__(self, default_sample_rate: int = 8000, default_mix: str = "mono") -> None:
        super().__init__(AudioFormat("pcm16", default_sample_rate))
        self.default_sample_rate = default_sample_rate
        self.default_mix = default_mix
        self._frames = self._l16 = L16Frames(self.counters)
        self.subprotocol: str | None = None  # as negotiated: which module is on the other end

    def _binary_first(self, data: bytes) -> list[PhoneEvent]:
        return [self._start({})]  # mod_audio_stream may send no metadata at all

    def _text(self, message: str) -> list[PhoneEvent]:
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
        # stereo: both parties, one channel each, for Gladia to tell apart (the bridge keeps them apart)
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
        return CallStarted(
            carrier=self.carrier,
            call_sid=str(call_id),
            stream_sid=str(call_id),
            account_sid=None,
            parameters=params,
            audio_format=self.audio_format,
            caller=caller if isinstance(caller, str) else None,
            called=called if isinstance(called, str) else None,
            tracks=("inbound", "outbound") if self._frames.channels == 2 else ("inbound",),
            channels=self._frames.channels,
        )

    def _audio_chunk_message(self, chunk: bytes) -> str:
        audio = base64.b64encode(chunk).decode()
        rate = self.audio_format.sample_rate
        if self.subprotocol is None:
            # No subprotocol: amigniter's mod_audio_stream, which understands only streamAudio.
            return json.dumps(
                {"type": "streamAudio", "data": {"audioDataType": "raw", "sampleRate": rate, "audioData": audio}}
            )
        # jambonz and drachtio's mod_audio_fork: playAudio (sampleRate a number: the module reads an int).
        data: dict[str, object] = {"audioContent": audio, "audioContentType": "raw", "sampleRate": rate}
        if self.subprotocol == "audio.jambonz.org":
            # A playAudio replaces what jambonz is playing unless queued (at most 10 queued): the bridge
            # paces its audio a few chunks ahead, so each one must queue behind the last. UNVERIFIED
            # that the flag is read inside data (jambonz lib/tasks/listen.js _onPlayAudio reads it there).
            data["queuePlay"] = True
        return json.dumps({"type": "playAudio", "data": data})

    @property
    def supports_marks(self) -> bool:
        return False

    @property
    def supports_clear(self) -> bool:
        return self.subprotocol is not None  # mod_audio_stream has no killAudio

    def mark_message(self, name: str) -> str:
        raise UnsupportedOperation("jambonz/FreeSWITCH audio forks have no marks")

    def clear_message(self) -> str:
        if self.subprotocol is None:
            raise UnsupportedOperation("mod_audio_stream has no message that stops playback")
        self._drop_held_audio()
        return json.dumps({"type": "killAudio"})


MIXES = ("mono", "mixed", "stereo")


def adapter_for(query: Mapping[str, str], default_rate: int) -> AudioForkAdapter:
    """FreeSWITCH forks say their rate and channel mix only in the command that started them
    (``uuid_audio_fork <uuid> start <url> <mono|mixed|stereo> <8k|16k>``), never on the wire: the
    route's query carries them (``/audiofork/stream?rate=16000&mix=stereo``), else the metadata (as
    jambonz sends), else ``default_rate`` (``carriers.audiofork_sample_rate``).

    Raises:
        ValueError: a rate or mix the adapter does not know (the message says which).
    """
    rate_text = query.get("rate") or query.get("sample_rate") or query.get("sampleRate")
    rate = default_rate
    if rate_text:
        text = rate_text.strip().lower()
        digits = text.removesuffix("k")
        rate = (int(digits) * (1000 if text.endswith("k") else 1)) if digits.isdigit() else -1
        if rate not in RATES:
            raise ValueError(f"rate={rate_text!r}: one of {', '.join(map(str, RATES))} (or 8k, 16k)")
    mix = query.get("mix", "mono")
    if mix not in MIXES:
        raise ValueError(f"mix={mix!r}: one of mono, mixed, stereo")
    return AudioForkAdapter(rate, mix)


CARRIER = Carrier(
    "audiofork",
    "jambonz listen, FreeSWITCH mod_audio_fork / mod_audio_stream",
    AudioForkAdapter,
    adapter_for,
    stream_token("audiofork"),
    # transfer: jambonz call update (call_hook) to a dial verb, briefing by confirmHook, return by dial
    # actionHook (jambonz-api-server swagger updateCall; jambonz-feature-server lib/tasks/dial.js); a
    # FreeSWITCH fork: ESL uuid_transfer, with neither (call.started's capabilities say which, per call)
    Capabilities(two_tracks=True, marks=False, transfer="rest", announce=True, return_to_bot=True),
    FrameRules(AudioFormat("pcm16", 8000), sends_stop=False, own_stream_id=False, track_messages=False),
    query_options=("rate", "sample_rate", "sampleRate", "mix"),
)
