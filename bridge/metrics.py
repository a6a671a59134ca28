"""Prometheus metrics (``GET /metrics``), kept off the per-frame path.

Per-frame quantities (frames, bytes, resent bytes, reconnects) are counted by each call anyway; a
once-a-second task adds every live call's increase to the Prometheus counters (and a call's last
increase when it ends), so the audio path pays nothing for metrics. Webhook deliveries are observed
as they happen (a few per call).

With several worker processes (``bridge serve --workers N``) the counters live in
``PROMETHEUS_MULTIPROC_DIR`` and ``/metrics`` on any worker reports the sum over all of them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

if TYPE_CHECKING:
    from bridge.call import Call
    from bridge.outbox import OutboxWriter

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LAG_BUCKETS = (0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@dataclass
class _Seen:
    frames: int = 0
    phone_bytes: int = 0
    gladia_bytes: int = 0
    resent: int = 0
    reconnects: int = 0
    finals: int = 0


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self.active_calls = Gauge("bridge_active_calls", "Phone streams in progress", registry=r,
                                  multiprocess_mode="livesum")
        self.suspended_calls = Gauge("bridge_suspended_calls", "Calls whose stream dropped, waiting for a restart",
                                     registry=r, multiprocess_mode="livesum")
        self.calls = Counter("bridge_calls", "Calls ended, by carrier and end reason", ["provider", "end_reason"],
                             registry=r)
        self.frames = Counter("bridge_phone_frames", "Audio messages received from carriers", registry=r)
        self.phone_bytes = Counter("bridge_phone_audio_bytes", "Audio bytes received from carriers", registry=r)
        self.gladia_bytes = Counter("bridge_gladia_audio_bytes", "Audio bytes sent to Gladia, resends included",
                                    registry=r)
        self.reconnects = Counter("bridge_gladia_reconnects", "Gladia session WebSocket reconnections",
                                  registry=r)
        self.resent = Counter("bridge_gladia_resent_bytes", "Unacknowledged audio resent after a reconnect",
                              registry=r)
        self.ack_lag = Histogram("bridge_gladia_ack_lag_seconds",
                                 "Audio sent but not yet acknowledged by Gladia, per call, sampled each second",
                                 buckets=LAG_BUCKETS, registry=r)
        self.finals = Counter("bridge_finals", "Final utterances received from Gladia", registry=r)
        self.webhook = Counter("bridge_webhook_deliveries", "Webhook attempts by outcome", ["outcome"],
                               registry=r)
        self.webhook_latency = Histogram("bridge_webhook_request_seconds", "Duration of successful webhook POSTs",
                                         buckets=LATENCY_BUCKETS, registry=r)
        self.event_to_delivery = Histogram("bridge_event_to_delivery_seconds",
                                           "From an event's creation (e.g. a final arriving) to its 2xx",
                                           buckets=LATENCY_BUCKETS, registry=r)
        self.outbox = Gauge("bridge_outbox_events", "Events stored in the outbox, by state", ["state"],
                            registry=r, multiprocess_mode="livesum")
        self.outbox_degraded = Gauge("bridge_outbox_degraded", "1 while outbox writes fail (events delivered "
                                     "from memory, not yet on disk)", registry=r, multiprocess_mode="max")
        self.outbox_write_failures = Counter("bridge_outbox_write_failures",
                                             "Outbox commits that failed (disk full, read-only, locked)", registry=r)
        self.outbox_queued = Gauge("bridge_outbox_queued_writes", "Outbox writes queued, not yet committed",
                                   registry=r, multiprocess_mode="livesum")
        self.outbox_dropped = Counter("bridge_outbox_dropped_writes",
                                      "Outbox writes dropped because the queue was full (never on disk)", registry=r)
        self._outbox_seen = (0, 0)

    def update_outbox(self, writer: OutboxWriter) -> None:
        """The outbox writer's state, once a second."""
        for name, count in writer.counts().items():
            self.outbox.labels(name).set(count)
        self.outbox_degraded.set(1 if writer.degraded else 0)
        self.outbox_queued.set(writer.queued)
        failures, dropped = writer.write_failures, writer.dropped_ops
        self.outbox_write_failures.inc(max(0, failures - self._outbox_seen[0]))
        self.outbox_dropped.inc(max(0, dropped - self._outbox_seen[1]))
        self._outbox_seen = (failures, dropped)

    def update_call(self, call: Call, final: bool = False) -> None:
        """Add what ``call`` counted since the last update (``final``: the call is over).

        What was already reported is kept on the call itself, so nothing outlives it here.
        """
        seen = call.metrics_seen
        if not isinstance(seen, _Seen):
            seen = call.metrics_seen = _Seen()
        c = call.adapter.counters
        frames, phone_bytes = call.phone_totals(c)
        self.frames.inc(max(0, frames - seen.frames))
        self.phone_bytes.inc(max(0, phone_bytes - seen.phone_bytes))
        seen.frames, seen.phone_bytes = frames, phone_bytes
        stt = call.stt
        if stt is not None:
            replay = stt.replay
            self.gladia_bytes.inc(max(0, replay.sent_bytes - seen.gladia_bytes))
            self.resent.inc(max(0, replay.resent_bytes - seen.resent))
            self.reconnects.inc(max(0, stt.reconnects - seen.reconnects))
            self.finals.inc(max(0, stt.finals - seen.finals))
            seen.gladia_bytes, seen.resent = replay.sent_bytes, replay.resent_bytes
            seen.reconnects, seen.finals = stt.reconnects, stt.finals
            if not final and stt.connections:
                self.ack_lag.observe(replay.unacked / stt.audio_format.bytes_per_second)

    def render(self) -> bytes:
        if self.multiprocess:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return bytes(generate_latest(registry))
        return bytes(generate_latest(self.registry))
