"""Soak load shared by the CI soak test and the full-length benchmark: waves of concurrent real-time
Twilio calls into a `bridge serve` process, with Gladia dropping every session's socket every few
seconds; checks nothing was lost and samples the bridge's memory."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.bridge_process import BridgeProcess, start_bridge
from tests.support.calls import caller_audio, play_call
from tests.support.fakes import FakeGladia, FakeWebhook, expected_texts


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@dataclass
class SoakResult:
    calls: int = 0
    rss_after_wave_kib: list[int] = field(default_factory=list)
    lost_calls: list[str] = field(default_factory=list)


async def start_soak_bridge(env: dict[str, str], port: int) -> BridgeProcess:
    """``bridge serve`` for a soak, on ``port``: warnings only in its log, so logging costs no CPU."""
    return await start_bridge(env, "--log-level", "warning", port=port, log_format=None)


async def run_waves(
    port: int,
    pid: int,
    gladia: FakeGladia,
    hook: FakeWebhook,
    *,
    calls: int,
    call_seconds: float,
    waves: int,
    report: Callable[[dict[str, Any]], None] | None = None,
) -> SoakResult:
    """``waves`` rounds of ``calls`` concurrent real-time calls; after each, wait for every call.ended."""
    result = SoakResult()
    url = f"ws://127.0.0.1:{port}/twilio/stream"
    expected: dict[str, bytes] = {}
    for wave in range(waves):
        audios = {f"CA{wave:08d}{i:024d}": caller_audio(call_seconds, seed=wave * 1000 + i) for i in range(calls)}
        expected.update(audios)
        started = time.monotonic()
        await asyncio.gather(*(play_call(url, a, call_sid=sid, pace=0.02) for sid, a in audios.items()))
        result.calls += calls
        deadline = time.monotonic() + 60
        while len(hook.events("call.ended")) < result.calls and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        result.rss_after_wave_kib.append(rss_kib(pid))
        if report is not None:
            report(
                {
                    "wave": wave + 1,
                    "calls_done": result.calls,
                    "rss_mib": round(rss_kib(pid) / 1024, 1),
                    "wave_seconds": round(time.monotonic() - started, 1),
                    "gladia_reconnects": sum(s.connections - 1 for s in gladia.sessions.values()),
                }
            )
    by_call: dict[str, list[str]] = {}
    for e in hook.events("utterance.final"):
        by_call.setdefault(e["call"]["call_sid"], []).append(e["utterance"]["text"])
    audio_by_call = {s.body["custom_metadata"]["call_sid"]: bytes(s.audio) for s in gladia.sessions.values()}
    for sid, audio in expected.items():
        if audio_by_call.get(sid) != audio or by_call.get(sid) != expected_texts(audio, 8000):
            result.lost_calls.append(sid)
    return result
