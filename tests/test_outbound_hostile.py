"""What an outsider can send the routes of outbound calls, and what comes of it: forged, expired or borrowed
claims on the callbacks and on the stream, a claim used twice, the wrong carrier's route, bodies that are
huge, deep, not JSON or not an object, a flood of callbacks; every answer clear, nothing changed by a
request the bridge did not sign for, and the call goes on."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import xml.etree.ElementTree as ET
from typing import Any

import aiohttp
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from twilio.request_validator import RequestValidator

from bridge.control import tokens
from bridge.dial.order import DialOrder, claim_token
from bridge.tools.writers.twilio import TwilioStreamWriter
from tests.support.calls import BridgeFactory, caller_audio, wait_for
from tests.support.fakes import FakeWebhook
from tests.test_outbound_api import ACCOUNT_SID, AUTH, AUTH_TOKEN, ORDER, TwilioApi, order, outbound_bridge

SECRET = b"s" * 32  # the bridges' BRIDGE_SECRET in outbound_bridge
VALIDATOR = RequestValidator(AUTH_TOKEN)


async def _signed(http: aiohttp.ClientSession, url: str, form: dict[str, str]) -> int:
    async with http.post(url, data=form, headers={"X-Twilio-Signature": VALIDATOR.compute_signature(url, form)}) as r:
        return r.status


async def _stream(http: aiohttp.ClientSession, base: str, parameters: dict[str, str], sid: str) -> int | None:
    """One Twilio stream (signed upgrade) of 1 s of audio then stop; returns the bridge's close code."""
    url = base.replace("http", "ws", 1) + "/twilio/stream"
    writer = TwilioStreamWriter(sid, "MZ" + sid[2:], account_sid=ACCOUNT_SID, parameters=parameters)
    async with http.ws_connect(url, headers={"X-Twilio-Signature": VALIDATOR.compute_signature(url, {})}) as ws:
        await ws.send_str(writer.connected())
        await ws.send_str(writer.start())
        for i in range(0, 8000, 160):
            if ws.closed:
                break
            await ws.send_str(writer.media(caller_audio(1.0)[i : i + 160]))
            await asyncio.sleep(0.002)
        if not ws.closed:
            await ws.send_str(writer.stop())
        async for _ in ws:
            pass
        return ws.close_code


async def test_forged_expired_and_borrowed_callbacks_change_nothing(
    make_bridge: BridgeFactory, aiohttp_server: Any, webhook: tuple[FakeWebhook, str]
) -> None:
    hook, _ = webhook
    api = TwilioApi()
    async with asyncio.timeout(40), outbound_bridge(make_bridge, aiohttp_server, api) as (base, http):
        _, answer = await order(http, base, {**ORDER, "machine_detection": "detect"})
        await wait_for(lambda: bool(hook.events("call.dialing")), timeout=10)
        status_url = api.requests[0][1]["StatusCallback"][0]
        real = status_url.split("?t=")[1]
        busy = {"CallSid": f"CA{1:032d}", "AccountSid": ACCOUNT_SID, "CallStatus": "busy"}
        call_id = answer["id"]
        expired = claim_token(SECRET, call_id, DialOrder.model_validate(ORDER), time.time() - 1)
        transfer_kind = tokens.sign(SECRET, {"use": "announce", "call": call_id}, int(time.time()) + 60)
        other_secret = claim_token(b"x" * 32, call_id, DialOrder.model_validate(ORDER), time.time() + 60)
        # one character of the signature changed (never to itself; not the last, whose low bits base64 ignores)
        tampered = real[:-10] + ("B" if real[-10] == "A" else "A") + real[-9:]
        for token in (expired, transfer_kind, other_secret, tampered, "", "a" * 5000):
            assert await _signed(http, f"{base}/twilio/call-status?t={token}", busy) == 403
        # the right token on another carrier's route, or a route no carrier has
        assert await _signed(http, f"{base}/telnyx/call-status?t={real}", busy) == 403
        async with http.post(f"{base}/skype/call-status?t={real}", data=busy) as r:
            assert r.status == 404
        async with http.post(f"{base}/twilio/outbound-answer?t={real}", data=busy) as r:
            assert r.status in (403, 404)  # Twilio's calls carry their TwiML inline
        async with http.get(f"{base}/twilio/call-status?t={real}") as r:
            assert r.status == 405
        # sloppy but signed: unknown statuses, junk fields, nothing
        for junk in ({"CallStatus": "exploded"}, {}, {"AnsweredBy": "x" * 10_000}, {"CallStatus": ["busy"]}):
            form = {k: v if isinstance(v, str) else json.dumps(v) for k, v in junk.items()}
            assert await _signed(http, status_url, form) == 204
        async with http.post(status_url, data=b"x" * 200_000, headers={"Content-Type": "text/plain"}) as r:
            assert r.status in (403, 413)  # unsigned, and over the bound
        await asyncio.sleep(0.3)
        assert not hook.events("call.failed")  # nothing above changed the call
        assert await _signed(http, status_url, busy) == 204
        await wait_for(lambda: bool(hook.events("call.ended")), timeout=10)
        assert hook.events("call.failed")[0]["status"] == "busy"


