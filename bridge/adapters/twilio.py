"""Twilio Media Streams, sans-I/O: JSON text frames in, typed phone events out.

Protocol (Twilio docs, "Media Streams - WebSocket Messages"): ``connected`` once, then ``start``
(stream/call ids, ``customParameters``, media format), then ``media`` (base64 mu-law 8 kHz, about
20 ms each), ``dtmf``, ``mark`` and finally ``stop``. ``sequenceNumber`` counts every message
after ``connected`` and is a JSON *string*, as are ``chunk`` and ``timestamp``.

Also here, because they are the same dialect seen from the other side: the TwiML that points a call
at the bridge, the X-Twilio-Signature check, and :class:`TwilioStreamWriter`, which builds the
messages Twilio itself sends (used by ``bridge call`` and the tests to play a call).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar
from xml.sax.saxutils import quoteattr

from bridge.adapters.base import (
    Audio,
    CallStarted,
    CallStopped,
    Dtmf,
    Gap,
    Ignored,
    MarkReached,
    PhoneEvent,
    StreamCounters,
    StreamState,
)
from bridge.adapters.common import SequenceCheck, json_object
from bridge.audio import ULAW_8K, AudioFormat
from bridge.errors import PhoneProtocolError

PROVIDER = "twilio"
_KNOWN_EVENTS = frozenset({"connected", "start", "media", "dtmf", "mark", "stop"})


def _field(obj: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    value = obj.get(key)
    if not isinstance(value, kind):
        raise PhoneProtocolError(f"{where}.{key} missing or not a {kind.__name__}")
    return value


def _int_string(obj: Mapping[str, Any], key: str, where: str) -> int | None:
    """Twilio sends counters as strings holding integers; accept numbers too. None when absent."""
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise PhoneProtocolError(f"{where}.{key} is not an integer string")
    try:
        return int(value)
    except ValueError:
        raise PhoneProtocolError(f"{where}.{key} is not an integer string") from None


class TwilioAdapter:
    """State machine of one Twilio media stream (see the module docstring)."""

    provider = PROVIDER
    subprotocols: tuple[str, ...] = ()
    close_ends_call = False

    def __init__(self) -> None:
        self.state = StreamState.AWAITING_START
        self.counters = StreamCounters()
        self.stream_sid: str | None = None
        self.call_sid: str | None = None
        self._sequence = SequenceCheck("sequenceNumber")

    # -- inbound -------------------------------------------------------------------------

    def receive(self, message: str | bytes) -> list[PhoneEvent]:
        """Parse one message; see :meth:`bridge.adapters.base.PhoneAdapter.receive`."""
        self.counters.messages += 1
        msg = self._parse(message)
        event = msg.get("event")
        if not isinstance(event, str):
            raise PhoneProtocolError("message has no 'event' string")
        if self.state is StreamState.ENDED:
            raise PhoneProtocolError(f"{event!r} after stop", 1008)

        events: list[PhoneEvent] = []
        if event != "connected":
            gap = self._check_sequence(msg)
            if gap is not None:
                events.append(gap)

        if event == "connected":
            events.append(Ignored("connected"))
        elif event == "start":
            events.append(self._start(msg))
        elif event not in _KNOWN_EVENTS:
            self.counters.ignored[event] = self.counters.ignored.get(event, 0) + 1
            events.append(Ignored(event, unknown=True))
        elif self.state is StreamState.AWAITING_START:
            raise PhoneProtocolError(f"{event!r} before 'start'", 1008)
        else:
            self._check_stream_sid(msg)
            if event == "media":
                events.append(self._media(msg))
            elif event == "dtmf":
                dtmf = _field(msg, "dtmf", dict, "dtmf")
                events.append(Dtmf(_field(dtmf, "digit", str, "dtmf")))
            elif event == "mark":
                mark = _field(msg, "mark", dict, "mark")
                events.append(MarkReached(_field(mark, "name", str, "mark")))
            else:  # stop
                self.state = StreamState.ENDED
                events.append(CallStopped("stop"))
        return events

    def _check_sequence(self, msg: Mapping[str, Any]) -> Gap | None:
        skipped = self._sequence.check(msg)
        if skipped is None:
            return None
        self.counters.gaps += 1
        return Gap(*skipped)

    def _check_stream_sid(self, msg: Mapping[str, Any]) -> None:
        sid = msg.get("streamSid")
        if sid is not None and sid != self.stream_sid:
            raise PhoneProtocolError(f"streamSid {sid!r} does not match the stream's {self.stream_sid!r}", 1008)

    def _start(self, msg: Mapping[str, Any]) -> CallStarted:
        if self.state is not StreamState.AWAITING_START:
            raise PhoneProtocolError("second 'start' on one stream", 1008)
        start = _field(msg, "start", dict, "start")
        stream_sid = start.get("streamSid") or msg.get("streamSid")
        if not isinstance(stream_sid, str) or not stream_sid:
            raise PhoneProtocolError("start.streamSid missing")
        call_sid = _field(start, "callSid", str, "start")
        params = start.get("customParameters") or {}
        if not isinstance(params, dict) or not all(isinstance(v, str) for v in params.values()):
            raise PhoneProtocolError("start.customParameters is not an object of strings")
        media_format = start.get("mediaFormat") or {}
        if not isinstance(media_format, dict):
            raise PhoneProtocolError("start.mediaFormat is not an object")
        audio_format = self._audio_format(media_format)
        tracks = start.get("tracks") or ["inbound"]
        if not isinstance(tracks, list):
            raise PhoneProtocolError("start.tracks is not a list")
        account = start.get("accountSid")
        self.stream_sid, self.call_sid = stream_sid, call_sid
        self.state = StreamState.STREAMING
        return CallStarted(
            provider=self.provider,
            call_sid=call_sid,
            stream_sid=stream_sid,
            account_sid=account if isinstance(account, str) else None,
            parameters=dict(params),
            audio_format=audio_format,
            tracks=tuple(str(t) for t in tracks),
        )

    def _parse(self, message: str | bytes) -> dict[str, Any]:
        return json_object(message, "Twilio")

    def _audio_format(self, media_format: dict[str, Any]) -> AudioFormat:
        encoding = media_format.get("encoding", "audio/x-mulaw")
        rate = media_format.get("sampleRate", 8000)
        channels = media_format.get("channels", 1)
        if encoding != "audio/x-mulaw" or rate != 8000 or channels != 1:
            raise PhoneProtocolError(
                f"unsupported mediaFormat {encoding}/{rate}/{channels}: Twilio streams are audio/x-mulaw 8000 mono",
                1003,
            )
        return ULAW_8K

    def _media(self, msg: Mapping[str, Any]) -> PhoneEvent:
        media = _field(msg, "media", dict, "media")
        track = media.get("track", "inbound")
        payload = _field(media, "payload", str, "media")
        try:
            audio = binascii.a2b_base64(payload, strict_mode=True)
        except (binascii.Error, ValueError):
            raise PhoneProtocolError("media.payload is not valid base64") from None
        if track not in ("inbound", "inbound_track"):
            # <Start><Stream track="both_tracks"> also streams what is played to the caller:
            # not the caller's voice, so it is not transcribed.
            self.counters.ignored["outbound_media"] = self.counters.ignored.get("outbound_media", 0) + 1
            return Ignored("outbound_media")
        self.counters.audio_frames += 1
        self.counters.audio_bytes += len(audio)
        return Audio(audio, _int_string(media, "timestamp", "media"))

    # -- outbound (bidirectional <Connect><Stream> only) -----------------------------------

    def audio_message(self, payload: bytes) -> str:
        return json.dumps({"event": "media", "streamSid": self.stream_sid,
                           "media": {"payload": base64.b64encode(payload).decode()}})

    def mark_message(self, name: str) -> str:
        return json.dumps({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}})

    def clear_message(self) -> str:
        return json.dumps({"event": "clear", "streamSid": self.stream_sid})


# -- TwiML and signatures ----------------------------------------------------------------


def connect_stream_twiml(stream_url: str, parameters: Mapping[str, str]) -> str:
    """TwiML that connects the call to ``stream_url`` (bidirectional) with ``<Parameter>``s.

    Twilio drops query strings from stream URLs, so per-call data travels as parameters and comes
    back in ``start.customParameters``. Each parameter's name+value must stay under 500 characters.
    """
    params = "".join(
        f"<Parameter name={quoteattr(name)} value={quoteattr(value[: 499 - len(name)])}/>"
        for name, value in parameters.items()
        if value
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f"<Response><Connect><Stream url={quoteattr(stream_url)}>{params}</Stream></Connect></Response>"
    )


def signature(auth_token: str, url: str, params: Mapping[str, str] | None = None) -> str:
    """X-Twilio-Signature: base64 HMAC-SHA1 over the URL followed by the sorted form fields."""
    data = url + "".join(k + (params or {})[k] for k in sorted(params or {}))
    digest = hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def signature_valid(auth_token: str, url: str, header: str | None,
                    params: Mapping[str, str] | None = None) -> bool:
    """Check a request's X-Twilio-Signature against the public ``url``, in constant time.

    Twilio's security page says a WebSocket handshake may be signed with a trailing ``/``
    appended, so both spellings are accepted.
    """
    if not header:
        return False
    candidates = {url, url.rstrip("/") + "/"}
    return any(hmac.compare_digest(signature(auth_token, u, params), header) for u in candidates)


# -- the other side: messages Twilio sends, for simulators and tests -----------------------


class TwilioStreamWriter:
    """Builds the messages Twilio sends for one stream: ``connected``, ``start``, ``media``..., ``stop``."""

    media_format: ClassVar[dict[str, Any]] = {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}

    def __init__(self, call_sid: str, stream_sid: str, account_sid: str = "AC" + "0" * 32,
                 parameters: Mapping[str, str] | None = None) -> None:
        self.call_sid, self.stream_sid, self.account_sid = call_sid, stream_sid, account_sid
        self.parameters = dict(parameters or {})
        self.bytes_per_ms = 8
        self._seq = 0
        self._chunk = 0
        self._timestamp_ms = 0

    def _next(self) -> str:
        self._seq += 1
        return str(self._seq)

    def connected(self) -> str:
        return json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})

    def start(self) -> str:
        return json.dumps({
            "event": "start", "sequenceNumber": self._next(), "streamSid": self.stream_sid,
            "start": {
                "streamSid": self.stream_sid, "accountSid": self.account_sid, "callSid": self.call_sid,
                "tracks": ["inbound"], "customParameters": self.parameters,
                "mediaFormat": self.media_format,
            },
        })

    def media(self, ulaw: bytes) -> str:
        self._chunk += 1
        msg = json.dumps({
            "event": "media", "sequenceNumber": self._next(), "streamSid": self.stream_sid,
            "media": {"track": "inbound", "chunk": str(self._chunk), "timestamp": str(self._timestamp_ms),
                      "payload": base64.b64encode(ulaw).decode()},
        })
        self._timestamp_ms += len(ulaw) // self.bytes_per_ms
        return msg

    def dtmf(self, digit: str) -> str:
        return json.dumps({"event": "dtmf", "sequenceNumber": self._next(), "streamSid": self.stream_sid,
                           "dtmf": {"track": "inbound_track", "digit": digit}})

    def stop(self) -> str:
        return json.dumps({"event": "stop", "sequenceNumber": self._next(), "streamSid": self.stream_sid,
                           "stop": {"accountSid": self.account_sid, "callSid": self.call_sid}})

    def call(self, ulaw: bytes, frame_bytes: int = 160) -> Iterator[str]:
        """Every message of a whole call playing ``ulaw``, in 20 ms frames by default."""
        yield self.connected()
        yield self.start()
        for i in range(0, len(ulaw), frame_bytes):
            yield self.media(ulaw[i:i + frame_bytes])
        yield self.stop()
