"""Delivery: every call event goes to the bot webhook, retried, in order, once per ``webhook-id``.

One :class:`CallDelivery` per call holds that call's events in a bounded queue and one worker
task posts them one at a time through the :class:`~bridge.webhook.WebhookClient`, so the bot sees
them in ``sequence`` order. Each event has a stable ``webhook-id`` (``msg_<call id>_<sequence>``)
kept across retries, so a bot that drops ids it has seen processes every event exactly once even
when a retry crosses a slow 2xx. Retries: connection errors, timeouts, 408/425/429 and 5xx, with
the one :class:`~bridge.backoff.Backoff` policy, until the event is ``max_age`` seconds old; other
4xx answers are final. With no ``BOT_WEBHOOK_URL``, events are written to the log instead.

Durability: with an :class:`~bridge.outbox.OutboxWriter`, each event's insert is queued for the
outbox before the event is queued for delivery, and its delete after the 2xx; an event given up is
kept there as dead. Delivery never waits for the disk (see :mod:`bridge.outbox` for when an event
counts as accepted). One recovery path, :meth:`Delivery.redeliver`, sends stored events again: at
start-up (:meth:`Delivery.recover`: what a previous process left pending, plus a ``call.ended``
with ``end_reason: bridge_restarted`` for calls a crash cut short) and in ``bridge outbox replay``.
With ``BOT_WS_URL`` and no webhook, the outbox keeps each event until the bot acknowledges it on its
socket (:attr:`DeliveryContext.socket_acks`), and what a crash left goes to the bot's socket at
start-up (:func:`bridge.reply.bot_socket.resend_left_over`).

:meth:`CallDelivery.submit` never awaits, so a slow bot cannot slow the audio path. What the bot
answered to each delivered event reaches ``on_response`` (the reply loop's entry point).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, assert_never

import aiohttp
import orjson
import structlog

from bridge.backoff import Backoff
from bridge.metrics import Metrics
from bridge.outbox import OutboxWriter, StoredEvent
from bridge.settings import WebhookSettings
from bridge.webhook import Delivered, Failed, WebhookClient, WebhookEvent, WebhookResponse

log = structlog.get_logger("bridge.delivery")

ResponseHandler = Callable[["PendingEvent", WebhookResponse], None]

# The events the bot's own actions cause (its failures, its playback): they get a smaller share of a
# call's queue and are refused first, so a flood of them never crowds out the caller's words
# (utterance.final, call.*, transcript.completed, stt.*).
BOT_CAUSED_PREFIXES = ("action.", "actions.", "playback.")
MAX_PENDING_BOT_EVENTS = 1000  # per call, and at most a tenth of webhook.max_pending_events
DROP_LOG_INTERVAL = 10.0  # seconds: queue-full drops are logged as one line per interval with a count


def bot_caused(type_: str) -> bool:
    """Whether an event is caused by the bot's own actions (refused first when a call's queue fills)."""
    return type_.startswith(BOT_CAUSED_PREFIXES)


class EventStore(Protocol):
    """Where accepted events are kept until delivered: the SQLite outbox on one machine
    (:class:`~bridge.outbox.OutboxWriter`), Redis in fleet mode (:class:`bridge.fleet.outbox.FleetOutbox`).
    Every method queues a write and returns at once."""

    def call_started(self, call_id: str, call_json: str) -> None: ...

    def add(
        self, webhook_id: str, call_id: str, sequence: int, type_: str, body: str, created: float | None = None
    ) -> None: ...

    def delivered(self, webhook_id: str) -> None: ...

    def attempted(self, webhook_id: str, error: str) -> None: ...

    def dead(self, webhook_id: str, error: str) -> None: ...

    def call_ended(self, call_id: str) -> None: ...


@dataclass(frozen=True, slots=True)
class PendingEvent(WebhookEvent):
    call_id: str
    type: str
    sequence: int
    created: float  # wall-clock seconds (the maximum age survives a restart)


@dataclass(slots=True)
class DeliveryCounters:
    submitted: int = 0
    delivered: int = 0
    failed: int = 0
    dropped: int = 0


@dataclass(frozen=True, slots=True)
class DeliveryContext:
    """What every call's delivery shares: the client, the policy, the store, the clock."""

    settings: WebhookSettings
    client: WebhookClient | None  # None: no BOT_WEBHOOK_URL, events go to the log
    outbox: EventStore | None
    metrics: Metrics | None
    backoff: Backoff
    clock: Callable[[], float] = time.time  # wall-clock seconds: an event's age
    sleep: Callable[[float], Awaitable[None]] = field(default=asyncio.sleep)
    # Fleet mode: may this instance post the call's events? True yes; None not now (its lease is not
    # confirmed: wait); False never again (another instance took the call over: drop the queue).
    gate: Callable[[str], bool | None] | None = None
    # BOT_WS_URL without BOT_WEBHOOK_URL: the store keeps each event until the bot acknowledges it on
    # its socket (:meth:`CallDelivery.acknowledged`); the log-only path never releases one.
    socket_acks: bool = False