async def test_json_callbacks_that_are_deep_huge_or_not_objects_are_answered(
    make_bridge: BridgeFactory, aiohttp_server: Any
) -> None:
    api = TwilioApi()
    async with (
        asyncio.timeout(40),
        outbound_bridge(make_bridge, aiohttp_server, api, TELNYX_API_KEY="k") as (
            base,
            http,
        ),
    ):
        # a Telnyx call's claim, made as the bridge makes it (the fake Twilio API cannot place Telnyx calls)
        _, answer = await order(http, base, ORDER)
        token = claim_token(
            SECRET, answer["id"], DialOrder.model_validate({**ORDER, "carrier": "telnyx"}), time.time() + 60
        )
        url = f"{base}/telnyx/call-status?t={token}"
        bodies = [b"[" * 5000 + b"]" * 5000, b"not json", b'"a string"', b"[1, 2]", b'{"data": 7}', b"{}"]
        for body in bodies:
            async with http.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
                assert r.status in (204, 400), (body[:20], r.status)
        async with http.post(url, data=b"{" + b" " * 100_000 + b"}", headers={"Content-Type": "application/json"}) as r:
            assert r.status == 413
        statuses = await asyncio.gather(
            *(_post_json(http, url, {"data": {"event_type": "call.initiated", "payload": {}}}) for _ in range(300))
        )
        assert set(statuses) == {204}
        async with http.get(f"{base}/v1/calls/{answer['id']}", headers=AUTH) as r:
            assert r.status == 200  # the Twilio call placed above goes on


async def _post_json(http: aiohttp.ClientSession, url: str, body: Any) -> int:
    async with http.post(url, json=body) as r:
        return r.status


async def test_a_streams_claim_must_hold_once_for_its_carrier(
    make_bridge: BridgeFactory, aiohttp_server: Any, webhook: tuple[FakeWebhook, str]
) -> None:
    hook, _ = webhook
    api = TwilioApi()
    async with asyncio.timeout(60), outbound_bridge(make_bridge, aiohttp_server, api) as (base, http):
        _, answer = await order(http, base, ORDER)
        await wait_for(lambda: bool(hook.events("call.dialing")), timeout=10)
        twiml = ET.fromstring(api.requests[0][1]["Twiml"][0])
        claim = {p.attrib["name"]: p.attrib["value"] for p in twiml.iter("Parameter")}
        forged = {"bridge.outbound": claim["bridge.outbound"][:-3] + "abc"}
        expired = {
            "bridge.outbound": claim_token(SECRET, answer["id"], DialOrder.model_validate(ORDER), time.time() - 5)
        }
        unknown = {"bridge.outbound": claim_token(SECRET, "e" * 32, DialOrder.model_validate(ORDER), time.time() + 60)}
        for parameters in (forged, expired, unknown):
            assert await _stream(http, base, parameters, "CA" + "9" * 32) == 1008
        assert not hook.events("call.started")  # none of them became a call
        first = asyncio.create_task(_stream(http, base, claim, f"CA{1:032d}"))
        await wait_for(lambda: bool(hook.events("call.started")), timeout=10)
        assert await _stream(http, base, claim, "CA" + "8" * 32) == 1008  # the same claim again, while it runs
        assert await first == 1000
        await wait_for(lambda: bool(hook.events("call.ended")), timeout=10)
        assert await _stream(http, base, claim, "CA" + "7" * 32) == 1008  # and once the call is over
        assert len(hook.events("call.started")) == 1
        assert hook.events("call.started")[0]["call"]["id"] == answer["id"]


