"""The bridge's own state over HTTP, for probes and scrapers (aiohttp handlers; thin shell).

* ``GET /healthz``: liveness and state (``ok``, ``degraded`` with what is wrong, ``draining`` 503);
* ``GET /readyz``: readiness only (200 ready, 503 draining);
* ``GET /metrics``: the Prometheus exposition;
* ``GET /console``: the operator's page (:mod:`bridge.http.console`).
"""

from __future__ import annotations

import os

from aiohttp import web

from bridge.app_keys import FLEET, WORKER
from bridge.call.registry import CALLS
from bridge.delivery.outbox import OUTBOX
from bridge.http.console import add_routes as add_console
from bridge.metrics import METRICS
from bridge.recording.service import RECORDINGS
from bridge.stt.admission import ADMISSION


async def healthz(request: web.Request) -> web.Response:
    """Liveness and state: ``ok``, ``degraded`` (working, with ``degraded`` saying what is wrong; still
    200, nothing a restart would fix) or ``draining`` (503)."""
    app = request.app
    calls, outbox, fleet = app[CALLS], app[OUTBOX], app[FLEET]
    problems = []
    if outbox is not None and outbox.degraded:
        problems.append(f"outbox writes failing: {outbox.degraded}")
    if fleet is not None and fleet.redis_down is not None:
        problems.append(f"fleet Redis unreachable: {fleet.redis_down}")
    recordings = app.get(RECORDINGS)
    recording = recordings.health() if recordings is not None else None
    if recording is not None and recording[0] is not None:
        problems.append(f"recordings degraded: {recording[0]}")
    status = "draining" if calls.draining else ("degraded" if problems else "ok")
    body: dict[str, object] = {
        "status": status,
        "active_calls": len(calls.streams),
        "suspended_calls": len(calls.suspended),
    }
    if problems:
        body["degraded"] = problems
    worker = app[WORKER]
    if worker is not None:
        body["worker"] = {"index": worker[0], "of": worker[1], "pid": os.getpid()}
    admission = app[ADMISSION]
    if admission.limit:
        body["stt_sessions"] = {"active": admission.active, "waiting": admission.waiting, "limit": admission.limit}
    if recording is not None:
        body["recordings"] = recording[1]
    if outbox is not None:
        body["outbox"] = {**outbox.counts(), "queued_writes": outbox.queued}
    if fleet is not None:
        body["fleet"] = {
            "instance_id": fleet.instance_id,
            "calls_held": len(fleet.owned),
            "takeovers": fleet.counters.takeovers,
            "leases_lost": fleet.counters.leases_lost,
            "redis_errors": fleet.counters.redis_errors,
        }
    return web.json_response(body, status=503 if calls.draining else 200)


async def readyz(request: web.Request) -> web.Response:
    """Readiness: 200 ``{"status": "ready"}``, or 503 ``{"status": "draining"}`` from the first moment
    of :func:`bridge.app.drain_calls` on. Unlike ``/healthz`` (liveness) it says nothing about health:
    only whether new calls should be sent here.

    ``bridge serve`` drains while its listener is still open (the site is stopped only after
    ``drain_calls``), so a load balancer or the kubelet's readiness probe sees the 503 for the whole
    drain. Under ``web.run_app`` aiohttp closes the listener before ``on_shutdown``, so a probe gets
    connection refused instead, which also counts as not ready.
    """
    draining = request.app[CALLS].draining
    return web.json_response({"status": "draining" if draining else "ready"}, status=503 if draining else 200)


async def metrics_endpoint(request: web.Request) -> web.Response:
    """The Prometheus text exposition of :class:`bridge.metrics.Metrics`."""
    return web.Response(
        body=request.app[METRICS].render(),
        content_type="text/plain",
        charset="utf-8",
        headers={"X-Content-Type-Options": "nosniff"},
    )


def add_routes(app: web.Application) -> None:
    """``/healthz``, ``/readyz`` and ``/metrics``; and the operator's page, ``/console``
    (:mod:`bridge.http.console`: installed from here, the app's other page for people and probes)."""
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_endpoint)
    add_console(app)
