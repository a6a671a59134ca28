"""Delivery: every call event goes to the bot webhook, signed, retried, in order, exactly once.

One :class:`CallDelivery` per call holds that call's events in a bounded queue and one worker
task posts them one at a time, so the bot sees them in ``sequence`` order. Each event has a
stable ``webhook-id`` (``msg_<call id>_<sequence>``) kept across retries, so a bot that drops
ids it has seen processes every event exactly once even when a retry crosses a slow 2xx.

Signing follows Standard Webhooks (``webhook-id``, ``webhook-timestamp``, ``webhook-signature:
v1,<base64 HMAC-SHA256 of "id.timestamp.body">``) with the ``standardwebhooks`` package. Retries:
connection errors, timeouts, 408/425/429 and 5xx, with doubling backoff, until the event is
``max_age`` seconds old; other 4xx answers are final. With no ``BOT_WEBHOOK_URL``, events are
written to the log instead.

Durability: with an :class:`~bridge.outbox.OutboxWriter`, each event's insert is queued for the
outbox before the event is queued for delivery, and its delete after the 2xx; an event given up is
kept there as dead. Delivery never waits for the disk (see :mod:`bridge.outbox` for when an event
counts as accepted). :meth:`Delivery.recover` (at start-up) sends what a previous process left
pending, and ends calls that a crash cut short with a ``call.ended`` whose ``end_reason`` is
``bridge_restarted``.

:meth:`CallDelivery.submit` never awaits, so a slow bot cannot slow the audio path.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
import structlog
from standardwebhooks.webhooks import Webhook

from bridge.errors import DeliveryError, http_status_retryable
from bridge.metrics import Metrics
from bridge.outbox import OutboxWriter
from bridge.settings import WebhookSettings

log = structlog.get_logger("bridge.delivery")


@dataclass(slots=True)
class PendingEvent:
    webhook_id: str
    type: str
    sequence: int
    body: str
    created: float  # wall-clock seconds (the maximum age survives a restart)


@dataclass(slots=True)
class DeliveryCounters:
    submitted: int = 0
    delivered: int = 0
    failed: int = 0
    dropped: int = 0
    attempts: int = 0
    by_outcome: dict[str, int] = field(default_factory=dict)


class Delivery:
    """The app-wide webhook client: opens one :class:`CallDelivery` per call."""

    def __init__(self, http: aiohttp.ClientSession, settings: WebhookSettings, outbox: OutboxWriter | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep, metrics: Metrics | None = None) -> None:
        self.metrics = metrics
        self.http = http
        self.settings = settings
        # Events only need to survive a crash when they go to a bot; log-only events are written at once.
        self.outbox = outbox if settings.url else None
        self.sleep = sleep
        self.dead_lettered = 0
        secret = settings.secret.get_secret_value() if settings.secret else None
        self.signer = Webhook(secret) if secret else None
        self.calls: set[CallDelivery] = set()

    def open(self, call_id: str, call_json: dict[str, Any] | None = None) -> CallDelivery:
        """A delivery queue for one call (create it inside the call's log context)."""
        delivery = CallDelivery(self, call_id)
        self.calls.add(delivery)
        if self.outbox is not None and call_json is not None:
            self.outbox.call_started(call_id, json.dumps(call_json))
        return delivery

    def recover(self) -> int:
        """Start delivering what a previous process left in the outbox; returns the number of events.

        Calls that never recorded their end (the process died mid-call) get a ``call.ended`` with
        ``end_reason: bridge_restarted`` after their last event. Reads the store directly: call it
        at start-up, before the writer thread starts.
        """
        if self.outbox is None:
            return 0
        store = self.outbox.outbox
        pending: dict[str, list[PendingEvent]] = {}
        for stored in store.events(state="pending"):
            pending.setdefault(stored.call_id, []).append(PendingEvent(
                stored.webhook_id, stored.type, stored.sequence, stored.body, stored.created))
        for call_id, call_json, last_sequence in store.unfinished_calls():
            sequence = last_sequence + 1
            body = _body("call.ended", sequence, {"call": json.loads(call_json),
                                                  "summary": {"end_reason": "bridge_restarted"}})
            ended = PendingEvent(f"msg_{call_id}_{sequence}", "call.ended", sequence, body, time.time())
            self.outbox.add(ended.webhook_id, call_id, sequence, "call.ended", body, ended.created)
            self.outbox.call_ended(call_id)
            pending.setdefault(call_id, []).append(ended)
        for call_id, events in pending.items():
            delivery = CallDelivery(self, call_id)
            self.calls.add(delivery)
            delivery.resume(events)
        count = sum(len(e) for e in pending.values())
        if count:
            log.info("webhook.recovering", events=count, calls=len(pending))
        return count

    def headers(self, event: PendingEvent) -> dict[str, str]:
        now = datetime.now(tz=UTC)
        headers = {
            "content-type": "application/json",
            "user-agent": "telephony-gladia-bridge",
            "webhook-id": event.webhook_id,
            "webhook-timestamp": str(int(now.timestamp())),
        }
        if self.signer is not None:
            headers["webhook-signature"] = self.signer.sign(event.webhook_id, now, event.body)
        return headers

    async def aclose(self, timeout: float) -> None:
        """Wait up to ``timeout`` for every call's queue to drain, then cancel what is left."""
        calls = list(self.calls)
        for call in calls:
            call.close()
        tasks = [c.task for c in calls if c.task is not None and not c.task.done()]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout)
            for task in pending:
                task.cancel()
            for task in pending:
                with contextlib.suppress(asyncio.CancelledError):
                    await task


