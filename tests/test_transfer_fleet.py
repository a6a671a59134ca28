"""A Twilio call transferred in fleet mode: two bridge instances on one Redis behind one public URL (a
load balancer), each of Twilio's requests sent to the instance that does not hold the call.

The call's stream is on instance A; the bot's ``transfer`` is posted by REST to B (routed to A through
the call's action stream); Twilio's ``<Connect action>`` fetch reaches B, which answers the ``<Dial>``
A left on the desk (in Redis); then either nobody answers and the returning ``<Connect><Stream>``
reaches B, which adopts the call (same call id, same Gladia session, ``transfer.failed``), or the
person answers and B's callback ends the call on A (``transfer.completed``, ``end_reason:
transferred``), or nobody answers and the bot asked ``on_no_answer: hangup`` (``transfer.failed``,
``transfer_failed``). Twilio's signatures are computed with its official SDK's ``RequestValidator``
over the public URL, as Twilio signs what it was given."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from bridge.app_keys import FLEET
from bridge.errors import ControlError
from bridge.fleet.fleet import Fleet
from bridge.settings import FleetSettings
from tests.support.calls import BridgeFactory, wait_for
from tests.support.fakes import FakeGladia, FakeWebhook
from tests.support.process import free_port
from tests.support.redis_server import RedisServer
from tests.test_transfer_workers import ACCOUNT_SID, API_TOKEN, AUTH_TOKEN, PublicTwilio, caller

pytestmark = pytest.mark.timeout(60)

PUBLIC = "https://bridge.example"  # the load balancer in front of both instances: what Twilio is given
FAST_FLEET = {"fleet__lease_ttl": 1.5, "fleet__renew_interval": 0.5, "fleet__action_poll_ms": 100}


async def _instance(make_bridge: BridgeFactory, redis: RedisServer, tmp: Path, name: str) -> Any:
    env = {
        "BRIDGE_REDIS_URL": redis.url,
        "BRIDGE_INSTANCE_ID": name,
        "BRIDGE_DATA_DIR": str(tmp / name),
        "BRIDGE_SECRET": "the-fleet-shares-this-secret-0123",
        "BRIDGE_API_TOKEN": API_TOKEN,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "BRIDGE_PUBLIC_URL": PUBLIC,
        "BRIDGE_TRANSFER_TO": "+1555,pbx.example.com",
    }
    return await make_bridge(env, **FAST_FLEET)


def _base(server: Any) -> str:
    return str(server.make_url("")).rstrip("/")


async def _transferred_on_a_posted_to_b(
    http: aiohttp.ClientSession, twilio: PublicTwilio, a: Any, b: Any, hook: FakeWebhook, call_sid: str, action: Any
) -> tuple[dict[str, str], ET.Element, list[dict[str, Any]]]:
    """/twilio/voice (to A), the stream (to A), the transfer posted to B, the stream closed by A, the
    ``<Connect action>`` fetch answered by B. Returns the stream's parameters, the ``<Dial>`` markup
    and what the stream received."""
    parameters = await twilio.voice(http, _base(a), call_sid)
    received: list[dict[str, Any]] = []
    streaming = asyncio.create_task(
        twilio.stream(http, _base(a), call_sid, "MZ" + "1" * 32, parameters, received, seconds=20.0)
    )
    await wait_for(lambda: any(e["call"]["call_sid"] == call_sid for e in hook.events("call.started")))
    call_id = next(e["call"]["id"] for e in hook.events("call.started") if e["call"]["call_sid"] == call_sid)
    url = f"{_base(b)}/v1/calls/{call_id}/actions"
    async with http.post(url, json={"actions": [action]}, headers={"Authorization": f"Bearer {API_TOKEN}"}) as resp:
        assert resp.status == 202, await resp.text()  # accepted by B, routed to A through Redis
    close_code = await asyncio.wait_for(streaming, 20)
    assert close_code == 1000  # A closed the stream: Twilio runs <Connect action>
    status, text = await twilio.post(http, _base(b), f"{PUBLIC}/twilio/after-stream", caller(call_sid))
    assert status == 200, text
    return parameters, ET.fromstring(text), received


async def test_nobody_answers_and_the_returning_stream_on_the_other_instance_carries_on_the_call(
    make_bridge: BridgeFactory,
    fake_gladia: FakeGladia,
    webhook: tuple[FakeWebhook, str],
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    hook, _ = webhook
    a = await _instance(make_bridge, redis_server, tmp_path, "A")
    b = await _instance(make_bridge, redis_server, tmp_path, "B")
    twilio = PublicTwilio(PUBLIC)
    call_sid = "CA" + "5" * 32
    action = {"type": "transfer", "id": "t1", "to": "sip:agent@pbx.example.com", "after": "now", "ring_timeout_s": 10}
    async with aiohttp.ClientSession() as http:
        _, twiml, _ = await _transferred_on_a_posted_to_b(http, twilio, a, b, hook, call_sid, action)
        (sip,) = twiml.iter("Sip")
        assert sip.text == "sip:agent@pbx.example.com"  # A's <Dial>, from Redis, answered by B
        (dial,) = twiml.iter("Dial")
        again = await twilio.post(http, _base(a), f"{PUBLIC}/twilio/after-stream", caller(call_sid))
        assert [el.tag for el in ET.fromstring(again[1])] == ["Hangup"]  # taken once, whoever asks next
        status, text = await twilio.post(
            http, _base(b), dial.attrib["action"], caller(call_sid) | {"DialCallStatus": "no-answer"}
        )
        assert status == 200, text
        back = ET.fromstring(text)
        (stream,) = back.iter("Stream")
        assert stream.attrib["url"] == "wss://bridge.example/twilio/stream"  # back to the bridge, any instance
        returned = {p.attrib["name"]: p.attrib["value"] for p in back.iter("Parameter")}
        assert "bridge.resume" in returned
        close_code = await twilio.stream(
            http, _base(b), call_sid, "MZ" + "2" * 32, returned, [], seconds=2.0, stop=True
        )
        assert close_code == 1000
        await wait_for(lambda: bool(hook.events("call.ended")), timeout=20)
    types = [e["type"] for e in hook.events()]
    assert types.index("transfer.started") < types.index("call.stream_restarted") < types.index("transfer.failed")
    (failed,) = hook.events("transfer.failed")
    assert failed["action_id"] == "t1" and failed["status"] == "no-answer"
    assert len({e["call"]["id"] for e in hook.events()}) == 1  # the same call, carried on by B
    assert len(fake_gladia.sessions) == 1  # the same Gladia session
    restarted = hook.events("call.stream_restarted")[0]
    assert restarted["call"]["stream_sid"] == "MZ" + "2" * 32
    (ended,) = hook.events("call.ended")
    assert ended["summary"]["end_reason"] == "stop" and ended["summary"]["phone_streams"] == 2
    fleet_a, fleet_b = a.app[FLEET], b.app[FLEET]
    assert fleet_a is not None and fleet_b is not None
    assert fleet_a.counters.leases_taken == 1 and fleet_b.counters.leases_taken == 1  # B adopted the call
    events = hook.events()
    assert [e["sequence"] for e in events] == list(range(1, len(events) + 1))  # one sequence, A then B


@pytest.mark.parametrize("how", ["answered", "completed", "hangup"])
async def test_the_dial_result_posted_to_the_other_instance_ends_the_call_on_its_owner(
    make_bridge: BridgeFactory,
    fake_gladia: FakeGladia,
    webhook: tuple[FakeWebhook, str],
    redis_server: RedisServer,
    tmp_path: Path,
    how: str,
) -> None:
    """``answered``: Twilio's ``<Number statusCallback>`` (answered) to B; ``completed``: only the
    ``<Dial action>`` with ``DialCallStatus=completed``, to B; ``hangup``: nobody answered and the bot
    asked ``on_no_answer: hangup``, ``<Dial action>`` ``busy`` to B."""
    hook, _ = webhook
    a = await _instance(make_bridge, redis_server, tmp_path, "A")
    b = await _instance(make_bridge, redis_server, tmp_path, "B")
    twilio = PublicTwilio(PUBLIC)
    call_sid = "CA" + "6" * 32
    action = {"type": "transfer", "id": "t2", "to": "+15550142", "after": "now"}
    if how == "hangup":
        action["on_no_answer"] = "hangup"
    async with aiohttp.ClientSession() as http:
        _, twiml, _ = await _transferred_on_a_posted_to_b(http, twilio, a, b, hook, call_sid, action)
        (dial,) = twiml.iter("Dial")
        (number,) = dial.iter("Number")
        assert number.text == "+15550142"
        if how == "answered":
            person = {"CallSid": "CA" + "9" * 32, "AccountSid": ACCOUNT_SID, "CallStatus": "in-progress"}
            status, _ = await twilio.post(http, _base(b), number.attrib["statusCallback"], person)
            assert status == 200
        else:
            dial_status = "completed" if how == "completed" else "busy"
            status, text = await twilio.post(
                http, _base(b), dial.attrib["action"], caller(call_sid) | {"DialCallStatus": dial_status}
            )
            assert [el.tag for el in ET.fromstring(text)] == ["Hangup"]
        await wait_for(lambda: bool(hook.events("call.ended")), timeout=10)  # well before the ring timeout
    (ended,) = hook.events("call.ended")
    if how == "hangup":
        (failed,) = hook.events("transfer.failed")
        assert failed["action_id"] == "t2" and failed["status"] == "busy"
        assert ended["summary"]["end_reason"] == "transfer_failed"
        assert not hook.events("transfer.completed")
    else:
        (completed,) = hook.events("transfer.completed")
        assert completed["action_id"] == "t2" and completed["status"] == "answered"
        assert ended["summary"]["end_reason"] == "transferred"
        assert not hook.events("transfer.failed")
    assert len({e["call"]["id"] for e in hook.events()}) == 1
    assert not hook.events("action.failed")  # the outcome never reached the bot's reply as an action


async def test_the_desk_and_the_outcomes_on_redis_itself(redis_server: RedisServer) -> None:
    """The fleet's desk and outcome routing against a real redis-server: an answer is taken once and
    expires; an outcome for an unknown or ended call writes nothing (no action stream left without its
    expiry); with Redis unreachable, leaving an answer fails the transfer (ControlError), taking one is
    "none", an outcome is not routed, and every failure is counted like the fleet's other errors."""
    settings = FleetSettings(redis_url=redis_server.url, key_prefix="t")
    fleet = Fleet(settings, "X")
    client = aioredis.from_url(redis_server.url, decode_responses=True)
    try:
        await fleet.desk.put("twilio", "CA1", "<Response><Dial/></Response>")
        assert 0 < await client.ttl("t:desk:twilio:CA1") <= 120
        assert await fleet.desk.take("twilio", "CA1") == "<Response><Dial/></Response>"
        assert await fleet.desk.take("twilio", "CA1") is None  # once
        with pytest.raises(ControlError):
            await fleet.desk.put("twilio", "CA" + "x" * 200, "<Response/>")  # not a key
        unknown, ended = "a" * 32, "b" * 32
        await client.hset(f"t:call:{ended}", mapping={"state": "ended", "epoch": "1"})
        for call_id in (unknown, ended, "nope:lease"):
            assert not await fleet.transfers.send(call_id, {"call": call_id, "act": "t", "kind": "answered"})
        assert await client.keys("t:call:*:in") == []
        assert fleet.counters.redis_errors == 0
    finally:
        await client.aclose()
        await fleet.redis.client.aclose()
    down = Fleet(FleetSettings(redis_url=f"redis://127.0.0.1:{free_port()}/0"), "Y")
    try:
        with pytest.raises(ControlError, match="Redis cannot be reached"):
            await down.desk.put("twilio", "CA1", "<Response/>")
        assert await down.desk.take("twilio", "CA1") is None
        assert not await down.transfers.send("c" * 32, {"call": "c" * 32, "act": "t", "kind": "answered"})
        assert down.counters.redis_errors == 3
    finally:
        await down.redis.client.aclose()
