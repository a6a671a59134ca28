"""Fleet mode on a real redis-server (started by the test on a loopback port, AOF on): several bridge
instances, one Redis, a call owned by the instance that holds its carrier socket.

What is checked here: ownership with an epoch that fences a former owner, and bot actions accepted
by any instance and carried out by the owner, in the order they were accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from bridge.fleet.keys import ACQUIRE, MARK_APPLIED, RENEW, Keys
from tests.support.bridge_process import BridgeProcess, start_bridge
from tests.support.calls import WEBHOOK_SECRET, BridgeFactory, caller_audio, play_call, wait_for
from tests.support.fakes import FakeGladia, FakeWebhook
from tests.support.phone import phone_call
from tests.support.process import minimal_env
from tests.support.proxy import TcpProxy
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.timeout(60)

TOKEN = "fleet-api-token-0123456789"


SECRET = "the-fleet-shares-this-secret"  # BRIDGE_SECRET: a restarted stream's proof, on every instance
FAST = {"fleet__lease_ttl": 1.5, "fleet__renew_interval": 0.5, "fleet__action_poll_ms": 100}


class Instances:
    """The bridge instances of one test, on its redis-server, the fake Gladia and the bot: in this
    process (:meth:`here`) or as real processes that can be killed or stopped (:meth:`process`)."""

    def __init__(
        self, make_bridge: BridgeFactory, fake_gladia: FakeGladia, hook_url: str, redis: RedisServer, tmp: Path
    ) -> None:
        self.make_bridge, self.fake_gladia, self.hook_url, self.redis, self.tmp = (
            make_bridge,
            fake_gladia,
            hook_url,
            redis,
            tmp,
        )

    async def here(self, name: str, redis_url: str | None = None, **overrides: Any) -> Any:
        env = {
            "BRIDGE_REDIS_URL": redis_url or self.redis.url,
            "BRIDGE_INSTANCE_ID": name,
            "BRIDGE_DATA_DIR": str(self.tmp / name),
            "BRIDGE_SECRET": SECRET,
            "BRIDGE_API_TOKEN": TOKEN,
        }
        return await self.make_bridge(env, **{**FAST, **overrides})

    async def process(self, name: str, server_toml: str = "") -> BridgeProcess:
        config = self.tmp / f"{name}.toml"
        config.write_text("[fleet]\nlease_ttl = 1.5\nrenew_interval = 0.5\n" + server_toml)
        env = minimal_env(
            GLADIA_API_URL=self.fake_gladia.base_url,
            GLADIA_API_KEY="test-key",
            BOT_WEBHOOK_URL=self.hook_url,
            BOT_WEBHOOK_SECRET=WEBHOOK_SECRET,
            BRIDGE_REDIS_URL=self.redis.url,
            BRIDGE_INSTANCE_ID=name,
            BRIDGE_SECRET=SECRET,
            BRIDGE_CONFIG=str(config),
        )
        return await start_bridge(env)


@pytest.fixture
def instances(
    make_bridge: BridgeFactory,
    fake_gladia: FakeGladia,
    webhook: tuple[FakeWebhook, str],
    redis_server: RedisServer,
    tmp_path: Path,
) -> Instances:
    return Instances(make_bridge, fake_gladia, webhook[1], redis_server, tmp_path)


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
    taking = [*lease, keys.carrier_call("twilio", "CA1")]
    try:
        assert await acquire(keys=taking, args=["A:1", 200, 0, "c1", "twilio", "CA1"]) == [1, 1]
        assert await acquire(keys=taking, args=["B:1", 200, 0, "c1", "twilio", "CA1"]) == [0, "A:1"]  # held
        await asyncio.sleep(0.3)  # A pauses past its lease
        assert await acquire(keys=taking, args=["B:1", 200, 0, "c1", "twilio", "CA1"]) == [1, 2]
        assert await renew(keys=lease, args=["A:1", 1, 200, 0, "c1"]) == 0  # A is fenced out
        assert await mark(keys=[keys.call("c1")], args=[1, "5-0"]) == 0
        assert await mark(keys=[keys.call("c1")], args=[2, "7-0"]) == 1
        assert await r.hget(keys.call("c1"), "actions_applied") == "7-0"
        assert await renew(keys=lease, args=["B:1", 2, 200, 0, "c1"]) == 1
    finally:
        await r.aclose()


async def test_an_action_posted_to_any_instance_is_played_by_the_owner_in_order(
    fake_gladia: FakeGladia,
    webhook: tuple[FakeWebhook, str],
    instances: Instances,
) -> None:
    """A call on instance A; the bot posts to B, then A, then B: the owner (A) carries them out in that
    order (the marks come back in order and B's `say` is spoken on A's call); an Idempotency-Key
    repeated on the other instance answers the first answer and applies nothing twice; B answers 404
    for a call no instance has, and 409 once A's call has ended."""
    hook, _ = webhook
    fake_gladia.segment_seconds = 3600.0  # no transcripts: only the bot's actions matter here
    a, b = await instances.here("A"), await instances.here("B")
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


