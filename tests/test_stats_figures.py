"""A call's figures are read in one place (:mod:`bridge.call.figures`): the snapshot (``call.ended``'s
summary) and the meter the metrics read every second agree, field by field."""

from __future__ import annotations

import time
from dataclasses import fields

import aiohttp

from bridge.adapters.base import StreamCounters
from bridge.audio import ULAW_8K
from bridge.call.figures import CallFigures, EarlierStreams
from bridge.delivery.queue import DeliveryCounters
from bridge.reply.figures import ReplyFigures
from bridge.settings import GladiaSettings
from bridge.stats import CallStats, Meter
from bridge.stt.stream import SttStream


async def test_the_snapshot_and_the_meter_read_the_same_figures() -> None:
    async with aiohttp.ClientSession() as http:
        stt = SttStream(
            http=http,
            settings=GladiaSettings(api_url="http://127.0.0.1:9"),
            request_body={},
            audio_format=ULAW_8K,
            on_notice=lambda notice: None,
        )
    stt.send_audio(b"\xff" * 1600)  # no connection yet: buffered, unacknowledged
    stt.counters.sessions, stt.counters.connections, stt.counters.reconnects, stt.counters.finals = 1, 2, 1, 3
    stt.counters.keepalive_bytes, stt.counters.recovered_finals, stt.counters.queued_seconds = 800, 2, 1.5
    earlier = EarlierStreams()
    earlier.add(StreamCounters(audio_frames=5, audio_bytes=800, gaps=2))
    reply = ReplyFigures(reply_actions=2, reply_played_ms=1500, reply_cleared_ms=40, barge_in_resumed=1)
    figures = CallFigures(
        phone=StreamCounters(audio_frames=10, audio_bytes=1600, gaps=1),
        earlier=earlier,
        stt=stt,
        delivery=DeliveryCounters(delivered=4, failed=1, dropped=2),
        reply=lambda: reply,
        streams=2,
        utterances=3,
        dtmf=1,
        carrier="twilio",
        started_at=time.monotonic() - 2.0,
    )

    stats = figures.snapshot("stop")

    assert fields(CallStats)[0].name == "end_reason" and stats.end_reason == "stop"
    assert (stats.phone_streams, stats.phone_frames, stats.phone_bytes, stats.phone_gaps) == (2, 15, 2400, 3)
    assert (stats.stt_bytes, stats.stt_bytes_sent, stats.stt_unacked_bytes) == (1600, 0, 1600)
    assert (stats.stt_sessions, stats.stt_connections, stats.stt_reconnects, stats.stt_finals) == (1, 2, 1, 3)
    assert (stats.stt_keepalive_bytes, stats.stt_recovered_finals, stats.stt_queued_s) == (800, 2, 1.5)
    assert stats.stt_session_id is None and stats.stt_gave_up is None and not stats.stt_ended_normally
    assert (stats.webhook_delivered, stats.webhook_failed, stats.webhook_dropped) == (4, 1, 2)
    assert (stats.reply_actions, stats.reply_played_ms, stats.reply_cleared_ms, stats.barge_in_resumed) == (
        2,
        1500,
        40,
        1,
    )
    assert (stats.utterances, stats.dtmf, stats.carrier, stats.stt_bytes_per_second) == (3, 1, "twilio", 8000)
    assert 2.0 <= stats.duration_s < 10.0
    assert figures.meter() == Meter.of(stats) == Meter(15, 2400, 0, 0, 1, 3, 2, 0, 1500, 0, 0, 1)
    assert figures.ack_lag() == 1600 / 8000