class Delivery:
    """The app-wide webhook delivery: opens one :class:`CallDelivery` per call."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        settings: WebhookSettings,
        outbox: EventStore | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
        gate: Callable[[str], bool | None] | None = None,
        *,
        bot_socket: bool = False,
    ) -> None:
        """``bot_socket``: ``BOT_WS_URL`` is set. Without a webhook, the bot's socket then owns the
        store: events stay in it until the bot acknowledges them there. With a webhook, the webhook
        owns it (a 2xx releases an event) and the socket's acks release nothing."""
        secret = settings.secret.get_secret_value() if settings.secret else None
        client = WebhookClient(http, settings.url, secret=secret, timeout=settings.timeout) if settings.url else None
        socket_acks = client is None and bot_socket and outbox is not None
        self.context = DeliveryContext(
            settings=settings,
            client=client,
            # Events only need to survive a crash when they go to a bot; log-only events are written at once.
            outbox=outbox if client is not None or socket_acks else None,
            metrics=metrics,
            backoff=Backoff(settings.retry_initial_delay, settings.retry_max_delay),
            clock=clock,
            sleep=sleep,
            gate=gate,
            socket_acks=socket_acks,
        )
        self.calls: set[CallDelivery] = set()

    def open(
        self,
        call_id: str,
        call_json: dict[str, Any] | None = None,
        on_response: ResponseHandler | None = None,
        *,
        carry_on: tuple[int, list[PendingEvent]] | None = None,
    ) -> CallDelivery:
        """A delivery queue for one call (create it inside the call's log context). ``carry_on``: the
        call came from another instance (fleet mode): its last sequence, and its events not yet
        delivered, which go first."""
        delivery = CallDelivery(call_id, self.context, on_done=self.calls.discard, on_response=on_response)
        self.calls.add(delivery)
        if self.context.outbox is not None and call_json is not None:
            self.context.outbox.call_started(call_id, json.dumps(call_json))
        if carry_on is not None:
            delivery.carry_on(*carry_on)
        return delivery

    def recover(self) -> int:
        """Start delivering what a previous process left in the outbox; returns the number of events.

        Calls that never recorded their end (the process died mid-call) get a ``call.ended`` with
        ``end_reason: bridge_restarted`` after their last event. Reads the store directly: call it
        at start-up, before the writer thread starts. Socket-only (``context.socket_acks``), what is
        left goes to the bot's socket instead: :func:`bridge.reply.bot_socket.resend_left_over` sends
        :meth:`left_over`.
        """
        if self.context.socket_acks:
            return 0
        calls = self.redeliver(self.left_over())
        count = sum(c.pending for c in calls)
        if count:
            log.info("webhook.recovering", events=count, calls=len(calls))
        return count

    def left_over(self) -> list[PendingEvent]:
        """What a previous process left in the outbox: its pending events, and a ``call.ended`` with
        ``end_reason: bridge_restarted`` (stored as pending too) for each call that never recorded its
        end. Reads the store directly: call it at start-up, before the writer thread starts."""
        outbox = self.context.outbox
        if not isinstance(outbox, OutboxWriter):
            return []  # none, or fleet mode: there the fleet's sweeper takes over what a lost instance left
        store = outbox.outbox
        stored = list(store.events(state="pending"))
        ended: list[PendingEvent] = []
        for call_id, call_json, last_sequence in store.unfinished_calls():
            sequence = last_sequence + 1
            body = event_body(
                "call.ended", sequence, {"call": json.loads(call_json), "summary": {"end_reason": "bridge_restarted"}}
            )
            event = PendingEvent(
                webhook_id(call_id, sequence), body, call_id, "call.ended", sequence, self.context.clock()
            )
            outbox.add(event.webhook_id, call_id, sequence, event.type, body, event.created)
            outbox.call_ended(call_id)
            ended.append(event)
        return [*(_pending(s) for s in stored), *ended]

    def redeliver(self, events: Iterable[PendingEvent]) -> list[CallDelivery]:
        """Deliver stored events again, each call's in sequence order, one worker per call; each
        worker ends when its events are handled (the calls are over)."""
        by_call: dict[str, list[PendingEvent]] = {}
        for event in sorted(events, key=lambda e: (e.call_id, e.sequence)):
            by_call.setdefault(event.call_id, []).append(event)
        calls = []
        for call_id, pending in by_call.items():
            delivery = CallDelivery(call_id, self.context, on_done=self.calls.discard)
            self.calls.add(delivery)
            delivery.resume(pending)
            calls.append(delivery)
        return calls

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