async def test_kill_9_of_the_owner_mid_call_every_event_is_delivered_by_another_instance(
    webhook: tuple[FakeWebhook, str],
    instances: Instances,
) -> None:
    """Instance A (a real process) owns a call and stores its events in Redis while the bot is down;
    A is killed with SIGKILL mid-call. Instance B takes the call over once A's lease lapses and
    delivers every event A had accepted, in order, with A's webhook-ids, then `call.ended` with
    `end_reason: instance_lost`: the bot may see a repeat, never a gap or a reorder."""
    hook, _ = webhook
    a = await instances.process("A")
    await instances.here("B")
    hook.outage_stall = 0.05
    caller = asyncio.create_task(play_call(f"{a.ws}/twilio/stream", caller_audio(8.0), pace=0.02))
    try:
        await wait_for(lambda: len(hook.events("utterance.final")) >= 1, timeout=15)
        hook.outage_until = time.monotonic() + 3600  # the bot goes down: A's events pile up in Redis
        await wait_for(lambda: len([r for r in hook.requests if r.status >= 500]) >= 3, timeout=15)
        a.proc.kill()  # SIGKILL, mid-call
        await a.proc.wait()
        before_kill = len(hook.requests)
    finally:
        with contextlib.suppress(Exception):
            await caller
        await a.stop()  # reaps the killed process (or stops it, if the test failed before the kill)
    hook.outage_until = 0.0  # the bot is back
    await wait_for(lambda: bool(hook.events("call.ended")), timeout=20)
    delivered = hook.events()
    sequences = [e["sequence"] for e in delivered]
    assert sequences == list(range(1, len(sequences) + 1))  # every event, in order, no gap
    ended = delivered[-1]
    assert ended["type"] == "call.ended" and ended["summary"]["end_reason"] == "instance_lost"
    assert len(hook.events("utterance.final")) >= 2  # some finals were stored while the bot was down
    ids = [r.headers["webhook-id"] for r in hook.requests if r.status < 300]
    assert all(i.startswith(f"msg_{ended['call']['id']}_") for i in ids)  # A's ids, kept by B
    first_seen = list(dict.fromkeys(ids))
    assert first_seen == [f"msg_{ended['call']['id']}_{n}" for n in sequences]  # first deliveries in order
    # what A had stored and not delivered reached the bot from B: finals among them
    from_b = [r.json["type"] for r in hook.requests[before_kill:] if r.status < 300]
    assert from_b.count("utterance.final") >= 1 and from_b[-1] == "call.ended", from_b


