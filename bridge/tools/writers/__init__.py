"""Each carrier's side of a media stream, as its documents show it: the messages ``bridge call``
plays and the tests send. One module per carrier, beside ``bridge.adapters`` (which reads them)."""

from __future__ import annotations

from bridge.tools.writers.asterisk import AsteriskStreamWriter
from bridge.tools.writers.audiofork import AudioForkStreamWriter
from bridge.tools.writers.exotel import ExotelStreamWriter
from bridge.tools.writers.plivo import PlivoStreamWriter
from bridge.tools.writers.signalwire import SignalWireStreamWriter
from bridge.tools.writers.telnyx import TelnyxStreamWriter
from bridge.tools.writers.twilio import TwilioStreamWriter
from bridge.tools.writers.vonage import VonageStreamWriter

__all__ = [
    "AsteriskStreamWriter",
    "AudioForkStreamWriter",
    "ExotelStreamWriter",
    "PlivoStreamWriter",
    "SignalWireStreamWriter",
    "TelnyxStreamWriter",
    "TwilioStreamWriter",
    "VonageStreamWriter",
]
