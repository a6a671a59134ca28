"""Carrier adapters: one sans-I/O module per media-stream dialect, keyed by route name.

An adapter takes each phone WebSocket message (text or bytes) and returns typed
:mod:`bridge.adapters.base` events; it also builds the messages the bridge may send back
(audio, clear, mark). Adding a carrier means adding a module and a line here.
"""

from __future__ import annotations

from collections.abc import Callable

from bridge.adapters.base import PhoneAdapter
from bridge.adapters.twilio import TwilioAdapter

ADAPTERS: dict[str, Callable[[], PhoneAdapter]] = {
    "twilio": TwilioAdapter,
}
