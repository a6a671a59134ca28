"""Fleet mode's durable outbox: each call's undelivered events in its Redis stream, so that when an
instance dies another one delivers them, in order, with the same ``webhook-id``.

The same interface as the SQLite outbox writer (:class:`bridge.delivery.outbox.OutboxWriter`), used the same
way by :mod:`bridge.delivery`: every method returns at once and queues a write; one task sends the
writes in order, a batch per round trip (a pipeline of scripts). Each write names the epoch under
which this instance holds the call (:mod:`bridge.fleet.keys`), so an instance that lost the call can
write nothing more for it. Events are delivered from memory without waiting for the write: an event
counts as *accepted* once Redis has it (with ``appendfsync always``, on disk).

* ``add``: ``XADD {call}:out {sequence}-1`` (a write repeated after a reconnect is refused by the ID);
* ``numbered``: a sensitive event (``"sensitive": true``, a gather's PIN) is never written to Redis, not
  even on its way: only the call's ``last_sequence`` advances (:data:`OUT_NUMBERED`). It is delivered from
  this instance's memory; an instance taking the call over cannot deliver it (it is dropped, logged
  without its body, by :mod:`bridge.delivery.queue`), and it never reaches ``{prefix}:dead``;
* ``delivered``: ``XDEL`` it; ``dead``: it moves to ``{prefix}:dead`` with the error;
* the call ending (:meth:`FleetOutbox.over`): ``state ended``, queued after its last events;
* the delivery drained (``call_ended``): the call's lease goes back (:meth:`bridge.fleet.leases.Leases.release`).

:meth:`FleetOutbox.take_over` is the other side: a call whose owner stopped renewing its lease is
taken over by the fleet's sweeper, and its stored events are delivered again from Redis; if the former
owner died mid-call, a ``call.ended`` with ``end_reason: instance_lost`` follows them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from bridge.delivery import PendingEvent, event_body, stored_event
from bridge.fleet.keys import CALL_JSON, CALL_OVER, OUT_ADD, OUT_DONE
from bridge.fleet.leases import Leases, Orphan
from bridge.fleet.scripts import REDIS_FAILED, FleetRedis, LogThrottle, ScriptCall

if TYPE_CHECKING:
    from bridge.delivery import Delivery

log = structlog.get_logger("bridge.fleet")

MAX_BATCH = 200

# KEYS: call. ARGV: epoch, sequence. A sensitive event took ``sequence``: the call's last sequence
# advances (as OUT_ADD's does), so a ``call.ended`` an instance sends after taking the call over is
# numbered after it; the event itself is stored nowhere. -> 1, 0 fenced out.
OUT_NUMBERED = """
if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[1] then return 0 end
local last = tonumber(redis.call('HGET', KEYS[1], 'last_sequence') or '0')
if tonumber(ARGV[2]) > last then redis.call('HSET', KEYS[1], 'last_sequence', ARGV[2]) end
return 1
"""


@dataclass(frozen=True, slots=True)
class _Op:
    call_id: str
    kind: str  # "call", "add", "numbered", "done", "over", "release"
    args: tuple[Any, ...] = ()
    queued_at: float = field(default_factory=time.monotonic)


def _split(webhook_id: str) -> tuple[str, int]:
    """``msg_<call id>_<sequence>`` -> (call id, sequence)."""
    head, _, sequence = webhook_id.rpartition("_")
    return head.removeprefix("msg_"), int(sequence)


class FleetOutbox:
    """See the module docstring. Built by the fleet (:class:`bridge.fleet.fleet.Fleet`) on its Redis and
    its leases; :meth:`start` with the loop running; :meth:`aclose` at shutdown."""

    def __init__(self, redis: FleetRedis, leases: Leases, max_queued: int = 100_000) -> None:
        self.redis = redis
        self.leases = leases
        self.max_queued = max_queued
        self.delivery: Delivery | None = None  # set by the app once the delivery exists
        self._add = redis.register(OUT_ADD)
        self._done = redis.register(OUT_DONE)
        self._numbered = redis.register(OUT_NUMBERED)
        self._call = redis.register(CALL_JSON)
        self._over = redis.register(CALL_OVER)
        self._ops: deque[_Op] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.dropped_ops = 0
        self._drops = LogThrottle()  # one fleet.outbox_full line per 10 s while the queue is full
        self.written = 0
        self.fenced = 0

    # -- what delivery calls (never waits) ------------------------------------------------------------

    def call_started(self, call_id: str, call_json: str) -> None:
        self._queue(_Op(call_id, "call", (call_json,)))

    def add(
        self, webhook_id: str, call_id: str, sequence: int, type_: str, body: str, created: float | None = None
    ) -> None:
        self._queue(_Op(call_id, "add", (sequence, webhook_id, type_, body, created or 0.0)))

    def numbered(self, call_id: str, sequence: int) -> None:
        """A sensitive event took ``sequence``: nothing of it is written, only the call's last sequence."""
        self._queue(_Op(call_id, "numbered", (sequence,)))

    def delivered(self, webhook_id: str) -> None:
        call_id, sequence = _split(webhook_id)
        self._queue(_Op(call_id, "done", (sequence, "")))

    def attempted(self, webhook_id: str, error: str) -> None:
        pass  # attempts are not kept in Redis: the event stays until delivered or given up

    def dead(self, webhook_id: str, error: str) -> None:
        call_id, sequence = _split(webhook_id)
        self._queue(_Op(call_id, "done", (sequence, error[:500] or "given up")))

    def call_ended(self, call_id: str) -> None:
        """The call's delivery is drained: its lease can go back."""
        self._queue(_Op(call_id, "release"))

    def over(self, call_id: str) -> None:
        """The call ended (after its last event was queued): 409 for actions from now on."""
        self._queue(_Op(call_id, "over"))

    def _queue(self, op: _Op) -> None:
        if len(self._ops) >= self.max_queued:
            self.dropped_ops += 1
            if self._drops.due() is not None:
                log.error("fleet.outbox_full", dropped=self.dropped_ops, bound=self.max_queued)
            return
        self._ops.append(op)
        self._wake.set()

    async def drain(self, call_id: str, timeout: float = 5.0) -> None:
        """Wait (bounded) until every write queued for the call is in Redis: before handing it over."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while any(op.call_id == call_id for op in self._ops):
                    await asyncio.sleep(0.01)

    # -- the writer ----------------------------------------------------------------------------------------

    def start(self) -> None:
        """Once :attr:`delivery` is set: write, and deliver the calls the fleet takes over."""
        self._task = asyncio.create_task(self._writer(), name="fleet-outbox")

    @property
    def running(self) -> bool:
        """Started: the fleet's sweeper may take calls over for it to deliver."""
        return self._task is not None

    async def aclose(self, timeout: float) -> None:
        """Write what is queued (bounded), then stop."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while self._ops:
                    await asyncio.sleep(0.02)
        if self._task is not None:
            self._task.cancel()
            (outcome,) = await asyncio.gather(self._task, return_exceptions=True)
            if isinstance(outcome, Exception):  # the writer died: say so, and still stop
                log.error("fleet.loop_failed", loop="fleet-outbox", error=f"{type(outcome).__name__}: {outcome}")
        if self._ops:
            log.warning("fleet.outbox_unwritten", ops=len(self._ops))

    async def _writer(self) -> None:
        while True:
            if not self._ops:
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = self._ready()
            if not batch:
                await asyncio.sleep(0.02)  # the head's lease is being taken
                continue
            try:
                await self._send(batch)
            except REDIS_FAILED as exc:
                self.redis.failed("write the outbox", exc)
                await asyncio.sleep(0.5)  # the batch stays at the head, in order
                continue
            for _ in batch:
                self._ops.popleft()

    def _ready(self) -> list[_Op]:
        """The ops at the head whose calls this instance holds under a known epoch, in order. The head
        waits while its call's lease is being taken (at most ``lease_ttl``); ops of a call this instance
        lost, released or never took are dropped (counted)."""
        batch: list[_Op] = []
        now = time.monotonic()
        while len(batch) < min(MAX_BATCH, len(self._ops)):
            op = self._ops[len(batch)]
            epoch = self.leases.epoch_of(op.call_id)
            waited_too_long = epoch == 0 and now - op.queued_at > self.redis.settings.lease_ttl
            if epoch is None or waited_too_long:
                if batch:
                    break
                self._ops.popleft()
                self.fenced += 1
                log.warning(
                    "fleet.outbox_write_dropped", call_id=op.call_id, kind=op.kind, lease_held=epoch is not None
                )
                continue
            if epoch == 0:
                break
            batch.append(op)
        return batch

    async def _send(self, batch: list[_Op]) -> None:
        keys = self.redis.keys
        calls: list[ScriptCall | None] = []
        for op in batch:
            epoch = self.leases.epoch_of(op.call_id) or 0
            call = keys.call(op.call_id)
            if op.kind == "add":
                calls.append((self._add, [call, keys.outbox(op.call_id)], [epoch, *op.args]))
            elif op.kind == "numbered":
                calls.append((self._numbered, [call], [epoch, *op.args]))
            elif op.kind == "done":
                calls.append((self._done, [call, keys.outbox(op.call_id), keys.dead], [epoch, *op.args]))
            elif op.kind == "call":
                calls.append((self._call, [call], [epoch, op.args[0]]))
            elif op.kind == "over":
                calls.append((self._over, [call], [epoch]))
            else:
                calls.append(None)  # the release happens once what came before it is written
        results = await self.redis.run_scripts(calls)
        for op, result in zip(batch, results, strict=True):
            if op.kind == "release":
                self.leases.release(op.call_id)
            elif result == 0:
                self.fenced += 1
                self.leases.lost(op.call_id)
            else:
                self.written += 1

    # -- a call taken over ---------------------------------------------------------------------------------

    async def take_over(self, orphan: Orphan) -> None:
        """Deliver what a lost instance left of a call: its stored events in order (same webhook-ids),
        then, if it died mid-call, ``call.ended`` with ``end_reason: instance_lost``."""
        assert self.delivery is not None
        keys = self.redis.keys
        try:
            self.redis.counters.redis_ops += 1
            entries: Any = await self.redis.client.xrange(keys.outbox(orphan.call_id), "-", "+")
            events = [stored_event(orphan.call_id, entry_id, fields) for entry_id, fields in entries]
        except REDIS_FAILED as exc:
            self.redis.failed("read a call taken over", exc)
            return  # the lease lapses again and another sweep tries
        if not orphan.ended:
            sequence = orphan.last_sequence + 1
            call = json.loads(orphan.call_json) if orphan.call_json else {"id": orphan.call_id}
            body = event_body("call.ended", sequence, {"call": call, "summary": {"end_reason": "instance_lost"}})
            event = PendingEvent(
                f"msg_{orphan.call_id}_{sequence}",
                body,
                orphan.call_id,
                "call.ended",
                sequence,
                self.delivery.context.clock(),
            )
            self.add(event.webhook_id, orphan.call_id, sequence, event.type, body, event.created)
            self.over(orphan.call_id)
            events.append(event)
        log.info("fleet.delivering_taken_over", call_id=orphan.call_id, events=len(events))
        if events:
            self.delivery.redeliver(events)  # its end releases the call (call_ended)
        else:
            self.call_ended(orphan.call_id)
