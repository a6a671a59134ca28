"""Carrier adapters: one sans-I/O module per media-stream dialect, keyed by route name.

An adapter takes each phone WebSocket message (text or bytes) and returns typed
:mod:`bridge.adapters.base` events; it also builds the messages the bridge may send back
(audio, clear, mark). Adding a carrier means adding a module and a line here.
"""

from __future__ import annotations

from bridge.adapters.asterisk import AsteriskAdapter
from bridge.adapters.audiofork import AudioForkAdapter
from bridge.adapters.base import PhoneAdapter
from bridge.adapters.exotel import ExotelAdapter
from bridge.adapters.plivo import PlivoAdapter
from bridge.adapters.signalwire import SignalWireAdapter
from bridge.adapters.telnyx import TelnyxAdapter
from bridge.adapters.twilio import TwilioAdapter
from bridge.adapters.vonage import VonageAdapter

ADAPTERS: dict[str, type[PhoneAdapter]] = {
    "twilio": TwilioAdapter,
    "signalwire": SignalWireAdapter,
    "telnyx": TelnyxAdapter,
    "plivo": PlivoAdapter,
    "exotel": ExotelAdapter,
    "vonage": VonageAdapter,
    "audiofork": AudioForkAdapter,
    "asterisk": AsteriskAdapter,
}


def make_adapter(carrier: str, audiofork_sample_rate: int = 8000) -> PhoneAdapter | None:
    """A fresh adapter for one stream on ``/{carrier}/stream``, or None for an unknown carrier."""
    if carrier == "audiofork":
        return AudioForkAdapter(audiofork_sample_rate)
    cls = ADAPTERS.get(carrier)
    return cls() if cls is not None else None
