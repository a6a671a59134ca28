"""Twilio Media Streams, sans-I/O: JSON text frames in, typed phone events out.

Protocol (Twilio docs, "Media Streams - WebSocket Messages"): ``connected`` once, then ``start``
(stream/call ids, ``customParameters``, media format), then ``media`` (base64 mu-law 8 kHz, about
20 ms each), ``dtmf``, ``mark`` and finally ``stop``. ``sequenceNumber`` counts every message
after ``connected`` and is a JSON *string*, as are ``chunk`` and ``timestamp``.

Also here, because they are the same dialect seen from the other side: the TwiML that points a call
at the bridge, the X-Twilio-Signature check, and the carrier's description (:data:`CARRIER`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from bridge.adapters.base import CallStarted, Dtmf, MarkReached, PhoneEvent
from bridge.adapters.carrier import Capabilities, Carrier, FrameRules, plain
from bridge.adapters.common import b64_payload, require
from bridge.adapters.json_dialect import JsonDialectAdapter
from bridge.adapters.stream_auth import Refusal, Secrets, Upgrade, check_stream_token
from bridge.audio import ULAW_8K, AudioFormat
from bridge.errors import PhoneProtocolError
from bridge.untrusted import same_secret

NAME = "twilio"
_KNOWN_EVENTS = frozenset({"connected", "start", "media", "dtmf", "mark", "stop"})


class TwilioAdapter(JsonDialectAdapter):
    """State machine of one Twilio media stream (see the module docstring)."""

    carrier = NAME
    dialect = "Twilio"
    stream_key = "streamSid"
    sequence_key = "sequenceNumber"
    stream_events = frozenset({"media", "dtmf", "mark", "stop"})

    def _start(self, msg: dict[str, Any]) -> CallStarted:
        start = require(msg, "start", dict, "start")
        stream_sid = start.get("streamSid") or msg.get("streamSid")
        if not isinstance(stream_sid, str) or not stream_sid:
            raise PhoneProtocolError("start.streamSid missing")
        call_sid = require(start, "callSid", str, "start")
        params = start.get("customParameters") or {}
        if not isinstance(params, dict) or not all(isinstance(v, str) for v in params.values()):
            raise PhoneProtocolError("start.customParameters is not an object of strings")
        media_format = start.get("mediaFormat") or {}
        if not isinstance(media_format, dict):
            raise PhoneProtocolError("start.mediaFormat is not an object")
        tracks = start.get("tracks") or ["inbound"]
        if not isinstance(tracks, list):
            raise PhoneProtocolError("start.tracks is not a list")
        account = start.get("accountSid")
        names = tuple(str(t) for t in tracks)
        # <Start><Stream track="both_tracks">: the caller (inbound) and the other party (outbound), each
        # its own mono media messages; such a stream is one-way (Twilio plays nothing back on it).
        self.both_parties = {"inbound", "outbound"} <= {t.removesuffix("_track") for t in names}
        return CallStarted(
            carrier=self.carrier,
            call_sid=call_sid,
            stream_sid=stream_sid,
            account_sid=account if isinstance(account, str) else None,
            parameters=dict(params),
            audio_format=self._audio_format(media_format),
            tracks=names,
            channels=2 if self.both_parties else 1,
        )

    @property
    def plays_audio(self) -> bool:
        return not self.both_parties  # a <Start><Stream> (the only kind with both tracks) is one-way

    @property
    def supports_marks(self) -> bool:
        return not self.both_parties

    @property
    def supports_clear(self) -> bool:
        return not self.both_parties

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

    def _stream_event(self, event: str, msg: dict[str, Any]) -> list[PhoneEvent]:
        if event == "media":
            media = msg.get("media")
            if type(media) is not dict:
                media = require(msg, "media", dict, "media")  # raises, saying why
            audio = b64_payload(media.get("payload"), "media.payload")
            inbound = media.get("track", "inbound") in ("inbound", "inbound_track")
            if self.both_parties:
                return [self._track_audio(audio, media, inbound)]
            if not inbound:
                # An outbound track without the inbound one (track="outbound_track"): not the caller.
                return [self._ignored("outbound_media")]
            return [self._audio(audio)]
        if event == "dtmf":
            return [Dtmf(require(require(msg, "dtmf", dict, "dtmf"), "digit", str, "dtmf"))]
        if event == "mark":
            return [MarkReached(require(require(msg, "mark", dict, "mark"), "name", str, "mark"))]
        return [self._stopped()]

    # -- outbound (bidirectional <Connect><Stream> only) -----------------------------------

    def _audio_chunk_message(self, chunk: bytes) -> str:
        return json.dumps(
            {"event": "media", "streamSid": self.stream_id, "media": {"payload": base64.b64encode(chunk).decode()}}
        )

    def mark_message(self, name: str) -> str:
        return json.dumps({"event": "mark", "streamSid": self.stream_id, "mark": {"name": name}})

    def clear_message(self) -> str:
        self._drop_held_audio()
        return json.dumps({"event": "clear", "streamSid": self.stream_id})


# -- TwiML and signatures ----------------------------------------------------------------


def connect_stream_twiml(
    stream_url: str, parameters: Mapping[str, str], after_url: str = "", *, action_url: str = ""
) -> str:
    """TwiML that connects the call to ``stream_url`` (bidirectional) with ``<Parameter>``s. When the
    stream ends (the caller hung up, or the bridge closed the stream: the bot hung up or transferred the
    call), Twilio requests ``action_url`` (``<Connect action>``: the bridge's ``/twilio/after-stream``,
    which answers what comes next); without one, it hangs up, or with ``after_url`` redirects there
    (Twilio runs what follows ``</Connect>``).

    Twilio drops query strings from stream URLs, so per-call data travels as parameters and comes
    back in ``start.customParameters``. Each parameter's name+value must stay under 500 characters.
    """
    params = "".join(
        f"<Parameter name={quoteattr(_xml_text(name))} value={quoteattr(_xml_text(value)[: 499 - len(name)])}/>"
        for name, value in parameters.items()
        if value
    )
    if action_url:
        connect, after = f"<Connect action={quoteattr(_xml_text(action_url))}>", ""
    else:
        connect = "<Connect>"
        after = f"<Redirect>{escape(_xml_text(after_url))}</Redirect>" if after_url else "<Hangup/>"
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f"<Response>{connect}<Stream url={quoteattr(stream_url)}>{params}</Stream></Connect>{after}</Response>"
    )


def fork_stream_twiml(stream_url: str, parameters: Mapping[str, str], *, dial: str = "", redirect_url: str = "") -> str:
    """TwiML for a call between people, transcribed: ``<Start><Stream track="both_tracks">`` forks both
    parties' audio to ``stream_url`` (one-way: nothing is played back on it) while the call goes on
    with ``<Dial>`` to ``dial``, or, with no number, a ``<Redirect>`` to the application's own TwiML.
    The fork lasts as long as the call."""
    if bool(dial) == bool(redirect_url):
        raise ValueError("fork mode needs exactly one of a number to dial or a redirect url")
    params = "".join(
        f"<Parameter name={quoteattr(_xml_text(name))} value={quoteattr(_xml_text(value)[: 499 - len(name)])}/>"
        for name, value in parameters.items()
        if value
    )
    then = (
        f"<Dial><Number>{escape(_xml_text(dial))}</Number></Dial>"
        if dial
        else f"<Redirect>{escape(_xml_text(redirect_url))}</Redirect>"
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<Response><Start><Stream url={quoteattr(stream_url)} track="both_tracks">{params}</Stream></Start>'
        f"{then}</Response>"
    )


_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _xml_text(text: str) -> str:
    """``text`` without the characters XML 1.0 cannot carry at all (control characters, lone
    surrogates): escaping does not help with those, the document would not parse."""
    return _NOT_XML.sub("", text)


def signature(auth_token: str, url: str, params: Mapping[str, str] | None = None) -> str:
    """X-Twilio-Signature: base64 HMAC-SHA1 over the URL followed by the sorted form fields."""
    data = url + "".join(k + (params or {})[k] for k in sorted(params or {}))
    digest = hmac.new(auth_token.encode(), data.encode("utf-8", "surrogateescape"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def signature_valid(auth_token: str, url: str, header: str | None, params: Mapping[str, str] | None = None) -> bool:
    """Check a request's X-Twilio-Signature against the public ``url``, in constant time.

    Twilio's security page says a WebSocket handshake may be signed with a trailing ``/``
    appended, so both spellings are accepted.
    """
    if not header:
        return False
    candidates = {url, url.rstrip("/") + "/"}
    return any(same_secret(header, signature(auth_token, u, params)) for u in candidates)  # any bytes


# -- the carrier's description -------------------------------------------------------------


def authenticate(upgrade: Upgrade, secrets: Secrets) -> Refusal | None:
    """X-Twilio-Signature over the stream's public URL when ``TWILIO_AUTH_TOKEN`` is set, then a shared
    token if one is set."""
    token = secrets.twilio_auth_token
    if token is not None and not signature_valid(token, upgrade.url, upgrade.headers.get("X-Twilio-Signature")):
        return Refusal("twilio.bad_signature", "invalid X-Twilio-Signature\n", {"path": upgrade.path})
    return check_stream_token(NAME, upgrade, secrets)


CARRIER = Carrier(
    NAME,
    "Twilio Media Streams",
    TwilioAdapter,
    plain(TwilioAdapter),
    authenticate,
    # transfer: <Connect action> then <Dial>, briefing by <Number url>, return by <Dial action>
    # (https://www.twilio.com/docs/voice/twiml/connect, /dial, /number); REST call update otherwise
    Capabilities(two_tracks=True, transfer="markup", announce=True, return_to_bot=True),
    FrameRules(ULAW_8K, l16=False, call_sid_prefix="CA", stream_sid_prefix="MZ", twilio_like=True),
    shared_token=False,
)
