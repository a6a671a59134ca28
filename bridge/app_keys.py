"""Typed keys for what the aiohttp application holds (no globals)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from bridge.settings import Settings

if TYPE_CHECKING:
    from bridge.call import Call
    from bridge.delivery import Delivery

SETTINGS = web.AppKey("settings", Settings)
HTTP = web.AppKey("http", aiohttp.ClientSession)
DELIVERY: web.AppKey[Delivery] = web.AppKey("delivery")
CALLS: web.AppKey[dict[Call, web.WebSocketResponse]] = web.AppKey("calls")
DRAINING = web.AppKey("draining", bool)
