"""What an outsider can make the bridge hold is bounded and timed out: idle and slow connections,
descriptors, silent streams, dead peers, audio faster than real time. Each test is an attack over
real sockets, with a legitimate call checked alongside."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bridge.tools.writers.twilio import TwilioStreamWriter
from tests.support.bridge_process import start_bridge
from tests.support.calls import BridgeFactory, caller_audio, play_call, wait_for
from tests.support.fakes import FakeGladia, FakeWebhook, expected_texts
from tests.support.process import minimal_env


def _soft_and_hard_open_files(pid: int) -> tuple[str, str]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return soft, hard
    raise AssertionError("no open-files line")


@pytest.mark.timeout(60)
async def test_idle_and_slow_connections_are_timed_out_and_capped(
    fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str], tmp_path: Path
) -> None:
    """Attack: 60 idle TCP connections and 20 that send their headers one byte at a time, against a
    bridge capped at 40 connections with a 1 s keep-alive. A real call and /healthz still get in (the
    oldest idle connection is closed to make room, with a log line), the idle and slow connections
    are closed within the keep-alive time, and the open-files limit was raised to the hard limit."""
    hook, hook_url = webhook
    config = tmp_path / "bridge.toml"
    config.write_text("[server]\nkeepalive_timeout = 1.0\nmax_connections = 40\n")
    env = minimal_env(
        GLADIA_API_URL=fake_gladia.base_url,
        GLADIA_API_KEY="test-key",
        BOT_WEBHOOK_URL=hook_url,
        BRIDGE_CONFIG=str(config),
    )
    bridge = await start_bridge(env)
    streams: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        soft, hard = _soft_and_hard_open_files(bridge.proc.pid)
        assert soft == hard
        for _ in range(60):
            streams.append(await asyncio.open_connection("127.0.0.1", bridge.port))
        slow = []
        for _ in range(20):
            reader, writer = await asyncio.open_connection("127.0.0.1", bridge.port)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            slow.append((reader, writer))
        streams += slow

        async def trickle() -> None:
            for _ in range(10):
                for _, writer in slow:
                    if not writer.is_closing():
                        writer.write(b"a")
                await asyncio.sleep(0.3)

        trickling = asyncio.create_task(trickle())
        audio = caller_audio(2.0)
        assert await play_call(bridge.ws + "/twilio/stream", audio) == 1000
        async with aiohttp.ClientSession() as http, http.get(bridge.base + "/healthz") as resp:
            assert resp.status == 200
        await wait_for(lambda: bool(hook.events("call.ended")), timeout=10)
        assert [e["utterance"]["text"] for e in hook.events("utterance.final")] == expected_texts(audio, 8000)

        async def closed_by_server(reader: asyncio.StreamReader) -> bool:
            try:
                return await asyncio.wait_for(reader.read(65536), 5) == b"" or reader.at_eof()
            except (ConnectionError, TimeoutError):
                return False

        results = await asyncio.gather(*(closed_by_server(r) for r, _ in streams))
        assert all(results), f"{results.count(False)} connections still open"
        trickling.cancel()
    finally:
        for _, writer in streams:
            writer.close()
        await bridge.stop()
    assert len(bridge.logs("server.connection_cap")) >= 1


async def test_a_stream_that_starts_then_sends_nothing_is_ended(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    """Attack: start, then silence on the socket (keepalive silence used to keep its Gladia session
    alive for good). After server.media_timeout the stream is closed with 1008 and the call ends
    (media_timeout), its Gladia session finished."""
    hook, _ = webhook
    server: Any = await make_bridge(server__media_timeout=0.6)
    w = TwilioStreamWriter("CA" + "a" * 32, "MZ" + "a" * 32)
    async with aiohttp.ClientSession() as http, http.ws_connect(str(server.make_url("/twilio/stream"))) as ws:
        await ws.send_str(w.connected())
        await ws.send_str(w.start())
        await ws.send_str(w.media(b"\x7f" * 160))
        msg = await ws.receive(timeout=5)
        assert msg.type is aiohttp.WSMsgType.CLOSE and ws.close_code == 1008 and "no audio" in (msg.extra or "")
    await wait_for(lambda: bool(hook.events("call.ended")), timeout=5)
    assert hook.events("call.ended")[0]["summary"]["end_reason"] == "media_timeout"
    (session,) = fake_gladia.sessions.values()
    assert session.stop_received == 1


async def test_a_peer_that_never_answers_pings_is_dropped(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    """Attack: a peer that goes quiet and never answers a ping (a dead NAT mapping looks the same).
    The WebSocket heartbeat closes it long before the media timeout; the call is a dropped stream and
    ends after the grace."""
    hook, _ = webhook
    server: Any = await make_bridge(
        server__ws_heartbeat=0.3, server__stream_restart_grace=0.2, server__media_timeout=10.0
    )
    w = TwilioStreamWriter("CA" + "b" * 32, "MZ" + "b" * 32)
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(str(server.make_url("/twilio/stream")), autoping=False) as ws,
    ):
        await ws.send_str(w.connected())
        await ws.send_str(w.start())
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        pings = 0
        await ws.send_str(w.media(b"\x7f" * 160))
        while not ws.closed and loop.time() - t0 < 5:
            try:
                msg = await ws.receive(timeout=0.1)
            except TimeoutError:
                continue
            if msg.type is aiohttp.WSMsgType.PING:
                pings += 1  # and never answered
            elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
                break
        elapsed = loop.time() - t0
    assert pings >= 1 and elapsed < 2.0
    await wait_for(lambda: bool(hook.events("call.ended")), timeout=5)
    assert hook.events("call.ended")[0]["summary"]["end_reason"] == "stream_lost"


async def test_audio_faster_than_real_time_is_refused(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    """Attack: a stream pushes 60 s of audio as fast as it can (billing amplification, and other calls'
    latency). Past server.audio_burst_seconds ahead of the clock it is closed with 1008 and Gladia got
    at most the burst plus real time; a real-time call alongside gets every frame and final."""
    hook, _ = webhook
    server: Any = await make_bridge(server__audio_burst_seconds=2.0)
    url = str(server.make_url("/twilio/stream"))
    legit = caller_audio(3.0, seed=5)
    legit_call = asyncio.create_task(
        play_call(url, legit, call_sid="CA" + "1" * 32, stream_sid="MZ" + "1" * 32, pace=0.02)
    )
    flood = caller_audio(60.0, seed=6)
    w = TwilioStreamWriter("CA" + "6" * 32, "MZ" + "6" * 32)
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        await ws.send_str(w.connected())
        await ws.send_str(w.start())
        t0 = asyncio.get_running_loop().time()
        for i in range(0, len(flood), 160):
            if ws.closed:
                break
            try:
                await ws.send_str(w.media(flood[i : i + 160]))
            except ConnectionError:
                break
            if i % 16000 == 0:
                await asyncio.sleep(0)
        msg = await ws.receive(timeout=10)
        elapsed = asyncio.get_running_loop().time() - t0
        assert ws.close_code == 1008 and "faster than real time" in str(msg.extra), (ws.close_code, msg)
    assert await legit_call == 1000
    await wait_for(lambda: len(hook.events("call.ended")) == 2, timeout=10)
    flood_session = next(
        s for s in fake_gladia.sessions.values() if s.body["custom_metadata"]["call_sid"] == "CA" + "6" * 32
    )
    assert flood_session.received_bytes <= 8000 * (2.0 + 1.5 * elapsed + 1.0)
    ended = {e["call"]["call_sid"]: e["summary"]["end_reason"] for e in hook.events("call.ended")}
    assert ended == {"CA" + "6" * 32: "protocol_error", "CA" + "1" * 32: "stop"}
    legit_finals = [
        e["utterance"]["text"] for e in hook.events("utterance.final") if e["call"]["call_sid"] == "CA" + "1" * 32
    ]
    assert legit_finals == expected_texts(legit, 8000)
