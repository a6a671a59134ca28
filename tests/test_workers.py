"""`bridge serve --workers 2`: two processes share the port, calls work on both, metrics add up,
SIGTERM stops both."""

from __future__ import annotations

import asyncio
import signal

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.bridge_process import start_bridge
from tests.support.calls import caller_audio, play_call, wait_for
from tests.support.fakes import FakeGladia, FakeWebhook, expected_texts
from tests.support.process import minimal_env


@pytest.mark.timeout(90)
async def test_two_workers_share_the_port(fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]) -> None:
    hook, hook_url = webhook
    proc = await start_bridge(
        minimal_env(GLADIA_API_URL=fake_gladia.base_url, GLADIA_API_KEY="test-key", BOT_WEBHOOK_URL=hook_url),
        "--workers",
        "2",
        log_format=None,
        startup=20.0,
    )
    base = proc.base
    try:
        pids: set[int] = set()
        for _ in range(400):
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
                try:
                    async with http.get(base + "/healthz") as resp:
                        pids.add((await resp.json())["worker"]["pid"])
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.05)
            if len(pids) == 2:
                break
        assert len(pids) == 2  # both workers answer on the one port

        audios = [caller_audio(2.0, seed=300 + i) for i in range(8)]
        codes = await asyncio.gather(
            *(
                play_call(base.replace("http", "ws") + "/twilio/stream", a, call_sid=f"CA{i:032d}")
                for i, a in enumerate(audios)
            )
        )
        assert codes == [1000] * 8
        await wait_for(lambda: len(hook.events("call.ended")) == 8)
        for i, audio in enumerate(audios):
            texts = [
                e["utterance"]["text"] for e in hook.events("utterance.final") if e["call"]["call_sid"] == f"CA{i:032d}"
            ]
            assert texts == expected_texts(audio, 8000)
        async with aiohttp.ClientSession() as http, http.get(base + "/metrics") as resp:
            text = await resp.text()
        calls = sum(
            s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == "bridge_calls_total"
        )
        assert calls == 8  # whichever worker answers, the metrics cover both
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await proc.wait(60) == 0
