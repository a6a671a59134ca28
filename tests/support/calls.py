"""What most tests share: a Twilio caller playing a call, deterministic caller audio, polling with a
deadline, fast retry settings, and the webhook secret the fake bot verifies with."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp.test_utils import TestServer

from bridge.tools.writers.twilio import TwilioStreamWriter

WEBHOOK_SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # test-only value

BridgeFactory = Callable[..., Awaitable[TestServer]]


def caller_audio(seconds: float, seed: int = 1) -> bytes:
    """Deterministic mu-law 'audio' (random bytes: every byte matters to the fake's CRCs)."""
    return random.Random(seed).randbytes(int(8000 * seconds))


FAST = {
    "gladia.reconnect_initial_delay": 0.01,
    "gladia.reconnect_max_delay": 0.05,
    "gladia.finish_timeout": 10.0,
    "webhook.retry_initial_delay": 0.01,
    "webhook.retry_max_delay": 0.05,
    "webhook.timeout": 2.0,
    "server.start_timeout": 2.0,
    "server.shutdown_timeout": 2.0,
}


async def play_call(
    url: str,
    ulaw: bytes,
    *,
    call_sid: str = "CA" + "1" * 32,
    stream_sid: str = "MZ" + "1" * 32,
    parameters: dict[str, str] | None = None,
    frame_bytes: int = 160,
    pace: float = 0.0,
    headers: dict[str, str] | None = None,
) -> int | None:
    """Play a whole Twilio call into ``url``; returns the close code the bridge ended it with."""
    writer = TwilioStreamWriter(call_sid, stream_sid, parameters=parameters or {"From": "+15550001", "To": "+15550002"})
    async with aiohttp.ClientSession() as http, http.ws_connect(url, headers=headers) as ws:
        for message in writer.call(ulaw, frame_bytes):
            await ws.send_str(message)
            if pace:
                await asyncio.sleep(pace)
        async for _ in ws:
            pass
        return ws.close_code


async def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll until ``predicate()`` holds; fail the test after ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)
