"""Each carrier's side of a call as ``bridge call`` plays it: the messages its writer
(:mod:`bridge.tools.writers`) builds, framed by the carrier's description
(:attr:`bridge.adapters.carrier.Carrier.frames`: native format, message length, stop, tracks).

One small function per carrier builds its writer (they take different arguments); everything else
(format, frame size, which carriers stream two tracks) comes from :data:`bridge.adapters.CARRIERS`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from bridge.adapters import CARRIERS
from bridge.adapters.carrier import Carrier
from bridge.audio import ULAW_8K, AudioFormat, make_transcoder
from bridge.tools.writers.asterisk import AsteriskStreamWriter
from bridge.tools.writers.audiofork import AudioForkStreamWriter
from bridge.tools.writers.exotel import ExotelStreamWriter
from bridge.tools.writers.plivo import PlivoStreamWriter
from bridge.tools.writers.signalwire import SignalWireStreamWriter
from bridge.tools.writers.telnyx import TelnyxStreamWriter
from bridge.tools.writers.twilio import TwilioStreamWriter
from bridge.tools.writers.vonage import VonageStreamWriter

TWO_TRACKS = ["inbound", "outbound"]

# The carriers whose stream can carry the other party too (the rest stream one track: Exotel, Vonage, Asterisk).
TWO_TRACK_CARRIERS = tuple(name for name, c in CARRIERS.items() if c.capabilities.two_tracks)

Messages = Iterator[str | bytes]
KeyMessage = Callable[[str], str]  # a keypad key -> the carrier's DTMF message
TwilioLikeWriter = TwilioStreamWriter | SignalWireStreamWriter


@dataclass
class Dialect:
    """One carrier's stream as the simulator plays it."""

    messages: Iterator[str | bytes]
    audio_format: AudioFormat
    native_audio: bytes  # what the carrier carries: the input converted to its format
    frame_seconds: float
    subprotocols: tuple[str, ...] = ()
    sends_stop: bool = True
    writer: TwilioLikeWriter | None = None  # Twilio-like: mark echoes, more media
    messages_per_frame: int = 1  # 2 for a two-track call in one message per track
    dtmf: KeyMessage | None = None  # the carrier's message for a key the caller pressed (None: it sends none)


@dataclass(frozen=True)
class CallSpec:
    """One call to play, in the carrier's format: what a writer is built from."""

    call_sid: str
    stream_sid: str
    parameters: dict[str, str]
    fmt: AudioFormat
    l16: bool  # L16 at a rate asked for, not the carrier's usual format
    audio: bytes  # the caller, in ``fmt``
    outbound: bytes | None  # the other party, in ``fmt``
    frame_bytes: int

    @property
    def tracks(self) -> list[str]:
        return TWO_TRACKS if self.outbound is not None else ["inbound"]

    @property
    def caller(self) -> str:
        return self.parameters.get("From", "+15550100")

    @property
    def called(self) -> str:
        return self.parameters.get("To", "+15550199")


@dataclass
class Played:
    """What a carrier's writer made of a call: its messages, and what the player needs of the writer."""

    messages: Messages
    writer: TwilioLikeWriter | None = None
    subprotocols: tuple[str, ...] = ()
    dtmf: KeyMessage | None = None


def native(ulaw: bytes, fmt: AudioFormat) -> bytes:
    """The 8 kHz mu-law input as the carrier would carry it."""
    transcoder = make_transcoder(ULAW_8K, fmt)
    return transcoder.feed(ulaw) + transcoder.flush()


def _twilio(c: CallSpec) -> Played:
    w = TwilioStreamWriter(c.call_sid, c.stream_sid, parameters=c.parameters, tracks=c.tracks)
    return Played(w.call(c.audio, c.frame_bytes, c.outbound), w, dtmf=w.dtmf)


def _signalwire(c: CallSpec) -> Played:
    rate = c.fmt.sample_rate if c.l16 else None
    w = SignalWireStreamWriter(c.call_sid, c.stream_sid, parameters=c.parameters, sample_rate=rate, tracks=c.tracks)
    return Played(w.call(c.audio, c.frame_bytes, c.outbound), w, dtmf=w.dtmf)


def _telnyx(c: CallSpec) -> Played:
    codec = "L16" if c.l16 else "PCMU"
    both = c.outbound is not None
    w = TelnyxStreamWriter(c.call_sid, c.stream_sid, c.caller, c.called, codec, c.fmt.sample_rate, both_tracks=both)
    return Played(w.call(c.audio, c.frame_bytes, c.outbound), dtmf=w.dtmf)


def _plivo(c: CallSpec) -> Played:
    rate = c.fmt.sample_rate if c.l16 else None
    w = PlivoStreamWriter(
        c.call_sid, c.stream_sid, parameters=c.parameters, sample_rate=rate, send_stop=True, tracks=c.tracks
    )
    return Played(w.call(c.audio, c.frame_bytes, c.outbound), dtmf=w.dtmf)


