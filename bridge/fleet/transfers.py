"""Transfers in fleet mode: the carrier's requests after a bot's ``transfer`` may reach any instance.

* **The transfer desk in Redis** (:class:`FleetDesk`, a :class:`bridge.call.desk.TransferDesk`): the
  instance that hands a call over leaves the ``<Dial>`` under ``{p}:desk:{provider}:{sid}``
  (``SET ... EX``); whichever instance Twilio's ``<Connect action>`` reaches takes it (``GETDEL``:
  once, atomically, even when two fetches race).
* **The carrier's word to the owner** (:meth:`TransferOutcomes.send`): the person answered, or nobody
  did and the bot asked ``on_no_answer: hangup``. The callback reaches any instance; the call waits,
  suspended, on its owner. The outcome goes into the call's action stream (``OUTCOME``), which the
  owner reads already, in order, with the bot's actions; the owner hands it to :attr:`apply` (the
  application's: the suspended call's transfer) and never to the call's reply, so the bot never sees
  it as an action. A call that moved on (adopted by the instance its returning stream reached) has
  its stream read by the new owner, which gets the entry the same way.

Both go through the fleet's :class:`~bridge.fleet.scripts.FleetRedis`, so a failing Redis is counted
and logged like the rest: a desk entry that cannot be left fails the transfer (``action.failed``); one
that cannot be read answers the carrier's default (as when there is none); an outcome that cannot be
routed is logged, and the call ends when its wait runs out (``transferred``).
"""

from __future__ import annotations

import json
from collections.abc import Callable

import structlog

from bridge.call.desk import DESK_TTL
from bridge.errors import ControlError
from bridge.fleet.scripts import REDIS_FAILED, FleetRedis
from bridge.ids import is_call_id

log = structlog.get_logger("bridge.fleet")

MAX_CALL_SID = 128  # characters of a carrier call id put in a key (Twilio's are 34)


class FleetDesk:
    """The transfer desk in Redis (see the module docstring)."""

    def __init__(self, redis: FleetRedis, ttl: float = DESK_TTL) -> None:
        self.redis = redis
        self.ttl = max(1, int(ttl))

    async def put(self, carrier: str, call_sid: str, answer: str) -> None:
        if not call_sid or len(call_sid) > MAX_CALL_SID:
            raise ControlError("the carrier's call id cannot be a desk key")
        self.redis.counters.redis_ops += 1
        try:
            await self.redis.client.set(self.redis.keys.desk(carrier, call_sid), answer, ex=self.ttl)
        except REDIS_FAILED as exc:
            self.redis.failed("leave a transfer's answer", exc)
            raise ControlError("the fleet's Redis cannot be reached") from exc

    async def take(self, carrier: str, call_sid: str) -> str | None:
        if not call_sid or len(call_sid) > MAX_CALL_SID:
            return None
        self.redis.counters.redis_ops += 1
        try:
            answer = await self.redis.client.getdel(self.redis.keys.desk(carrier, call_sid))
        except REDIS_FAILED as exc:
            self.redis.failed("take a transfer's answer", exc)
            return None
        return None if answer is None else str(answer)


Outcome = dict[str, str]  # the carrier's word on a transfer, as bridge.transfer_reach writes it


class TransferOutcomes:
    """The carrier's word on a transfer, routed to the call's owner (see the module docstring).
    :attr:`apply` is set by the application: it applies an outcome to a call suspended here (False:
    no such call here)."""

    def __init__(self, redis: FleetRedis) -> None:
        self.redis = redis
        self.apply: Callable[[Outcome], bool] | None = None

    async def send(self, call_id: str, outcome: Outcome) -> bool:
        """Route ``outcome`` to the owner of ``call_id``; False: no such live call, or no Redis."""
        if not is_call_id(call_id):
            return False
        keys = self.redis.keys
        self.redis.counters.redis_ops += 1
        try:
            done = await self.redis.outcome(
                keys=[keys.call(call_id), keys.actions(call_id)], args=[json.dumps(outcome, separators=(",", ":"))]
            )
        except REDIS_FAILED as exc:
            self.redis.failed("route a transfer's outcome", exc)
            return False
        return int(done) == 1

    def received(self, call_id: str, text: str) -> None:
        """The owner's side: an outcome read from the call's action stream."""
        try:
            raw = json.loads(text)
        except ValueError:
            raw = None
        if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
            log.warning("fleet.bad_transfer_entry", call_id=call_id)  # only a foreign writer gets here
            return
        if raw.get("call") != call_id:
            log.warning("fleet.bad_transfer_entry", call_id=call_id, detail="names another call")
            return
        applied = self.apply(raw) if self.apply is not None else False
        log.info("fleet.transfer_outcome", call_id=call_id, applied=applied)
