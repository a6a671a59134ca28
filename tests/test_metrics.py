"""GET /metrics: Prometheus counters for calls, audio, Gladia, finals, webhook and outbox."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.support.calls import BridgeFactory, caller_audio, play_call, wait_for
from tests.support.fakes import FakeGladia, FakeWebhook


async def scrape(server: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with aiohttp.ClientSession() as http, http.get(server.make_url("/metrics")) as resp:
        assert resp.status == 200
        text = await resp.text()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_metrics_count_a_call_with_a_drop(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    hook, _ = webhook
    fake_gladia.drops = [(8_000, 1011)]
    fake_gladia.ack_every = 5
    server: Any = await make_bridge()
    audio = caller_audio(2.0)
    await play_call(str(server.make_url("/twilio/stream")), audio)
    await wait_for(lambda: bool(hook.events("call.ended")))
    m = await scrape(server)
    assert m[("bridge_calls_total", (("end_reason", "stop"), ("provider", "twilio")))] == 1
    assert m[("bridge_phone_frames_total", ())] == 100
    assert m[("bridge_phone_audio_bytes_total", ())] == len(audio)
    assert m[("bridge_gladia_reconnects_total", ())] == 1
    assert m[("bridge_gladia_resent_bytes_total", ())] > 0
    assert m[("bridge_gladia_audio_bytes_total", ())] == len(audio) + m[("bridge_gladia_resent_bytes_total", ())]
    assert m[("bridge_finals_total", ())] == 2
    await wait_for(lambda: len(hook.requests) == 5)  # started, 2 finals, ended, transcript.completed
    m = await scrape(server)
    assert m[("bridge_webhook_deliveries_total", (("outcome", "delivered"),))] == 5
    assert m[("bridge_webhook_request_seconds_count", ())] == 5
    await asyncio.sleep(1.3)  # the once-a-second update sets the gauges
    m = await scrape(server)
    assert m[("bridge_event_loop_lag_seconds_count", ())] >= 10  # a sample every 100 ms
    assert m[("bridge_outbox_events", (("state", "pending"),))] == 0
    assert m[("bridge_outbox_events", (("state", "dead"),))] == 0
    assert m[("bridge_active_calls", ())] == 0


def test_a_call_read_every_second_then_ended_counts_each_frame_once() -> None:
    """The metrics task reads a live call's meter now and then; its end adds only what came since."""
    from dataclasses import replace

    from bridge.metrics import Metrics
    from bridge.stats import CallStats, Meter

    metrics = Metrics()
    zero = Meter(*(0 for _ in Meter._fields))
    metrics.update("a", zero._replace(frames=50, phone_bytes=8000), ack_lag=0.2)
    metrics.update("b", zero._replace(frames=10), ack_lag=None)
    metrics.flush()
    metrics.update("a", zero._replace(frames=120, phone_bytes=19200, reply_played_ms=1500))
    metrics.flush()
    figures: dict[str, Any] = dict.fromkeys(CallStats.__dataclass_fields__, 0)
    figures |= {"end_reason": "stop", "stt_session_id": None, "stt_gave_up": None, "carrier": "twilio"}
    ended = CallStats(**figures)
    metrics.call_ended("a", replace(ended, phone_frames=150, phone_bytes=24000, reply_played_ms=2000))

    def value(name: str, **labels: str) -> float:
        got = metrics.registry.get_sample_value(name, labels)
        assert got is not None, name
        return got

    assert value("bridge_phone_frames_total") == 150 + 10
    assert value("bridge_phone_audio_bytes_total") == 24000
    assert value("bridge_reply_played_seconds_total") == 2.0
    assert value("bridge_calls_total", end_reason="stop", provider="twilio") == 1
    assert value("bridge_gladia_ack_lag_seconds_count") == 1
    metrics.call_ended("b", replace(ended, phone_frames=10))
    assert value("bridge_phone_frames_total") == 160  # b's 10 frames were already counted


async def test_a_stalled_event_loop_shows_in_the_loop_lag(make_bridge: BridgeFactory) -> None:
    """The bridge runs in this test's event loop: blocking it for 0.3 s makes the next 100 ms wake-up
    at least 0.2 s late, which lands above the 0.1 s bucket."""
    import time

    server: Any = await make_bridge()
    await asyncio.sleep(0.35)
    before = await scrape(server)
    time.sleep(0.3)  # noqa: ASYNC251 - the stall under test: nothing in the loop runs meanwhile
    await asyncio.sleep(0.35)
    after = await scrape(server)

    def late(m: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> float:
        total = m[("bridge_event_loop_lag_seconds_bucket", (("le", "+Inf"),))]
        return total - m[("bridge_event_loop_lag_seconds_bucket", (("le", "0.1"),))]

    assert late(after) == late(before) + 1
