"""The calls this instance owns, and the keep-alive that holds them: leases taken, renewed and given
back (each under an epoch, the fencing token of :mod:`bridge.fleet.keys`), the heartbeat, the Gladia
session states written for a successor, and the sweep that takes over calls whose owner stopped renewing.

* **Ownership follows the socket.** The instance holding a call's carrier stream owns the call: at
  ``start`` it takes the call's lease (:meth:`Leases.own`, a new epoch), renews it every
  ``renew_interval`` while the call runs, and gives it back with the call (:meth:`Leases.release`). A
  renewal refused because the epoch moved on means another instance took the call over: this one stops
  acting for it (``fleet.lease_lost``) and its fenced writes are refused by Redis.
* **Never on the audio path.** Taking, renewing and ending leases run in tasks; a Redis that is down
  delays ownership (logged, retried), never a call's audio.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from bridge.fleet.scripts import REDIS_FAILED, FleetRedis, ScriptCall

if TYPE_CHECKING:
    from bridge.call.services import FleetCall

log = structlog.get_logger("bridge.fleet")

SESSION_SYNC_SECONDS = 1.0  # a call's Gladia session state is written at most this often (when it changed)


@dataclass(frozen=True, slots=True)
class Orphan:
    """A call taken over from an instance that stopped renewing its lease (it died, or hangs)."""

    call_id: str
    epoch: int
    ended: bool  # the former owner had ended the call (only events were left to deliver)
    call_json: str  # the bot events' call object, as the former owner recorded it
    last_sequence: int  # the last event sequence the former owner stored


TakeOver = Callable[[Orphan], Coroutine[Any, Any, None]]  # who delivers a taken-over call's events


@dataclass(slots=True)
class Owned:
    """A call this instance owns (or is taking)."""

    call_id: str
    carrier: str
    call_sid: str
    # The call itself; None while an adoption is under way (until :meth:`Leases.own` attaches the call
    # built for it), or for a call taken over only to deliver its events (no stream, no actions).
    call: FleetCall | None
    epoch: int = 0  # 0 until the lease is taken
    last_action: str = "0-0"  # the last action entry applied
    applied_upto: int = 0  # the ``upto`` of the last entry applied that had one (the call's budget)
    applied_unsaved: bool = False
    lost: bool = False  # another instance holds the call now: nothing more is written for it
    confirmed_at: float = 0.0  # monotonic time the lease was last taken or renewed
    over: bool = False  # the call ended: no more actions; the lease is kept until its events are out
    synced: dict[str, str] | None = None  # the session state last written
    adopting: bool = False  # being taken over for a restarted stream (not by the keep-alive)
    # Being handed over to the instance its restarted stream reached: closing its delivery asks for the
    # lease back, which must not mark the call ended (the other instance carries it on).
    handing_over: bool = False
    taking: bool = False  # its lease is being asked for (:meth:`Leases.take`)


class Leases:
    """The calls this instance owns (:attr:`owned`) and the loop that keeps them (:meth:`keep_alive`)."""

    def __init__(self, redis: FleetRedis) -> None:
        self.redis = redis
        self.settings = redis.settings
        self.keys = redis.keys
        self.counters = redis.counters
        self.owned: dict[str, Owned] = {}
        self._released: OrderedDict[str, None] = OrderedDict()  # recent calls given back
        self.changed = asyncio.Event()  # the calls to read actions for changed
        self.pending: set[asyncio.Task[None]] = set()
        self.draining = False
        self.redis_down: str | None = None  # why the last heartbeat failed (None: Redis answers); /healthz

    # -- the calls this instance owns ---------------------------------------------------------------

    def own(self, call: FleetCall, carrier: str, call_sid: str) -> None:
        """Take the call's lease (in a task: never waits); retried by the keep-alive until it holds. A
        call this instance has just adopted (:meth:`bridge.fleet.handover.HandOvers.adopt`) is attached
        to the lease the adoption took: its actions, which waited in Redis meanwhile, are read from now."""
        adopted = self.owned.get(call.id)
        if adopted is not None and adopted.call is None and not adopted.over:
            adopted.call = call
            self.changed.set()
            return
        self.owned[call.id] = Owned(call.id, carrier, call_sid, call)
        self.spawn(self.take(self.owned[call.id]))

    def epoch_of(self, call_id: str) -> int | None:
        """The epoch this instance holds the call under: 0 while it is being taken (or not yet asked
        for), None once lost or released."""
        owned = self.owned.get(call_id)
        if owned is None:
            return None if call_id in self._released else 0
        return None if owned.lost else owned.epoch

    def holds(self, call_id: str) -> bool | None:
        """May this instance act for the call now (post its events)? True: its lease was confirmed less
        than ``lease_ttl`` ago; None: not confirmed (being taken, or Redis unreachable: wait); False:
        lost to another instance, or given back. An instance back from a pause longer than its lease
        (SIGSTOP, a stalled VM) waits for a renewal, which then tells it the call is no longer its own."""
        owned = self.owned.get(call_id)
        if owned is None:
            return False if call_id in self._released else None
        if owned.lost:
            return False
        if not owned.epoch or time.monotonic() - owned.confirmed_at >= self.settings.lease_ttl:
            return None
        return True

    def lost(self, call_id: str) -> None:
        """A renewal or a fenced write was refused: another instance holds the call now. This one
        stops acting for it (no action, no event, no Redis write) and ends it here."""
        owned = self.owned.get(call_id)
        if owned is None or owned.lost:
            return
        owned.lost = True
        self.counters.leases_lost += 1
        log.warning(
            "fleet.lease_lost",
            call_id=call_id,
            epoch=owned.epoch,
            detail="another instance took the call over: this one no longer acts for it",
        )
        if owned.call is not None and not owned.over:
            owned.call.lost_to_another_instance()

    def release(self, call_id: str) -> None:
        """Everything of the call is done here: mark it ended and give its lease back."""
        owned = self.owned.get(call_id)
        if owned is not None:
            self.spawn(self._give_back(owned))

    def forget(self, call_id: str) -> None:
        """The call is no longer this instance's (given back, or handed over)."""
        self.owned.pop(call_id, None)
        self._released[call_id] = None
        while len(self._released) > 10_000:
            self._released.popitem(last=False)
        self.changed.set()

    def unreleased(self, call_id: str) -> None:
        """The call is this instance's again (taken on for its restarted stream)."""
        self._released.pop(call_id, None)

    async def take(self, owned: Owned) -> None:
        """Take the call's lease (ACQUIRE moves its epoch on): one attempt at a time per call, or the
        second would move the epoch past the first's and fence this instance out of its own call."""
        if owned.taking:
            return
        owned.taking = True
        try:
            await self._take(owned)
        finally:
            owned.taking = False

    async def _take(self, owned: Owned) -> None:
        keys = self.keys
        try:
            self.counters.redis_ops += 1
            sent = time.monotonic()
            taken, detail = await self.redis.acquire(
                keys=[
                    keys.lease(owned.call_id),
                    keys.call(owned.call_id),
                    keys.leases,
                    keys.carrier_call(owned.carrier, owned.call_sid),
                ],
                args=[
                    self.redis.token,
                    int(self.settings.lease_ttl * 1000),
                    int(time.time() * 1000),
                    owned.call_id,
                    owned.carrier,
                    owned.call_sid,
                ],
            )
            if int(taken) != 1:
                log.warning("fleet.lease_refused", call_id=owned.call_id, holder=str(detail)[:200])
                return
            owned.epoch = int(detail)
            owned.confirmed_at = sent
            self.counters.redis_ops += 1
            applied = await self.redis.client.hget(keys.call(owned.call_id), "actions_applied")
        except REDIS_FAILED as exc:
            self.redis.failed("take a lease", exc)
            return
        owned.last_action = str(applied) if applied else "0-0"
        self.counters.leases_taken += 1
        self.changed.set()
        log.info("fleet.call_owned", call_id=owned.call_id, epoch=owned.epoch)

    async def _give_back(self, owned: Owned) -> None:
        if owned.handing_over:
            return  # the hand-over gives the lease back (HandOvers.hand_over), leaving the call live
        keys = self.keys
        try:
            await self.save_applied(owned)
            if owned.epoch and not owned.lost:
                self.counters.redis_ops += 1
                await self.redis.end(
                    keys=[
                        keys.lease(owned.call_id),
                        keys.call(owned.call_id),
                        keys.leases,
                        keys.actions(owned.call_id),
                        keys.outbox(owned.call_id),
                        keys.carrier_call(owned.carrier, owned.call_sid),
                    ],
                    args=[self.redis.token, owned.epoch, int(self.settings.ended_ttl), owned.call_id],
                )
        except REDIS_FAILED as exc:
            self.redis.failed("end a call", exc)  # the lease lapses by itself
        finally:
            self.forget(owned.call_id)

    async def save_applied(self, owned: Owned, *, again: bool = False) -> None:
        """Record the last action entry applied, under the call's epoch (and delete the entries applied).
        ``again``: even when it looks saved (a hand-over: a save still in flight on another connection
        could land after the call has changed hands, and be fenced out)."""
        if not (owned.applied_unsaved or (again and owned.last_action != "0-0")) or not owned.epoch or owned.lost:
            return
        owned.applied_unsaved = False
        self.counters.redis_ops += 1
        try:  # also deletes the entries applied: the call's stream keeps only what waits
            done = await self.redis.mark_applied(
                keys=[self.keys.call(owned.call_id), self.keys.actions(owned.call_id)],
                args=[owned.epoch, owned.last_action, owned.applied_upto or ""],
            )
        except BaseException:
            owned.applied_unsaved = True  # recorded on the next beat (the script is safe to run twice)
            raise
        if int(done) != 1:
            self.lost(owned.call_id)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` in a task of its own, awaited (bounded) when the fleet closes."""
        task = asyncio.get_running_loop().create_task(coro)
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    # -- heartbeat, renewals, sweep -----------------------------------------------------------------

    async def keep_alive(self, sweeper: Callable[[], TakeOver | None]) -> None:
        """Every ``renew_interval``: the heartbeat, the leases, the sweep (``sweeper()`` says who
        delivers what the calls it takes over left; None: no sweep now). Every second (or more often if
        renewals are): the Gladia session states that changed, so a successor starts at most about a
        second behind the acknowledged offset."""
        tick = min(SESSION_SYNC_SECONDS, self.settings.renew_interval)
        renewed_at = -1e9
        while True:
            renew = time.monotonic() - renewed_at >= self.settings.renew_interval - tick / 2
            try:
                await self._beat(renew)
                if renew:
                    renewed_at = time.monotonic()
                    await self._sweep(sweeper())
                if self.redis_down is not None:
                    log.info("fleet.redis_back", detail="Redis answers again")
                self.redis_down = None
            except REDIS_FAILED as exc:
                self.redis.failed("renew", exc)
                self.redis_down = f"{type(exc).__name__}: {exc}"[:200]
            await asyncio.sleep(tick)

    async def _sweep(self, take_over: TakeOver | None) -> None:
        """Take over the calls whose owner stopped renewing (a few per beat), to deliver what they left."""
        if take_over is None or self.draining:
            return
        keys = self.keys
        now_ms = int(time.time() * 1000)
        self.counters.redis_ops += 1
        due: list[str] = await self.redis.client.zrangebyscore(keys.leases, "-inf", now_ms, start=0, num=20)  # type: ignore[assignment]
        for call_id in due:
            if call_id in self.owned:
                continue
            self.counters.redis_ops += 1
            sent = time.monotonic()
            result = await self.redis.takeover(
                keys=[keys.lease(call_id), keys.call(call_id), keys.leases, keys.adopting(call_id)],
                args=[self.redis.token, int(self.settings.lease_ttl * 1000), now_ms, call_id],
            )
            if int(result[0]) != 1:
                continue
            orphan = Orphan(call_id, int(result[1]), result[2] == "ended", str(result[3]), int(result[4] or 0))
            self.owned[call_id] = Owned(
                call_id, str(result[5]), str(result[6]), None, epoch=orphan.epoch, over=True, confirmed_at=sent
            )
            self.counters.takeovers += 1
            log.warning(
                "fleet.call_taken_over",
                call_id=call_id,
                epoch=orphan.epoch,
                former_owner_ended_it=orphan.ended,
                detail="its owner stopped renewing the lease: this instance delivers what it left",
            )
            self.spawn(take_over(orphan))

    async def _beat(self, renew: bool = True) -> None:
        ttl_ms = int(self.settings.lease_ttl * 1000)
        now_ms = int(time.time() * 1000)
        keys, token = self.keys, self.redis.token
        calls = list(self.owned.values())
        syncs: list[tuple[Owned, dict[str, str]]] = []
        for o in calls:
            if o.call is not None and o.epoch and not o.lost and not o.over:
                fields = o.call.session_fields()
                if fields and fields != o.synced:
                    syncs.append((o, fields))
        if not renew and not syncs:
            return
        if not renew:
            calls = []  # session states only
        renewing = [o for o in calls if o.epoch and not o.lost]  # fixed now: flags may change meanwhile
        scripts: list[ScriptCall | None] = [
            (
                self.redis.renew,
                [keys.lease(o.call_id), keys.call(o.call_id), keys.leases],
                [token, o.epoch, ttl_ms, now_ms, o.call_id],
            )
            for o in renewing
        ]
        scripts += [  # at most once a second per call, and only when it changed
            (self.redis.session, [keys.call(o.call_id)], [o.epoch, *(x for kv in fields.items() for x in kv)])
            for o, fields in syncs
        ]
        instance = keys.instance(self.redis.instance_id)

        def heartbeat(pipe: Any) -> None:
            pipe.hset(instance, mapping={"calls": len(self.owned), "draining": int(self.draining), "seen": now_ms})
            pipe.pexpire(instance, ttl_ms)

        confirmed = time.monotonic()  # a renewal holds for lease_ttl from before it was sent
        results = await self.redis.run_scripts(scripts, before=heartbeat)
        for o, fields in syncs:
            o.synced = fields
        for o, renewed in zip(renewing, results[2 : 2 + len(renewing)], strict=True):
            if o.lost:
                continue  # lost while the renewal was on its way
            if int(renewed) == 1:
                o.confirmed_at = confirmed
            else:
                self.lost(o.call_id)
        for o in calls:
            if not o.epoch and not o.lost and o.call is not None and not o.adopting:
                await self.take(o)  # Redis was down at the start: take it now
            elif o.applied_unsaved:
                await self.save_applied(o)