def _exotel(c: CallSpec) -> Played:
    w = ExotelStreamWriter(c.call_sid, c.stream_sid, c.caller, c.called, c.fmt.sample_rate)
    return Played(w.call(c.audio, c.frame_bytes), dtmf=w.dtmf)  # Exotel's Voicebot applet (bidirectional)


def _vonage(c: CallSpec) -> Played:
    w = VonageStreamWriter(c.call_sid, c.fmt.sample_rate, {"from": c.caller, "to": c.called})
    return Played(w.call(c.audio, c.frame_bytes), dtmf=w.dtmf)


def _audiofork(c: CallSpec) -> Played:
    mix = "mono" if c.outbound is None else "stereo"
    w = AudioForkStreamWriter(c.call_sid, c.fmt.sample_rate, c.caller, c.called, mix_type=mix)
    keys = w.dtmf if w.sends_dtmf else None  # jambonz passDtmf; FreeSWITCH's forks carry audio only
    return Played(w.call(c.audio, c.frame_bytes, c.outbound), subprotocols=(w.subprotocol,), dtmf=keys)


def _asterisk(c: CallSpec) -> Played:
    fmt = c.fmt
    name = "ulaw" if fmt == ULAW_8K else ("slin" if fmt.sample_rate == 8000 else f"slin{fmt.sample_rate // 1000}")
    w = AsteriskStreamWriter(c.call_sid, name, json_style=True, caller=c.caller, called=c.called)
    return Played(w.call(c.audio, c.frame_bytes), dtmf=w.dtmf)


# One writer per carrier in bridge.adapters.CARRIERS (tests/test_call_command.py checks they match).
DIALECTS: dict[str, Callable[[CallSpec], Played]] = {
    "twilio": _twilio,
    "signalwire": _signalwire,
    "telnyx": _telnyx,
    "plivo": _plivo,
    "exotel": _exotel,
    "vonage": _vonage,
    "audiofork": _audiofork,
    "asterisk": _asterisk,
}


def carrier_of(carrier: str) -> Carrier:
    """The carrier's description.

    Raises:
        ValueError: an unknown carrier.
    """
    known = CARRIERS.get(carrier)
    if known is None or carrier not in DIALECTS:
        raise ValueError(f"unknown carrier {carrier!r}; known: {', '.join(CARRIERS)}")
    return known


def dialect(
    carrier: str,
    ulaw: bytes,
    call_sid: str,
    stream_sid: str,
    parameters: dict[str, str],
    sample_rate: int | None = None,
    outbound: bytes | None = None,
) -> Dialect:
    """The messages ``carrier`` would send for a call carrying ``ulaw`` (8 kHz mu-law).

    ``sample_rate`` picks L16 at that rate for carriers that offer it (SignalWire, Telnyx, Plivo,
    Exotel, Vonage, audio forks, Asterisk); by default each uses its usual format. ``outbound`` (8 kHz
    mu-law, as long as ``ulaw``) is the other party, on the carrier's second track.

    Raises:
        ValueError: an unknown carrier, or ``outbound`` for a carrier not in :data:`TWO_TRACK_CARRIERS`.
    """
    known = carrier_of(carrier)
    if outbound is not None and not known.capabilities.two_tracks:
        raise ValueError(two_tracks_unsupported(carrier))
    rules = known.frames
    l16 = bool(sample_rate) and rules.l16
    fmt = AudioFormat("pcm16", sample_rate) if sample_rate and l16 else rules.native_format
    audio = native(ulaw, fmt)
    spec = CallSpec(
        call_sid,
        stream_sid,
        parameters,
        fmt,
        l16,
        audio,
        None if outbound is None else native(outbound, fmt),
        fmt.bytes_for_ms(rules.frame_ms),
    )
    played = DIALECTS[carrier](spec)
    return Dialect(
        played.messages,
        fmt,
        audio,
        rules.frame_seconds,
        played.subprotocols,
        sends_stop=rules.sends_stop,
        writer=played.writer,
        messages_per_frame=2 if outbound is not None and rules.track_messages else 1,
        dtmf=played.dtmf,
    )


def opening_messages(carrier: str, parameters: dict[str, str], sample_rate: int | None, two_tracks: bool) -> int:
    """How many messages of a call in ``carrier``'s dialect come before its audio (``connected``, ``start``,
    metadata...): the same call with no audio has only those, and the stop."""
    empty = dialect(carrier, b"", "c", "s", parameters, sample_rate, b"" if two_tracks else None)
    return sum(1 for _ in empty.messages) - (1 if empty.sends_stop else 0)


def keys_unsupported(carrier: str) -> str | None:
    """Why ``carrier``'s stream cannot carry a key the caller pressed (None: it can)."""
    if dialect(carrier, b"", "c", "s", {}).dtmf is None:
        return f"{carrier}: the carrier sends no DTMF message on its media stream, so no key can be pressed"
    return None


def two_tracks_unsupported(carrier: str) -> str:
    return f"{carrier} streams one track; two-party calls play on {', '.join(TWO_TRACK_CARRIERS)}"
