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
from typing import TYPE_CHECKING, Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

from bridge.stats import Meter

if TYPE_CHECKING:
    from bridge.stats import CallStats

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LAG_BUCKETS = (0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class OutboxFigures(Protocol):
    """What the metrics read of the outbox writer (:class:`bridge.delivery.outbox.OutboxWriter`)."""

    @property
    def degraded(self) -> str | None: ...
    @property
    def queued(self) -> int: ...
    @property
    def write_failures(self) -> int: ...
    @property
    def dropped_ops(self) -> int: ...
    def counts(self) -> dict[str, int]: ...


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self.active_calls = Gauge(
            "bridge_active_calls", "Phone streams in progress", registry=r, multiprocess_mode="livesum"
        )
        self.suspended_calls = Gauge(
            "bridge_suspended_calls",
            "Calls whose stream dropped, waiting for a restart",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.calls = Counter(
            "bridge_calls", "Calls ended, by carrier and end reason", ["provider", "end_reason"], registry=r
        )
        self.frames = Counter("bridge_phone_frames", "Audio messages received from carriers", registry=r)
        self.phone_bytes = Counter("bridge_phone_audio_bytes", "Audio bytes received from carriers", registry=r)
        self.gladia_bytes = Counter(
            "bridge_gladia_audio_bytes", "Audio bytes sent to Gladia, resends included", registry=r
        )
        self.reconnects = Counter("bridge_gladia_reconnects", "Gladia session WebSocket reconnections", registry=r)
        self.resent = Counter("bridge_gladia_resent_bytes", "Unacknowledged audio resent after a reconnect", registry=r)
        self.ack_lag = Histogram(
            "bridge_gladia_ack_lag_seconds",
            "Audio sent but not yet acknowledged by Gladia, per call, sampled each second",
            buckets=LAG_BUCKETS,
            registry=r,
        )
        self.loop_lag = Histogram(
            "bridge_event_loop_lag_seconds",
            "How late the event loop ran a 100 ms timer (every call's audio waits as long), sampled ten times a second",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.finals = Counter("bridge_finals", "Final utterances received from Gladia", registry=r)
        self.webhook = Counter("bridge_webhook_deliveries", "Webhook attempts by outcome", ["outcome"], registry=r)
        self.webhook_latency = Histogram(
            "bridge_webhook_request_seconds",
            "Duration of successful webhook POSTs",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.event_to_delivery = Histogram(
            "bridge_event_to_delivery_seconds",
            "From an event's creation (e.g. a final arriving) to its 2xx",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.outbox = Gauge(
            "bridge_outbox_events",
            "Events stored in the outbox, by state",
            ["state"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.outbox_degraded = Gauge(
            "bridge_outbox_degraded",
            "1 while outbox writes fail (events delivered from memory, not yet on disk)",
            registry=r,
            multiprocess_mode="max",
        )
        self.outbox_write_failures = Counter(
            "bridge_outbox_write_failures", "Outbox commits that failed (disk full, read-only, locked)", registry=r
        )
        self.outbox_queued = Gauge(
            "bridge_outbox_queued_writes",
            "Outbox writes queued, not yet committed",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.outbox_dropped = Counter(
            "bridge_outbox_dropped_writes",
            "Outbox writes dropped because the queue was full (never on disk)",
            registry=r,
        )
        self.reply_actions = Counter("bridge_reply_actions", "Bot actions accepted (say, play, mark...)", registry=r)
        self.reply_failed = Counter("bridge_reply_actions_failed", "action.failed events sent to bots", registry=r)
        self.reply_played = Counter(
            "bridge_reply_played_seconds", "Audio the callers heard from their bots", registry=r
        )
        self.reply_interrupted = Counter(
            "bridge_reply_interrupted", "Bot audio interrupted (barge-in, stop, replace, hang-up)", registry=r
        )
        self.reply_underruns = Counter(
            "bridge_reply_underruns", "Gaps over 40 ms inside a bot's reply (its audio came late)", registry=r
        )
        self.barge_in_resumed = Counter(
            "bridge_barge_in_resumed", "False interruptions: bot audio paused by caller noise, then resumed", registry=r
        )
        self.recording_degraded = Gauge(
            "bridge_recording_degraded",
            "1 while call recordings are degraded (disk full or slow: audio dropped, calls unaffected)",
            registry=r,
            multiprocess_mode="max",
        )
        self.recordings_open = Gauge(
            "bridge_recordings_open", "Call recordings being written", registry=r, multiprocess_mode="livesum"
        )
        self.recording_dropped = Counter(
            "bridge_recording_dropped_bytes",
            "Recording audio that never reached a file (queue full, disk errors)",
            registry=r,
        )
        self._recording_dropped_seen = 0
        self._outbox_seen = (0, 0)
        self._seen: dict[str, Meter] = {}  # what was last reported for each live call
        self._pending = [0] * len(Meter._fields)  # gathered by update(), applied by flush()
        self._webhook_children: dict[str, Counter] = {}
        counter_of: dict[str, tuple[Counter, float]] = {
            "frames": (self.frames, 1),
            "phone_bytes": (self.phone_bytes, 1),
            "gladia_bytes": (self.gladia_bytes, 1),
            "resent": (self.resent, 1),
            "reconnects": (self.reconnects, 1),
            "finals": (self.finals, 1),
            "reply_actions": (self.reply_actions, 1),
            "reply_failed": (self.reply_failed, 1),
            "reply_played_ms": (self.reply_played, 1000),
            "reply_interrupted": (self.reply_interrupted, 1),
            "reply_underruns": (self.reply_underruns, 1),
            "barge_in_resumed": (self.barge_in_resumed, 1),
        }
        self._counters = [counter_of[name] for name in Meter._fields]  # in the meter's order

    def webhook_outcome(self, outcome: str) -> Counter:
        """``bridge_webhook_deliveries{outcome}``'s child, looked up once per outcome (a POST per final)."""
        child = self._webhook_children.get(outcome)
        if child is None:
            child = self._webhook_children[outcome] = self.webhook.labels(outcome)
        return child

    def update_recordings(self, degraded: bool, open_recordings: int, dropped_bytes: int) -> None:
        """The recording writer's state, once a second (bridge.http.recordings)."""
        self.recording_degraded.set(1 if degraded else 0)
        self.recordings_open.set(open_recordings)
        self.recording_dropped.inc(max(0, dropped_bytes - self._recording_dropped_seen))
        self._recording_dropped_seen = dropped_bytes

    def update_outbox(self, writer: OutboxFigures) -> None:
        """The outbox writer's state, once a second."""
        for name, count in writer.counts().items():
            self.outbox.labels(name).set(count)
        self.outbox_degraded.set(1 if writer.degraded else 0)
        self.outbox_queued.set(writer.queued)
        failures, dropped = writer.write_failures, writer.dropped_ops
        self.outbox_write_failures.inc(max(0, failures - self._outbox_seen[0]))
        self.outbox_dropped.inc(max(0, dropped - self._outbox_seen[1]))
        self._outbox_seen = (failures, dropped)

    def update(self, call_id: str, meter: Meter, ack_lag: float | None = None, final: bool = False) -> None:
        """Add what the call counted since the last update (``final``: the call is over, and what was
        reported for it is forgotten). The counters move at :meth:`flush`, once for every call updated
        since (a counter update costs a lock, and with workers a shared-memory write: once a second per
        metric, not per call)."""
        seen = self._seen.pop(call_id, None) if final else self._seen.get(call_id)
        if not final:
            self._seen[call_id] = meter
        pending = self._pending
        if seen is None:
            for i, now in enumerate(meter):
                pending[i] += now
        else:
            for i, (now, before) in enumerate(zip(meter, seen, strict=True)):
                if now > before:
                    pending[i] += now - before
        if ack_lag is not None:
            self.ack_lag.observe(ack_lag)

    def flush(self) -> None:
        """Move the counters by what :meth:`update` gathered."""
        pending, self._pending = self._pending, [0] * len(Meter._fields)
        for (counter, scale), delta in zip(self._counters, pending, strict=True):
            if delta:
                counter.inc(delta / scale)

    def call_ended(self, call_id: str, stats: CallStats) -> None:
        """A call's last figures, and one count under its provider and end reason."""
        self.update(call_id, Meter.of(stats), final=True)
        self.flush()
        self.calls.labels(stats.carrier, stats.end_reason or "unknown").inc()

    def render(self) -> bytes:
        if self.multiprocess:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return bytes(generate_latest(registry))
        return bytes(generate_latest(self.registry))


# The application's key for it (set up by bridge.app's cleanup_ctx).
METRICS = web.AppKey("metrics", Metrics)  # the bridge's counters and gauges (/metrics)
