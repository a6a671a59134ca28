"""Restarted streams in fleet mode: a call handed over by its owner to the instance its restarted
stream reached, and that instance's side, the adoption (the lease taken under a new epoch, the call's
record and undelivered events read back)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog

from bridge.fleet.leases import Leases, Owned
from bridge.fleet.scripts import REDIS_FAILED, FleetRedis
from bridge.ids import is_call_id

log = structlog.get_logger("bridge.fleet")


@dataclass(frozen=True, slots=True)
class Adopted:
    """A call this instance took over for its restarted stream: its record and undelivered events."""

    call_id: str
    epoch: int
    record: dict[str, str]
    events: list[tuple[str, dict[str, str]]]  # the outbox stream's entries, in order


class HandOvers:
    """Calls moving with their restarted stream: :meth:`hand_over` (the owner), :meth:`adopt` (the taker).
    ``before_handoff`` writes what is queued of a call to Redis first (the outbox's ``drain``; None: no
    outbox)."""

    def __init__(
        self, redis: FleetRedis, leases: Leases, before_handoff: Callable[[str], Awaitable[None]] | None = None
    ) -> None:
        self.redis = redis
        self.leases = leases
        self.before_handoff = before_handoff
        self.keys = redis.keys
        self.counters = redis.counters

    async def hand_over(self, owned: Owned, requester: str) -> None:
        """Another instance has the call's restarted stream: give the call up to it, once everything
        this instance holds of it is in Redis (events, the Gladia session's last state)."""
        if owned.call is None or owned.lost or owned.over:
            log.info("fleet.handover_refused", call_id=owned.call_id, requester=requester.rsplit(":", 1)[0])
            return
        owned.handing_over = True
        fields = await owned.call.hand_over()
        if fields is None:  # its own stream is still running here: two streams for one call
            owned.handing_over = False
            log.warning("fleet.handover_refused", call_id=owned.call_id, detail="the call's stream is live here")
            return
        owned.over = True
        try:
            if self.before_handoff is not None:
                await self.before_handoff(owned.call_id)
            await self.leases.save_applied(owned, again=True)
            deadline = int(time.time() * 1000) + int(self.redis.settings.lease_ttl * 1000)
            self.counters.redis_ops += 1
            done = await self.redis.handoff(
                keys=[self.keys.lease(owned.call_id), self.keys.call(owned.call_id), self.keys.leases],
                args=[
                    self.redis.token,
                    owned.epoch,
                    owned.call_id,
                    deadline,
                    *(x for kv in fields.items() for x in kv),
                ],
            )
            handed = int(done) == 1
        except REDIS_FAILED as exc:
            self.redis.failed("hand a call over", exc)  # the lease lapses; the adopter takes it then
            handed = False
        if handed:
            log.info("fleet.call_handed_over", call_id=owned.call_id, to=requester.rsplit(":", 1)[0])
        self.leases.forget(owned.call_id)

    async def adopt(self, carrier: str, call_sid: str, channels: int = 1) -> Adopted | None:
        """A restarted stream reached this instance for a call another one holds (or held): ask the
        owner to hand it over (or wait for its lapsed lease), take it under a new epoch, and return its
        record and undelivered events. None: no such live call, or it could not be taken in time
        (the stream then starts a call of its own; so does one whose ``channels`` differ from the call's
        Gladia session). While waiting, no sweeper ends the call.

        The lease is held from then on, without a call: build the call from what this returns and give
        it to :meth:`bridge.fleet.leases.Leases.own`; actions routed meanwhile wait in Redis until then."""
        keys, client, ttl = self.keys, self.redis.client, self.redis.settings.lease_ttl
        try:
            self.counters.redis_ops += 2
            found = await client.get(keys.carrier_call(carrier, call_sid))
            record: Any = await client.hgetall(keys.call(str(found))) if found and is_call_id(str(found)) else {}
        except REDIS_FAILED as exc:
            self.redis.failed("look a restarted call up", exc)
            return None
        if not found or not record or record.get("state") == "ended" or str(found) in self.leases.owned:
            return None
        if record.get("channels", str(channels)) != str(channels):
            # The session was opened for the other number of channels (as on one machine: a new call).
            log.warning("fleet.adopt_refused", call_id=str(found), detail="the restarted stream's tracks differ")
            return None
        call_id = str(found)
        owned = Owned(call_id, carrier, call_sid, None, adopting=True)
        self.leases.owned[call_id] = owned
        self.leases.unreleased(call_id)
        marker = keys.adopting(call_id)
        try:
            self.counters.redis_ops += 3
            await client.set(marker, self.redis.token, px=int((2 * ttl + 10) * 1000))
            holder = await client.get(keys.lease(call_id))
            if holder and holder != self.redis.token:
                await client.xadd(keys.actions(call_id), {"handover": self.redis.token})
            deadline = time.monotonic() + ttl + 5.0
            while True:
                sent = time.monotonic()
                self.counters.redis_ops += 1
                taken, detail = await self.redis.acquire(
                    keys=[keys.lease(call_id), keys.call(call_id), keys.leases, keys.carrier_call(carrier, call_sid)],
                    args=[self.redis.token, int(ttl * 1000), int(time.time() * 1000), call_id, carrier, call_sid],
                )
                if int(taken) == 1:
                    break
                if int(taken) == -1 or time.monotonic() > deadline:
                    log.warning("fleet.adopt_failed", call_id=call_id, holder=str(detail)[:100])
                    self.leases.owned.pop(call_id, None)
                    return None
                await asyncio.sleep(0.05)
            owned.epoch, owned.confirmed_at = int(detail), sent
            self.counters.redis_ops += 2
            record = await client.hgetall(keys.call(call_id))
            entries: Any = await client.xrange(keys.outbox(call_id), "-", "+")
            owned.last_action = str(record.get("actions_applied") or "0-0")
        except REDIS_FAILED as exc:
            self.redis.failed("take a restarted call over", exc)
            self.leases.owned.pop(call_id, None)
            return None
        finally:
            with contextlib.suppress(*REDIS_FAILED):
                await client.delete(marker)
        owned.adopting = False
        self.counters.leases_taken += 1
        self.leases.changed.set()
        log.info("fleet.call_adopted", call_id=call_id, epoch=owned.epoch, events_left=len(entries))
        return Adopted(call_id, owned.epoch, dict(record), [(str(i), dict(f)) for i, f in entries])
