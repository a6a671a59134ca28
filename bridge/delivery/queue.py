"""One call's delivery: its events in a bounded queue, and one worker task that posts them one at a
time through the :class:`~bridge.delivery.webhook.WebhookClient`, so the bot sees them in ``sequence`` order.

Each event keeps its ``webhook-id`` across retries. Retries: connection errors, timeouts, 408/425/429
and 5xx, with the context's :class:`~bridge.backoff.Backoff` policy, until the event is ``max_age``
seconds old; other 4xx answers are final and the event is kept in the store as dead. With no
``BOT_WEBHOOK_URL``, events are written to the log instead. When the queue is full, events are
refused (the bot's own first: :func:`bot_caused`), counted, and logged at most once per interval.
:meth:`CallDelivery.submit` never awaits, so a slow bot cannot slow the audio path.

A sensitive event (:attr:`~bridge.delivery.context.PendingEvent.sensitive`) is posted and retried like
the others, in its place, but lives in memory only: the store records just its sequence number, and
when it is given up (a final 4xx, ``max_age``, a full queue, the queue cancelled, the call taken over) one
``webhook.sensitive_dropped`` line names its type, call and sequence, never its body.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, assert_never

import structlog

from bridge.delivery.context import (
    DeliveryContext,
    PendingEvent,
    ResponseHandler,
    event_body,
    is_sensitive,
    webhook_id,
)
from bridge.delivery.webhook import Delivered, Failed, WebhookResponse

log = structlog.get_logger("bridge.delivery")

# The events the bot's own actions cause (its failures, its playback): they get a smaller share of a
# call's queue and are refused first, so a flood of them never crowds out the caller's words
# (utterance.final, call.*, transcript.completed, stt.*).
BOT_CAUSED_PREFIXES = ("action.", "actions.", "playback.")
MAX_PENDING_BOT_EVENTS = 1000  # per call, and at most a tenth of webhook.max_pending_events
DROP_LOG_INTERVAL = 10.0  # seconds: queue-full drops are logged as one line per interval with a count


def bot_caused(type_: str) -> bool:
    """Whether an event is caused by the bot's own actions (refused first when a call's queue fills)."""
    return type_.startswith(BOT_CAUSED_PREFIXES)


@dataclass(slots=True)
class DeliveryCounters:
    """What one call's delivery counts, for the call's summary (:mod:`bridge.call.figures`)."""

    delivered: int = 0
    failed: int = 0
    dropped: int = 0


class CallDelivery:
    """One call's ordered event queue and its worker."""

    def __init__(
        self,
        call_id: str,
        context: DeliveryContext,
        *,
        on_done: Callable[[CallDelivery], None],
        on_response: ResponseHandler | None = None,
    ) -> None:
        self.call_id = call_id
        self._ctx = context
        self._on_done = on_done
        self._on_response = on_response
        self._queue: deque[PendingEvent] = deque()
        self._wake = asyncio.Event()
        self._closed = False
        self._sequence = 0
        self._bot_queued = 0  # bot-caused events in the queue
        max_pending = context.settings.max_pending_events
        self._bot_bound = max(1, min(MAX_PENDING_BOT_EVENTS, max_pending // 10))
        self._drops_unlogged: dict[str, int] = {}  # kind -> drops since the last queue_full line
        self._drops_logged_at: float | None = None  # monotonic time of the last queue_full line
        self.counters = DeliveryCounters()
        self.task: asyncio.Task[None] | None = None

    def respond_to(self, on_response: ResponseHandler) -> None:
        """Where the bot's answers go from now on (an outbound call's queue opens before its call exists)."""
        self._on_response = on_response

    def submit(self, type_: str, payload: dict[str, Any]) -> PendingEvent | None:
        """Store and queue an event; returns it, or None when the queue is full (counted and logged)."""
        self._sequence += 1
        event = PendingEvent(
            webhook_id(self.call_id, self._sequence),
            event_body(type_, self._sequence, payload),
            self.call_id,
            type_,
            self._sequence,
            self._ctx.clock(),
            is_sensitive(payload),
        )
        from_bot = bot_caused(type_)
        if len(self._queue) >= self._ctx.settings.max_pending_events or (
            from_bot and self._bot_queued >= self._bot_bound
        ):
            self._dropped("bot" if from_bot else "caller", type_)
            if event.sensitive:
                self._sensitive_dropped(event, "the call's queue is full")
            return None
        outbox = self._ctx.outbox
        if outbox is not None and event.sensitive:  # in memory only: the store keeps its number, never its body
            outbox.numbered(self.call_id, event.sequence)
        elif outbox is not None:
            outbox.add(event.webhook_id, self.call_id, event.sequence, type_, event.body, event.created)
        self._queue.append(event)
        self._bot_queued += from_bot
        self._start()
        return event

    def _dropped(self, kind: str, type_: str) -> None:
        """A full queue refused an event: counted; logged as one line when drops start and then at
        most one line per DROP_LOG_INTERVAL with the count since the last (and the rest at close)."""
        self.counters.dropped += 1
        if self._ctx.metrics is not None:
            self._ctx.metrics.webhook.labels("queue_full").inc()
        self._drops_unlogged[kind] = self._drops_unlogged.get(kind, 0) + 1
        now = time.monotonic()
        if self._drops_logged_at is None or now - self._drops_logged_at >= DROP_LOG_INTERVAL:
            self._drops_logged_at = now
            self._log_drops(last_type=type_)

    def _log_drops(self, **fields: Any) -> None:
        if not self._drops_unlogged:
            return
        log.error(
            "webhook.queue_full",
            dropped=dict(self._drops_unlogged),  # by kind: "caller" (the caller's events) or "bot"
            dropped_total=self.counters.dropped,
            bound=self._ctx.settings.max_pending_events,
            bot_bound=self._bot_bound,
            **fields,
        )
        self._drops_unlogged.clear()

    def _popped(self) -> None:
        event = self._queue.popleft()
        self._bot_queued -= bot_caused(event.type)

    def carry_on(self, last_sequence: int, events: list[PendingEvent]) -> None:
        """The call carries on from another instance: number from ``last_sequence`` on, and deliver
        its stored ``events`` (same webhook-ids) first."""
        self._sequence = max([last_sequence, *(e.sequence for e in events)])
        self._queue.extend(sorted(events, key=lambda e: e.sequence))
        self._bot_queued += sum(bot_caused(e.type) for e in events)
        if events:
            self._start()

    def resume(self, events: list[PendingEvent]) -> None:
        """Deliver events recovered from the outbox, then stop (the call is over)."""
        self._queue.extend(events)
        self._bot_queued += sum(bot_caused(e.type) for e in events)
        self._sequence = max((e.sequence for e in events), default=0)
        self._closed = True
        self._start()

    def acknowledged(self, sequence: int) -> None:
        """The bot acknowledged event ``sequence`` on its socket: socket-only, the store forgets it
        (with a webhook, only the webhook's 2xx does)."""
        if self._ctx.socket_acks and self._ctx.outbox is not None:
            self._ctx.outbox.delivered(webhook_id(self.call_id, sequence))

    def _start(self) -> None:
        if self.task is None:
            self.task = asyncio.create_task(self._worker(), name=f"delivery-{self.call_id}")
        self._wake.set()

    def close(self) -> None:
        """No more events will come; the worker exits once the queue is drained."""
        self._closed = True
        self._wake.set()
        if self.task is None:
            self._finished()

    def _finished(self) -> None:
        for event in self._queue:  # the worker was cancelled (shutdown): what it held in memory only is lost
            if event.sensitive:
                self._sensitive_dropped(event, "the delivery was closed before the bot had it")
        self._log_drops(final=True)
        self._on_done(self)
        if self._closed and not self._queue and self._ctx.outbox is not None:
            self._ctx.outbox.call_ended(self.call_id)

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
                try:
                    delivered_here = await self._deliver(self._queue[0])
                except Exception:  # a bug: this event is lost, not the call's later ones
                    log.exception("webhook.delivery_crashed", webhook_id=self._queue[0].webhook_id)
                    self.counters.failed += 1
                    if self._queue[0].sensitive:
                        self._sensitive_dropped(self._queue[0], "a bug while delivering it")
                    delivered_here = True
                if not delivered_here:
                    self._abandon()
                    return
                self._popped()
        finally:
            self._finished()

    async def _may_post(self) -> bool:
        """Fleet mode: wait while this instance's hold on the call is unconfirmed; False once lost."""
        assert self._ctx.gate is not None
        while True:
            verdict = self._ctx.gate(self.call_id)
            if verdict is not None:
                return verdict
            await asyncio.sleep(0.01)

    def _abandon(self) -> None:
        """Another instance holds the call now and delivers its events: this one drops its queue."""
        self.counters.dropped += len(self._queue)
        log.warning("webhook.call_taken_over", events=len(self._queue), detail="another instance delivers them")
        for event in self._queue:  # never stored: the instance that has the call now cannot deliver them
            if event.sensitive:
                self._sensitive_dropped(event, "another instance took the call over")
        self._queue.clear()
        self._bot_queued = 0
        self._closed = True

    async def _deliver(self, event: PendingEvent) -> bool:
        """Post one event until delivered or given up; False when this instance may no longer post
        the call's events (fleet mode: another instance took the call over)."""
        ctx = self._ctx
        if ctx.client is None:
            if event.sensitive:  # its body goes to the bot's socket (if any), never to the log
                log.info("bot.event", webhook_id=event.webhook_id, type=event.type, sensitive=True)
            else:
                log.info("bot.event", webhook_id=event.webhook_id, type=event.type, body=json.loads(event.body))
            self.counters.delivered += 1
            return True
        attempt = 0
        while True:
            if ctx.gate is not None and not await self._may_post():
                return False
            attempt += 1
            outcome = await ctx.client.post(event)
            if ctx.metrics is not None:
                ctx.metrics.webhook_outcome(outcome.outcome).inc()
            match outcome:
                case Delivered(response=response, latency=latency):
                    self.counters.delivered += 1
                    if ctx.metrics is not None:
                        ctx.metrics.webhook_latency.observe(latency)
                        ctx.metrics.event_to_delivery.observe(max(0.0, ctx.clock() - event.created))
                    if ctx.outbox is not None and not event.sensitive:
                        ctx.outbox.delivered(event.webhook_id)
                    if attempt > 1:
                        log.info("webhook.delivered", webhook_id=event.webhook_id, attempts=attempt)
                    if self._on_response is not None:
                        self._answered(event, response)
                    return True
                case Failed():
                    age = ctx.clock() - event.created
                    if not outcome.retryable or age >= ctx.settings.max_age:
                        self._dead(event, attempt, age, outcome)
                        return True
                    if ctx.outbox is not None and not event.sensitive:
                        ctx.outbox.attempted(event.webhook_id, outcome.error)
                    delay = min(ctx.backoff.delay(attempt), max(0.0, ctx.settings.max_age - age))
                    log.warning(
                        "webhook.retry",
                        webhook_id=event.webhook_id,
                        attempt=attempt,
                        status=outcome.status,
                        error=outcome.error,
                        delay=round(delay, 3),
                    )
                    await ctx.sleep(delay)
                case _:
                    assert_never(outcome)

    def _answered(self, event: PendingEvent, response: WebhookResponse) -> None:
        """Hand the bot's answer on. Whatever that raises (a bug) is logged with its traceback and
        delivery goes on: one bad answer must not stop the call's later events."""
        assert self._on_response is not None
        try:
            self._on_response(event, response)
        except Exception:
            log.exception("webhook.answer_handler_failed", webhook_id=event.webhook_id, type=event.type)

    def _dead(self, event: PendingEvent, attempts: int, age: float, failure: Failed) -> None:
        """Give an event up: counted, logged, and kept in the outbox as dead for ``bridge outbox``
        (a sensitive one is not kept: dropped, and logged without its body)."""
        self.counters.failed += 1
        if event.sensitive:
            self._sensitive_dropped(
                event, "given up", status=failure.status, attempts=attempts, age=round(age, 1), error=failure.error
            )
            return
        if self._ctx.metrics is not None:
            self._ctx.metrics.webhook.labels("dead_lettered").inc()
        if self._ctx.outbox is not None:
            self._ctx.outbox.dead(event.webhook_id, failure.error)
        log.error(
            "webhook.dead_lettered",
            webhook_id=event.webhook_id,
            type=event.type,
            status=failure.status,
            retryable=failure.retryable,
            attempts=attempts,
            age=round(age, 1),
            error=failure.error,
        )

    def _sensitive_dropped(self, event: PendingEvent, reason: str, **fields: Any) -> None:
        """A sensitive event will never reach the bot: one line (type, call, sequence; never the body),
        counted; it is in no store, so nothing is dead-lettered."""
        if self._ctx.metrics is not None:
            self._ctx.metrics.webhook.labels("sensitive_dropped").inc()
        log.error(
            "webhook.sensitive_dropped",
            call_id=self.call_id,
            type=event.type,
            sequence=event.sequence,
            webhook_id=event.webhook_id,
            reason=reason,
            detail="a sensitive event is never stored nor dead-lettered",
            **fields,
        )