async def test_with_telnyx_public_key_set_an_unsigned_or_missigned_telnyx_callback_is_refused(
    make_bridge: BridgeFactory, aiohttp_server: Any
) -> None:
    """The claim in the URL is not enough then: Telnyx's Ed25519 signature over ``timestamp|body`` must hold,
    made within 300 s; the same request signed right is taken."""
    key = Ed25519PrivateKey.generate()
    public = base64.b64encode(key.public_key().public_bytes_raw()).decode()
    async with (
        asyncio.timeout(30),
        outbound_bridge(make_bridge, aiohttp_server, TwilioApi(), TELNYX_API_KEY="k", TELNYX_PUBLIC_KEY=public) as (
            base,
            http,
        ),
    ):
        _, answer = await order(http, base, ORDER)
        token = claim_token(
            SECRET, answer["id"], DialOrder.model_validate({**ORDER, "carrier": "telnyx"}), time.time() + 60
        )
        url = f"{base}/telnyx/call-status?t={token}"
        body = json.dumps({"data": {"event_type": "call.initiated", "payload": {}}})

        def signed(stamp: int, signer: Ed25519PrivateKey = key, text: str = body) -> dict[str, str]:
            raw = signer.sign(f"{stamp}|{text}".encode())
            return {"telnyx-timestamp": str(stamp), "telnyx-signature-ed25519": base64.b64encode(raw).decode()}

        now = int(time.time())
        wrong = [
            {},
            signed(now, Ed25519PrivateKey.generate()),  # another account's key
            signed(now - 400),  # too old
            signed(now, text=body + " "),  # another body
            {"telnyx-timestamp": str(now), "telnyx-signature-ed25519": "not base64!"},
        ]
        for headers in wrong:
            async with http.post(url, data=body, headers={**headers, "Content-Type": "application/json"}) as r:
                assert r.status == 403
        async with http.post(url, data=body, headers={**signed(now), "Content-Type": "application/json"}) as r:
            assert r.status == 204


async def _pieces(port: int, path: str, body: bytes, pieces: int, headers: dict[str, str]) -> tuple[int, bytes]:
    """A POST whose body arrives in ``pieces`` separate writes, 50 ms apart."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n{extra}"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    writer.write(head.encode())
    step = -(-len(body) // pieces)
    for i in range(0, len(body), step):
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(body[i : i + step])
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


async def test_bodies_in_many_reads_and_sloppy_answers_are_read_whole_and_answered(
    make_bridge: BridgeFactory, aiohttp_server: Any, webhook: tuple[FakeWebhook, str]
) -> None:
    """An order arriving in 20 writes is read whole (and placed once); ``{"ok": true}`` is a 422 naming the
    field; a carrier's report in 10 writes is read whole; the ringing call goes on through all of it."""
    hook, _ = webhook
    api = TwilioApi()
    async with asyncio.timeout(40), outbound_bridge(make_bridge, aiohttp_server, api) as (base, http):
        port = int(base.rsplit(":", 1)[1])
        status, body = await _pieces(port, "/v1/calls", json.dumps(ORDER).encode(), 20, AUTH)
        assert status == 201, body
        call_id = json.loads(body)["id"]
        status, body = await _pieces(port, "/v1/calls", b'{"ok": true}', 3, AUTH)
        assert status == 422 and b"ok" in body
        await wait_for(lambda: bool(hook.events("call.dialing")), timeout=10)
        status_url = api.requests[0][1]["StatusCallback"][0]
        token = claim_token(SECRET, call_id, DialOrder.model_validate({**ORDER, "carrier": "telnyx"}), time.time() + 60)
        report = json.dumps({"data": {"event_type": "call.initiated", "payload": {"call_control_id": "v3:x"}}})
        status, _ = await _pieces(port, f"/telnyx/call-status?t={token}", report.encode(), 10, {})
        assert status == 204
        assert len(api.requests) == 1  # one order placed once
        async with http.get(f"{base}/v1/calls/{call_id}", headers=AUTH) as r:
            assert r.status == 200 and (await r.json())["state"] in ("dialing", "ringing")
        assert status_url.startswith(base)
