"""Soak, CI length: 50 concurrent real-time calls in three waves with Gladia drops every 3 s of audio.
Nothing is lost and the bridge's memory does not grow from wave to wave. The full-length run
(50 calls for 10 minutes) is `benchmarks/bench_soak.py`."""

from __future__ import annotations

import pytest

from tests.support.fakes import FakeGladia, FakeWebhook
from tests.support.process import free_port, minimal_env
from tests.support.soak import run_waves, start_soak_bridge


@pytest.mark.timeout(240)
async def test_fifty_calls_in_waves_with_drops(fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]) -> None:
    hook, hook_url = webhook
    fake_gladia.drop_every_bytes = 24_000  # every 3 s of audio, each session
    port = free_port()
    proc = await start_soak_bridge(
        minimal_env(GLADIA_API_URL=fake_gladia.base_url, GLADIA_API_KEY="test-key", BOT_WEBHOOK_URL=hook_url), port
    )
    try:
        result = await run_waves(port, proc.pid, fake_gladia, hook, calls=50, call_seconds=8.0, waves=3, report=print)
    finally:
        await proc.stop()
    assert result.calls == 150 and result.lost_calls == []
    assert sum(s.connections - 1 for s in fake_gladia.sessions.values()) >= 150  # drops happened
    first, *_, last = result.rss_after_wave_kib
    print(f"bridge RSS after each wave (KiB): {result.rss_after_wave_kib}")
    assert last - first < 15 * 1024  # flat: no per-call growth across waves
