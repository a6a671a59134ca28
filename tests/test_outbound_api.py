"""``POST /v1/calls`` and ``DELETE /v1/calls/{id}`` on a real bridge on loopback, the carrier a small fake of
Twilio's REST API with fault switches (it records the create and cancel requests, never connects a stream):
the order's checks (422 naming the field, 403 naming the setting, 401, 413), the answer before the carrier
request, idempotent repeats, the bound on calls being placed (429), and every way a call ends before its
stream: the carrier refuses (``call.failed`` failed), rings out (no word within the ring time: no-answer),
reports busy (a signed status callback), or the bot cancels (the carrier's cancel sent)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from twilio.request_validator import RequestValidator

from tests.support.calls import BridgeFactory, wait_for
from tests.support.fakes import FakeWebhook

AUTH_TOKEN = "twilio-test-auth-token"
ACCOUNT_SID = "AC" + "0" * 32
API_TOKEN = "bot-api-token"
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
ORDER = {"to": "+15550142", "from": "+15550002", "carrier": "twilio", "parameters": {"campaign": "reminders"}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class TwilioApi:
    """Twilio's ``Calls.json``: records each request; ``status``/``delay`` are its fault switches."""

    status: int = 201
    delay: float = 0.0
    requests: list[tuple[str, dict[str, list[str]]]] = field(default_factory=list)
    created: int = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/2010-04-01/Accounts/{sid}/Calls.json", self.create)
        app.router.add_post("/2010-04-01/Accounts/{sid}/Calls/{call}.json", self.update)
        return app

    async def _form(self, request: web.Request) -> dict[str, list[str]]:
        form = await request.post()
        fields: dict[str, list[str]] = {}
        for key, value in form.items():
            fields.setdefault(key, []).append(str(value))
        self.requests.append((request.path, fields))
        return fields

    async def create(self, request: web.Request) -> web.Response:
        await self._form(request)
        await asyncio.sleep(self.delay)
        if self.status >= 300:
            return web.json_response({"code": 21211, "message": "Invalid 'To' Phone Number"}, status=self.status)
        self.created += 1
        sid = f"CA{self.created:032d}"
        return web.json_response({"sid": sid, "status": "queued", "account_sid": ACCOUNT_SID}, status=201)

    async def update(self, request: web.Request) -> web.Response:
        fields = await self._form(request)
        return web.json_response({"sid": request.match_info["call"], "status": fields.get("Status", [""])[0]})


@contextlib.asynccontextmanager
async def outbound_bridge(
    make_bridge: BridgeFactory, aiohttp_server: Any, api: TwilioApi, max_pending: int = 20, **env: str
) -> AsyncIterator[tuple[str, aiohttp.ClientSession]]:
    carrier = await aiohttp_server(api.app(), host="127.0.0.1")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    environ = {
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_API_URL": str(carrier.make_url("")).rstrip("/"),
        "BRIDGE_PUBLIC_URL": base,
        "BRIDGE_SECRET": "s" * 32,
        "BRIDGE_API_TOKEN": API_TOKEN,
        "BRIDGE_DIAL_TO": "+1555,pbx.example.com",
        "BRIDGE_DIAL_FROM": "+15550002",
    } | env
    await make_bridge(environ, port=port, **{"outbound.answer_grace": 1.0, "outbound.max_pending": max_pending})
    async with aiohttp.ClientSession() as http:
        yield base, http


async def order(http: aiohttp.ClientSession, base: str, body: Any, **headers: str) -> tuple[int, dict[str, Any]]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with http.post(f"{base}/v1/calls", data=data, headers={**AUTH, **headers}) as resp:
        return resp.status, await resp.json(content_type=None)


def failed_then_ended(hook: FakeWebhook, call_id: str) -> list[dict[str, Any]]:
    return [e for e in hook.events() if e["call"]["id"] == call_id]


