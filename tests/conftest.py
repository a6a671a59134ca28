"""Fixtures: fake Gladia and webhook servers on 127.0.0.1, a bridge factory, a Twilio caller."""

from __future__ import annotations

import asyncio
import gc
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bridge.app import create_app
from bridge.clock import SYSTEM_CLOCK, Clock
from bridge.log import configure_logging
from bridge.settings import Settings
from bridge.tools.writers.twilio import TwilioStreamWriter
from tests.fakes import FakeGladia, FakeWebhook

WEBHOOK_SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # test-only value

configure_logging("debug", "json")


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


@pytest.fixture(autouse=True)
async def no_unhandled_loop_errors() -> AsyncIterator[None]:
    """Every async test (the fault, attack and fuzz suites among them) fails if anything reaches the
    event loop's exception handler: a task exception never retrieved, an error in a callback."""
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    yield
    await asyncio.sleep(0)
    gc.collect()  # "exception was never retrieved" is reported when the task is collected
    await asyncio.sleep(0)
    loop.set_exception_handler(previous)
    assert not errors, [f"{e.get('message')}: {e.get('exception')!r}" for e in errors]


@pytest.fixture
async def fake_gladia(aiohttp_server: Any) -> FakeGladia:
    fake = FakeGladia()
    server = await aiohttp_server(fake.app, host="127.0.0.1")
    fake.base_url = str(server.make_url("")).rstrip("/")
    return fake


@pytest.fixture
async def webhook(aiohttp_server: Any) -> tuple[FakeWebhook, str]:
    fake = FakeWebhook()
    server = await aiohttp_server(fake.app, host="127.0.0.1")
    return fake, str(server.make_url("/hook"))


BridgeFactory = Callable[..., Awaitable[TestServer]]


@pytest.fixture
def make_bridge(aiohttp_server: Any, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str],
                tmp_path: Any) -> BridgeFactory:
    async def factory(environ: dict[str, str] | None = None, *, clock: Clock = SYSTEM_CLOCK,
                      **overrides: Any) -> TestServer:
        env = {
            "BRIDGE_DATA_DIR": str(tmp_path / "data"),
            "GLADIA_API_URL": fake_gladia.base_url,
            "GLADIA_API_KEY": "test-key",
            "BOT_WEBHOOK_URL": webhook[1],
            "BOT_WEBHOOK_SECRET": WEBHOOK_SECRET,
        }
        env.update(environ or {})
        flags = {k.replace("__", "."): v for k, v in overrides.items()}
        settings = Settings.load(environ=env, overrides={**FAST, **flags})
        app: web.Application = create_app(settings, clock=clock)
        server: TestServer = await aiohttp_server(app, host="127.0.0.1")
        return server

    return factory


async def play_call(url: str, ulaw: bytes, *, call_sid: str = "CA" + "1" * 32, stream_sid: str = "MZ" + "1" * 32,
                    parameters: dict[str, str] | None = None, frame_bytes: int = 160,
                    pace: float = 0.0, headers: dict[str, str] | None = None) -> int | None:
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


@pytest.fixture(scope="session")
def recognizer() -> Any:
    """The real Whisper tiny.en recogniser, loaded once for the whole run."""
    from bridge.local_stt.engine import WhisperRecognizer

    return WhisperRecognizer(cpu_threads=1, workers=2)


@pytest.fixture
def make_stt_server(aiohttp_server: Any, recognizer: Any) -> Callable[..., Awaitable[tuple[Any, TestServer]]]:
    """Start the local Gladia-compatible server on 127.0.0.1 (real engine); returns (server, test server)."""
    from bridge.local_stt.server import LocalSttServer, ServerOptions

    async def factory(**options: Any) -> tuple[Any, TestServer]:
        stt = LocalSttServer(ServerOptions(**options), recognizer=recognizer)
        server: TestServer = await aiohttp_server(stt.app, host="127.0.0.1")
        return stt, server

    return factory
