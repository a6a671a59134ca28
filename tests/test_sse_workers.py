"""``GET /v1/events`` under ``bridge serve --workers``: the worker that answers merges its siblings' streams
(bridge.http.merged_events), two real worker apps in this process sharing a run dir, as
tests/test_transfer_workers.py runs them."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import shutil
import signal
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bridge.app import create_app
from bridge.settings import Settings
from bridge.sibling_socket import install
from tests.support.bridge_process import start_bridge
from tests.support.calls import FAST, WEBHOOK_SECRET, caller_audio, play_call, wait_for
from tests.support.fakes import FakeGladia, FakeWebhook
from tests.support.process import free_port, minimal_env
from tests.test_sse_all_events import AUTH, TOKEN, Reader, bodies, has


@contextlib.asynccontextmanager
async def two_workers(aiohttp_server: Any, fake_gladia: FakeGladia, hook_url: str) -> AsyncIterator[list[str]]:
    """Workers 0 and 1 of 2, real apps in this process on their own ports, sharing a run dir (as
    tests/test_transfer_workers.py does): each serves its internal socket, and asks the other's."""
    run_dir = Path(tempfile.mkdtemp(prefix="bw-"))  # short: unix socket paths are bounded
    env = {
        "BRIDGE_DATA_DIR": str(run_dir / "data"),
        "GLADIA_API_URL": fake_gladia.base_url,
        "GLADIA_API_KEY": "test-key",
        "BOT_WEBHOOK_URL": hook_url,
        "BOT_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "BRIDGE_API_TOKEN": TOKEN,
    }
    settings = Settings.load(environ=env, overrides=FAST)
    try:
        bases = []
        for i in (0, 1):
            app = create_app(settings, (i, 2))
            install(app, run_dir, i, 2, timeout=2.0)
            server = await aiohttp_server(app, host="127.0.0.1")
            bases.append(str(server.make_url("")).rstrip("/"))
        yield bases
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


@pytest.mark.timeout(90)
async def test_workers_merge_and_a_reader_resumes_on_the_other_worker(
    aiohttp_server: Any, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    """Under --workers 2, /v1/events on worker 0 carries the calls of both workers, each event's id the
    two workers' positions dotted; a reader that drops and resumes with that id on worker 1 has, in both
    streams together, every event of both calls the bot got, once each, in each call's order."""
    hook, hook_url = webhook
    fake_gladia.segment_seconds = 0.5
    async with two_workers(aiohttp_server, fake_gladia, hook_url) as (w0, w1), aiohttp.ClientSession() as http:
        first = Reader(await http.get(f"{w0}/v1/events", headers=AUTH))
        assert first.resp.status == 200 and len(first.resp.headers["X-Events-From"].split(".")) == 2
        calls = [
            asyncio.create_task(
                play_call(base.replace("http", "ws", 1) + "/twilio/stream", caller_audio(6.0, seed=n),
                          call_sid=f"CA{n:032d}", stream_sid=f"MZ{n:032d}", pace=0.01)
            )
            for n, base in ((1, w0), (2, w1))
        ]  # fmt: skip
        got = await first.until(has("utterance.final", 4))
        first.resp.close()
        last_id = got[-1].last_event_id
        assert len(last_id.split(".")) == 2
        second = Reader(await http.get(f"{w1}/v1/events", headers={**AUTH, "Last-Event-ID": last_id}))
        rest = await second.until(has("transcript.completed", 2), timeout=40)
        assert await asyncio.gather(*calls) == [1000, 1000]
        second.resp.close()
    await wait_for(lambda: len(hook.events("transcript.completed")) == 2, timeout=10)
    call_ids = {e["call"]["id"] for e in hook.events("call.started")}
    assert len(call_ids) == 2
    for call_id in call_ids:
        posted = [e for e in hook.events() if e["call"]["id"] == call_id]
        streamed = [b for b in bodies(got, call_id) + bodies(rest, call_id) if "sequence" in b]
        assert streamed == posted, call_id
    ids = [[int(p) for p in e.last_event_id.split(".")] for e in got + rest]
    assert all(a[0] <= b[0] and a[1] <= b[1] for a, b in itertools.pairwise(ids))


@pytest.mark.timeout(90)
async def test_sigterm_ends_the_merged_streams_at_once(
    fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    """``bridge serve --workers 2`` (real processes): a reader of /v1/events gets its stream ended with
    ``the bridge is stopping`` once SIGTERM has drained the calls, and the bridge exits well within its
    shutdown timeout instead of waiting for the open stream."""
    _, hook_url = webhook
    env = minimal_env(
        GLADIA_API_URL=fake_gladia.base_url,
        GLADIA_API_KEY="test-key",
        BOT_WEBHOOK_URL=hook_url,
        BOT_WEBHOOK_SECRET=WEBHOOK_SECRET,
        BRIDGE_API_TOKEN=TOKEN,
    )
    bridge = await start_bridge(env, "--workers", "2", port=free_port(), startup=30)
    try:
        async with aiohttp.ClientSession() as http:
            reader = Reader(await http.get(f"{bridge.base}/v1/events", headers=AUTH))
            assert reader.resp.status == 200 and len(reader.resp.headers["X-Events-From"].split(".")) == 2
            await asyncio.sleep(0.5)  # the merged stream is open on both workers
            started = time.monotonic()
            bridge.send_signal(signal.SIGTERM)
            await reader.until(lambda *_: False, timeout=20)  # to the stream's end
            assert reader.ended and reader.parsed()[1][-1].startswith(" the bridge is stopping")
        assert await bridge.wait(30) == 0
        assert time.monotonic() - started < 15
    finally:
        if bridge.returncode is None:
            await bridge.kill()