async def test_a_former_owner_paused_past_its_lease_writes_nothing_after_the_takeover(
    webhook: tuple[FakeWebhook, str],
    redis_server: RedisServer,
    instances: Instances,
) -> None:
    """A (a real process) owns a call with events waiting for a bot that is down; A is stopped with
    SIGSTOP, B takes the call over and delivers them, ending the call as instance_lost. A is then
    continued: its renewal is refused (the epoch moved on), its Redis writes are fenced, and it posts
    nothing more to the bot."""
    hook, _ = webhook
    a = await instances.process("A")
    await instances.here("B")
    hook.outage_stall = 0.05
    caller = asyncio.create_task(play_call(f"{a.ws}/twilio/stream", caller_audio(20.0), pace=0.02))
    r = aioredis.from_url(redis_server.url, decode_responses=True)
    try:
        await wait_for(lambda: len(hook.events("utterance.final")) >= 1, timeout=15)
        hook.outage_until = time.monotonic() + 3600
        await wait_for(lambda: len([q for q in hook.requests if q.status >= 500]) >= 3, timeout=15)
        a.proc.send_signal(signal.SIGSTOP)
        hook.outage_until = 0.0
        await wait_for(lambda: bool(hook.events("call.ended")), timeout=20)  # B delivered, ended the call
        call_id = hook.events("call.ended")[0]["call"]["id"]
        keys = Keys()
        before: tuple[Any, Any] = (await r.hgetall(keys.call(call_id)), await r.xrange(keys.outbox(call_id)))
        requests_before = len(hook.requests)
        a.proc.send_signal(signal.SIGCONT)
        await wait_for(lambda: bool(a.logs("fleet.lease_lost")), timeout=10)
        # A ends the call on its side: it hangs the phone up (its end is not sent to the bot)
        await wait_for(lambda: caller.done(), timeout=10)
        await wait_for(lambda: bool(a.logs("call.ended")), timeout=10)
        assert a.logs("call.ended")[0]["end_reason"] == "instance_lost"
        await asyncio.sleep(2.0)  # A's delivery worker and outbox writer have had time to try
        after = (await r.hgetall(keys.call(call_id)), await r.xrange(keys.outbox(call_id)))
    finally:
        caller.cancel()
        with contextlib.suppress(BaseException):
            await caller
        with contextlib.suppress(ProcessLookupError):
            a.proc.send_signal(signal.SIGCONT)
        await r.aclose()
        await a.stop()
    record: dict[str, str] = before[0]
    assert (record["epoch"], record["owner"].split(":")[0], record["state"]) == ("2", "B", "ended")
    assert after == before  # nothing written by A after the takeover
    assert hook.requests[requests_before:] == []  # and nothing posted to the bot
    assert hook.events("call.ended")[0]["summary"]["end_reason"] == "instance_lost"
    assert a.logs("webhook.call_taken_over") or a.logs("fleet.lease_lost")


