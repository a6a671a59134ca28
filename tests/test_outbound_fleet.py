"""Outbound calls in fleet mode: two bridge instances on one Redis behind one public URL. The bot orders the
call on instance A, which places it with Twilio (a loopback fake of ``Calls.json``); the stream Twilio
connects reaches instance B, which adopts the call: the same call id, the event sequence going on from
A's ``call.dialing``, one ordered record for the bot. Twilio's answering-machine callback reaches A and is
routed to B through Redis; a ``DELETE`` sent to B cancels a call A is still placing. Twilio's requests
are signed with its official SDK's ``RequestValidator`` over the public URL."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.calls import BridgeFactory, wait_for
from tests.support.fakes import FakeWebhook
from tests.support.redis_server import RedisServer
from tests.test_outbound_api import ACCOUNT_SID, ORDER, TwilioApi
from tests.test_transfer_workers import API_TOKEN, AUTH_TOKEN, PublicTwilio

pytestmark = pytest.mark.timeout(60)

PUBLIC = "https://bridge.example"
FAST_FLEET = {"fleet__lease_ttl": 1.5, "fleet__renew_interval": 0.5, "fleet__action_poll_ms": 100}
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


async def _instance(make_bridge: BridgeFactory, redis: RedisServer, tmp: Path, name: str, api: str) -> Any:
    env = {
        "BRIDGE_REDIS_URL": redis.url,
        "BRIDGE_INSTANCE_ID": name,
        "BRIDGE_DATA_DIR": str(tmp / name),
        "BRIDGE_SECRET": "the-fleet-shares-this-secret-0123",
        "BRIDGE_API_TOKEN": API_TOKEN,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_API_URL": api,
        "BRIDGE_PUBLIC_URL": PUBLIC,
        "BRIDGE_DIAL_TO": "+1555",
        "BRIDGE_DIAL_FROM": "+15550002",
    }
    return await make_bridge(env, **FAST_FLEET)


def _base(server: Any) -> str:
    return str(server.make_url("")).rstrip("/")


def _claim(api: TwilioApi) -> dict[str, str]:
    """The stream parameters of the TwiML the bridge sent in its create request."""
    twiml = ET.fromstring(api.requests[0][1]["Twiml"][0])
    return {p.attrib["name"]: p.attrib["value"] for p in twiml.iter("Parameter")}


async def test_a_call_ordered_on_one_instance_is_carried_by_the_one_its_stream_reaches(
    make_bridge: BridgeFactory,
    aiohttp_server: Any,
    redis_server: RedisServer,
    webhook: tuple[FakeWebhook, str],
    tmp_path: Path,
) -> None:
    hook, _ = webhook
    api = TwilioApi()
    carrier = await aiohttp_server(api.app(), host="127.0.0.1")
    api_url = _base(carrier)
    a = await _instance(make_bridge, redis_server, tmp_path, "a", api_url)
    b = await _instance(make_bridge, redis_server, tmp_path, "b", api_url)
    twilio = PublicTwilio(PUBLIC)
    async with aiohttp.ClientSession() as http, asyncio.timeout(50):
        async with http.post(f"{_base(a)}/v1/calls", json={**ORDER, "machine_detection": "detect"}, headers=AUTH) as r:
            assert r.status == 201, await r.text()
            call_id = (await r.json())["id"]
        await wait_for(lambda: bool(hook.events("call.dialing")), timeout=10)
        form = api.requests[0][1]
        assert form["AsyncAmd"] == ["true"] and form["AsyncAmdStatusCallback"][0].startswith(PUBLIC + "/twilio/amd?t=")
        call_sid = f"CA{1:032d}"
        received: list[dict[str, Any]] = []
        streaming = asyncio.create_task(
            twilio.stream(http, _base(b), call_sid, "MZ" + "2" * 32, _claim(api), received, seconds=6.0, stop=True)
        )
        await wait_for(lambda: bool(hook.events("call.started")), timeout=15)
        started = hook.events("call.started")[0]
        assert started["call"]["id"] == call_id and started["call"]["direction"] == "outbound"
        assert started["call"]["parameters"]["campaign"] == "reminders"
        # Twilio's verdict reaches A, which no longer holds the call: routed to B through Redis
        amd = {
            "CallSid": call_sid,
            "AccountSid": ACCOUNT_SID,
            "AnsweredBy": "human",
            "MachineDetectionDuration": "1800",
        }
        status, text = await twilio.post(http, _base(a), form["AsyncAmdStatusCallback"][0], amd)
        assert status == 204, text
        await wait_for(lambda: bool(hook.events("call.answered_by")), timeout=10)
        verdict = hook.events("call.answered_by")[0]
        assert (verdict["answered_by"], verdict["detection_ms"], verdict["source"]) == ("human", 1800, "carrier")
        await asyncio.wait_for(streaming, 30)
        await wait_for(lambda: bool(hook.events("call.ended")), timeout=15)
    events = [e for e in hook.events() if e["call"]["id"] == call_id]
    types = [e["type"] for e in events]
    assert types[:2] == ["call.dialing", "call.started"] and types[-1] in ("call.ended", "transcript.completed")
    assert "call.answered_by" in types
    assert [e["sequence"] for e in events] == list(range(1, len(events) + 1))  # one record, in order, no gap


async def test_a_ringing_call_is_cancelled_from_another_instance(
    make_bridge: BridgeFactory,
    aiohttp_server: Any,
    redis_server: RedisServer,
    webhook: tuple[FakeWebhook, str],
    tmp_path: Path,
) -> None:
    hook, _ = webhook
    api = TwilioApi()
    carrier = await aiohttp_server(api.app(), host="127.0.0.1")
    a = await _instance(make_bridge, redis_server, tmp_path, "a", _base(carrier))
    b = await _instance(make_bridge, redis_server, tmp_path, "b", _base(carrier))
    async with aiohttp.ClientSession() as http, asyncio.timeout(40):
        async with http.post(f"{_base(a)}/v1/calls", json=ORDER, headers=AUTH) as r:
            call_id = (await r.json())["id"]
        await wait_for(lambda: bool(hook.events("call.dialing")), timeout=10)
        await asyncio.sleep(1.0)  # A's lease on the ringing call is confirmed
        async with http.delete(f"{_base(b)}/v1/calls/{call_id}", headers=AUTH) as r:
            assert r.status == 202, await r.text()
        await wait_for(lambda: bool(hook.events("call.ended")), timeout=10)
        assert hook.events("call.failed")[0]["status"] == "canceled"
        await wait_for(lambda: len(api.requests) == 2, timeout=5)
        assert api.requests[1][1]["Status"] == ["canceled"]  # A cancelled it with Twilio
        async with http.delete(f"{_base(b)}/v1/calls/{call_id}", headers=AUTH) as r:
            assert r.status in (404, 409)


async def test_a_keyed_order_repeated_on_another_instance_places_nothing(
    make_bridge: BridgeFactory, aiohttp_server: Any, redis_server: RedisServer, tmp_path: Path
) -> None:
    api = TwilioApi()
    carrier = await aiohttp_server(api.app(), host="127.0.0.1")
    a = await _instance(make_bridge, redis_server, tmp_path, "a", _base(carrier))
    b = await _instance(make_bridge, redis_server, tmp_path, "b", _base(carrier))
    headers = {**AUTH, "Idempotency-Key": "reminder-42"}
    async with aiohttp.ClientSession() as http, asyncio.timeout(30):
        async with http.post(f"{_base(a)}/v1/calls", json=ORDER, headers=headers) as r:
            first = await r.json()
        await wait_for(lambda: len(api.requests) == 1, timeout=10)
        await asyncio.sleep(1.0)  # the call's record is in Redis (its lease taken)
        async with http.post(f"{_base(b)}/v1/calls", json=ORDER, headers=headers) as r:
            assert r.status == 201 and (await r.json())["id"] == first["id"]
        await asyncio.sleep(0.5)
        assert len(api.requests) == 1