@pytest.mark.parametrize(
    ("body", "status", "names"),
    [
        (b"not json", 422, "JSON"),
        ([1, 2], 422, "object"),
        ({**ORDER, "to": "555-0142"}, 422, "to"),
        ({**ORDER, "carrier": "skype"}, 422, "carrier"),
        ({**ORDER, "ring_timeout_s": 1}, 422, "ring_timeout_s"),
        ({**ORDER, "machine_detection": "maybe"}, 422, "machine_detection"),
        ({**ORDER, "surprise": 1}, 422, "surprise"),
        ({**ORDER, "parameters": {"bridge.outbound": "x"}}, 422, "parameters"),
        ({**ORDER, "first_say": "x" * 1001}, 422, "first_say"),
        ({**ORDER, "to": "+4420700000"}, 403, "BRIDGE_DIAL_TO"),
        ({**ORDER, "from": "+15559999"}, 403, "BRIDGE_DIAL_FROM"),
        ({**ORDER, "carrier": "telnyx"}, 403, "TELNYX_API_KEY"),
        (b"{" + b" " * 70_000 + b"}", 413, "KiB"),
    ],
)
async def test_an_order_is_checked_and_the_answer_names_what_is_wrong(
    make_bridge: BridgeFactory, aiohttp_server: Any, body: Any, status: int, names: str
) -> None:
    api = TwilioApi()
    async with asyncio.timeout(20), outbound_bridge(make_bridge, aiohttp_server, api) as (base, http):
        got, answer = await order(http, base, body)
        assert got == status, answer
        assert names in answer["error"]
        assert api.requests == []  # nothing reached the carrier


async def test_outbound_is_off_until_the_operator_names_where_calls_may_go(
    make_bridge: BridgeFactory, aiohttp_server: Any
) -> None:
    async with (
        asyncio.timeout(20),
        outbound_bridge(make_bridge, aiohttp_server, TwilioApi(), BRIDGE_DIAL_TO="") as (
            base,
            http,
        ),
    ):
        status, answer = await order(http, base, ORDER)
        assert status == 403 and "BRIDGE_DIAL_TO" in answer["error"]
        async with http.post(f"{base}/v1/calls", json=ORDER) as resp:  # no token
            assert resp.status == 401


async def test_an_order_is_answered_then_placed_and_a_repeat_places_nothing(
    make_bridge: BridgeFactory, aiohttp_server: Any, webhook: tuple[FakeWebhook, str]
) -> None:
    hook, _ = webhook
    api = TwilioApi(delay=0.5)  # a slow carrier does not hold the bot's answer
    async with asyncio.timeout(20), outbound_bridge(make_bridge, aiohttp_server, api) as (base, http):
        started = asyncio.get_running_loop().time()
        status, answer = await order(http, base, ORDER, **{"Idempotency-Key": "k1"})
        assert asyncio.get_running_loop().time() - started < 0.4
        assert status == 201 and answer["status"] == "queued" and len(answer["id"]) == 32
        again = await order(http, base, ORDER, **{"Idempotency-Key": "k1"})
        assert again == (201, answer)
        await wait_for(lambda: bool(hook.events("call.dialing")), timeout=5)
        dialing = hook.events("call.dialing")[0]
        assert dialing["carrier_call_id"] == f"CA{1:032d}"
        call = dialing["call"]
        assert call["id"] == answer["id"] and call["direction"] == "outbound"
        assert call["parameters"] == {"campaign": "reminders"} and call["to"] == "+15550142"
        assert len(api.requests) == 1  # the repeat placed nothing
        async with http.get(f"{base}/v1/calls/{answer['id']}", headers=AUTH) as resp:
            state = await resp.json()
            assert resp.status == 200 and state["state"] in ("dialing", "ringing") and state["direction"] == "outbound"
        actions = {"actions": [{"type": "say", "text": "hi"}]}
        async with http.post(f"{base}/v1/calls/{answer['id']}/actions", json=actions, headers=AUTH) as resp:
            assert resp.status == 409 and "not been answered" in (await resp.json())["error"]


