"""Fleet mode on a real redis-server (started by the test on a loopback port, AOF on): several bridge
instances, one Redis, a call owned by the instance that holds its carrier socket.

What is checked here: ownership with an epoch that fences a former owner, and bot actions accepted
by any instance and carried out by the owner, in the order they were accepted.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from bridge.fleet.keys import ACQUIRE, MARK_APPLIED, RENEW, Keys
from tests.support.calls import BridgeFactory, wait_for
from tests.support.fakes import FakeGladia, FakeWebhook
from tests.support.phone import phone_call
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.timeout(60)

TOKEN = "fleet-api-token-0123456789"


@pytest.fixture
async def redis_server(tmp_path: Path) -> AsyncIterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def _api(
    http: aiohttp.ClientSession, server: Any, method: str, path: str, body: Any = None, **headers: str
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {TOKEN}", **headers}
    data = io.BytesIO(json.dumps(body).encode()) if body is not None else None
    async with http.request(method, server.make_url(path), data=data, headers=headers) as resp:
        return resp.status, await resp.json()


async def test_the_epoch_fences_a_former_owner(redis_server: RedisServer) -> None:
    """The scripts themselves: a second instance takes a lapsed lease with a new epoch; the first,
    back from a pause, can neither renew nor record anything under its old epoch."""
    keys = Keys("t")
    r = aioredis.from_url(redis_server.url, decode_responses=True)
    acquire, renew, mark = r.register_script(ACQUIRE), r.register_script(RENEW), r.register_script(MARK_APPLIED)
    lease = [keys.lease("c1"), keys.call("c1"), keys.leases]
    try:
        assert await acquire(keys=lease, args=["A:1", 200, 0, "c1", "twilio", "CA1"]) == [1, 1]
        assert await acquire(keys=lease, args=["B:1", 200, 0, "c1", "twilio", "CA1"]) == [0, "A:1"]  # held
        await asyncio.sleep(0.3)  # A pauses past its lease
        assert await acquire(keys=lease, args=["B:1", 200, 0, "c1", "twilio", "CA1"]) == [1, 2]
        assert await renew(keys=lease, args=["A:1", 1, 200, 0, "c1"]) == 0  # A is fenced out
        assert await mark(keys=[keys.call("c1")], args=[1, "5-0"]) == 0
        assert await mark(keys=[keys.call("c1")], args=[2, "7-0"]) == 1
        assert await r.hget(keys.call("c1"), "actions_applied") == "7-0"
        assert await renew(keys=lease, args=["B:1", 2, 200, 0, "c1"]) == 1
    finally:
        await r.aclose()


async def test_an_action_posted_to_any_instance_is_played_by_the_owner_in_order(
    make_bridge: BridgeFactory,
    fake_gladia: FakeGladia,
    webhook: tuple[FakeWebhook, str],
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    """A call on instance A; the bot posts to B, then A, then B: the owner (A) carries them out in that
    order (the marks come back in order and B's `say` is spoken on A's call); an Idempotency-Key
    repeated on the other instance answers the first answer and applies nothing twice; B answers 404
    for a call no instance has, and 409 once A's call has ended."""
    hook, _ = webhook
    fake_gladia.segment_seconds = 3600.0  # no transcripts: only the bot's actions matter here

    def instance(name: str) -> dict[str, str]:
        return {
            "BRIDGE_REDIS_URL": redis_server.url,
            "BRIDGE_INSTANCE_ID": name,
            "BRIDGE_API_TOKEN": TOKEN,
            "BRIDGE_DATA_DIR": str(tmp_path / name),
        }

    a = await make_bridge(instance("A"), fleet__action_poll_ms=100)
    b = await make_bridge(instance("B"), fleet__action_poll_ms=100)
    results: dict[str, Any] = {}

    async def bot(http: aiohttp.ClientSession) -> None:
        await wait_for(lambda: bool(hook.events("call.started")), timeout=10)
        call_id = hook.events("call.started")[0]["call"]["id"]
        results["call_id"] = call_id
        for _ in range(100):  # A takes the call's lease as the stream starts
            status, record = await _api(http, b, "GET", f"/v1/calls/{call_id}")
            if status == 200:
                break
            await asyncio.sleep(0.05)
        results["seen from B"] = (status, record)
        path = f"/v1/calls/{call_id}/actions"
        first = {"actions": [{"type": "say", "id": "from_b", "text": "One."}, {"type": "mark", "name": "b1"}]}
        results["b1"] = await _api(http, b, "POST", path, first, **{"Idempotency-Key": "k1"})
        results["a2"] = await _api(http, a, "POST", path, {"actions": [{"type": "mark", "name": "a2"}]})
        results["b3"] = await _api(http, b, "POST", path, {"actions": [{"type": "mark", "name": "b3"}]})
        results["repeat"] = await _api(http, a, "POST", path, first, **{"Idempotency-Key": "k1"})
        results["unknown"] = await _api(http, b, "POST", "/v1/calls/nope/actions", {"actions": []})
        await wait_for(lambda: len(hook.events("playback.mark")) >= 3, timeout=20)

    async with aiohttp.ClientSession() as http:
        task = asyncio.create_task(bot(http))
        await phone_call(str(a.make_url("/twilio/stream")), b"", until=lambda _: task.done(), max_seconds=40)
        await task
        await wait_for(lambda: bool(hook.events("call.ended")), timeout=10)
        path = f"/v1/calls/{results['call_id']}/actions"
        for _ in range(100):  # A marks the call ended in Redis as it ends
            results["ended"] = await _api(http, b, "POST", path, {"actions": [{"type": "stop"}]})
            if results["ended"][0] == 409:
                break
            await asyncio.sleep(0.05)

    status, record = results["seen from B"]
    assert status == 200 and record["owner"] == "A" and record["state"] == "live" and record["epoch"] == 1
    status, answer = results["b1"]
    assert status == 202 and [a["status"] for a in answer["actions"]] == ["accepted", "accepted"]
    assert answer["actions"][0]["id"] == "from_b" and answer["actions"][1]["id"].startswith("act_")
    assert results["repeat"] == results["b1"]  # the first answer, from the other instance
    assert results["a2"][0] == 202 and results["b3"][0] == 202
    assert [e["name"] for e in hook.events("playback.mark")] == ["b1", "a2", "b3"]
    assert [e["action_id"] for e in hook.events("playback.started")] == ["from_b"]  # once, on A's call
    assert [e["action_id"] for e in hook.events("playback.finished")] == ["from_b"]
    assert results["unknown"][0] == 404
    assert results["ended"][0] == 409
