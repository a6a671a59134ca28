"""One bridge instance in a fleet (the I/O shell over :mod:`bridge.fleet.keys`): its heartbeat, the
calls it owns, and the bot actions it takes for them from Redis.

* **Ownership follows the socket.** The instance holding a call's carrier stream owns the call: at
  ``start`` it takes the call's lease (:meth:`Fleet.own`, a new epoch), renews it every
  ``renew_interval`` while the call runs, and ends it with the call (:meth:`Fleet.disown`). A renewal
  refused because the epoch moved on means another instance took the call over: this one stops acting
  for it (``fleet.lease_lost``) and its fenced writes are refused by Redis.
* **Actions reach the owner, in order, whichever instance took them.** Any instance authenticates and
  validates a ``POST /v1/calls/{id}/actions`` and appends it to the call's action stream
  (:meth:`Fleet.route`: 404 no such call, 409 ended, 202 with the action ids); an ``Idempotency-Key``
  answers a repeat with the first answer and appends nothing. The owner reads its calls' streams in one
  blocking ``XREAD`` and applies each entry in stream order, so actions posted to two instances play in
  the order they were accepted. What it applied is recorded under its epoch, so a new owner carries on
  after it, and leaves Redis in the same script: a call's stream holds only actions not yet applied,
  at most ``MAX_PENDING_ACTION_BYTES`` of them (a request beyond that is answered 429).
* **Call ids from outside are checked** (:func:`bridge.ids.is_call_id`) before they become keys: an id
  such as ``<id>:lease`` is "no such call", never the call's lease.
* **Never on the audio path.** Taking, renewing and ending leases run in tasks; a Redis that is down
  delays actions and ownership (logged, retried), never a call's audio.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import socket
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
import structlog
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, RedisError

from bridge.errors import ActionError, FleetUnavailable
from bridge.fleet.keys import ACQUIRE, END, HANDOFF, MARK_APPLIED, RENEW, ROUTE, SESSION, TAKEOVER, Keys
from bridge.ids import is_call_id
from bridge.reply.actions import MAX_REQUEST_BYTES, Action, parse_actions
from bridge.settings import FleetSettings

log = structlog.get_logger("bridge.fleet")

IDEMPOTENCY_TTL = 86_400  # s an Idempotency-Key's answer is kept
SESSION_SYNC_SECONDS = 1.0  # a call's Gladia session state is written at most this often (when it changed)
# What a call's actions waiting in Redis for their owner may hold (two requests of the largest size);
# applied ones are deleted. A request that would go beyond either bound is answered 429.
MAX_PENDING_ACTION_BYTES = 2 * MAX_REQUEST_BYTES  # the stored JSON and Idempotency-Key of each request
MAX_PENDING_ACTION_ENTRIES = 10_000  # requests

# What a failing Redis raises, and what a reply of the wrong shape or bytes does (a URL that points
# at another service, a proxy in the way, a corrupted reply): redis-py decodes such a reply into a
# UnicodeDecodeError, or into a value the scripts' answers cannot be read from (IndexError,
# TypeError, ValueError). Each is one failed round trip, handled like Redis being down.
REDIS_FAILED: tuple[type[BaseException], ...] = (RedisError, OSError, ValueError, LookupError, TypeError)

Apply = Callable[[list[Action], str], object]  # actions, and the key that makes applying them idempotent


@dataclass(frozen=True, slots=True)
class Orphan:
    """A call taken over from an instance that stopped renewing its lease (it died, or hangs)."""

    call_id: str
    epoch: int
    ended: bool  # the former owner had ended the call (only events were left to deliver)
    call_json: str  # the bot events' call object, as the former owner recorded it
    last_sequence: int  # the last event sequence the former owner stored


TakeOver = Callable[[Orphan], Awaitable[None]]
ScriptCall = tuple[AsyncScript, list[str], list[Any]]  # a script, its keys, its arguments
SessionFields = Callable[[], dict[str, str] | None]  # the owner's Gladia session state, for a successor
HandOver = Callable[[], Awaitable[dict[str, str] | None]]  # give the call up; its last state (None: refuse)


@dataclass(frozen=True, slots=True)
class Adopted:
    """A call this instance took over for its restarted stream: its record and undelivered events."""

    call_id: str
    epoch: int
    record: dict[str, str]
    events: list[tuple[str, dict[str, str]]]  # the outbox stream's entries, in order


def default_instance_id(worker: int | None = None) -> str:
    """Host name + pid: unique per process, readable in Redis and in logs."""
    return f"{socket.gethostname()}-{os.getpid()}" + (f"-w{worker}" if worker is not None else "")


@dataclass(slots=True)
class Owned:
    """A call this instance owns (or is taking)."""

    call_id: str
    provider: str
    call_sid: str
    apply: Apply | None  # None: a call taken over to deliver its events (no stream, no actions)
    epoch: int = 0  # 0 until the lease is taken
    last_action: str = "0-0"  # the last action entry applied
    applied_upto: int = 0  # the ``upto`` of the last entry applied that had one (the call's budget)
    applied_unsaved: bool = False
    lost: bool = False  # another instance holds the call now: nothing more is written for it
    confirmed_at: float = 0.0  # monotonic time the lease was last taken or renewed
    over: bool = False  # the call ended: no more actions; the lease is kept until its events are out
    session: SessionFields | None = None
    on_handover: HandOver | None = None
    synced: dict[str, str] | None = None  # the session state last written
    adopting: bool = False  # being taken over for a restarted stream (not by the keep-alive)
    on_lost: Callable[[], None] | None = None  # another instance took the call: end it here, quietly


@dataclass(slots=True)
class FleetCounters:
    leases_taken: int = 0
    leases_lost: int = 0
    takeovers: int = 0
    actions_routed: int = 0
    actions_applied: int = 0
    redis_errors: int = 0
    redis_ops: int = 0  # commands sent (a pipeline or script counts one)


@dataclass(slots=True)
class _Backoff:
    logged_at: float = -1e9
    suppressed: int = 0


class Fleet:
    """This instance's place in the fleet. :meth:`start` once the loop runs; :meth:`close` at shutdown."""

    def __init__(self, settings: FleetSettings, instance_id: str, client: aioredis.Redis | None = None) -> None:
        assert settings.redis_url is not None
        self.settings = settings
        self.instance_id = instance_id
        self.token = f"{instance_id}:{secrets.token_hex(4)}"  # this process's hold on a lease
        self.keys = Keys(settings.key_prefix)
        poll = settings.action_poll_ms / 1000
        self.redis: aioredis.Redis = client or aioredis.from_url(
            settings.redis_url.get_secret_value(),
            decode_responses=True,
            socket_timeout=max(5.0, 2 * poll + 1),  # above the blocking read (redis-py's 5 s default)
            socket_connect_timeout=5.0,
            health_check_interval=15,
        )
        self._acquire = self.redis.register_script(ACQUIRE)
        self._renew = self.redis.register_script(RENEW)
        self._mark = self.redis.register_script(MARK_APPLIED)
        self._end = self.redis.register_script(END)
        self._route = self.redis.register_script(ROUTE)
        self._takeover = self.redis.register_script(TAKEOVER)
        self._session = self.redis.register_script(SESSION)
        self._handoff = self.redis.register_script(HANDOFF)
        self._scripts: list[AsyncScript] = [
            self._acquire,
            self._renew,
            self._mark,
            self._end,
            self._route,
            self._takeover,
            self._session,
            self._handoff,
        ]
        self.before_handoff: Callable[[str], Awaitable[None]] | None = None  # the outbox writes the call's ops
        # Set by the app: who delivers a taken-over call's events, and whether an outbox releases
        # calls once their events are out (else a call is released when it ends).
        self.on_takeover: TakeOver | None = None
        self.outbox_releases = False
        self.on_over: Callable[[str], None] | None = None  # the outbox marks the call ended, in order
        self.owned: dict[str, Owned] = {}
        self._released: OrderedDict[str, None] = OrderedDict()  # recent calls given back
        self.counters = FleetCounters()
        self._changed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._pending: set[asyncio.Task[None]] = set()
        self._backoff = _Backoff()
        self.draining = False
        self.redis_down: str | None = None  # why the last heartbeat failed (None: Redis answers); /healthz

    # -- lifetime -----------------------------------------------------------------------------------

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._keep_alive(), name="fleet-keepalive"),
            asyncio.create_task(self._take_actions(), name="fleet-actions"),
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
            if self._pending:
                await asyncio.wait(self._pending, timeout=self.settings.renew_interval)
            with contextlib.suppress(*REDIS_FAILED):
                await self.redis.delete(self.keys.instance(self.instance_id))
        finally:
            await self.redis.aclose()

    # -- the calls this instance owns ---------------------------------------------------------------

    def own(
        self,
        call_id: str,
        provider: str,
        call_sid: str,
        apply: Apply,
        session: SessionFields | None = None,
        on_handover: HandOver | None = None,
        on_lost: Callable[[], None] | None = None,
    ) -> None:
        """Take the call's lease (in a task: never waits); retried by the keep-alive until it holds.
        ``session`` gives the Gladia session's state, written at most once a beat when it changed;
        ``on_handover`` gives the call up to an instance that has its restarted stream; ``on_lost``
        ends it here when another instance took it over (this one was cut off or paused)."""
        self.owned[call_id] = Owned(
            call_id, provider, call_sid, apply, session=session, on_handover=on_handover, on_lost=on_lost
        )
        self._spawn(self._take(self.owned[call_id]))

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
        if owned.on_lost is not None and not owned.over:
            owned.on_lost()

    def call_over(self, call_id: str) -> None:
        """The call ended here: no more actions. With an outbox, the lease is given back once the
        call's last events are delivered (:meth:`release`); without one, now."""
        owned = self.owned.get(call_id)
        if owned is None:
            return
        owned.over = True
        self._changed.set()
        if self.on_over is not None:
            self.on_over(call_id)
        if not self.outbox_releases:
            self.release(call_id)

    def release(self, call_id: str) -> None:
        """Everything of the call is done here: mark it ended and give its lease back."""
        owned = self.owned.get(call_id)
        if owned is not None:
            self._spawn(self._give_back(owned))

    async def _take(self, owned: Owned) -> None:
        try:
            self.counters.redis_ops += 1
            sent = time.monotonic()
            taken, detail = await self._acquire(
                keys=[
                    self.keys.lease(owned.call_id),
                    self.keys.call(owned.call_id),
                    self.keys.leases,
                    self.keys.carrier_call(owned.provider, owned.call_sid),
                ],
                args=[
                    self.token,
                    int(self.settings.lease_ttl * 1000),
                    int(time.time() * 1000),
                    owned.call_id,
                    owned.provider,
                    owned.call_sid,
                ],
            )
            if int(taken) != 1:
                log.warning("fleet.lease_refused", call_id=owned.call_id, holder=str(detail)[:200])
                return
            owned.epoch = int(detail)
            owned.confirmed_at = sent
            self.counters.redis_ops += 1
            applied = await self.redis.hget(self.keys.call(owned.call_id), "actions_applied")
        except REDIS_FAILED as exc:
            self._redis_failed("take a lease", exc)
            return
        owned.last_action = str(applied) if applied else "0-0"
        self.counters.leases_taken += 1
        self._changed.set()
        log.info("fleet.call_owned", call_id=owned.call_id, epoch=owned.epoch)

    async def _give_back(self, owned: Owned) -> None:
        try:
            await self._save_applied(owned)
            if owned.epoch and not owned.lost:
                self.counters.redis_ops += 1
                await self._end(
                    keys=[
                        self.keys.lease(owned.call_id),
                        self.keys.call(owned.call_id),
                        self.keys.leases,
                        self.keys.actions(owned.call_id),
                        self.keys.outbox(owned.call_id),
                        self.keys.carrier_call(owned.provider, owned.call_sid),
                    ],
                    args=[self.token, owned.epoch, int(self.settings.ended_ttl), owned.call_id],
                )
        except REDIS_FAILED as exc:
            self._redis_failed("end a call", exc)  # the lease lapses by itself
        finally:
            self.owned.pop(owned.call_id, None)
            self._released[owned.call_id] = None
            while len(self._released) > 10_000:
                self._released.popitem(last=False)
            self._changed.set()

    # -- heartbeat and renewals ---------------------------------------------------------------------

    async def _keep_alive(self) -> None:
        """Every ``renew_interval``: the heartbeat, the leases, the sweep. Every second (or more often
        if renewals are): the Gladia session states that changed, so a successor starts at most about
        a second behind the acknowledged offset."""
        tick = min(SESSION_SYNC_SECONDS, self.settings.renew_interval)
        renewed_at = -1e9
        while True:
            renew = time.monotonic() - renewed_at >= self.settings.renew_interval - tick / 2
            try:
                await self._beat(renew)
                if renew:
                    renewed_at = time.monotonic()
                    await self._sweep()
                if self.redis_down is not None:
                    log.info("fleet.redis_back", detail="Redis answers again")
                self.redis_down = None
            except REDIS_FAILED as exc:
                self._redis_failed("renew", exc)
                self.redis_down = f"{type(exc).__name__}: {exc}"[:200]
            await asyncio.sleep(tick)

    async def _sweep(self) -> None:
        """Take over the calls whose owner stopped renewing (a few per beat), to deliver what they left."""
        if self.on_takeover is None or self.draining:
            return
        now_ms = int(time.time() * 1000)
        self.counters.redis_ops += 1
        due: list[str] = await self.redis.zrangebyscore(self.keys.leases, "-inf", now_ms, start=0, num=20)  # type: ignore[assignment]
        for call_id in due:
            if call_id in self.owned:
                continue
            self.counters.redis_ops += 1
            sent = time.monotonic()
            result = await self._takeover(
                keys=[self.keys.lease(call_id), self.keys.call(call_id), self.keys.leases, self.keys.adopting(call_id)],
                args=[self.token, int(self.settings.lease_ttl * 1000), now_ms, call_id],
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
            self._spawn(self.on_takeover(orphan))

    async def _beat(self, renew: bool = True) -> None:
        ttl_ms = int(self.settings.lease_ttl * 1000)
        now_ms = int(time.time() * 1000)
        calls = list(self.owned.values())
        syncs: list[tuple[Owned, dict[str, str]]] = []
        for o in calls:
            if o.session is not None and o.epoch and not o.lost and not o.over:
                fields = o.session()
                if fields and fields != o.synced:
                    syncs.append((o, fields))
        if not renew and not syncs:
            return
        if not renew:
            calls = []  # session states only
        renewing = [o for o in calls if o.epoch and not o.lost]  # fixed now: flags may change meanwhile
        scripts: list[ScriptCall | None] = [
            (
                self._renew,
                [self.keys.lease(o.call_id), self.keys.call(o.call_id), self.keys.leases],
                [self.token, o.epoch, ttl_ms, now_ms, o.call_id],
            )
            for o in renewing
        ]
        scripts += [  # at most once a second per call, and only when it changed
            (self._session, [self.keys.call(o.call_id)], [o.epoch, *(x for kv in fields.items() for x in kv)])
            for o, fields in syncs
        ]
        instance = self.keys.instance(self.instance_id)

        def heartbeat(pipe: Any) -> None:
            pipe.hset(instance, mapping={"calls": len(self.owned), "draining": int(self.draining), "seen": now_ms})
            pipe.pexpire(instance, ttl_ms)

        confirmed = time.monotonic()  # a renewal holds for lease_ttl from before it was sent
        results = await self.run_scripts(scripts, before=heartbeat)
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
            if not o.epoch and not o.lost and o.apply is not None and not o.adopting:
                await self._take(o)  # Redis was down at the start: take it now
            elif o.applied_unsaved:
                await self._save_applied(o)

    # -- actions ------------------------------------------------------------------------------------

    async def route(self, call_id: str, body: bytes, actions: list[Action], key: str | None) -> tuple[int, Any]:
        """Append validated actions to the call's stream for its owner. Returns (HTTP status, body):
        202; 404 no such call (or not a call id); 409 ended; 429 the call's actions waiting for their
        owner hold ``MAX_PENDING_ACTION_BYTES`` (or ``MAX_PENDING_ACTION_ENTRIES``) already; 503 no Redis."""
        if not is_call_id(call_id):
            return 404, {"error": f"no call {call_id[:64]}"}
        raw: Any = json.loads(body)
        items = raw["actions"] if isinstance(raw, dict) else raw
        for item, action in zip(items, actions, strict=True):
            item["id"] = action.id  # the ids answered now are the ids the owner applies
        answer = {"actions": [{"id": a.id, "status": "accepted"} for a in actions]}
        text = json.dumps(answer, separators=(",", ":"))
        try:
            self.counters.redis_ops += 1
            result = await self._route(
                keys=[
                    self.keys.call(call_id),
                    self.keys.actions(call_id),
                    self.keys.idempotency(call_id, key or "-"),
                ],
                args=[
                    json.dumps({"actions": items}, separators=(",", ":")),
                    key or "",
                    IDEMPOTENCY_TTL,
                    text,
                    MAX_PENDING_ACTION_BYTES,
                    MAX_PENDING_ACTION_ENTRIES,
                ],
            )
            status = int(result[0])
        except REDIS_FAILED as exc:
            self._redis_failed("route actions", exc)
            return 503, {"error": "the fleet's Redis cannot be reached: actions not accepted, try again"}
        if status == 404:
            return 404, {"error": f"no call {call_id}"}
        if status == 409:
            return 409, {"error": f"call {call_id} has ended"}
        if status == 200:
            return 202, json.loads(result[1])  # a repeated Idempotency-Key: the first answer
        if status == 429:
            waiting, entries = int(result[1]), int(result[2])
            held = (
                f"{entries} requests of actions waiting for its owner (at most {MAX_PENDING_ACTION_ENTRIES} may wait)"
                if entries >= MAX_PENDING_ACTION_ENTRIES
                else f"{waiting} bytes of actions waiting for its owner (at most {MAX_PENDING_ACTION_BYTES} may wait)"
            )
            return 429, {"error": f"call {call_id} has {held}: nothing accepted, try again once they are applied"}
        self.counters.actions_routed += len(actions)
        return 202, answer

    async def call_state(self, call_id: str) -> dict[str, Any] | None:
        """What Redis says of a call owned anywhere: owner, epoch, state (None: unknown).

        Raises:
            FleetUnavailable: Redis cannot be reached.
        """
        if not is_call_id(call_id):
            return None
        self.counters.redis_ops += 1
        try:
            record: dict[str, str] = await self.redis.hgetall(self.keys.call(call_id))  # type: ignore[assignment]
        except REDIS_FAILED as exc:
            self._redis_failed("read a call", exc)
            raise FleetUnavailable("the fleet's Redis cannot be reached") from exc
        if not record:
            return None
        return {
            "id": call_id,
            "provider": record.get("provider"),
            "call_sid": record.get("call_sid"),
            "owner": (record.get("owner") or "").rsplit(":", 1)[0],
            "epoch": int(record.get("epoch", 0)),
            "state": record.get("state"),
        }

    async def _take_actions(self) -> None:
        """The owner's side: one blocking read over the action streams of every call it holds."""
        poll = self.settings.action_poll_ms
        while True:
            streams = {self.keys.actions(o.call_id): o.last_action for o in self.owned.values() if self._acting(o)}
            if not streams:
                self._changed.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(poll / 1000):
                        await self._changed.wait()
                continue
            try:
                self.counters.redis_ops += 1
                entries: Any = await self.redis.xread(streams, count=100, block=poll)  # type: ignore[arg-type]
                for stream_key, items in entries or []:
                    owned = self.owned.get(self.keys.call_of_actions(stream_key))
                    if owned is None or not self._acting(owned):
                        continue
                    for entry_id, fields in items:
                        try:
                            self._apply(owned, entry_id, fields)
                        except Exception:  # one entry must not end the reader of every call's actions
                            log.exception("fleet.action_entry_failed", call_id=owned.call_id, entry=entry_id)
            except REDIS_FAILED as exc:
                self._redis_failed("read actions", exc)
                await asyncio.sleep(min(1.0, self.settings.renew_interval))
                continue
            for owned in list(self.owned.values()):
                if owned.applied_unsaved:
                    try:
                        await self._save_applied(owned)
                    except REDIS_FAILED as exc:
                        self._redis_failed("record applied actions", exc)

    @staticmethod
    def _acting(owned: Owned) -> bool:
        return bool(owned.epoch) and not owned.lost and not owned.over and owned.apply is not None

    def _apply(self, owned: Owned, entry_id: str, fields: dict[str, str]) -> None:
        owned.last_action = entry_id
        owned.applied_unsaved = True
        upto = fields.get("upto") or ""
        if upto.isdigit():
            owned.applied_upto = max(owned.applied_upto, int(upto))
        requester = fields.get("handover")
        if requester is not None:
            if requester != self.token:
                self._spawn(self._hand_over(owned, requester))
            return
        try:
            actions = parse_actions(fields.get("actions", "[]"))
        except (ActionError, ValueError) as exc:  # validated when accepted: only a foreign writer gets here
            log.warning("fleet.bad_action_entry", call_id=owned.call_id, entry=entry_id, error=str(exc)[:200])
            return
        key = fields.get("key") or ""
        if owned.apply is not None:
            try:
                owned.apply(actions, f"rest:{key}" if key else f"fleet:{entry_id}")
            except Exception:  # a bug applying one entry must not stop the reader of every call's actions
                log.exception("fleet.apply_failed", call_id=owned.call_id, entry=entry_id)
                return
        self.counters.actions_applied += len(actions)

    # -- restarted streams: handing a call over, and taking one on -----------------------------------

    async def _hand_over(self, owned: Owned, requester: str) -> None:
        """Another instance has the call's restarted stream: give the call up to it, once everything
        this instance holds of it is in Redis (events, the Gladia session's last state)."""
        if owned.on_handover is None or owned.lost or owned.over:
            log.info("fleet.handover_refused", call_id=owned.call_id, requester=requester.rsplit(":", 1)[0])
            return
        fields = await owned.on_handover()
        if fields is None:  # its own stream is still running here: two streams for one call
            log.warning("fleet.handover_refused", call_id=owned.call_id, detail="the call's stream is live here")
            return
        owned.over = True
        try:
            if self.before_handoff is not None:
                await self.before_handoff(owned.call_id)
            await self._save_applied(owned)
            deadline = int(time.time() * 1000) + int(self.settings.lease_ttl * 1000)
            self.counters.redis_ops += 1
            done = await self._handoff(
                keys=[self.keys.lease(owned.call_id), self.keys.call(owned.call_id), self.keys.leases],
                args=[self.token, owned.epoch, owned.call_id, deadline, *(x for kv in fields.items() for x in kv)],
            )
            handed = int(done) == 1
        except REDIS_FAILED as exc:
            self._redis_failed("hand a call over", exc)  # the lease lapses; the adopter takes it then
            handed = False
        if handed:
            log.info("fleet.call_handed_over", call_id=owned.call_id, to=requester.rsplit(":", 1)[0])
        self.owned.pop(owned.call_id, None)
        self._released[owned.call_id] = None
        self._changed.set()

    async def adopt(
        self,
        provider: str,
        call_sid: str,
        apply: Apply,
        session: SessionFields | None = None,
        on_handover: HandOver | None = None,
        on_lost: Callable[[], None] | None = None,
        channels: int = 1,
    ) -> Adopted | None:
        """A restarted stream reached this instance for a call another one holds (or held): ask the
        owner to hand it over (or wait for its lapsed lease), take it under a new epoch, and return its
        record and undelivered events. None: no such live call, or it could not be taken in time
        (the stream then starts a call of its own; so does one whose ``channels`` differ from the call's
        Gladia session). While waiting, no sweeper ends the call."""
        keys = self.keys
        try:
            self.counters.redis_ops += 2
            found = await self.redis.get(keys.carrier_call(provider, call_sid))
            record: Any = await self.redis.hgetall(keys.call(str(found))) if found and is_call_id(str(found)) else {}
        except REDIS_FAILED as exc:
            self._redis_failed("look a restarted call up", exc)
            return None
        if not found or not record or record.get("state") == "ended" or str(found) in self.owned:
            return None
        if record.get("channels", str(channels)) != str(channels):
            # The session was opened for the other number of channels (as on one machine: a new call).
            log.warning("fleet.adopt_refused", call_id=str(found), detail="the restarted stream's tracks differ")
            return None
        call_id = str(found)
        owned = Owned(
            call_id, provider, call_sid, apply, session=session, on_handover=on_handover, on_lost=on_lost, adopting=True
        )
        self.owned[call_id] = owned
        self._released.pop(call_id, None)
        marker = keys.adopting(call_id)
        try:
            self.counters.redis_ops += 3
            await self.redis.set(marker, self.token, px=int((2 * self.settings.lease_ttl + 10) * 1000))
            holder = await self.redis.get(keys.lease(call_id))
            if holder and holder != self.token:
                await self.redis.xadd(keys.actions(call_id), {"handover": self.token})
            deadline = time.monotonic() + self.settings.lease_ttl + 5.0
            while True:
                sent = time.monotonic()
                self.counters.redis_ops += 1
                taken, detail = await self._acquire(
                    keys=[keys.lease(call_id), keys.call(call_id), keys.leases, keys.carrier_call(provider, call_sid)],
                    args=[
                        self.token,
                        int(self.settings.lease_ttl * 1000),
                        int(time.time() * 1000),
                        call_id,
                        provider,
                        call_sid,
                    ],
                )
                if int(taken) == 1:
                    break
                if int(taken) == -1 or time.monotonic() > deadline:
                    log.warning("fleet.adopt_failed", call_id=call_id, holder=str(detail)[:100])
                    self.owned.pop(call_id, None)
                    return None
                await asyncio.sleep(0.05)
            owned.epoch, owned.confirmed_at = int(detail), sent
            self.counters.redis_ops += 2
            record = await self.redis.hgetall(keys.call(call_id))
            entries: Any = await self.redis.xrange(keys.outbox(call_id), "-", "+")
            owned.last_action = str(record.get("actions_applied") or "0-0")
        except REDIS_FAILED as exc:
            self._redis_failed("take a restarted call over", exc)
            self.owned.pop(call_id, None)
            return None
        finally:
            with contextlib.suppress(*REDIS_FAILED):
                await self.redis.delete(marker)
        owned.adopting = False
        self.counters.leases_taken += 1
        self._changed.set()
        log.info("fleet.call_adopted", call_id=call_id, epoch=owned.epoch, events_left=len(entries))
        return Adopted(call_id, owned.epoch, dict(record), [(str(i), dict(f)) for i, f in entries])

    async def _save_applied(self, owned: Owned) -> None:
        if not owned.applied_unsaved or not owned.epoch or owned.lost:
            return
        owned.applied_unsaved = False
        self.counters.redis_ops += 1
        try:  # also deletes the entries applied: the call's stream keeps only what waits
            done = await self._mark(
                keys=[self.keys.call(owned.call_id), self.keys.actions(owned.call_id)],
                args=[owned.epoch, owned.last_action, owned.applied_upto or ""],
            )
        except BaseException:
            owned.applied_unsaved = True  # recorded on the next beat (the script is safe to run twice)
            raise
        if int(done) != 1:
            self.lost(owned.call_id)

    # -- plumbing -----------------------------------------------------------------------------------

    async def run_scripts(
        self, calls: list[ScriptCall | None], before: Callable[[Any], None] | None = None
    ) -> list[Any]:
        """Several scripts in one round trip: a pipeline of ``EVALSHA`` (``None`` entries answer
        ``None``, to keep results aligned). redis-py would ask ``SCRIPT EXISTS`` before each pipeline
        holding scripts, a round trip more per batch; here a Redis that lost its script cache (a
        restart) answers ``NOSCRIPT``, and the scripts are loaded and the batch sent once more: every
        script the fleet runs is safe to run twice."""
        for attempt in (1, 2):
            async with self.redis.pipeline(transaction=False) as pipe:
                if before is not None:
                    before(pipe)
                for call in calls:
                    if call is None:
                        pipe.echo("")
                    else:
                        script, keys, args = call
                        pipe.evalsha(script.sha, len(keys), *keys, *args)
                self.counters.redis_ops += 1
                try:
                    return list(await pipe.execute())
                except NoScriptError:
                    if attempt == 2:
                        raise
            for script in self._scripts:
                self.counters.redis_ops += 1
                await self.redis.script_load(script.script)
        raise AssertionError("unreachable")

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def _redis_failed(self, doing: str, exc: BaseException) -> None:
        """One line per 10 s while Redis fails, with how many were not logged. A reply that could not
        be read (not a connection or Redis error) says so: check that the URL points at Redis."""
        self.counters.redis_errors += 1
        now = time.monotonic()
        b = self._backoff
        if now - b.logged_at >= 10.0:
            unreadable = {} if isinstance(exc, (RedisError, OSError)) else {"detail": "Redis's reply could not be read"}
            log.warning(
                "fleet.redis_error",
                doing=doing,
                error=f"{type(exc).__name__}: {exc}"[:200],
                since=b.suppressed,
                **unreadable,
            )
            b.logged_at, b.suppressed = now, 0
        else:
            b.suppressed += 1
