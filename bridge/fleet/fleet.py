"""One bridge instance in a fleet: the parts of fleet mode put together, behind the few methods the
rest of the bridge uses (the I/O shell over :mod:`bridge.fleet.keys`).

==============================  =====================================================================
:mod:`bridge.fleet.scripts`     the Redis client, the Lua scripts run on it, counters, the error log
:mod:`bridge.fleet.leases`      the calls this instance owns: leases, heartbeat, renewals, the sweep
:mod:`bridge.fleet.actions`     bot actions: routed into a call's stream, read and applied by its owner
:mod:`bridge.fleet.handover`    restarted streams: a call handed over, and adopted by another instance
:mod:`bridge.fleet.outbox`      the calls' undelivered events in Redis (when a webhook is configured)
:mod:`bridge.fleet.transfers`   transfers: the transfer desk, the carrier's word routed to the owner
==============================  =====================================================================

A call reaches the fleet as itself (:class:`bridge.call.services.FleetCall`, :meth:`Fleet.own`): the
fleet applies its actions, writes its Gladia session state for a successor, hands it over, or ends it
here when another instance took it over.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
import structlog

from bridge.fleet.actions import ActionStreams
from bridge.fleet.handover import Adopted, HandOvers
from bridge.fleet.leases import Leases, Orphan, Owned, TakeOver
from bridge.fleet.outbox import FleetOutbox
from bridge.fleet.scripts import REDIS_FAILED, FleetCounters, FleetRedis
from bridge.fleet.transfers import FleetDesk, TransferOutcomes
from bridge.reply.actions import Action
from bridge.settings import FleetSettings

if TYPE_CHECKING:
    from bridge.call.services import FleetCall

log = structlog.get_logger("bridge.fleet")


def default_instance_id(worker: int | None = None) -> str:
    """Host name + pid: unique per process, readable in Redis and in logs."""
    return f"{socket.gethostname()}-{os.getpid()}" + (f"-w{worker}" if worker is not None else "")


class Fleet:
    """This instance's place in the fleet. :meth:`start` once the loop runs; :meth:`close` at shutdown.

    ``outbox_max_queued``: keep the calls' undelivered events in Redis (:attr:`outbox`, a
    :class:`FleetOutbox` writing at most that many queued writes; the app starts it once its delivery
    exists), so that another instance delivers them if this one dies, and a call's lease goes back once
    its events are out. None: no outbox (no webhook), a call's lease goes back when it ends."""

    def __init__(
        self,
        settings: FleetSettings,
        instance_id: str,
        client: aioredis.Redis | None = None,
        outbox_max_queued: int | None = None,
    ) -> None:
        self.redis = FleetRedis(settings, instance_id, client)
        self.leases = Leases(self.redis)
        self.outbox = None if outbox_max_queued is None else FleetOutbox(self.redis, self.leases, outbox_max_queued)
        self.handovers = HandOvers(self.redis, self.leases, None if self.outbox is None else self.outbox.drain)
        self.desk = FleetDesk(self.redis)  # the transfer desk, shared by every instance
        self.transfers = TransferOutcomes(self.redis)  # a transfer's outcome, to the call's owner
        self.actions = ActionStreams(self.redis, self.leases, self.handovers, self.transfers)
        self._tasks: list[asyncio.Task[None]] = []
        # A call taken over from a dead instance mid-call: its record is ended here (the transcript store's
        # call_ended with "instance_lost", which also completes its recording in object storage).
        self.on_lost: Callable[[str], None] | None = None

    @property
    def settings(self) -> FleetSettings:
        return self.redis.settings

    @property
    def instance_id(self) -> str:
        return self.redis.instance_id

    @property
    def counters(self) -> FleetCounters:
        return self.redis.counters

    @property
    def owned(self) -> dict[str, Owned]:
        return self.leases.owned

    @property
    def redis_down(self) -> str | None:
        """Why the last heartbeat failed (None: Redis answers); /healthz."""
        return self.leases.redis_down

    @property
    def draining(self) -> bool:
        return self.leases.draining

    @draining.setter
    def draining(self, value: bool) -> None:
        self.leases.draining = value  # a draining instance takes over no call of a lapsed owner

    # -- lifetime -----------------------------------------------------------------------------------

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self.leases.keep_alive(self._sweeper), name="fleet-keepalive"),
            asyncio.create_task(self.actions.read(), name="fleet-actions"),
        ]
        log.info("fleet.joined", instance_id=self.instance_id, key_prefix=self.settings.key_prefix)

    async def close(self) -> None:
        """Stop the loops and leave the fleet; the connections close whatever Redis answers (or not)."""
        for task in self._tasks:
            task.cancel()
        try:
            for task, outcome in zip(
                self._tasks, await asyncio.gather(*self._tasks, return_exceptions=True), strict=True
            ):
                if isinstance(outcome, Exception):  # a loop that died: say so, and still close
                    log.error("fleet.loop_failed", loop=task.get_name(), error=f"{type(outcome).__name__}: {outcome}")
            if self.leases.pending:
                await asyncio.wait(self.leases.pending, timeout=self.settings.renew_interval)
            with contextlib.suppress(*REDIS_FAILED):
                await self.redis.client.delete(self.redis.keys.instance(self.instance_id))
        finally:
            await self.redis.client.aclose()

    def _sweeper(self) -> TakeOver | None:
        """Who delivers what a call taken over from a lapsed owner left: the outbox, once it runs
        (None: no call is taken over; without an outbox there is nothing to deliver)."""
        outbox = self.outbox
        if outbox is None or not outbox.running:
            return None
        on_lost = self.on_lost

        async def take_over(orphan: Orphan) -> None:
            if not orphan.ended and on_lost is not None:
                on_lost(orphan.call_id)  # the record says it ended with its instance (idempotent: any retry)
            await outbox.take_over(orphan)

        return take_over

    # -- the calls this instance owns ---------------------------------------------------------------

    def own(self, call: FleetCall, carrier: str, call_sid: str) -> None:
        """This instance holds the call's carrier stream: it owns the call (see :meth:`Leases.own`;
        also how a call built for an :meth:`adopt` is attached to it)."""
        self.leases.own(call, carrier, call_sid)

    def rebind(self, call: FleetCall, carrier: str, call_sid: str) -> bool:
        """An outbound call this instance owns while placing it (:mod:`bridge.dial`, leased under
        ``("outbound", call id)``), or has just adopted for its stream, is carried by its stream here now:
        the same lease goes on, held by the call itself, and the carrier's id for it is mapped to it (a
        restarted stream names only that). False: the lease is not this instance's any more."""
        owned = self.leases.owned.get(call.id)
        if owned is None or owned.lost or owned.over:
            return False
        owned.call, owned.carrier, owned.call_sid = call, carrier, call_sid
        self.leases.changed.set()
        self.leases.spawn(self._map(call.id, carrier, call_sid))
        return True

    async def _map(self, call_id: str, carrier: str, call_sid: str) -> None:
        keys, client = self.redis.keys, self.redis.client
        try:
            self.counters.redis_ops += 2
            await client.set(keys.carrier_call(carrier, call_sid), call_id)
            await client.hset(keys.call(call_id), mapping={"provider": carrier, "call_sid": call_sid})
        except REDIS_FAILED as exc:
            self.redis.failed("map an outbound call's carrier id", exc)

    async def adopt(self, carrier: str, call_sid: str, channels: int = 1) -> Adopted | None:
        """Take over a call for its restarted stream (see :meth:`HandOvers.adopt`); then :meth:`own` it."""
        return await self.handovers.adopt(carrier, call_sid, channels)

    def holds(self, call_id: str) -> bool | None:
        """May this instance post the call's events now? (see :meth:`Leases.holds`)"""
        return self.leases.holds(call_id)

    def call_over(self, call_id: str) -> None:
        """The call ended here: no more actions. With an outbox, the lease is given back once the
        call's last events are delivered (the outbox's release); without one, now."""
        owned = self.leases.owned.get(call_id)
        if owned is None:
            return
        owned.over = True
        self.leases.changed.set()
        if self.outbox is not None:
            self.outbox.over(call_id)  # the outbox marks the call ended, after its last events
        else:
            self.leases.release(call_id)

    # -- actions ------------------------------------------------------------------------------------

    async def route(self, call_id: str, body: bytes, actions: list[Action], key: str | None) -> tuple[int, Any]:
        """Append validated actions to the call's stream for its owner (see :meth:`ActionStreams.route`)."""
        return await self.actions.route(call_id, body, actions, key)

    async def call_state(self, call_id: str) -> dict[str, Any] | None:
        """What Redis says of a call owned anywhere (see :meth:`ActionStreams.call_state`).

        Raises:
            FleetUnavailable: Redis cannot be reached.
        """
        return await self.actions.call_state(call_id)
