"""Generated bad input over real sockets: every malformed stream gets a clear close code, the bridge
never fails internally, and a call running meanwhile is untouched."""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import aiohttp
import pytest

from bridge.tools.writers.twilio import TwilioStreamWriter
from tests.support.calls import BridgeFactory, caller_audio, play_call, wait_for
from tests.support.fakes import FakeGladia, FakeWebhook, expected_texts

CLEAR_CODES = {1000, 1003, 1007, 1008, 1009}


def mutate(rng: random.Random, message: str) -> str | bytes:
    """One way of breaking a valid Twilio message."""
    kind = rng.randrange(9)
    if kind == 0:
        return message[: rng.randrange(len(message))]  # truncated JSON
    if kind == 1:
        return rng.randbytes(rng.randrange(1, 64))  # binary frame
    if kind == 2:
        return json.dumps(rng.choice([[], 3, "x", None, {"event": 5}]))
    obj = json.loads(message)
    if kind == 3 and "media" in obj:
        obj["media"]["payload"] = rng.choice(["***", "a", "=" * 5, "Zm9v\n!"])
    elif kind == 4:
        obj.pop(rng.choice(list(obj)), None)
    elif kind == 5:
        key = rng.choice(list(obj))
        obj[key] = rng.choice([None, 1.5, [], {}, "", "9" * 30])
    elif kind == 6:
        obj["event"] = rng.choice(["media", "start", "stop", "mark", "dtmf", "bogus"])
    elif kind == 7:
        obj["pad"] = "x" * rng.choice([10, 70_000])  # over server.max_message_bytes sometimes
    else:
        obj["streamSid"] = "MZ" + "f" * 32
    return json.dumps(obj)


def bad_stream(rng: random.Random, n: int) -> list[str | bytes]:
    w = TwilioStreamWriter(f"CA{n:032d}", f"MZ{n:032d}")
    valid: list[str] = [w.connected(), w.start(), *(w.media(rng.randbytes(160)) for _ in range(3)), w.stop()]
    out: list[str | bytes] = []
    for msg in valid[: rng.randrange(1, len(valid) + 1)]:
        out.append(mutate(rng, msg) if rng.random() < 0.4 else msg)
    if rng.random() < 0.3:
        out.insert(0, w.media(b"\xff" * 160))  # media before start
    return out


async def send_stream(http: aiohttp.ClientSession, url: str, messages: list[str | bytes]) -> int | None:
    async with http.ws_connect(url) as ws:
        for m in messages:
            try:
                await (ws.send_bytes(m) if isinstance(m, bytes) else ws.send_str(m))
            except ConnectionError:
                break
        try:
            msg = await ws.receive(timeout=1.0)
        except TimeoutError:
            return None  # still open: a stream that was valid so far; we hang up
        return ws.close_code if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED) else None


@pytest.mark.timeout(120)
async def test_a_thousand_generated_bad_streams(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    hook, _ = webhook
    server: Any = await make_bridge(server__start_timeout=0.5, server__stream_restart_grace=0.0)
    url = str(server.make_url("/twilio/stream"))
    good_audio = caller_audio(6.0, seed=77)
    good = asyncio.create_task(play_call(url, good_audio, call_sid="CA" + "e" * 32, pace=0.004))
    rng = random.Random(2026)
    streams = [bad_stream(rng, n) for n in range(1000)]
    codes: list[int | None] = []
    sem = asyncio.Semaphore(25)
    async with aiohttp.ClientSession() as http:

        async def one(messages: list[str | bytes]) -> None:
            async with sem:
                codes.append(await send_stream(http, url, messages))

        await asyncio.gather(*(one(s) for s in streams))
    closed = [c for c in codes if c is not None]
    print(
        f"{len(streams)} streams, {sum(len(s) for s in streams)} messages: close codes {sorted(set(closed))}, "
        f"{codes.count(None)} left open by the caller"
    )
    assert set(closed) <= CLEAR_CODES
    assert {1003, 1007, 1008, 1009} <= set(closed)
    assert await good == 1000
    await wait_for(lambda: any(e["call"]["call_sid"] == "CA" + "e" * 32 for e in hook.events("call.ended")), timeout=30)
    session = next(s for s in fake_gladia.sessions.values() if s.body["custom_metadata"]["call_sid"] == "CA" + "e" * 32)
    assert bytes(session.audio) == good_audio
    texts = [e["utterance"]["text"] for e in hook.events("utterance.final") if e["call"]["call_sid"] == "CA" + "e" * 32]
    assert texts == expected_texts(good_audio, 8000)
    ended = [e["summary"]["end_reason"] for e in hook.events("call.ended")]
    assert "internal_error" not in ended
    async with aiohttp.ClientSession() as http:
        for _ in range(100):
            async with http.get(server.make_url("/healthz")) as resp:
                health = await resp.json()
            if health["active_calls"] == 0:
                break
            await asyncio.sleep(0.05)
        assert health == {**health, "status": "ok", "active_calls": 0}
