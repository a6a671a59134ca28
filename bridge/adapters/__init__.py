"""Carrier adapters: one sans-I/O module per media-stream dialect, keyed by route name.

An adapter takes each phone WebSocket message (text or bytes) and returns typed
:mod:`bridge.adapters.base` events; it also builds the messages the bridge may send back
(audio, clear, mark). Adding a carrier means adding a module and a line here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from bridge.adapters.asterisk import AsteriskAdapter
from bridge.adapters.audiofork import RATES as AUDIOFORK_RATES
from bridge.adapters.audiofork import AudioForkAdapter
from bridge.adapters.base import PhoneAdapter
from bridge.adapters.exotel import ExotelAdapter
from bridge.adapters.plivo import PlivoAdapter
from bridge.adapters.signalwire import SignalWireAdapter
from bridge.adapters.telnyx import TelnyxAdapter
from bridge.adapters.twilio import TwilioAdapter
from bridge.adapters.vonage import VonageAdapter


@dataclass(frozen=True, slots=True)
class Carrier:
    """One carrier the bridge speaks: its route (``/{name}/stream``), its adapter, and how it proves
    itself on the upgrade (``<NAME>_STREAM_TOKEN``, or its own signature scheme)."""

    name: str
    title: str
    adapter: type[PhoneAdapter]
    shared_token: bool = True  # False: the carrier signs its requests (Twilio)

    @property
    def token_variable(self) -> str:
        return f"{self.name.upper()}_STREAM_TOKEN"


# The one list of carriers: routes, settings, the CLI and the tools all read it.
CARRIERS: dict[str, Carrier] = {
    c.name: c
    for c in (
        Carrier("twilio", "Twilio Media Streams", TwilioAdapter, shared_token=False),
        Carrier("signalwire", "SignalWire cXML <Stream>", SignalWireAdapter),
        Carrier("telnyx", "Telnyx media streaming", TelnyxAdapter),
        Carrier("plivo", "Plivo Audio Streams", PlivoAdapter),
        Carrier("exotel", "Exotel Stream / Voicebot", ExotelAdapter),
        Carrier("vonage", "Vonage Voice API websocket", VonageAdapter),
        Carrier("audiofork", "jambonz listen, FreeSWITCH mod_audio_fork / mod_audio_stream", AudioForkAdapter),
        Carrier("asterisk", "Asterisk chan_websocket", AsteriskAdapter),
    )
}


def make_adapter(
    carrier: str, audiofork_sample_rate: int = 8000, query: Mapping[str, str] | None = None
) -> PhoneAdapter | None:
    """A fresh adapter for one stream on ``/{carrier}/stream``, or None for an unknown carrier.

    FreeSWITCH forks say their rate and channel mix only in the command that started them
    (``uuid_audio_fork <uuid> start <url> <mono|mixed|stereo> <8k|16k>``), never on the wire: the
    route's query carries them (``/audiofork/stream?rate=16000&mix=stereo``), else the metadata (as
    jambonz sends), else ``carriers.audiofork_sample_rate``.

    Raises:
        ValueError: a query value that is not a rate or mix the adapter knows (the message says which).
    """
    if carrier == "audiofork":
        query = query or {}
        rate_text = query.get("rate") or query.get("sample_rate") or query.get("sampleRate")
        rate = audiofork_sample_rate
        if rate_text:
            text = rate_text.strip().lower()
            digits = text.removesuffix("k")
            rate = (int(digits) * (1000 if text.endswith("k") else 1)) if digits.isdigit() else -1
            if rate not in AUDIOFORK_RATES:
                raise ValueError(f"rate={rate_text!r}: one of {', '.join(map(str, AUDIOFORK_RATES))} (or 8k, 16k)")
        mix = query.get("mix", "mono")
        if mix not in ("mono", "mixed", "stereo"):
            raise ValueError(f"mix={mix!r}: one of mono, mixed, stereo")
        return AudioForkAdapter(rate, mix)
    if carrier == "telnyx":
        # Telnyx's start does not list its tracks: a stream_track=both_tracks stream says so in its URL.
        tracks = (query or {}).get("tracks", "inbound")
        if tracks not in ("inbound", "inbound_track", "both", "both_tracks"):
            raise ValueError(f"tracks={tracks!r}: inbound or both")
        return TelnyxAdapter(both_parties=tracks.startswith("both"))
    known = CARRIERS.get(carrier)
    return known.adapter() if known is not None else None
