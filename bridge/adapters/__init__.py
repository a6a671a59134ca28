"""Carrier adapters: one sans-I/O module per media-stream dialect, keyed by route name.

An adapter takes each phone WebSocket message (text or bytes) and returns typed
:mod:`bridge.adapters.base` events; it also builds the messages the bridge may send back
(audio, clear, mark). Each module also builds its carrier's description
(:class:`~bridge.adapters.carrier.Carrier`: adapter factory, authentication, capabilities, framing).
Adding a carrier means adding a module and a line here.
"""

from __future__ import annotations

from collections.abc import Mapping

from bridge.adapters import asterisk, audiofork, exotel, plivo, signalwire, telnyx, twilio, vonage
from bridge.adapters.base import PhoneAdapter
from bridge.adapters.carrier import Carrier

# The one list of carriers: routes, settings, the CLI and the tools all read it.
CARRIERS: dict[str, Carrier] = {
    c.name: c
    for c in (
        twilio.CARRIER,
        signalwire.CARRIER,
        telnyx.CARRIER,
        plivo.CARRIER,
        exotel.CARRIER,
        vonage.CARRIER,
        audiofork.CARRIER,
        asterisk.CARRIER,
    )
}

__all__ = ["CARRIERS", "Carrier", "make_adapter"]


def make_adapter(
    carrier: str, audiofork_sample_rate: int = 8000, query: Mapping[str, str] | None = None
) -> PhoneAdapter | None:
    """A fresh adapter for one stream on ``/{carrier}/stream`` (built by the carrier's factory from the
    route's query), or None for an unknown carrier.

    Raises:
        ValueError: a query value the carrier's factory refuses (the message says which).
    """
    known = CARRIERS.get(carrier)
    return known.factory(query or {}, audiofork_sample_rate) if known is not None else None
