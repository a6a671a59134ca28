"""Recordings of ``bridge serve`` as a process: ``SIGKILL`` mid-call (the file is repaired at the next start
and holds all but the last flush window), and a disk that refuses the file (``ulimit -f``: CPython ignores
SIGXFSZ, so the write fails with EFBIG) while the call, its events and its transcript go on."""

from __future__ import annotations

import asyncio
import json
import resource
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from bridge.audio import decode_to_pcm16
from bridge.tools.writers.twilio import TwilioStreamWriter
from tests.support.bridge_process import BridgeProcess, start_bridge
from tests.support.calls import caller_audio, wait_for
from tests.support.fakes import FakeGladia, FakeWebhook, expected_texts
from tests.support.process import minimal_env
from tests.support.recording_oracle import decode

pytestmark = pytest.mark.timeout(120)

RATE = 8000
FRAME = 160  # 20 ms of mu-law


def pcm(ulaw: bytes) -> np.ndarray:
    return np.frombuffer(decode_to_pcm16(ulaw, "ulaw"), dtype="<i2")


async def talk(url: str, audio: bytes, *, stop: bool, until: float | None = None) -> int:
    """A Twilio stream sending ``audio`` in real time (to ``until`` seconds at most); the frames sent."""
    writer = TwilioStreamWriter("CA" + "5" * 32, "MZ" + "5" * 32, parameters={"From": "+1", "To": "+2"})
    sent = 0
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        await ws.send_str(writer.connected())
        await ws.send_str(writer.start())
        t0 = time.monotonic()
        for i in range(0, len(audio), FRAME):
            if until is not None and time.monotonic() - t0 >= until:
                break
            try:
                await ws.send_str(writer.media(audio[i : i + FRAME]))
            except (ConnectionError, RuntimeError):
                break
            sent += 1
            await asyncio.sleep(max(0.0, t0 + 0.02 * sent - time.monotonic()))
        if stop and not ws.closed:
            await ws.send_str(writer.stop())
            async for _ in ws:
                pass
    return sent


def environment(fake_gladia: FakeGladia, hook_url: str, data: Path) -> dict[str, str]:
    return minimal_env(
        GLADIA_API_URL=fake_gladia.base_url,
        GLADIA_API_KEY="test-key",
        BOT_WEBHOOK_URL=hook_url,
        BRIDGE_DATA_DIR=str(data),
        BRIDGE_RECORDINGS="on",
    )


async def test_sigkill_mid_call_leaves_a_readable_recording_of_all_but_the_last_flush(
    fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str], tmp_path: Path
) -> None:
    """8 s into a call the bridge is killed; the next start repairs the file (its WAV sizes were stale):
    sox reads it, and it holds the caller's audio exactly, all of it but at most the last flush_s (5 s)."""
    hook, hook_url = webhook
    data = tmp_path / "data"
    env = environment(fake_gladia, hook_url, data)
    bridge = await start_bridge(env)
    audio = caller_audio(20.0)
    try:
        talking = asyncio.create_task(talk(f"{bridge.ws}/twilio/stream", audio, stop=False))
        await asyncio.sleep(8.0)
        bridge.proc.send_signal(signal.SIGKILL)
        await bridge.proc.wait()
        frames = await asyncio.wait_for(talking, 10)
    finally:
        await bridge.stop()
    (call,) = [e["call"]["id"] for e in hook.events("call.started")]
    path = data / "recordings" / f"{call}.wav"
    assert path.exists()
    bridge = await start_bridge(env)
    try:
        await wait_for(lambda: bool(bridge.logs("recording.repaired")), timeout=10)
    finally:
        await bridge.stop()
    got = decode(path, RATE, "sox")
    sent = pcm(audio[: frames * FRAME])
    assert len(got) >= len(sent) - 5 * RATE, (len(got) / RATE, len(sent) / RATE)  # at most flush_s lost
    assert np.array_equal(got[:, 0], sent[: len(got)])  # what is there is the caller, in place
    assert not got[:, 1].any()  # nothing played


async def test_a_full_disk_degrades_the_recording_never_the_call(
    fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str], tmp_path: Path
) -> None:
    """``ulimit -f`` 192 KiB (about 6 s of 8 kHz stereo WAV): the recording's writes fail (EFBIG), /healthz
    says degraded and why, metrics count it, one log line says so; the call's events (finals, call.ended,
    transcript.completed) are all there and recording.completed says degraded."""
    hook, hook_url = webhook
    data = tmp_path / "data"
    env = environment(fake_gladia, hook_url, data)

    def small_files() -> None:  # in the child, before exec: every file it writes stops at 192 KiB
        resource.setrlimit(resource.RLIMIT_FSIZE, (192 * 1024, 192 * 1024))

    bridge: BridgeProcess = await start_bridge(env, preexec_fn=small_files)
    audio = caller_audio(12.0)
    health: dict[str, Any] = {}
    metrics = ""
    try:
        talking = asyncio.create_task(talk(f"{bridge.ws}/twilio/stream", audio, stop=True))
        async with aiohttp.ClientSession() as http:

            async def degraded() -> bool:
                async with http.get(f"{bridge.base}/healthz") as resp:
                    health.update(await resp.json())
                return bool(health["status"] == "degraded")

            async with asyncio.timeout(30):
                while not await degraded():
                    await asyncio.sleep(0.2)
            async with asyncio.timeout(5):  # the metrics follow within a second
                while "bridge_recording_degraded 1.0" not in metrics:
                    await asyncio.sleep(0.2)
                    async with http.get(f"{bridge.base}/metrics") as resp:
                        metrics = await resp.text()
        frames = await asyncio.wait_for(talking, 30)
        await wait_for(lambda: bool(hook.events("recording.completed")), timeout=30)
        await wait_for(lambda: bool(hook.events("transcript.completed")), timeout=30)
    finally:
        await bridge.stop()
    assert frames == len(audio) // FRAME  # the call was never cut
    assert any("recordings degraded" in p and "EFBIG" in p for p in health["degraded"]), health
    assert health["recordings"]["state"] == "degraded" and health["recordings"]["failed"] == 1
    assert "bridge_recording_dropped_bytes_total 0.0" not in metrics  # the audio lost is counted
    types = [e["type"] for e in hook.events()]
    assert types[0] == "call.started"
    assert [e["utterance"]["text"] for e in hook.events("utterance.final")] == expected_texts(audio, RATE)
    assert types.index("call.ended") < types.index("recording.completed")
    (completed,) = hook.events("recording.completed")
    assert completed["degraded"] is True
    summary = hook.events("call.ended")[0]["summary"]
    assert summary["end_reason"] == "stop" and summary["phone_frames"] == frames
    lines = [json.dumps(line) for line in bridge.logs("recording.degraded")]
    assert len(lines) == 1, lines  # one log line per change, not one per write