async def test_a_refused_create_fails_the_call_and_ends_its_record(
    make_bridge: BridgeFactory, aiohttp_server: Any, webhook: tuple[FakeWebhook, str]
) -> None:
    hook, _ = webhook
    async with asyncio.timeout(20), outbound_bridge(make_bridge, aiohttp_server, TwilioApi(status=400)) as (base, http):
        _, answer = await order(http, base, ORDER)
        await wait_for(lambda: bool(hook.events("call.ended")), timeout=5)
        events = failed_then_ended(hook, answer["id"])
        assert [e["type"] for e in events] == ["call.failed", "call.ended"]
        assert events[0]["status"] == "failed" and "400" in events[0]["detail"]
        assert events[1]["summary"]["end_reason"] == "not_answered"
        async with http.delete(f"{base}/v1/calls/{answer['id']}", headers=AUTH) as resp:
            assert resp.status == 409

        async def on_record() -> list[dict[str, Any]]:
            async with http.get(f"{base}/v1/calls", params={"since": "2000-01-01T00:00:00Z"}, headers=AUTH) as r:
                return [c for c in (await r.json())["calls"] if c["id"] == answer["id"]]

        async with asyncio.timeout(5):
            while not (record := await on_record()):  # the store writes in groups
                await asyncio.sleep(0.1)
        assert record[0]["end_reason"] == "not_answered" and record[0]["to"] == "+15550142"


async def test_no_word_from_the_carrier_within_the_ring_time_is_no_answer_and_cancels_there(
    make_bridge: BridgeFactory, aiohttp_server: Any, webhook: tuple[FakeWebhook, str]
) -> None:
    hook, _ = webhook
    api = TwilioApi()
    async with asyncio.timeout(30), outbound_bridge(make_bridge, aiohttp_server, api) as (base, http):
        _, answer = await order(http, base, {**ORDER, "ring_timeout_s": 5})
        await wait_for(lambda: bool(hook.events("call.ended")), timeout=15)
        types = [e["type"] for e in failed_then_ended(hook, answer["id"])]
        assert types == ["call.dialing", "call.failed", "call.ended"]
        assert hook.events("call.failed")[0]["status"] == "no-answer"
        await wait_for(lambda: len(api.requests) == 2, timeout=5)
        path, fields = api.requests[1]
        assert path.endswith(f"/Calls/CA{1:032d}.json") and fields["Status"] == ["canceled"]


async def test_a_busy_callback_signed_by_twilio_fails_the_call_and_a_forged_one_changes_nothing(
    make_bridge: BridgeFactory, aiohttp_server: Any, webhook: tuple[FakeWebhook, str]
) -> None:
    hook, _ = webhook
    api = TwilioApi()
    async with asyncio.timeout(20), outbound_bridge(make_bridge, aiohttp_server, api) as (base, http):
        await order(http, base, ORDER)
        await wait_for(lambda: bool(hook.events("call.dialing")), timeout=5)
        status_url = api.requests[0][1]["StatusCallback"][0]  # exactly as the bridge gave it to Twilio
        form = {"CallSid": f"CA{1:032d}", "AccountSid": ACCOUNT_SID, "CallStatus": "busy", "SipResponseCode": "486"}
        forged = {"X-Twilio-Signature": RequestValidator("not-the-token").compute_signature(status_url, form)}
        async with http.post(status_url, data=form, headers=forged) as resp:
            assert resp.status == 403
        other = status_url.split("?t=")[0] + "?t=" + "x" * 40
        signed = {"X-Twilio-Signature": RequestValidator(AUTH_TOKEN).compute_signature(other, form)}
        async with http.post(other, data=form, headers=signed) as resp:
            assert resp.status == 403  # a token the bridge never made
        await asyncio.sleep(0.2)
        assert not hook.events("call.failed")
        signature = RequestValidator(AUTH_TOKEN).compute_signature(status_url, form)
        async with http.post(status_url, data=form, headers={"X-Twilio-Signature": signature}) as resp:
            assert resp.status == 204
        await wait_for(lambda: bool(hook.events("call.ended")), timeout=5)
        failed = hook.events("call.failed")[0]
        assert failed["status"] == "busy"