class CallDelivery:
    """One call's ordered event queue and its worker."""

    def __init__(self, owner: Delivery, call_id: str) -> None:
        self._owner = owner
        self.call_id = call_id
        self._queue: deque[PendingEvent] = deque()
        self._wake = asyncio.Event()
        self._closed = False
        self._sequence = 0
        self.counters = DeliveryCounters()
        self.task: asyncio.Task[None] | None = None
        self.last_latency: float | None = None

    def submit(self, type_: str, payload: dict[str, Any]) -> PendingEvent | None:
        """Store and queue an event; returns it, or None when the queue is full (counted and logged)."""
        self._sequence += 1
        event = PendingEvent(
            webhook_id=f"msg_{self.call_id}_{self._sequence}",
            type=type_,
            sequence=self._sequence,
            body=_body(type_, self._sequence, payload),
            created=time.time(),
        )
        self.counters.submitted += 1
        if len(self._queue) >= self._owner.settings.max_pending_events:
            self.counters.dropped += 1
            log.error("webhook.queue_full", type=type_, sequence=event.sequence,
                      bound=self._owner.settings.max_pending_events)
            return None
        outbox = self._owner.outbox
        if outbox is not None:
            outbox.add(event.webhook_id, self.call_id, event.sequence, type_, event.body, event.created)
        self._queue.append(event)
        self._start()
        return event

    def resume(self, events: list[PendingEvent]) -> None:
        """Deliver events recovered from the outbox, then stop (the call is over)."""
        self._queue.extend(events)
        self._sequence = max((e.sequence for e in events), default=0)
        self._closed = True
        self._start()

    def _start(self) -> None:
        if self.task is None:
            self.task = asyncio.create_task(self._worker(), name=f"delivery-{self.call_id}")
        self._wake.set()

    def close(self) -> None:
        """No more events will come; the worker exits once the queue is drained."""
        self._closed = True
        self._wake.set()
        if self.task is None:
            self._owner.calls.discard(self)
            if self._owner.outbox is not None:
                self._owner.outbox.call_ended(self.call_id)

    async def wait(self, timeout: float | None = None) -> bool:
        """Wait until the queue is drained (after :meth:`close`); True when everything was handled."""
        if self.task is None:
            return True
        done, _ = await asyncio.wait({self.task}, timeout=timeout)
        return bool(done)

    @property
    def pending(self) -> int:
        return len(self._queue)

    async def _worker(self) -> None:
        try:
            while True:
                if not self._queue:
                    if self._closed:
                        return
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                event = self._queue[0]
                await self._deliver(event)
                self._queue.popleft()
        finally:
            self._owner.calls.discard(self)
            if self._closed and not self._queue and self._owner.outbox is not None:
                self._owner.outbox.call_ended(self.call_id)

    async def _deliver(self, event: PendingEvent) -> None:
        settings = self._owner.settings
        if not settings.url:
            log.info("bot.event", webhook_id=event.webhook_id, type=event.type, body=json.loads(event.body))
            self.counters.delivered += 1
            return
        attempt = 0
        while True:
            attempt += 1
            self.counters.attempts += 1
            started = time.monotonic()
            try:
                await self._post(event)
            except DeliveryError as exc:
                outcome = f"http_{exc.status}" if exc.status else "error"
                self.counters.by_outcome[outcome] = self.counters.by_outcome.get(outcome, 0) + 1
                if self._owner.metrics is not None:
                    self._owner.metrics.webhook.labels(outcome).inc()
                age = time.time() - event.created
                if not exc.retryable or age >= settings.max_age:
                    self._dead(event, attempt, age, exc)
                    return
                if self._owner.outbox is not None:
                    self._owner.outbox.attempted(event.webhook_id, str(exc))
                delay = min(settings.retry_initial_delay * 2 ** (attempt - 1), settings.retry_max_delay)
                delay = min(delay * random.uniform(0.8, 1.2), max(0.0, settings.max_age - age))
                log.warning("webhook.retry", webhook_id=event.webhook_id, attempt=attempt,
                            status=exc.status, error=str(exc), delay=round(delay, 3))
                await self._owner.sleep(delay)
                continue
            self.counters.by_outcome["delivered"] = self.counters.by_outcome.get("delivered", 0) + 1
            self.counters.delivered += 1
            metrics = self._owner.metrics
            if metrics is not None:
                metrics.webhook.labels("delivered").inc()
                metrics.webhook_latency.observe(time.monotonic() - started)
                metrics.event_to_delivery.observe(max(0.0, time.time() - event.created))
            if self._owner.outbox is not None:
                self._owner.outbox.delivered(event.webhook_id)
            self.last_latency = time.monotonic() - started
            if attempt > 1:
                log.info("webhook.delivered", webhook_id=event.webhook_id, attempts=attempt)
            return

    def _dead(self, event: PendingEvent, attempts: int, age: float, exc: DeliveryError) -> None:
        """Give an event up: counted, logged, and kept in the outbox as dead for ``bridge outbox``."""
        self.counters.failed += 1
        self._owner.dead_lettered += 1
        if self._owner.metrics is not None:
            self._owner.metrics.webhook.labels("dead_lettered").inc()
        if self._owner.outbox is not None:
            self._owner.outbox.dead(event.webhook_id, str(exc))
        log.error("webhook.dead_lettered", webhook_id=event.webhook_id, type=event.type, status=exc.status,
                  retryable=exc.retryable, attempts=attempts, age=round(age, 1), error=str(exc))

    async def _post(self, event: PendingEvent) -> None:
        settings = self._owner.settings
        try:
            async with self._owner.http.post(
                settings.url, data=event.body.encode(), headers=self._owner.headers(event),
                timeout=aiohttp.ClientTimeout(total=settings.timeout), allow_redirects=False,
            ) as resp:
                if 200 <= resp.status < 300:
                    return
                if 300 <= resp.status < 400:
                    # Never followed: a 301/302 would turn the POST into a body-less GET counted as
                    # delivered, a 307/308 would send the signed transcript to another host.
                    location = resp.headers.get("Location", "")[:200]
                    raise DeliveryError(f"webhook answered {resp.status} (redirect to {location!r} not followed: "
                                        "set BOT_WEBHOOK_URL to the final URL)", retryable=False,
                                        status=resp.status)
                raise DeliveryError(f"webhook answered {resp.status}",
                                    retryable=http_status_retryable(resp.status), status=resp.status)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise DeliveryError(f"{type(exc).__name__}: {exc}"[:200], retryable=True) from exc


def _body(type_: str, sequence: int, payload: dict[str, Any]) -> str:
    return json.dumps({"type": type_, "sequence": sequence, "timestamp": datetime.now(tz=UTC).isoformat(),
                       **payload}, separators=(",", ":"), ensure_ascii=False)
