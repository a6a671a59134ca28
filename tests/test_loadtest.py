"""`bridge loadtest`, the capacity-planning tool: a short run against a real `bridge serve` must carry
every frame and final and report the figures it promises."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import pytest

from tests.support.process import ROOT


async def loadtest(*args: str) -> dict[str, Any]:
    """``bridge loadtest ARGS`` as a process: its exit must be 0; returns its JSON line."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge",
        "loadtest",
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 110)
    assert proc.returncode == 0, err.decode()[-2000:]
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


@pytest.mark.timeout(120)
async def test_a_short_loadtest_carries_every_frame_and_final_and_reports_its_figures() -> None:
    result = await loadtest("--calls", "6", "--seconds", "6", "--generators", "2")
    assert result["under_test"] == "bridge"
    assert result["calls"] == 6 and result["workers"] == 1 and result["generators"] == 2
    assert result["frames_sent"] == 6 * 300
    assert result["frames_lost"] == 0 and result["failed_calls"] == 0
    assert result["finals_delivered"] == result["finals_expected"] == 6 * 3
    assert result["bridge_cpu_ms_per_call_second"] > 0
    assert result["bridge_rss_kb_per_call"] is not None
    forward = result["forward_latency_ms"]
    assert 0 <= forward["p50"] <= forward["p99"] <= forward["max"]
    assert 0 <= result["final_to_webhook_ms"]["p50"] <= result["final_to_webhook_ms"]["p99"]
    assert 0 < result["generator_cpu_share"] < 1 and result["generator_saturated"] is False


@pytest.mark.timeout(120)
async def test_the_reference_forwarder_runs_under_the_same_load() -> None:
    """`--reference` measures a bare forwarder under the identical load, so the bridge's figures can be read
    as ratios on a noisy machine; it must carry the same frames and finals to be a fair floor."""
    result = await loadtest("--calls", "6", "--seconds", "6", "--reference")
    assert result["under_test"] == "reference_forwarder"
    assert result["frames_sent"] == 6 * 300 and result["frames_lost"] == 0
    assert result["finals_delivered"] == result["finals_expected"] == 6 * 3
    assert result["bridge_cpu_ms_per_call_second"] > 0


@pytest.mark.timeout(120)
async def test_a_loadtest_with_replies_plays_them_back_without_underruns_and_stops_cleanly() -> None:
    """`--reply`: the bot answers every final with 2 s of audio; every caller plays it back like a phone
    (marks echoed), hears it without a gap inside a reply, and the bridge still stops on SIGTERM (a
    call ending while its reply task wakes up once hung the bridge's shutdown)."""
    result = await loadtest("--calls", "6", "--seconds", "8", "--reply")
    assert result["reply"] is True and result["frames_lost"] == 0 and result["failed_calls"] == 0
    assert result["finals_delivered"] == result["finals_expected"] == 6 * 4
    # each call hears the replies to its finals at 2 s and 4 s whole, and most of the one at 6 s
    assert result["reply_seconds_heard"] >= 6 * 4.5, result
    assert result["reply_underruns"] == 0 and result["reply_marks_echoed"] >= 6 * 2
