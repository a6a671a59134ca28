"""Bot actions in fleet mode: routed by whichever instance accepted them into the call's Redis stream,
read and applied by the call's owner, and what Redis says of a call owned anywhere.

* **Actions reach the owner, in order, whichever instance took them.** Any instance authenticates and
  validates a ``POST /v1/calls/{id}/actions`` and appends it to the call's action stream
  (:meth:`ActionStreams.route`: 404 no such call, 409 ended, 202 with the action ids); an
  ``Idempotency-Key`` answers a repeat with the first answer and appends nothing. The owner reads its
  calls' streams in one blocking ``XREAD`` (:meth:`ActionStreams.read`) and applies each entry in
  stream order, so actions posted to two instances play in the order they were accepted. What it
  applied is recorded under its epoch, so a new owner carries on after it, and leaves Redis in the
  same script: a call's stream holds only actions not yet applied, at most
  ``MAX_PENDING_ACTION_BYTES`` of them (a request beyond that is answered 429).
* **Call ids from outside are checked** (:func:`bridge.ids.is_call_id`) before they become keys: an id
  such as ``<id>:lease`` is "no such call", never the call's lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import structlog

from bridge.errors import ActionError, FleetUnavailable
from bridge.fleet.handover import HandOvers
from bridge.fleet.leases import Leases, Owned
from bridge.fleet.scripts import REDIS_FAILED, FleetRedis
from bridge.fleet.transfers import TransferOutcomes
from bridge.ids import is_call_id
from bridge.reply.actions import MAX_REQUEST_BYTES, Action, parse_actions

log = structlog.get_logger("bridge.fleet")

IDEMPOTENCY_TTL = 86_400  # s an Idempotency-Key's answer is kept
# What a call's actions waiting in Redis for their owner may hold (two requests of the largest size);
# applied ones are deleted. A request that would go beyond either bound is answered 429.
MAX_PENDING_ACTION_BYTES = 2 * MAX_REQUEST_BYTES  # the stored JSON and Idempotency-Key of each request
MAX_PENDING_ACTION_ENTRIES = 10_000  # requests


class ActionStreams:
    """The calls' action streams: :meth:`route` appends (any instance), :meth:`read` applies (the owner)."""

    def __init__(
        self, redis: FleetRedis, leases: Leases, handovers: HandOvers, outcomes: TransferOutcomes | None = None
    ) -> None:
        self.redis = redis
        self.leases = leases
        self.handovers = handovers
        self.outcomes = outcomes
        self.keys = redis.keys
        self.counters = redis.counters

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
            result = await self.redis.route(
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
            self.redis.failed("route actions", exc)
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
            record: dict[str, str] = await self.redis.client.hgetall(self.keys.call(call_id))  # type: ignore[assignment]
        except REDIS_FAILED as exc:
            self.redis.failed("read a call", exc)
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

    async def read(self) -> None:
        """The owner's side: one blocking read over the action streams of every call it holds."""
        poll = self.redis.settings.action_poll_ms
        owned_calls = self.leases.owned
        changed = self.leases.changed
        while True:
            streams = {self.keys.actions(o.call_id): o.last_action for o in owned_calls.values() if _acting(o)}
            if not streams:
                changed.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(poll / 1000):
                        await changed.wait()
                continue
            try:
                self.counters.redis_ops += 1
                entries: Any = await self.redis.client.xread(streams, count=100, block=poll)  # type: ignore[arg-type]
                for stream_key, items in entries or []:
                    owned = owned_calls.get(self.keys.call_of_actions(stream_key))
                    if owned is None or not _acting(owned):
                        continue
                    for entry_id, fields in items:
                        try:
                            self._apply(owned, entry_id, fields)
                        except Exception:  # one entry must not end the reader of every call's actions
                            log.exception("fleet.action_entry_failed", call_id=owned.call_id, entry=entry_id)
            except REDIS_FAILED as exc:
                self.redis.failed("read actions", exc)
                await asyncio.sleep(min(1.0, self.redis.settings.renew_interval))
                continue
            for owned in list(owned_calls.values()):
                if owned.applied_unsaved:
                    try:
                        await self.leases.save_applied(owned)
                    except REDIS_FAILED as exc:
                        self.redis.failed("record applied actions", exc)

    def _apply(self, owned: Owned, entry_id: str, fields: dict[str, str]) -> None:
        owned.last_action = entry_id
        owned.applied_unsaved = True
        upto = fields.get("upto") or ""
        if upto.isdigit():
            owned.applied_upto = max(owned.applied_upto, int(upto))
        requester = fields.get("handover")
        if requester is not None:
            if requester != self.redis.token:
                self.leases.spawn(self.handovers.hand_over(owned, requester))
            return
        outcome = fields.get("transfer")
        if outcome is not None:  # the carrier's word on the call's transfer (bridge.fleet.transfers)
            if self.outcomes is not None:
                self.outcomes.received(owned.call_id, outcome)
            return
        try:
            actions = parse_actions(fields.get("actions", "[]"))
        except (ActionError, ValueError) as exc:  # validated when accepted: only a foreign writer gets here
            log.warning("fleet.bad_action_entry", call_id=owned.call_id, entry=entry_id, error=str(exc)[:200])
            return
        key = fields.get("key") or ""
        if owned.call is not None:
            try:
                owned.call.apply_actions(actions, f"rest:{key}" if key else f"fleet:{entry_id}")
            except Exception:  # a bug applying one entry must not stop the reader of every call's actions
                log.exception("fleet.apply_failed", call_id=owned.call_id, entry=entry_id)
                return
        self.counters.actions_applied += len(actions)


def _acting(owned: Owned) -> bool:
    """Are the call's actions read now? Not before its lease is taken, nor once lost or over, nor while
    it has no call to apply them to (an adoption under way: they wait in Redis until the call is attached)."""
    return bool(owned.epoch) and not owned.lost and not owned.over and owned.call is not None