async def test_redis_killed_and_restarted_loses_no_accepted_event(
    webhook: tuple[FakeWebhook, str],
    redis_server: RedisServer,
    instances: Instances,
) -> None:
    """redis-server is killed with SIGKILL mid-call (longer than a lease) while the bot is down, then
    started again on its AOF (appendfsync always): every event Redis had accepted is still there, the
    instance reconnects by itself, keeps its call (same epoch), and the bot gets every event once the
    call ends normally, in order."""
    hook, _ = webhook
    a = await instances.here("A")
    hook.outage_stall = 0.05
    caller = asyncio.create_task(play_call(str(a.make_url("/twilio/stream")), caller_audio(9.0), pace=0.02))
    keys = Keys()
    r = aioredis.from_url(redis_server.url, decode_responses=True)
    try:
        await wait_for(lambda: bool(hook.events("call.started")), timeout=10)
        call_id = hook.events("call.started")[0]["call"]["id"]
        hook.outage_until = time.monotonic() + 3600  # the bot is down: events wait in Redis
        for _ in range(200):
            stored: Any = await r.xrange(keys.outbox(call_id))
            if len(stored) >= 2:
                break
            await asyncio.sleep(0.05)
        assert len(stored) >= 2
        await r.aclose()
        redis_server.kill()  # SIGKILL: only what the AOF has survives
        await asyncio.sleep(2.5)  # longer than the lease
        async with aiohttp.ClientSession() as http, http.get(a.make_url("/healthz")) as resp:
            health = await resp.json()
        assert health["status"] == "degraded" and "fleet Redis unreachable" in health["degraded"][0]
        redis_server.start()
        r = aioredis.from_url(redis_server.url, decode_responses=True)
        kept = await r.xrange(keys.outbox(call_id), "-", stored[-1][0])
        assert kept == stored  # every accepted event is still there
        await wait_for(lambda: caller.done(), timeout=20)
        await asyncio.sleep(1.0)  # a few renewals after the restart
        record: Any = await r.hgetall(keys.call(call_id))
        assert record["epoch"] == "1" and record["owner"].startswith("A:")  # kept its call, same epoch
        async with aiohttp.ClientSession() as http, http.get(a.make_url("/healthz")) as resp:
            health = await resp.json()
        assert health["status"] == "ok" and health["fleet"]["instance_id"] == "A"
        hook.outage_until = 0.0  # the bot is back
        await wait_for(lambda: bool(hook.events("transcript.completed")), timeout=30)
    finally:
        await r.aclose()
    delivered = hook.events()
    assert [e["sequence"] for e in delivered] == list(range(1, len(delivered) + 1))
    assert hook.events("call.ended")[0]["summary"]["end_reason"] == "stop"
    ok = {q.headers["webhook-id"] for q in hook.requests if q.status < 300}
    assert {fields["webhook_id"] for _, fields in stored} <= ok


async def test_a_redis_that_answers_garbage_stops_no_fleet_loop(
    fake_gladia: FakeGladia,
    webhook: tuple[FakeWebhook, str],
    redis_server: RedisServer,
    instances: Instances,
) -> None:
    """For a second mid-call, a proxy between instance A and Redis answers every command with a reply
    that is no UTF-8 (what a URL pointing at another service, or a corrupted reply, gives): each round
    trip fails like Redis being down (counted, /healthz degraded, an action answered 503). Once Redis
    answers again, none of A's loops is gone: the heartbeat keeps the call under its epoch, an action
    posted afterwards is played, every event arrives in order, and A shuts down cleanly."""
    hook, _ = webhook
    fake_gladia.segment_seconds = 3600.0  # no transcripts: the call, its leases and actions matter here
    proxy = TcpProxy(redis_server.port)
    await proxy.start()
    a = await instances.here("A", redis_url=f"redis://127.0.0.1:{proxy.port}/0")
    results: dict[str, Any] = {}

    async def health(http: aiohttp.ClientSession) -> Any:
        async with http.get(a.make_url("/healthz")) as resp:
            return await resp.json()

    async def bot(http: aiohttp.ClientSession) -> None:
        await wait_for(lambda: bool(hook.events("call.started")), timeout=10)
        call_id = results["call_id"] = hook.events("call.started")[0]["call"]["id"]
        path = f"/v1/calls/{call_id}/actions"
        for _ in range(100):  # A takes the call's lease as the stream starts
            if (await _api(http, a, "GET", f"/v1/calls/{call_id}"))[0] == 200:
                break
            await asyncio.sleep(0.05)
        proxy.answer = b"$2\r\n\xff\xfe\r\n" * 16
        await asyncio.sleep(1.0)  # two renewals, the action reader's polls, the outbox's writes
        results["during"] = await health(http)
        results["refused"] = await _api(http, a, "POST", path, {"actions": [{"type": "mark", "name": "lost"}]})
        proxy.answer = None
        proxy.cut()  # the garbage still buffered goes with the connections; redis-py connects again
        await asyncio.sleep(1.0)
        results["after"] = await health(http)
        results["accepted"] = await _api(http, a, "POST", path, {"actions": [{"type": "mark", "name": "after"}]})
        await wait_for(lambda: bool(hook.events("playback.mark")), timeout=10)

    r = aioredis.from_url(redis_server.url, decode_responses=True)
    try:
        async with aiohttp.ClientSession() as http:
            task = asyncio.create_task(bot(http))
            await phone_call(str(a.make_url("/twilio/stream")), b"", until=lambda _: task.done(), max_seconds=40)
            await task
        await wait_for(lambda: bool(hook.events("call.ended")), timeout=10)
        for _ in range(100):  # the outbox marks the call ended in Redis after its last event
            record: Any = await r.hgetall(Keys().call(results["call_id"]))
            if record.get("state") == "ended":
                break
            await asyncio.sleep(0.05)
    finally:
        await r.aclose()
        await proxy.close()
    assert results["during"]["status"] == "degraded", results["during"]
    assert "fleet Redis unreachable" in results["during"]["degraded"][0]  # whatever redis-py made of it
    assert results["refused"][0] == 503
    assert results["after"]["status"] == "ok" and results["after"]["fleet"]["redis_errors"] > 0
    assert results["accepted"][0] == 202
    assert [e["name"] for e in hook.events("playback.mark")] == ["after"]
    assert record["epoch"] == "1" and record["owner"].startswith("A:") and record["state"] == "ended"
    delivered = hook.events()
    assert [e["sequence"] for e in delivered] == list(range(1, len(delivered) + 1))
    assert hook.events("call.ended")[0]["summary"]["end_reason"] == "stop"


