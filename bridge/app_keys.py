"""Typed keys for what the aiohttp application holds (no globals): what ``create_app`` is given, and the
shared resources its ``cleanup_ctx`` of :mod:`bridge.app` set up, one key per resource.

Each resource is set once, before the application starts, and never replaced; a key typed ``X | None``
holds None when the bridge runs without that thing (no fleet, no speech engine, no outbox). Keys of what
a subpackage owns live beside their owner: the call registry (:data:`bridge.call_registry.CALLS`), the
transcript store and its read threads (:mod:`bridge.http.transcripts`), the worker siblings
(:data:`bridge.siblings.SIBLINGS`), the bot API's first answers (:mod:`bridge.http.bot_api`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from bridge.settings import Settings

if TYPE_CHECKING:
    from bridge.call_services import CallServices
    from bridge.clock import Clock
    from bridge.delivery import Delivery
    from bridge.fleet.fleet import Fleet
    from bridge.metrics import Metrics
    from bridge.outbox import OutboxWriter
    from bridge.reply.tts import Speaker
    from bridge.stt.admission import Admission

# Given to create_app.
SETTINGS = web.AppKey("settings", Settings)
CLOCK: web.AppKey[Clock] = web.AppKey("clock")  # webhook ages and retry sleeps (virtual in tests)
WORKER: web.AppKey[tuple[int, int] | None] = web.AppKey("worker")  # (index, count) under bridge serve --workers
RESUME_SECRET = web.AppKey("resume_secret", bytes)  # key of the calls' resume tokens (BRIDGE_SECRET, or random)
METRICS: web.AppKey[Metrics] = web.AppKey("metrics")
ADMISSION: web.AppKey[Admission] = web.AppKey("admission")  # gladia.max_sessions

# Set up by bridge.app's cleanup_ctx, in this order (closed in the reverse one).
FLEET: web.AppKey[Fleet | None] = web.AppKey("fleet")  # fleet mode (BRIDGE_REDIS_URL): leases, routed actions
HTTP_CLIENT = web.AppKey("http_client", aiohttp.ClientSession)  # Gladia, webhooks, TTS
SPEAKER: web.AppKey[Speaker | None] = web.AppKey("speaker")  # speech for `say` (None: no engine)
OUTBOX: web.AppKey[OutboxWriter | None] = web.AppKey("outbox")  # the SQLite outbox (None: not durable here)
DELIVERY: web.AppKey[Delivery] = web.AppKey("delivery")  # the bot's events: webhook and/or bot socket
CALL_SERVICES: web.AppKey[CallServices] = web.AppKey("call_services")  # what every call uses
