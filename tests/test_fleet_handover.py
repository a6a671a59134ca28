"""Fleet mode's hand-over, seen from the fleet objects themselves (two :class:`Fleet` on a real
redis-server, no bridge process): the instance that adopts a restarted call holds its lease before the
call is built, and actions routed meanwhile wait in Redis until the call is attached to it."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from bridge.call.services import FleetCall
from bridge.fleet.fleet import Fleet
from bridge.reply.actions import Action, parse_actions
from bridge.settings import FleetSettings
from tests.support.calls import wait_for
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.timeout(60)


@dataclass
class FakeCall:
    """What the fleet holds of a call (:class:`FleetCall`), recording what the fleet asks of it."""

    id: str
    applied: list[tuple[list[Action], str]] = field(default_factory=list)
    handed_over: bool = False
    lost: int = 0

    def apply_actions(self, actions: list[Action], key: str) -> object:
        self.applied.append((actions, key))
        return None

    def session_fields(self) -> dict[str, str] | None:
        return None

    async def hand_over(self) -> dict[str, str] | None:
        self.handed_over = True
        return {"streams": "1", "channels": "1"}

    def lost_to_another_instance(self) -> None:
        self.lost += 1


def _holds(fleet: Fleet, call_id: str, expected: bool) -> Callable[[], bool]:
    return lambda: fleet.holds(call_id) is expected


HELD: type[FleetCall] = FakeCall  # mypy --strict fails here if the fake stops being what the fleet holds


async def test_actions_routed_while_an_adopted_call_is_built_wait_in_redis_until_it_is_attached(
    redis_server: RedisServer,
) -> None:
    """``adopt`` takes the lease with no call attached: an action routed then is neither applied nor
    lost; once the call built for the adoption is given to ``own``, it is applied to that call (once),
    never to the former owner's."""
    settings = FleetSettings.model_validate(
        {
            "redis_url": redis_server.url,
            "key_prefix": "t",
            "lease_ttl": 4.0,
            "renew_interval": 1.0,
            "action_poll_ms": 50,
        }
    )
    a, b = Fleet(settings, "a"), Fleet(settings, "b")
    await a.start()
    await b.start()
    try:
        call_id = uuid.uuid4().hex
        first = FakeCall(call_id)
        a.own(first, "twilio", "CA-restarted")
        await wait_for(lambda: a.holds(call_id) is True, timeout=5)

        adopted = await b.adopt("twilio", "CA-restarted", channels=1)
        assert adopted is not None and adopted.call_id == call_id
        assert first.handed_over and b.holds(call_id) is True
        await wait_for(lambda: a.holds(call_id) is False, timeout=5)  # its hand-over ends as b's adoption does

        body = json.dumps({"actions": [{"type": "mark", "name": "while-built"}]}).encode()
        status, _ = await a.route(call_id, body, parse_actions(body), None)
        assert status == 202
        await asyncio.sleep(0.5)  # ten of b's blocking reads: none takes the entry with no call attached
        assert await b.redis.client.xlen(b.redis.keys.actions(call_id)) == 1

        second = FakeCall(call_id)
        b.own(second, "twilio", "CA-restarted")
        await wait_for(lambda: len(second.applied) == 1, timeout=5)
        (actions, _key) = second.applied[0]
        assert [action.type for action in actions] == ["mark"]
        assert not first.applied and not first.lost and not second.lost
        assert b.holds(call_id) is True
        await wait_for(lambda: not b.owned[call_id].applied_unsaved, timeout=5)
        assert await b.redis.client.xlen(b.redis.keys.actions(call_id)) == 0  # applied: gone from Redis
    finally:
        await a.close()
        await b.close()


async def test_the_lease_asked_back_while_a_call_is_handed_over_does_not_end_it_for_its_adopter(
    redis_server: RedisServer,
) -> None:
    """Handing a call over closes its delivery, and a drained delivery asks for the call's lease back
    (the outbox's ``release``). That request must not mark the call ended in Redis, whenever it lands
    around the hand-over: the instance that asked for the call would find it ended and start the
    returning caller as a new call (seen under load, after a transfer nobody answered)."""
    settings = FleetSettings.model_validate(
        {"redis_url": redis_server.url, "key_prefix": "t", "lease_ttl": 4.0, "renew_interval": 1.0}
    )
    a, b = Fleet(settings, "a"), Fleet(settings, "b")
    await a.start()
    await b.start()
    try:
        for n in range(5):
            call_id = uuid.uuid4().hex
            call_sid = f"CA-handed-{n}"
            a.own(FakeCall(call_id), "twilio", call_sid)
            await wait_for(_holds(a, call_id, True), timeout=5)

            async def drained(handed: str, turns: int = n) -> None:  # the outbox's drain: the release queued
                a.leases.release(handed)
                for _ in range(turns):  # the release's write lands before, during or after the hand-over's
                    await asyncio.sleep(0)

            a.handovers.before_handoff = drained
            adopted = await b.adopt("twilio", call_sid, channels=1)
            assert adopted is not None and adopted.call_id == call_id, n
            await wait_for(_holds(a, call_id, False), timeout=5)
            await asyncio.sleep(0.2)  # anything a still had in flight for the call has landed
            record = await b.redis.client.hgetall(b.redis.keys.call(call_id))
            assert record["state"] == "live" and record["owner"] == b.redis.token, n
            assert await b.redis.client.get(b.redis.keys.lease(call_id)) == b.redis.token, n
    finally:
        await a.close()
        await b.close()