async def test_a_restarted_stream_on_another_instance_carries_on_the_same_gladia_session(
    fake_gladia: FakeGladia,
    webhook: tuple[FakeWebhook, str],
    instances: Instances,
) -> None:
    """Stream 1 reaches instance A and drops without stop; stream 2 of the same carrier call (its
    resume token from /twilio/voice) reaches instance B. A hands the call over (Gladia acknowledged
    what it sent; its session socket closed with the session kept), B takes it under a new epoch and
    carries on: the fake Gladia sees one session, never two sockets on it at once, holding exactly
    both parts of the caller's audio; one event sequence; the bot gets call.stream_restarted."""
    from tests.test_stream_restart import CALL_SID, stream_part, voice_parameters

    hook, _ = webhook
    a, b = await instances.here("A"), await instances.here("B")
    audio = caller_audio(3.0)
    await stream_part(
        str(a.make_url("/twilio/stream")), "MZ" + "1" * 32, audio[:12000], False, await voice_parameters(a, CALL_SID)
    )
    await wait_for(lambda: any(len(s.audio) == 12000 for s in fake_gladia.sessions.values()), timeout=10)
    await stream_part(
        str(b.make_url("/twilio/stream")), "MZ" + "2" * 32, audio[12000:], True, await voice_parameters(b, CALL_SID)
    )
    await wait_for(lambda: bool(hook.events("transcript.completed")), timeout=20)

    (session,) = fake_gladia.sessions.values()  # one session for the whole call
    assert bytes(session.audio) == audio  # both parts, nothing lost, nothing twice
    assert session.most_open_sockets == 1  # A's socket closed before B's opened
    events = hook.events()
    assert [e["sequence"] for e in events] == list(range(1, len(events) + 1))
    assert len({e["call"]["id"] for e in events}) == 1
    assert [e["type"] for e in events].count("call.stream_restarted") == 1
    restarted = hook.events("call.stream_restarted")[0]
    assert restarted["call"]["stream_sid"] == "MZ" + "2" * 32 and restarted["streams"] == 2
    ended = hook.events("call.ended")[0]["summary"]
    assert ended["end_reason"] == "stop" and ended["stt_sessions"] == 1