async def test_the_bot_cancels_a_ringing_call(
    make_bridge: BridgeFactory, aiohttp_server: Any, webhook: tuple[FakeWebhook, str]
) -> None:
    hook, _ = webhook
    api = TwilioApi()
    async with asyncio.timeout(20), outbound_bridge(make_bridge, aiohttp_server, api) as (base, http):
        _, answer = await order(http, base, ORDER)
        await wait_for(lambda: bool(hook.events("call.dialing")), timeout=5)
        async with http.delete(f"{base}/v1/calls/{answer['id']}", headers=AUTH) as resp:
            assert resp.status == 202 and (await resp.json())["status"] == "canceled"
        await wait_for(lambda: len(api.requests) == 2, timeout=5)
        assert api.requests[1][1]["Status"] == ["canceled"]
        await wait_for(lambda: bool(hook.events("call.ended")), timeout=5)
        assert hook.events("call.failed")[0]["status"] == "canceled"
        async with http.delete(f"{base}/v1/calls/{answer['id']}", headers=AUTH) as resp:
            assert resp.status == 409
        async with http.delete(f"{base}/v1/calls/{'f' * 32}", headers=AUTH) as resp:
            assert resp.status == 404


async def test_calls_being_placed_are_bounded(make_bridge: BridgeFactory, aiohttp_server: Any) -> None:
    async with (
        asyncio.timeout(20),
        outbound_bridge(make_bridge, aiohttp_server, TwilioApi(delay=2.0), 2) as (
            base,
            http,
        ),
    ):
        for _ in range(2):
            assert (await order(http, base, ORDER))[0] == 201
        async with http.post(f"{base}/v1/calls", json=ORDER, headers=AUTH) as resp:
            assert resp.status == 429 and resp.headers["Retry-After"] == "1"
            assert "outbound.max_pending" in (await resp.json())["error"]


async def test_plivo_and_jambonz_answers_stream_to_the_bridge_with_the_calls_claim(
    make_bridge: BridgeFactory, aiohttp_server: Any
) -> None:
    """What ``answer_url`` (Plivo) and ``call_hook`` (jambonz) serve when the callee answers: the stream to
    the bridge's route with ``?outbound=`` the link's own claim, then (Plivo) the after-stream fetch."""
    import time
    import xml.etree.ElementTree as ET

    from bridge.dial.order import DialOrder, claim_token

    async with asyncio.timeout(20), outbound_bridge(make_bridge, aiohttp_server, TwilioApi()) as (base, http):
        call_id = "c" * 32
        for carrier in ("plivo", "jambonz"):
            token = claim_token(
                b"s" * 32, call_id, DialOrder.model_validate({**ORDER, "carrier": carrier}), time.time() + 60
            )
            async with http.post(f"{base}/{carrier}/outbound-answer?t={token}", data={"CallUUID": "u-1"}) as resp:
                assert resp.status == 200
                text = await resp.text()
            if carrier == "plivo":
                root = ET.fromstring(text)
                (stream,) = root.iter("Stream")
                assert stream.attrib["bidirectional"] == "true" and stream.attrib["keepCallAlive"] == "true"
                assert (
                    stream.text or ""
                ).strip() == f"ws://127.0.0.1:{base.rsplit(':', 1)[1]}/plivo/stream?outbound={token}"
                (redirect,) = root.iter("Redirect")
                assert (redirect.text or "").strip().endswith("/plivo/after-stream")
            else:
                (listen,) = json.loads(text)
                assert listen["verb"] == "listen" and listen["url"].endswith(f"/audiofork/stream?outbound={token}")
            async with http.post(f"{base}/{carrier}/outbound-answer?t={token[:-4]}abcd", data={}) as resp:
                assert resp.status == 403