def _pending(stored: StoredEvent, created: float | None = None) -> PendingEvent:
    return PendingEvent(
        stored.webhook_id,
        stored.body,
        stored.call_id,
        stored.type,
        stored.sequence,
        stored.created if created is None else created,
    )


def stored_event(call_id: str, entry_id: str, fields: dict[str, str]) -> PendingEvent:
    """An event as fleet mode stores it: a Redis stream entry ``{sequence}-1`` with ``webhook_id``,
    ``type``, ``body`` and ``created``."""
    return PendingEvent(
        fields["webhook_id"],
        fields["body"],
        call_id,
        fields["type"],
        int(entry_id.split("-")[0]),
        float(fields.get("created") or 0.0),
    )


def replayed(stored: StoredEvent, now: float) -> PendingEvent:
    """A dead event sent again by hand: its age starts over, so ``max_age`` gives it a new chance."""
    return _pending(stored, created=now)


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
        )
        self.counters.submitted += 1
        from_bot = bot_caused(type_)
        if len(self._queue) >= self._ctx.settings.max_pending_events or (
            from_bot and self._bot_queued >= self._bot_bound
        ):
            self._dropped("bot" if from_bot else "caller", type_)
            return None
        if self._ctx.outbox is not None:
            self._ctx.outbox.add(event.webhook_id, self.call_id, event.sequence, type_, event.body, event.created)
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
        self._queue.clear()
        self._bot_queued = 0
        self._closed = True

    async def _deliver(self, event: PendingEvent) -> bool:
        """Post one event until delivered or given up; False when this instance may no longer post
        the call's events (fleet mode: another instance took the call over)."""
        ctx = self._ctx
        if ctx.client is None:
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
                    if ctx.outbox is not None:
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
                    if ctx.outbox is not None:
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
        """Give an event up: counted, logged, and kept in the outbox as dead for ``bridge outbox``."""
        self.counters.failed += 1
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


def webhook_id(call_id: str, sequence: int) -> str:
    """An event's identity: the webhook's ``webhook-id`` header, the outbox's key."""
    return f"msg_{call_id}_{sequence}"


def event_body(type_: str, sequence: int, payload: dict[str, Any]) -> str:
    """An event's JSON body: type, sequence, timestamp and the payload's fields (compact UTF-8, as
    ``json.dumps(..., separators=(",", ":"), ensure_ascii=False)`` writes it; orjson, a final's
    body being built for every utterance)."""
    body = {"type": type_, "sequence": sequence, "timestamp": datetime.now(tz=UTC).isoformat(), **payload}
    return orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS).decode()
