"""What every call's delivery shares: an event on its way (:class:`PendingEvent`, its ``webhook-id``
and its JSON body), where accepted events are kept until delivered (:class:`EventStore`), and the
delivery's context (:class:`DeliveryContext`: the webhook client, the retry policy, the store, the
clock). The queues are :mod:`bridge.delivery.queue`, the app-wide delivery :mod:`bridge.delivery`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson

from bridge.backoff import Backoff
from bridge.delivery.webhook import WebhookClient, WebhookEvent, WebhookResponse
from bridge.metrics import Metrics
from bridge.settings import WebhookSettings

ResponseHandler = Callable[["PendingEvent", WebhookResponse], None]


class EventStore(Protocol):
    """Where accepted events are kept until delivered: the SQLite outbox on one machine
    (:class:`~bridge.delivery.outbox.OutboxWriter`), Redis in fleet mode (:class:`bridge.fleet.outbox.FleetOutbox`).
    Every method queues a write and returns at once."""

    def call_started(self, call_id: str, call_json: str) -> None: ...

    def add(
        self, webhook_id: str, call_id: str, sequence: int, type_: str, body: str, created: float | None = None
    ) -> None: ...

    def delivered(self, webhook_id: str) -> None: ...

    def attempted(self, webhook_id: str, error: str) -> None: ...

    def dead(self, webhook_id: str, error: str) -> None: ...

    def numbered(self, call_id: str, sequence: int) -> None:
        """An event the store must not keep (a sensitive one) took ``sequence``: only the call's last
        sequence number advances, so an end recovered after a crash never reuses its ``webhook-id``."""
        ...

    def call_ended(self, call_id: str) -> None: ...


@dataclass(frozen=True, slots=True)
class PendingEvent(WebhookEvent):
    call_id: str
    type: str
    sequence: int
    created: float  # wall-clock seconds (the maximum age survives a restart)
    # The bot asked for it to stay private (a gather's PIN: ``"sensitive": true`` in the payload). It
    # goes to the bot only: never stored, never dead-lettered, never logged with its body.
    sensitive: bool = False


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
    # its socket (:meth:`bridge.delivery.queue.CallDelivery.acknowledged`); the log-only path never releases one.
    socket_acks: bool = False


def webhook_id(call_id: str, sequence: int) -> str:
    """An event's identity: the webhook's ``webhook-id`` header, the outbox's key."""
    return f"msg_{call_id}_{sequence}"


def is_sensitive(payload: dict[str, Any]) -> bool:
    """Whether an event's payload marks it private (``"sensitive": true``, as ``dtmf.gathered`` has it
    for a sensitive gather): one dict lookup, made once when the event is submitted."""
    return payload.get("sensitive") is True


def event_body(type_: str, sequence: int, payload: dict[str, Any]) -> str:
    """An event's JSON body: type, sequence, timestamp and the payload's fields (compact UTF-8, as
    ``json.dumps(..., separators=(",", ":"), ensure_ascii=False)`` writes it; orjson, a final's
    body being built for every utterance)."""
    body = {"type": type_, "sequence": sequence, "timestamp": datetime.now(tz=UTC).isoformat(), **payload}
    return orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS).decode()
