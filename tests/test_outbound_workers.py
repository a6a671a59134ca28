"""Outbound calls under ``bridge serve --workers 2`` (a real multi-process bridge, SO_REUSEPORT): the bot's
order reaches one worker, which places the call with Twilio (a loopback fake of ``Calls.json``); Twilio's
stream, its answering-machine callback and the bot's later requests reach the *other* worker, and are
carried to the one placing the call: the stream relayed, the callback and ``DELETE`` forwarded, a keyed
repeat answered with the first call. Connections are pinned to a worker as in the transfer's test."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from tests.support.bridge_process import BridgeProcess, start_bridge
from tests.support.calls import WEBHOOK_SECRET, wait_for
from tests.support.fakes import FakeGladia, FakeWebhook
from tests.support.process import free_port, minimal_env
from tests.test_outbound_api import ORDER, TwilioApi
from tests.test_transfer_workers import ACCOUNT_SID, API_TOKEN, AUTH_TOKEN, PublicTwilio, pinned

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


async def _bridge(fake_gladia: FakeGladia, hook_url: str, api_url: str) -> BridgeProcess:
    port = free_port()
    env = minimal_env(
        GLADIA_API_URL=fake_gladia.base_url,
        GLADIA_API_KEY="test-key",
        BOT_WEBHOOK_URL=hook_url,
        BOT_WEBHOOK_SECRET=WEBHOOK_SECRET,
        BRIDGE_API_TOKEN=API_TOKEN,
        TWILIO_AUTH_TOKEN=AUTH_TOKEN,
        TWILIO_ACCOUNT_SID=ACCOUNT_SID,
        TWILIO_API_URL=api_url,
        BRIDGE_PUBLIC_URL=f"http://127.0.0.1:{port}",
        BRIDGE_DIAL_TO="+1555",
        BRIDGE_DIAL_FROM="+15550002",
    )
    return await start_bridge(env, "--workers", "2", port=port, startup=30)


async def _order(bridge: BridgeProcess, worker: int, body: dict[str, Any], **headers: str) -> tuple[int, Any]:
    http = await pinned(bridge.base, worker)
    try:
        async with http.post(f"{bridge.base}/v1/calls", json=body, headers={**AUTH, **headers}) as resp:
            return resp.status, await resp.json()
    finally:
        await http.close()


async def _follow(bridge: BridgeProcess, worker: int, call_id: str, types: list[str]) -> None:
    """The call's event stream (server-sent events) read on a connection to ``worker``: each event's type."""
    http = await pinned(bridge.base, worker)
    try:
        async with http.get(f"{bridge.base}/v1/calls/{call_id}/events", headers=AUTH) as resp:
            assert resp.status == 200, await resp.text()
            async for line in resp.content:
                if line.startswith(b"event: "):
                    types.append(line[7:].decode().strip())
    finally:
        await http.close()


@pytest.mark.timeout(120)
async def test_a_call_placed_by_one_worker_is_carried_there_whatever_worker_twilio_reaches(
    fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str], aiohttp_server: Any
) -> None:
    hook, hook_url = webhook
    api = TwilioApi()
    carrier = await aiohttp_server(api.app(), host="127.0.0.1")
    bridge = await _bridge(fake_gladia, hook_url, str(carrier.make_url("")).rstrip("/"))
    twilio = PublicTwilio(bridge.base)
    try:
        async with asyncio.timeout(90):
            status, answer = await _order(bridge, 0, {**ORDER, "machine_detection": "detect"})
            assert status == 201, answer
            call_id = answer["id"]
            followed: list[str] = []
            following = asyncio.create_task(_follow(bridge, 1, call_id, followed))  # from the other worker
            await wait_for(lambda: bool(hook.events("call.dialing")), timeout=15)
            form = api.requests[0][1]
            twiml = ET.fromstring(form["Twiml"][0])
            claim = {p.attrib["name"]: p.attrib["value"] for p in twiml.iter("Parameter")}
            stream_http = await pinned(bridge.base, 1)  # the other worker: relayed to worker 0
            call_sid = f"CA{1:032d}"
            try:
                streaming = asyncio.create_task(
                    twilio.stream(
                        stream_http, bridge.base, call_sid, "MZ" + "3" * 32, claim, [], seconds=8.0, stop=True
                    )
                )
                await wait_for(lambda: bool(hook.events("call.started")), timeout=15)
                assert hook.events("call.started")[0]["call"]["id"] == call_id
                amd = {"CallSid": call_sid, "AccountSid": ACCOUNT_SID, "AnsweredBy": "machine_start"}
                http = await pinned(bridge.base, 1)
                try:
                    status, text = await twilio.post(http, bridge.base, form["AsyncAmdStatusCallback"][0], amd)
                finally:
                    await http.close()
                assert status == 204, text
                await wait_for(lambda: bool(hook.events("call.answered_by")), timeout=10)
                assert hook.events("call.answered_by")[0]["answered_by"] == "machine"
                http = await pinned(bridge.base, 1)
                try:
                    async with http.delete(f"{bridge.base}/v1/calls/{call_id}", headers=AUTH) as resp:
                        assert resp.status == 202, await resp.text()
                        assert (await resp.json())["status"] == "ending"
                finally:
                    await http.close()
                assert await asyncio.wait_for(streaming, 30) == 1000  # the bot's hang-up closed the stream
            finally:
                await stream_http.close()
            await wait_for(lambda: bool(hook.events("transcript.completed")), timeout=15)  # the call's last event
            assert hook.events("call.ended")[0]["summary"]["end_reason"] == "bot_hangup"
            await wait_for(lambda: len(api.requests) == 2, timeout=10)
            assert api.requests[1][1]["Status"] == ["completed"]  # Twilio told too: the call may outlive its stream
            events = [e for e in hook.events() if e["call"]["id"] == call_id]
            assert [e["sequence"] for e in events] == list(range(1, len(events) + 1))
            await asyncio.wait_for(following, 15)
            assert followed == [e["type"] for e in events][: len(followed)] and "call.ended" in followed
            # a keyed order repeated on the other worker finds the first call
            status, first = await _order(bridge, 0, ORDER, **{"Idempotency-Key": "k-7"})
            again = await _order(bridge, 1, ORDER, **{"Idempotency-Key": "k-7"})
            assert again == (201, {"id": first["id"], "status": "queued", "carrier_call_id": None})
            await asyncio.sleep(0.5)
            assert len(api.requests) == 3  # one create for the keyed order, not two
    finally:
        await bridge.stop()
