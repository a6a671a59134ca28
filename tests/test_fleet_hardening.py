"""Fleet mode's bounds on what the bot can put into Redis, on a real redis-server (AOF on).

* Action bodies leave Redis once applied: the owner deletes the entries it applied from the call's
  action stream (under its epoch, with the position a successor reads from), and a call's actions
  waiting for their owner hold at most a fixed number of bytes: a request beyond it answers 429.
* A call id that is not one the bridge makes (32 lowercase hex digits) is "no call" at the HTTP
  edge and never becomes a Redis key (``<id>:lease`` would otherwise name the call's lease).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import io
import json
import struct
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from bridge.fleet.actions import MAX_PENDING_ACTION_BYTES
from bridge.fleet.keys import ACQUIRE, Keys
from bridge.ids import is_call_id
from bridge.reply.actions import MAX_AUDIO_BYTES
from tests.support.calls import BridgeFactory, wait_for
from tests.support.fakes import FakeGladia, FakeWebhook
from tests.support.phone import phone_call
from tests.support.redis_server import RedisServer
from tests.test_fleet import TOKEN, Instances, _api

pytestmark = pytest.mark.timeout(90)

CALL = "0123456789abcdef0123456789abcdef"  # a call id as the bridge makes them


@pytest.fixture
def instances(
    make_bridge: BridgeFactory,
    fake_gladia: FakeGladia,
    webhook: tuple[FakeWebhook, str],
    redis_server: RedisServer,
    tmp_path: Path,
) -> Instances:
    return Instances(make_bridge, fake_gladia, webhook[1], redis_server, tmp_path)


def big_wav(size: int = 4_000_000) -> bytes:
    """A WAV of ``size`` bytes (4 MB: 5.3 MB of base64 in a request; at most 4 MiB may be played):
    silence, 16-bit at 48 kHz (42 s: a call may have 300 s queued)."""
    assert size <= MAX_AUDIO_BYTES
    data = bytes(size - 44)
    fmt = struct.pack("<HHIIHH", 1, 1, 48000, 96000, 2, 16)
    chunks = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(chunks)) + chunks


async def _memory(r: aioredis.Redis, key: str) -> int:
    return int(await r.memory_usage(key, samples=0) or 0)


async def _own_call_elsewhere(r: aioredis.Redis, call_id: str) -> None:
    """The call's record and lease, as an instance that holds the call and reads nothing (it hangs,
    or died a moment ago) left them: the real ACQUIRE script, with a lease of a minute."""
    keys = Keys()
    acquire = r.register_script(ACQUIRE)
    taking = [keys.lease(call_id), keys.call(call_id), keys.leases, keys.carrier_call("twilio", "CA9")]
    assert await acquire(keys=taking, args=["gone:1", 60_000, 0, call_id, "twilio", "CA9"]) == [1, 1]


async def test_applied_action_bodies_leave_redis(
    fake_gladia: FakeGladia,
    webhook: tuple[FakeWebhook, str],
    redis_server: RedisServer,
    instances: Instances,
) -> None:
    """Eight `play`s of a 4 MB WAV (5.3 MB of JSON each, 43 MB in all: more than a call may have
    waiting), posted one after another to either instance, are each applied by the owner; once
    applied, the call's action stream holds nothing of them (it held 43 MB before). An
    Idempotency-Key repeated after its entry was deleted still answers the first answer and plays
    nothing twice."""
    hook, _ = webhook
    fake_gladia.segment_seconds = 3600.0  # no transcripts: only the bot's actions matter here
    a, b = await instances.here("A"), await instances.here("B")
    audio = base64.b64encode(big_wav()).decode()
    keys = Keys()
    r = aioredis.from_url(redis_server.url, decode_responses=True)
    results: dict[str, Any] = {"answers": []}

    def started(action_id: str) -> bool:
        return any(e["action_id"] == action_id for e in hook.events("playback.started"))

    async def bot(http: aiohttp.ClientSession) -> None:
        await wait_for(lambda: bool(hook.events("call.started")), timeout=10)
        call_id = results["call_id"] = hook.events("call.started")[0]["call"]["id"]
        for _ in range(100):  # A takes the call's lease as the stream starts
            if (await _api(http, b, "GET", f"/v1/calls/{call_id}"))[0] == 200:
                break
            await asyncio.sleep(0.05)
        path = f"/v1/calls/{call_id}/actions"
        first = {"actions": [{"type": "play", "id": "p0", "audio": audio, "queue": "replace"}]}
        results["answers"].append(await _api(http, b, "POST", path, first, **{"Idempotency-Key": "play-0"}))
        await wait_for(lambda: started("p0"), timeout=15)
        for n in range(1, 8):
            body = {"actions": [{"type": "play", "id": f"p{n}", "audio": audio, "queue": "replace"}]}
            results["answers"].append(await _api(http, (a, b)[n % 2], "POST", path, body))
            await wait_for(functools.partial(started, f"p{n}"), timeout=15)
        stream = keys.actions(call_id)
        for _ in range(100):  # the owner records what it applied right after applying it
            if await r.xlen(stream) == 0:
                break
            await asyncio.sleep(0.05)
        results["left"] = (await r.xlen(stream), await _memory(r, stream))
        results["repeat"] = await _api(http, a, "POST", path, first, **{"Idempotency-Key": "play-0"})
        await asyncio.sleep(0.5)  # the owner would have applied a repeat by now
        results["left after repeat"] = await r.xlen(stream)

    try:
        async with aiohttp.ClientSession() as http:
            task = asyncio.create_task(bot(http))
            await phone_call(str(a.make_url("/twilio/stream")), b"", until=lambda _: task.done(), max_seconds=80)
            await task
    finally:
        await r.aclose()
    assert [status for status, _ in results["answers"]] == [202] * 8
    entries, memory = results["left"]
    assert entries == 0 and memory < 64 * 1024, f"{entries} entries, {memory} bytes left in the call's action stream"
    assert results["repeat"] == results["answers"][0]  # the first answer, from the other instance
    assert results["left after repeat"] == 0
    assert [e["action_id"] for e in hook.events("playback.started")] == [f"p{n}" for n in range(8)]  # p0 once


async def test_a_burst_beyond_the_calls_budget_is_refused_with_429(
    redis_server: RedisServer,
    instances: Instances,
) -> None:
    """The call's owner reads nothing (it hangs): large `play`s posted meanwhile wait in Redis until
    they fill the call's budget; the next one is refused with 429 saying why, and adds nothing. What
    waits stays within the budget; a repeated Idempotency-Key still answers its first answer."""
    r = aioredis.from_url(redis_server.url, decode_responses=True)
    b = await instances.here("B")
    audio = base64.b64encode(big_wav()).decode()
    stream = Keys().actions(CALL)
    answers: list[tuple[int, Any]] = []
    try:
        await _own_call_elsewhere(r, CALL)
        async with aiohttp.ClientSession() as http:
            path = f"/v1/calls/{CALL}/actions"
            for n in range(4):
                body = {"actions": [{"type": "play", "id": f"p{n}", "audio": audio}]}
                answers.append(await _api(http, b, "POST", path, body, **{"Idempotency-Key": f"k{n}"}))
            entries, memory = await r.xlen(stream), await _memory(r, stream)
            repeat = await _api(
                http,
                b,
                "POST",
                path,
                {"actions": [{"type": "play", "id": "p0", "audio": audio}]},
                **{"Idempotency-Key": "k0"},
            )
            small = await _api(http, b, "POST", path, {"actions": [{"type": "mark", "name": "still_fits"}]})
            data = io.BytesIO(json.dumps({"actions": [{"type": "play", "audio": audio}]}).encode())
            headers = {"Authorization": f"Bearer {TOKEN}"}
            async with http.post(b.make_url(path), data=data, headers=headers) as resp:
                again = (resp.status, resp.headers.get("Retry-After"))
    finally:
        await r.aclose()
    statuses = [status for status, _ in answers]
    size = len(json.dumps({"actions": [{"type": "play", "audio": audio, "id": "p0"}]}, separators=(",", ":")))
    waiting = MAX_PENDING_ACTION_BYTES // size  # how many such bodies fit in the budget (3 of 5.3 MB)
    assert 0 < waiting < 4 and MAX_PENDING_ACTION_BYTES % size > 100_000  # clear of the edge
    assert statuses == [202] * waiting + [429] * (4 - waiting), statuses
    refused = answers[-1][1]["error"]
    assert f"call {CALL} has" in refused and "waiting for its owner" in refused and "try again" in refused, refused
    assert entries == waiting
    assert memory <= MAX_PENDING_ACTION_BYTES * 1.3, memory  # the budget counts JSON; Redis adds its allocator's
    assert repeat == answers[0]
    assert small[0] == 202  # the budget counts bytes: a small action still fits
    assert again == (429, "1")


BAD_IDS = [
    f"{CALL}:lease",
    f"{CALL}:out",
    f"{CALL}:in",
    f"{CALL}:idem:k",
    "*",
    CALL.upper(),
    CALL[:-1],
    CALL + "0",
    "z" * 32,
    "nope",
    "a" * 4000,
]


def test_call_ids_are_what_the_bridge_makes() -> None:
    import uuid

    assert is_call_id(uuid.uuid4().hex) and is_call_id(CALL)
    for bad in [*BAD_IDS, "", CALL + "\n", " " + CALL]:
        assert not is_call_id(bad), bad


async def test_a_malformed_call_id_is_no_call_and_touches_no_redis_key(
    redis_server: RedisServer,
    instances: Instances,
) -> None:
    """`GET /v1/calls/{id}` and `POST .../actions` with an id that names another of the call's keys
    (`<id>:lease`, `<id>:out`, `<id>:in`), a pattern, a very long id, or no hex: 404 "no call" (not 503
    "Redis cannot be reached"), no Redis error counted, /healthz still ok; the call itself answers."""
    r = aioredis.from_url(redis_server.url, decode_responses=True)
    a = await instances.here("A")
    keys = Keys()
    try:
        await _own_call_elsewhere(r, CALL)
        await r.xadd(keys.outbox(CALL), {"webhook_id": "msg_x_1"}, id="1-1")
        async with aiohttp.ClientSession() as http:
            assert (await _api(http, a, "POST", f"/v1/calls/{CALL}/actions", {"actions": [{"type": "stop"}]}))[0] == 202
            before = await _api(http, a, "GET", "/healthz")
            answers = {}
            for bad in BAD_IDS:
                answers[bad] = (
                    await _api(http, a, "GET", f"/v1/calls/{bad}"),
                    await _api(http, a, "POST", f"/v1/calls/{bad}/actions", {"actions": [{"type": "stop"}]}),
                )
            after = await _api(http, a, "GET", "/healthz")
            good = await _api(http, a, "GET", f"/v1/calls/{CALL}")
        kinds = {k: await r.type(k) for k in (keys.lease(CALL), keys.outbox(CALL), keys.actions(CALL))}
    finally:
        await r.aclose()
    for bad, (got, posted) in answers.items():
        for status, body in (got, posted):
            assert status == 404 and body["error"].startswith("no call"), (bad[:50], status, body)
            assert len(body["error"]) < 200  # a very long id is not echoed whole
    assert before[1]["fleet"]["redis_errors"] == after[1]["fleet"]["redis_errors"] == 0
    assert after[1]["status"] == "ok"
    assert good[0] == 200 and good[1]["id"] == CALL and good[1]["state"] == "live"
    assert kinds == {keys.lease(CALL): "string", keys.outbox(CALL): "stream", keys.actions(CALL): "stream"}


async def test_a_malformed_entry_in_an_action_stream_stops_nothing(
    fake_gladia: FakeGladia,
    webhook: tuple[FakeWebhook, str],
    redis_server: RedisServer,
    instances: Instances,
) -> None:
    """Entries the bridge never writes (not actions, nested too deep, a list of nonsense) written straight
    into a call's action stream: the owner logs and skips each, and the next action posted still plays
    (the owner's one reader serves every call it holds: it must not die of one entry)."""
    hook, _ = webhook
    fake_gladia.segment_seconds = 3600.0
    a = await instances.here("A")
    keys = Keys()
    r = aioredis.from_url(redis_server.url, decode_responses=True)
    results: dict[str, Any] = {}

    async def bot(http: aiohttp.ClientSession) -> None:
        await wait_for(lambda: bool(hook.events("call.started")), timeout=10)
        call_id = hook.events("call.started")[0]["call"]["id"]
        for _ in range(100):  # A takes the call's lease as the stream starts
            if (await _api(http, a, "GET", f"/v1/calls/{call_id}"))[0] == 200:
                break
            await asyncio.sleep(0.05)
        for bad in ('{"actions": [{"type": "nope"}]}', "[" * 2000, "not json", '{"actions": 5}'):
            await r.xadd(keys.actions(call_id), {"actions": bad})
        await asyncio.sleep(0.5)  # the owner has read them
        body = {"actions": [{"type": "dtmf", "id": "after", "digits": "1"}]}
        results["answer"] = await _api(http, a, "POST", f"/v1/calls/{call_id}/actions", body)
        with contextlib.suppress(TimeoutError):
            await wait_for(lambda: bool(hook.events("playback.started")), timeout=10)

    try:
        async with aiohttp.ClientSession() as http:
            task = asyncio.create_task(bot(http))
            await phone_call(str(a.make_url("/twilio/stream")), b"", until=lambda _: task.done(), max_seconds=40)
            await task
    finally:
        await r.aclose()
    assert results["answer"][0] == 202
    assert [e["action_id"] for e in hook.events("playback.started")] == ["after"]