async def test_a_restarted_stream_carries_on_a_call_whose_owner_was_killed(
    fake_gladia: FakeGladia,
    webhook: tuple[FakeWebhook, str],
    instances: Instances,
) -> None:
    """Stream 1 reaches instance A (a real process) and drops; A is killed with SIGKILL; stream 2 of the
    same call reaches B. Nobody can hand the call over: B waits for A's lease to lapse (no sweeper ends
    the call meanwhile), takes it, and carries on the same Gladia session from the offset A recorded:
    one session with exactly both parts, the call ends normally, not as instance_lost."""
    from tests.test_stream_restart import CALL_SID, stream_part, voice_parameters

    hook, _ = webhook
    a = await instances.process("A", "[server]\nstream_restart_grace = 30\n")
    b = await instances.here("B")
    audio = caller_audio(3.0)
    try:
        await stream_part(
            f"{a.ws}/twilio/stream", "MZ" + "1" * 32, audio[:12000], False, await voice_parameters(b, CALL_SID)
        )
        await wait_for(lambda: any(len(s.audio) == 12000 for s in fake_gladia.sessions.values()), timeout=10)
        await asyncio.sleep(1.5)  # A records the acknowledged offset (at most once a second)
        a.proc.kill()
        await a.proc.wait()
        await stream_part(
            str(b.make_url("/twilio/stream")), "MZ" + "2" * 32, audio[12000:], True, await voice_parameters(b, CALL_SID)
        )
        await wait_for(lambda: bool(hook.events("transcript.completed")), timeout=20)
    finally:
        await a.stop()
    (session,) = fake_gladia.sessions.values()
    assert bytes(session.audio) == audio and session.most_open_sockets == 1
    events = hook.events()
    assert [e["sequence"] for e in events] == list(range(1, len(events) + 1))
    assert [e["type"] for e in events].count("call.stream_restarted") == 1
    assert hook.events("call.ended")[0]["summary"]["end_reason"] == "stop"


async def test_a_draining_instance_hands_its_waiting_call_over(
    fake_gladia: FakeGladia,
    webhook: tuple[FakeWebhook, str],
    instances: Instances,
) -> None:
    """Instance A (a real process) gets SIGTERM while a call waits there for its restarted stream: the
    drain keeps the call waiting, its restarted stream reaches B, A hands it over (one Gladia socket at
    a time) and then exits; the call carries on and ends normally on B."""
    from tests.test_stream_restart import CALL_SID, stream_part, voice_parameters

    hook, _ = webhook
    a = await instances.process("A", "[server]\nstream_restart_grace = 30\nshutdown_timeout = 20\n")
    b = await instances.here("B")
    audio = caller_audio(3.0)
    try:
        await stream_part(
            f"{a.ws}/twilio/stream", "MZ" + "1" * 32, audio[:12000], False, await voice_parameters(b, CALL_SID)
        )
        await wait_for(lambda: any(len(s.audio) == 12000 for s in fake_gladia.sessions.values()), timeout=10)
        a.proc.send_signal(signal.SIGTERM)  # A drains: its waiting call stays, to be handed over
        await wait_for(lambda: bool(a.logs("bridge.draining")), timeout=10)
        await stream_part(
            str(b.make_url("/twilio/stream")), "MZ" + "2" * 32, audio[12000:], True, await voice_parameters(b, CALL_SID)
        )
        await wait_for(lambda: bool(hook.events("transcript.completed")), timeout=20)
        assert await asyncio.wait_for(a.proc.wait(), 20) == 0  # A left once the call was handed over
    finally:
        await a.stop()
    assert a.logs("fleet.call_handed_over")
    (session,) = fake_gladia.sessions.values()
    assert bytes(session.audio) == audio and session.most_open_sockets == 1
    assert hook.events("call.ended")[0]["summary"]["end_reason"] == "stop"
    assert [e["type"] for e in hook.events()].count("call.stream_restarted") == 1
