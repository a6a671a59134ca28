"""Fuzzing the bot API surface on a live bridge: random and mutated action lists, bodies, headers and
WAVs, sent over REST, as webhook answers and on the bot WebSocket, at one call (the victim) while
another call (the canary) keeps talking. Whatever arrives: no 5xx, no task of either call dies (the
canary hears every reply it asks for and both keep receiving finals; the victim still plays a reply
and ends with its summary afterwards), nothing reaches the event loop's error handler, and memory
stays bounded.

The inputs come from a seeded generator (deterministic in CI; ``BRIDGE_FUZZ_SEED`` picks another
run): a grammar of the action vocabulary where each field is mostly plausible and sometimes anything
JSON can hold, plus mutations of whole bodies (truncation, flipped bytes, deep nesting, bodies that
are not actions at all, bytes that are not UTF-8) and of WAV headers (rates, channels, sample sizes,
lying lengths).
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import random
import struct
import time
import wave
from collections import defaultdict
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.support.calls import BridgeFactory, wait_for
from tests.support.phone import PhoneCall
from tests.support.soak import rss_kib

pytestmark = pytest.mark.timeout(240)

TOKEN = "fuzz-api-token-0123456789"
CANARY_SID, VICTIM_SID = "CA" + "c" * 32, "CA" + "f" * 32
FUZZ_SECONDS = 16.0
PROBE_EVERY = 2.0
# every type but hangup, which would end the victim (its own tests cover it)
ACTION_TYPES = ["say", "play", "audio", "stop", "mark", "dtmf", "configure"]
# Warms the embedded voice up to a full run of phonemes (its memory pool's working size) before the
# growth is measured; the fake recogniser's finals are words that would interrupt it: it plays through.
SAY_HI = json.dumps(
    {
        "actions": [
            {
                "type": "say",
                "text": "Your appointment at the pharmacy on Main Street is confirmed for Saturday morning, "
                "between nine and noon, and your prescription will be ready.",
                "interrupt": "none",
            }
        ]
    }
).encode()
OK_STATUSES = {200, 202, 400, 401, 404, 409, 413, 422, 429}


class FuzzInput(random.Random):
    """Bot input, mostly plausible and sometimes anything (see the module docstring)."""

    def value(self, depth: int = 0) -> Any:
        kinds = ["null", "bool", "int", "float", "str", "bigint"] + (["list", "dict"] if depth < 3 else [])
        kind = self.choice(kinds)
        if kind == "null":
            return None
        if kind == "bool":
            return self.random() < 0.5
        if kind == "int":
            return self.choice([0, -1, 1, 2**31, 2**63, -(2**63), 8000, 300_007, 4_294_967_291])
        if kind == "float":
            return self.choice([0.0, -0.5, 1e308, 1e-300, 3.14])
        if kind == "bigint":
            return int("9" * self.randint(20, 60))
        if kind == "str":
            return self.text()
        if kind == "list":
            return [self.value(depth + 1) for _ in range(self.randint(0, 4))]
        return {self.text(8): self.value(depth + 1) for _ in range(self.randint(0, 4))}

    def text(self, limit: int = 80) -> str:
        pool = ["", " ", "Hello.", "id", "a" * 65, "\u202e\u0000\n", "Ünïcødé 漢字 🎉", "../..", "%00", "${x}"]
        if self.random() < 0.5:
            return self.choice(pool)
        return "".join(chr(self.choice([self.randint(32, 126), self.randint(0x80, 0x2FFF)])) for _ in range(limit))

    def maybe(self, plausible: Any) -> Any:
        return plausible if self.random() < 0.8 else self.value()

    def wav(self) -> bytes:
        rate = self.choice([8000, 16000, 22050, 48000, 1000, 300_007, 4_294_967_291, 96000, 0, 11025])
        channels = self.choice([1, 1, 2, 0, 65535])
        width = self.choice([2, 2, 1, 3, 4, 0, 7])
        frames = self.randint(0, 4000)
        buffer = io.BytesIO()
        with wave.open(buffer, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(8000)
            w.writeframes(bytes(self.getrandbits(8) for _ in range(frames * 2)))
        data = bytearray(buffer.getvalue())
        # the fmt chunk as a header may declare it, whatever the data holds
        struct.pack_into("<HI", data, 22, channels, rate)
        struct.pack_into("<H", data, 34, width * 8)
        if self.random() < 0.3:  # a data length that lies
            struct.pack_into("<I", data, 40, self.choice([0, 2**32 - 1, len(data) * 50]))
        if self.random() < 0.2:
            data = data[: self.randint(0, len(data))]
        if self.random() < 0.2:
            for _ in range(self.randint(1, 8)):
                data[self.randrange(len(data))] = self.getrandbits(8) if data else 0
        return bytes(data)

    def action(self) -> dict[str, Any]:
        kind = self.choice([*ACTION_TYPES, *ACTION_TYPES, "nope", ""])
        action: dict[str, Any] = {"type": self.maybe(kind)}
        if self.random() < 0.5:
            action["id"] = self.maybe(self.choice(["a1", "a2", "dup", "x" * 64, "x" * 65]))
        if kind == "say":
            action["text"] = self.maybe(self.choice(["Yes.", "One moment please.", "Hm", ""]))
            if self.random() < 0.4:
                action["stream_id"] = self.maybe(self.choice(["s1", "s2"]))
                action["last"] = self.maybe(self.random() < 0.5)
        elif kind == "play":
            if self.random() < 0.8:
                action["audio"] = self.maybe(base64.b64encode(self.wav()).decode())
            else:
                action["url"] = self.maybe(self.choice(["https://prompts.invalid/a.wav", "http://x", "file:///etc"]))
        elif kind == "audio":
            action["stream_id"] = self.maybe(self.choice(["b1", "b2"]))
            action["sample_rate"] = self.maybe(self.choice([8000, 16000, 44100, 7999]))
            action["audio"] = self.maybe(base64.b64encode(self.randbytes(self.randrange(0, 3200, 2))).decode())
            action["last"] = self.maybe(self.random() < 0.5)
        elif kind == "mark":
            action["name"] = self.maybe(self.choice(["m1", "m.2", "bad name", ""]))
        elif kind == "dtmf":
            action["digits"] = self.maybe(self.choice(["1", "12#", "w", "Z", ""]))
        elif kind == "configure":
            action["barge_in"] = self.maybe({"min_words": self.choice([1, 3, 0, 11]), "enabled": True})
            action["stale_replies"] = self.maybe(self.choice(["drop", "play"]))
            action["sensitive"] = self.maybe(self.choice([True, False, "yes", 1, None, {"on": True}]))
        for field in ("interrupt", "queue", "in_reply_to"):
            if self.random() < 0.15:
                action[field] = self.value()
        if self.random() < 0.05:
            action[self.text(6)] = self.value()
        return action

    def body(self) -> bytes:
        r = self.random()
        if r < 0.55:
            doc: Any = {"actions": [self.action() for _ in range(self.randint(0, 6))]}
            if self.random() < 0.1:
                doc["request_id"] = self.value()
            return json.dumps(doc).encode()
        if r < 0.65:
            depth = self.choice([40, 200, 1000, 5000])
            return self.choice([b"[" * depth + b"]" * depth, b'{"actions": ' + b"[" * depth + b"]" * depth + b"}"])
        if r < 0.75:
            return self.choice(
                [b"ok", b'{"ok": true}', b"<html><body>OK</body></html>", b"", b"null", b"\xff\xfe\x00", b"[]"]
            )
        if r < 0.9:
            data = bytearray(json.dumps({"actions": [self.action()]}).encode())
            for _ in range(self.randint(1, 6)):
                data[self.randrange(len(data))] = self.getrandbits(8)
            return bytes(data[: self.randint(1, len(data))])
        return self.choice(
            [
                b'{"actions": [{"type": "say", "text": "a", "text": "b"}]}',
                b'{"actions": [{"type": "mark", "name": "\\ud800"}]}',
                b'{"actions": 1' + b"0" * 5000 + b"}",
                json.dumps({"actions": [{"type": "mark", "name": f"m{i}"} for i in range(32)]}).encode(),
                json.dumps({"actions": [{"type": "mark", "name": "m"}] * 33}).encode(),
            ]
        )

    def headers(self) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {TOKEN}"} if self.random() < 0.9 else {}
        if self.random() < 0.1:
            headers["Authorization"] = self.choice(["Bearer", "Bearer  " + TOKEN, "Basic x", "bearer " + TOKEN + "x"])
        if self.random() < 0.3:
            headers["Idempotency-Key"] = self.choice(["k1", "k2", "", "k" * 201, "ключ"]).encode().decode("latin-1")
        if self.random() < 0.2:
            headers["Content-Type"] = self.choice(["text/plain", "application/x-www-form-urlencoded", "x/y"])
        return headers


class FuzzBot:
    """The bot's two channels in one server: the webhook (it answers the victim's events with fuzzed
    bodies) and the bot WebSocket (it sends fuzzed messages on the victim's socket). The canary's
    events are answered with nothing. Events are kept per call id, first delivery of each sequence."""

    def __init__(self, fuzz: FuzzInput) -> None:
        self.fuzz = fuzz
        self.victim: str | None = None
        self.fuzzing = True
        self.events: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
        self.socket_messages = 0
        self.app = web.Application(client_max_size=64 * 1024 * 1024)
        self.app.router.add_post("/hook", self._hook)
        self.app.router.add_get("/bot", self._socket)

    def of(self, call_id: str, *types: str) -> list[dict[str, Any]]:
        seen = self.events.get(call_id, {})
        return [seen[s] for s in sorted(seen) if not types or seen[s]["type"] in types]

    def _keep(self, event: dict[str, Any]) -> str | None:
        call = event.get("call")
        if not isinstance(call, dict):
            return None
        call_id = call.get("id")
        if isinstance(call_id, str) and isinstance(event.get("sequence"), int):
            self.events[call_id].setdefault(event["sequence"], event)
            if call.get("call_sid") == VICTIM_SID:
                self.victim = call_id
        return call_id if isinstance(call_id, str) else None

    async def _hook(self, request: web.Request) -> web.Response:
        call_id = self._keep(json.loads(await request.read()))
        if call_id is None or call_id != self.victim or not self.fuzzing:
            return web.Response(status=204)
        return web.Response(status=self.fuzz.choice([200, 200, 201, 204]), body=self.fuzz.body())

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=64 * 1024 * 1024)
        await ws.prepare(request)
        call_id = request.query.get("call_id")

        async def noise() -> None:
            while self.fuzzing and not ws.closed:
                if call_id == self.victim:  # known once the webhook has seen the victim's call.started
                    await self._fuzz_message(ws)
                await asyncio.sleep(self.fuzz.choice([0.0, 0.05, 0.2]))

        sender = asyncio.create_task(noise())
        try:
            async for msg in ws:
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    continue
                try:
                    event = json.loads(msg.data)
                except ValueError:
                    continue
                if isinstance(event, dict):
                    self._keep(event)
                    if isinstance(event.get("sequence"), int) and self.fuzz.random() < 0.5:
                        await ws.send_str(json.dumps({"type": "ack", "sequence": event["sequence"]}))
        finally:
            sender.cancel()
        return ws

    async def _fuzz_message(self, ws: web.WebSocketResponse) -> None:
        self.socket_messages += 1
        kind = self.fuzz.random()
        if kind < 0.05:
            await ws.send_bytes(self.fuzz.randbytes(self.fuzz.randint(0, 200)))
        elif kind < 0.1:
            await ws.send_str(json.dumps({"type": "ack", "sequence": self.fuzz.value()}))
        else:
            data = self.fuzz.body()
            await ws.send_str(data.decode("utf-8", "replace"))


async def post(
    http: aiohttp.ClientSession, base: str, path: str, body: bytes, headers: dict[str, str]
) -> tuple[int, str]:
    async with http.post(base + path, data=body, headers=headers) as resp:
        return resp.status, await resp.text()


@pytest.mark.parametrize("seed", [int(os.environ.get("BRIDGE_FUZZ_SEED", "20261206"))])
async def test_fuzzed_bot_input_on_every_channel_never_breaks_a_call(
    seed: int,
    make_bridge: BridgeFactory,
    aiohttp_server: Any,
) -> None:
    """A bot (or whoever holds its token) sending anything on any channel gets answers, never a 500,
    and breaks nothing: the canary call hears each probe reply and keeps its finals coming, the victim
    plays a reply once the noise stops, both calls end with their summaries, and the process grows
    by a bounded amount."""
    fuzz = FuzzInput(seed)
    bot = FuzzBot(fuzz)
    bot_server = await aiohttp_server(bot.app, host="127.0.0.1")
    hook_url = str(bot_server.make_url("/hook"))
    ws_url = str(bot_server.make_url("/bot")).replace("http://", "ws://")
    server = await make_bridge(
        {"BOT_WEBHOOK_URL": hook_url, "BOT_WS_URL": ws_url, "BRIDGE_API_TOKEN": TOKEN},
    )
    base = str(server.make_url("")).rstrip("/")
    url = str(server.make_url("/twilio/stream"))
    statuses: list[tuple[int, bytes, str]] = []
    auth = {"Authorization": f"Bearer {TOKEN}"}

    async with (
        aiohttp.ClientSession() as http,
        PhoneCall.dial(url, call_sid=CANARY_SID, stream_sid="MZ" + "c" * 32) as canary,
        PhoneCall.dial(url, call_sid=VICTIM_SID, stream_sid="MZ" + "f" * 32) as victim,
    ):

        async def silence(phone: PhoneCall, stop: asyncio.Event) -> None:
            await phone.wait(stop.is_set, 200.0)

        hang_up = asyncio.Event()
        lines = [asyncio.create_task(silence(p, hang_up)) for p in (canary, victim)]
        try:
            await wait_for(lambda: bot.victim is not None and len(bot.events) == 2, timeout=15)
            victim_id = bot.victim
            assert victim_id is not None
            (canary_id,) = (c for c in bot.events if c != victim_id)
            # the speech engine (Piper) warms up here: loading its voice is not counted as growth
            status, _ = await post(http, base, f"/v1/calls/{canary_id}/actions", SAY_HI, auth)
            assert status == 202
            await wait_for(lambda: bool(bot.of(canary_id, "playback.finished")), timeout=30)
            rss_before = rss_kib(os.getpid())
            canary_finals_before = len(bot.of(canary_id, "utterance.final"))

            started = time.monotonic()
            probes: list[str] = []
            next_probe = started
            while time.monotonic() - started < FUZZ_SECONDS:
                now = time.monotonic()
                if now >= next_probe:
                    probe = f"probe{len(probes)}"
                    probes.append(probe)
                    body = json.dumps({"actions": [{"type": "dtmf", "id": probe, "digits": "1"}]}).encode()
                    status, text = await post(http, base, f"/v1/calls/{canary_id}/actions", body, auth)
                    assert status == 202, text
                    next_probe = now + PROBE_EVERY
                if fuzz.random() < 0.9:
                    path = f"/v1/calls/{victim_id}/actions"
                else:
                    path = (
                        "/v1/calls/"
                        + fuzz.choice(
                            [victim_id + ":lease", victim_id + ":out", "%2e%2e", "x" * 300, victim_id.upper(), "*"]
                        )
                        + "/actions"
                    )
                body, headers = fuzz.body(), fuzz.headers()
                status, text = await post(http, base, path, body, headers)
                statuses.append((status, body[:200], text[:200]))
                if fuzz.random() < 0.1:
                    async with http.get(f"{base}/v1/calls/{victim_id}", headers=auth) as resp:
                        statuses.append((resp.status, b"GET", (await resp.text())[:200]))
                await asyncio.sleep(fuzz.choice([0.0, 0.01, 0.05]))
            bot.fuzzing = False

            crashes = [s for s in statuses if s[0] not in OK_STATUSES]
            assert not crashes, crashes[:5]
            assert len(statuses) > 50

            # the canary: every probe played (its tasks and the loop kept up) and finals kept coming
            await wait_for(
                lambda: {e["action_id"] for e in bot.of(canary_id, "playback.finished")} >= set(probes), timeout=30
            )
            assert len(bot.of(canary_id, "utterance.final")) - canary_finals_before >= FUZZ_SECONDS / 2

            # the victim: after a stop (and the end of any sensitive pause the fuzz left on), a reply still plays
            # and finals still come
            victim_finals = len(bot.of(victim_id, "utterance.final"))
            unpause = b'{"actions": [{"type": "configure", "sensitive": false}]}'
            for body in (
                b'{"actions": [{"type": "stop"}]}',
                unpause,
                b'{"actions": [{"type": "dtmf", "id": "after"}]}',
            ):
                status, text = await post(http, base, f"/v1/calls/{victim_id}/actions", body, auth)
                assert status in (202, 422), text
            body = json.dumps({"actions": [{"type": "dtmf", "id": "after-fuzz", "digits": "1"}]}).encode()
            status, text = await post(http, base, f"/v1/calls/{victim_id}/actions", body, auth)
            assert status == 202, text
            await wait_for(
                lambda: any(e["action_id"] == "after-fuzz" for e in bot.of(victim_id, "playback.finished")),
                timeout=30,
            )
            await wait_for(lambda: len(bot.of(victim_id, "utterance.final")) > victim_finals + 1, timeout=15)
            grown_mib = (rss_kib(os.getpid()) - rss_before) / 1024
            assert grown_mib < 300, f"the process grew by {grown_mib:.0f} MiB under fuzzing"
        finally:
            hang_up.set()
            await asyncio.wait(lines, timeout=10)

    for call_id in (canary_id, victim_id):
        await wait_for(lambda c=call_id: bool(bot.of(c, "transcript.completed")), timeout=30)  # type: ignore[misc]
        (ended,) = bot.of(call_id, "call.ended")
        assert ended["summary"]["end_reason"] == "stop", ended["summary"]
    assert bot.of(victim_id, "call.ended")[0]["summary"]["sensitive_s"] > 0  # the fuzz paused the victim, too
    assert bot.socket_messages > 10  # the bot socket was fuzzed too
