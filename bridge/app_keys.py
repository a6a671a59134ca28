"""Typed keys of the aiohttp application (no globals) that belong to no module below it: what
``create_app`` is given (settings, clock, worker, resume secret) and the process-wide HTTP client and
fleet (whose key must not load :mod:`bridge.fleet` outside fleet mode).

Every other resource's key is defined beside its owner and set up in its own ``cleanup_ctx`` of
:mod:`bridge.app`: ``DELIVERY`` (:mod:`bridge.delivery`), ``OUTBOX`` (:mod:`bridge.delivery.outbox`), ``METRICS``
(:mod:`bridge.metrics`), ``ADMISSION`` (:mod:`bridge.stt.admission`), ``SPEAKER`` (:mod:`bridge.reply.tts`),
``CALL_SERVICES`` (:mod:`bridge.call.services`), ``CALLS`` (:mod:`bridge.call.registry`), the transcript
store and its read threads (:mod:`bridge.http.transcripts`), the worker siblings (:mod:`bridge.siblings`).
A key typed ``X | None`` holds None when the bridge runs without that thing; the others are always set."""

from __future__ import annotations

from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from bridge.settings import Settings

if TYPE_CHECKING:
    from bridge.clock import Clock
    from bridge.fleet.fleet import Fleet

# Given to create_app.
SETTINGS = web.AppKey("settings", Settings)
CLOCK: web.AppKey[Clock] = web.AppKey("clock")  # webhook ages and retry sleeps (virtual in tests)
WORKER: web.AppKey[tuple[int, int] | None] = web.AppKey("worker")  # (index, count) under bridge serve --workers
RESUME_SECRET = web.AppKey("resume_secret", bytes)  # key of the calls' resume tokens (BRIDGE_SECRET, or random)

# Set up by bridge.app's cleanup_ctx, in this order (closed in the reverse one).
FLEET: web.AppKey[Fleet | None] = web.AppKey("fleet")  # fleet mode (BRIDGE_REDIS_URL): leases, routed actions
HTTP_CLIENT = web.AppKey("http_client", aiohttp.ClientSession)  # Gladia, webhooks, TTS
