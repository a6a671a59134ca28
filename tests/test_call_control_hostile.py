"""What a sloppy or hostile peer can send to a transfer's callback routes (``/{carrier}/dial-status`` and
the rest): bodies nested too deep, too large, not an object, arriving in several slow reads, answers that
say nothing (``{"ok": true}``), tokens the bridge did not sign, floods. Each gets a clear answer, none a
500, and the bridge goes on serving."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp

from bridge.control import tokens, ways
from tests.support.calls import BridgeFactory
from tests.support.fakes import FakeGladia, FakeWebhook

SECRET = "s" * 32


def order_token(carrier: str, on_no_answer: str = "return") -> str:
    """A token as the bridge signs it for a transfer's links (under BRIDGE_SECRET)."""
    order = ways.Order(
        "c" * 32,
        "t1",
        carrier,
        "a1b2c3d4-0000-4000-8000-00000000a11e",
        "+15550142",
        "+15550002",
        30,
        on_no_answer,
        None,
    )
    return tokens.sign(SECRET.encode(), order.fields(), int(time.time()) + 600)


async def raw_post(port: int, path: str, body: bytes, pieces: int, pause: float) -> tuple[int, bytes]:
    """A POST whose body arrives in ``pieces`` separate writes, ``pause`` seconds apart."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    writer.write(head.encode())
    step = -(-len(body) // pieces)
    for i in range(0, len(body), step):
        await writer.drain()
        await asyncio.sleep(pause)
        writer.write(body[i : i + step])
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


async def test_hostile_and_sloppy_callbacks_get_clear_answers_and_the_bridge_goes_on(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    server: Any = await make_bridge({"BRIDGE_SECRET": SECRET, "BRIDGE_TRANSFER_TO": "+1555"})
    base = str(server.make_url("")).rstrip("/")
    vonage = f"/vonage/dial-status?t={order_token('vonage')}"
    async with aiohttp.ClientSession() as http:

        async def post(path: str, data: bytes, content_type: str = "application/json") -> tuple[int, str]:
            async with http.post(base + path, data=data, headers={"Content-Type": content_type}) as resp:
                return resp.status, await resp.text()

        # an answer that says nothing, or is not an object: not the dial's end
        assert (await post(vonage, b'{"ok": true}'))[0] == 204
        assert (await post(vonage, b"[1, 2, 3]"))[0] == 204
        assert (await post(vonage, b"ok"))[0] == 400
        # nested far too deep: refused before parsing
        deep = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
        assert (await post(vonage, deep))[0] in (400, 413)
        assert (await post(vonage, b'{"a":' * 2000 + b"1" + b"}" * 2000))[0] == 400
        # too large (the application's 64 KiB bound)
        assert (await post(vonage, json.dumps({"status": "x" * 100_000}).encode()))[0] == 413
        # a form of junk on a form route, a token the bridge did not sign: the carrier's hang-up, not a 500
        status, text = await post(
            "/plivo/dial-status?t=e30.AAAA", b"DialStatus=%ff%fe&x=" + b"y" * 1000, "application/x-www-form-urlencoded"
        )
        assert status == 200 and "<Hangup/>" in text
        assert (await post("/nope/dial-status?t=x", b"{}"))[0] == 404
        # a token for another carrier's route is refused the same way
        status, text = await post(
            f"/plivo/dial-status?t={order_token('vonage')}",
            b"DialStatus=no-answer",
            "application/x-www-form-urlencoded",
        )
        assert status == 200 and "<Hangup/>" in text

        # a real report arriving in five slow reads is read whole: the caller's way back (an NCCO)
        status, body = await raw_post(server.port, vonage, json.dumps({"status": "timeout"}).encode(), 5, 0.1)
        assert status == 200
        (connect,) = json.loads(body)
        assert connect["action"] == "connect" and connect["endpoint"][0]["type"] == "websocket"

        # a flood of forged callbacks, 300 at once: every one answered, none a 500
        forged = [
            post(f"/twilio/dial-status?t=forged{i}", b"DialCallStatus=no-answer", "application/x-www-form-urlencoded")
            for i in range(300)
        ]
        answers = await asyncio.gather(*forged)
        assert {status for status, _ in answers} == {200} and all("<Hangup/>" in text for _, text in answers)
        async with http.get(base + "/healthz") as resp:
            assert resp.status == 200
