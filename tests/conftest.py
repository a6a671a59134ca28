"""Fixtures: fake Gladia and webhook servers on 127.0.0.1, a bridge factory, a Twilio caller."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bridge.app import create_app
from bridge.clock import SYSTEM_CLOCK, Clock
from bridge.log import configure_logging
from bridge.settings import Settings
from tests.support.calls import FAST, WEBHOOK_SECRET, BridgeFactory
from tests.support.fakes import FakeGladia, FakeWebhook
from tests.support.redis_server import RedisServer
from tests.support.s3_server import FOREIGN, S3Server

configure_logging("debug", "json")


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


@pytest.fixture
def make_bridge(
    aiohttp_server: Any, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str], tmp_path: Any
) -> BridgeFactory:
    async def factory(
        environ: dict[str, str] | None = None, *, clock: Clock = SYSTEM_CLOCK, port: int | None = None, **overrides: Any
    ) -> TestServer:
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
        server: TestServer = await aiohttp_server(app, host="127.0.0.1", port=port)
        return server

    return factory


@pytest.fixture(scope="session")
def recognizer() -> Any:
    """The real Whisper tiny.en recogniser, loaded once for the whole run."""
    from bridge.local_stt.engine import WhisperRecognizer

    return WhisperRecognizer(cpu_threads=1, workers=2)


@pytest.fixture(scope="session")
def base_recognizer() -> Any:
    """The real multilingual Whisper base recogniser (the ``local-base`` extra), loaded once for the run."""
    from bridge.local_stt.engine import WhisperRecognizer

    return WhisperRecognizer("base", cpu_threads=1, workers=2)


def _stt_server_factory(
    aiohttp_server: Any, recognizer: Any, model: str = "tiny.en"
) -> Callable[..., Awaitable[tuple[Any, TestServer]]]:
    from bridge.local_stt.server import LocalSttServer, ServerOptions

    async def factory(**options: Any) -> tuple[Any, TestServer]:
        stt = LocalSttServer(ServerOptions(**{"model": model, **options}), recognizer=recognizer)
        server: TestServer = await aiohttp_server(stt.app, host="127.0.0.1")
        return stt, server

    return factory


@pytest.fixture
def make_stt_server(aiohttp_server: Any, recognizer: Any) -> Callable[..., Awaitable[tuple[Any, TestServer]]]:
    """Start the local Gladia-compatible server on 127.0.0.1 (real engine); returns (server, test server)."""
    return _stt_server_factory(aiohttp_server, recognizer)


@pytest.fixture
def make_base_stt_server(aiohttp_server: Any, base_recognizer: Any) -> Callable[..., Awaitable[tuple[Any, TestServer]]]:
    """Like ``make_stt_server``, on Whisper base."""
    return _stt_server_factory(aiohttp_server, base_recognizer, "base")


@pytest.fixture
async def redis_server(tmp_path: Path) -> AsyncIterator[RedisServer]:
    """A redis-server of its own on a free loopback port, for fleet-mode tests."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3_process() -> Iterator[S3Server]:
    """moto's S3-compatible server on a free loopback port, started once for the run (about half a second)."""
    with S3Server() as server:
        yield server


@pytest.fixture
def s3_server(s3_process: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """That server emptied for this test, and its dummy AWS credentials in this process's environment (the
    developer's own AWS profile, token and endpoint settings removed) for boto3's standard chain."""
    s3_process.reset()
    for name in FOREIGN:
        monkeypatch.delenv(name, raising=False)
    for name, value in s3_process.env.items():
        monkeypatch.setenv(name, value)
    return s3_process
