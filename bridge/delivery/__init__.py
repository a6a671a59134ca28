"""Delivery: every call event goes to the bot webhook, retried, in order, once per ``webhook-id``.

The package: :mod:`~bridge.delivery.context` (an event, its ``webhook-id`` and body, what the calls'
queues share), :mod:`~bridge.delivery.queue` (one call's ordered queue and its worker),
:mod:`~bridge.delivery.webhook` (one signed POST and its outcome), :mod:`~bridge.delivery.outbox` (every
event on disk until the bot has it). Here: the app-wide delivery (:class:`Delivery`), which opens one
:class:`~bridge.delivery.queue.CallDelivery` per call (the call's bounded queue and its worker, which
posts and retries), and sends again what the store kept. Each event has a stable ``webhook-id``
(``msg_<call id>_<sequence>``, :mod:`bridge.delivery.context`) kept across retries, so a bot that
drops ids it has seen processes every event exactly once even when a retry crosses a slow 2xx.

Durability: with an :class:`~bridge.delivery.outbox.OutboxWriter`, each event's insert is queued for the
outbox before the event is queued for delivery, and its delete after the 2xx; an event given up is
kept there as dead. Delivery never waits for the disk (see :mod:`bridge.delivery.outbox` for when an event
counts as accepted). One recovery path, :meth:`Delivery.redeliver`, sends stored events again: at
start-up (:meth:`Delivery.recover`: what a previous process left pending, plus a ``call.ended``
with ``end_reason: bridge_restarted`` for calls a crash cut short) and in ``bridge outbox replay``.
With ``BOT_WS_URL`` and no webhook, the outbox keeps each event until the bot acknowledges it on its
socket (:attr:`DeliveryContext.socket_acks`), and what a crash left goes to the bot's socket at
start-up (:func:`bridge.reply.bot_resend.resend_left_over`).

Sensitive events: an event whose payload has ``"sensitive": true`` (``dtmf.gathered`` of a gather the bot
asked to keep private: a PIN, a card number) is marked once, when it is submitted
(:attr:`PendingEvent.sensitive`, one dict lookup), and then reaches the bot and nothing else. It is
posted, signed, in its place among the call's events and retried in memory while the process lives, and
sent on the bot's socket; it is never written to a store (the SQLite outbox or Redis record only that its
sequence number was used, :meth:`EventStore.numbered`), never dead-lettered, and never logged with its
body. Given up (a final 4xx, ``max_age``, the delivery closed or cancelled, the call taken over by
another instance), it is dropped with one ``webhook.sensitive_dropped`` line (type, call id, sequence).
A crash loses it: there is nothing to recover.

What the bot answered to each delivered event reaches ``on_response`` (the reply loop's entry point).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import structlog
from aiohttp import web

from bridge.backoff import Backoff
from bridge.delivery.context import (
    DeliveryContext,
    EventStore,
    PendingEvent,
    ResponseHandler,
    event_body,
    is_sensitive,
    webhook_id,
)
from bridge.delivery.outbox import OutboxWriter, StoredEvent
from bridge.delivery.queue import CallDelivery
from bridge.delivery.webhook import WebhookClient
from bridge.metrics import Metrics
from bridge.settings import WebhookSettings

# The delivery's names, wherever they are defined (the importers of ``bridge.delivery`` use them).
__all__ = [
    "CallDelivery",
    "Delivery",
    "DeliveryContext",
    "EventStore",
    "PendingEvent",
    "ResponseHandler",
    "event_body",
    "is_sensitive",
    "replayed",
    "stored_event",
    "webhook_id",
]

log = structlog.get_logger("bridge.delivery")


class Delivery:
    """The app-wide webhook delivery: opens one :class:`CallDelivery` per call."""

    def __init__(
        self,
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
        client = WebhookClient(settings.url, secret=secret, timeout=settings.timeout) if settings.url else None
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
        left goes to the bot's socket instead: :func:`bridge.reply.bot_resend.resend_left_over` sends
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
        """Wait up to ``timeout`` for every call's queue to drain, then cancel what is left; then close the
        webhook's connections (the delivery may still be used: a later POST opens one, a later ``aclose``
        closes it)."""
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
        if self.context.client is not None:
            await self.context.client.aclose()


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


# The application's key for it (set up by bridge.app's cleanup_ctx).
DELIVERY = web.AppKey("delivery", Delivery)  # the bot's events: webhook and/or bot socket
