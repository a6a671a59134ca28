"""Typed keys for what the aiohttp application holds (no globals)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from bridge.settings import Settings

if TYPE_CHECKING:
    from bridge.call import Call, SuspendedCalls
    from bridge.delivery import Delivery
    from bridge.metrics import Metrics
    from bridge.outbox import OutboxWriter
    from bridge.stt.session import Admission


@dataclass
class BridgeState:
    """Mutable state of a running bridge (the app itself is frozen once started)."""

    http: aiohttp.ClientSession | None = None
    delivery: Delivery | None = None
    outbox: OutboxWriter | None = None
    calls: dict[Call, web.WebSocketResponse] = field(default_factory=dict)
    draining: bool = False
    suspended: SuspendedCalls | None = None
    admission: Admission | None = None
    metrics: Metrics | None = None
    worker: tuple[int, int] | None = None  # (index, count) under bridge serve --workers
    resume_secret: bytes = b""  # key of the calls' resume tokens (BRIDGE_SECRET, or random per process)


SETTINGS = web.AppKey("settings", Settings)
STATE = web.AppKey("state", BridgeState)
