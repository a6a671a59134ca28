"""`bridge loadtest`, the capacity-planning tool: a short run against a real `bridge serve` must carry
every frame and final and report the figures it promises."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import json
import multiprocessing
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bridge.tools import loadtest as loadtest_module
from bridge.tools import procs
from bridge.tools.load_frames import FRAME, SEND_TIME, FirstChannel
from bridge.tools.load_redis import REDIS_MISSING
from bridge.tools.load_standin import (
    ADDONS_PROFILE,
    AddonPlan,
    StandinStats,
    addon_messages,
    addon_plan,
    addons_config,
    gladia_and_bot,
)
from tests.support.bridge_process import run_bridge
from tests.support.process import ROOT
from tests.support.redis_server import redis_binary


@dataclass
class Watched:
    """The cores every thread of a load test's processes was seen allowed on, polled while it ran: the
    bridge's processes (``bridge serve`` and all it starts) apart from the harness's."""

    tool: int = 0
    cmdlines: dict[int, str] = field(default_factory=dict)
    bridge: set[int] = field(default_factory=set)
    masks: dict[int, set[tuple[int, ...]]] = field(default_factory=dict)

    def poll(self) -> None:
        for pid in procs.process_tree(self.tool):
            known = self.cmdlines.get(pid)
            if not known or (pid != self.tool and known == self.cmdlines.get(self.tool)):  # none yet, or not exec'd
                with contextlib.suppress(OSError):
                    self.cmdlines[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            if pid not in self.cmdlines:
                continue
            if " bridge serve " in self.cmdlines[pid]:
                self.bridge.update(procs.process_tree(pid))  # its workers and their helpers too
            seen = {tuple(m) for m in procs.cpus_allowed(pid).values()}
            if seen:
                self.masks.setdefault(pid, set()).update(seen)

    def harness(self) -> dict[int, set[tuple[int, ...]]]:
        """The harness's processes but the tool itself (unpinned before and after the run), and no child
        caught between fork and exec (it still shows the tool's command line)."""
        tool = self.cmdlines[self.tool]
        return {
            p: m for p, m in self.masks.items() if p not in self.bridge and p != self.tool and self.cmdlines[p] != tool
        }


async def loadtest(*args: str, env: dict[str, str] | None = None, watch: Watched | None = None) -> dict[str, Any]:
    """``bridge loadtest ARGS`` as a process: its exit must be 0; returns its JSON line. Stopped with
    SIGTERM (which stops what it started) if the test ends first. ``watch``: polled while it runs."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge",
        "loadtest",
        *args,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    done = asyncio.ensure_future(asyncio.wait_for(proc.communicate(), 110))
    try:
        if watch is not None:
            watch.tool = proc.pid
            while not done.done():
                watch.poll()
                await asyncio.wait([done], timeout=0.1)
        out, err = await done
    finally:
        done.cancel()
        if proc.returncode is None:
            proc.terminate()
            await proc.wait()
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
    assert result["finals_redelivered"] == 0  # a bot answering at once is never posted to twice
    assert result["bridge_cpu_ms_per_call_second"] > 0
    assert result["bridge_rss_kb_per_call"] is not None
    forward = result["forward_latency_ms"]
    assert 0 <= forward["p50"] <= forward["p99"] <= forward["max"]
    assert 0 <= result["final_to_webhook_ms"]["p50"] <= result["final_to_webhook_ms"]["p99"]
    assert 0 < result["generator_cpu_share"] < 1 and result["generator_saturated"] is False
    # single mode: one bridge, no Redis, no balancer
    assert result["instances"] == 1 and result["fleet"] is False
    assert result["redis_ops_per_call_second"] is None and result["redis_cpu_ms_per_call_second"] is None
    assert result["balancer_cpu_ms_per_call_second"] is None and result["balancer_connections"] is None
    assert "addons" not in result and "addon_events" not in result  # only with --addons


@pytest.mark.timeout(120)
async def test_console_clients_follow_the_bridge_under_load() -> None:
    """``--console 2``: the bridge gets an API token and two console-like clients follow it: each gets
    every call's call.started and call.ended on GET /v1/events and reads GET /v1/calls, without an error."""
    result = await loadtest("--calls", "3", "--seconds", "4", "--console", "2")
    assert result["frames_lost"] == 0 and result["failed_calls"] == 0
    watched = result["console"]
    assert result["console_clients"] == 2 and watched["clients"] == 2 and watched["errors"] == 0
    assert watched["events"] == 2 * 3 * 2 and watched["streams"] == 2 and watched["requests"] >= 2 * 3


@pytest.mark.parametrize("args", [["--console", "-1"], ["--console", "2", "--reference"]])
def test_console_clients_need_a_bridge_started_here(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    from bridge.cli import main

    assert main(["loadtest", *args]) == 2
    assert "--console takes N >= 0 clients" in capsys.readouterr().err


@pytest.mark.timeout(120)
async def test_the_bridge_and_the_harness_run_on_cores_of_their_own_and_the_harness_load_is_reported() -> None:
    """By default, with more cores than bridge processes, the bridge (and every process and thread it
    starts: its workers, where the machine has a core for each) runs on cores the harness (stand-in,
    callers, the tool's own helpers) does not: as reported, and as /proc saw them during the run."""
    cores = os.sched_getaffinity(0)
    if len(cores) < 2:
        pytest.skip("one core: nothing to pin apart")
    workers = 2 if len(cores) >= 3 else 1
    watch = Watched()
    result = await loadtest(
        "--calls", "4", "--seconds", "3", "--generators", "1", "--workers", str(workers), watch=watch
    )
    assert result["frames_lost"] == 0 and result["failed_calls"] == 0
    pinning = result["pinning"]
    assert result["pinning_note"] is None and pinning is not None, result
    bridge, harness = set(pinning["bridge"]), set(pinning["harness"])
    assert bridge and harness and not bridge & harness and bridge | harness <= cores
    assert len(bridge) >= workers
    # the stand-in is far from busy with 4 calls; the harness's cores likewise
    assert 0 <= result["standin_cpu_share"] < 0.8 and result["standin_saturated"] is False
    assert 0 <= result["harness_cpu_share"] < 0.8 and result["limited_by"] is None
    # seen: bridge serve and its workers (with their threads) on the bridge's cores only
    assert len(watch.bridge) >= (1 if workers == 1 else 1 + workers), watch
    assert all(watch.masks[p] == {tuple(sorted(bridge))} for p in watch.bridge), watch
    # the stand-in, the caller process, multiprocessing's resource tracker: the harness's only
    assert len(watch.harness()) >= 3, watch
    assert all(m == {tuple(sorted(harness))} for m in watch.harness().values()), watch
    assert tuple(sorted(harness)) in watch.masks[watch.tool]


@pytest.mark.timeout(120)
async def test_no_pin_leaves_every_process_on_every_core_and_says_so() -> None:
    cores = tuple(sorted(os.sched_getaffinity(0)))
    watch = Watched()
    result = await loadtest("--calls", "4", "--seconds", "3", "--generators", "1", "--no-pin", watch=watch)
    assert result["frames_lost"] == 0 and result["failed_calls"] == 0
    assert result["pinning"] is None and result["pinning_note"] == "--no-pin"
    assert result["harness_cpu_share"] is None  # the harness has no cores of its own to fill
    assert 0 <= result["standin_cpu_share"] < 0.8 and result["standin_saturated"] is False
    assert result["limited_by"] is None
    assert watch.bridge and all(m == {cores} for m in watch.masks.values()), watch


@pytest.mark.parametrize(
    ("cores", "workers", "instances", "split"),
    [
        ([0, 1], 1, 1, ([0], [1])),  # 2 cores: the bridge on the first, the harness on the second
        ([0, 1, 2], 1, 1, ([0, 1], [2])),
        ([3, 2, 1, 0], 1, 1, ([0, 1], [2, 3])),
        ([0, 1, 2, 3], 3, 1, ([0, 1, 2], [3])),  # a core per worker comes first
        ([0, 1, 2, 3, 4, 5, 6, 7], 6, 1, ([0, 1, 2, 3, 4, 5], [6, 7])),
        ([0, 1, 2], 1, 2, ([0, 1], [2])),  # two instances of one process each
        ([2, 5, 7, 9], 1, 1, ([2, 5], [7, 9])),  # only the cores this process may use
        ([0], 1, 1, "one core: the bridge and the harness cannot be kept apart"),
        ([0, 1], 2, 1, ([0], [1])),  # two workers share the bridge's core: the harness keeps its own
        ([0, 1, 2, 3], 2, 2, ([0, 1, 2], [3])),  # four processes on three cores, the harness on the fourth
    ],
)
def test_split_cores_gives_the_bridge_a_core_per_process_and_the_harness_the_rest(
    cores: list[int], workers: int, instances: int, split: tuple[list[int], list[int]] | str
) -> None:
    assert procs.split_cores(cores, workers, instances) == split


def test_split_cores_never_gives_the_harness_a_bridge_core_nor_invents_one() -> None:
    for n in range(1, 17):
        cores = list(range(0, 2 * n, 2))  # not contiguous
        for workers in range(1, 9):
            for instances in range(1, 4):
                split = procs.split_cores(cores, workers, instances)
                if isinstance(split, str):
                    assert n == 1
                    continue
                bridge, harness = split
                assert not set(bridge) & set(harness) and sorted(bridge + harness) == cores
                assert len(bridge) >= min(workers * instances, n - 1) and len(harness) >= 1
                assert len(harness) <= max(1, n // 2)


def test_pinning_is_planned_only_where_it_can_be_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    assert procs.plan_pinning(False, 1, 1, False, None).figures() == {"pinning": None, "pinning_note": "--no-pin"}
    given = procs.plan_pinning(True, 1, 1, False, "http://127.0.0.1:1")
    assert given.figures() == {
        "pinning": None,
        "pinning_note": "--bridge-url: the bridge under test is not started here",
    }
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(os, "sched_setaffinity", lambda pid, cores: None, raising=False)
    assert procs.plan_pinning(True, 1, 1, False, None).figures() == {
        "pinning": {"bridge": [0], "harness": [1]},
        "pinning_note": None,
    }
    # the reference forwarder is one process, whatever --workers says
    assert procs.plan_pinning(True, 4, 1, True, None).figures()["pinning"] == {"bridge": [0], "harness": [1]}
    shared = procs.plan_pinning(True, 2, 1, False, None).figures()
    assert shared["pinning"] == {"bridge": [0], "harness": [1]}
    assert (
        shared["pinning_note"]
        == "the bridge's 2 processes share 1 core; the harness keeps 1 (--no-pin to let them spread)"
    )
    monkeypatch.delattr(os, "sched_setaffinity")
    assert procs.plan_pinning(True, 1, 1, False, None).figures() == {
        "pinning": None,
        "pinning_note": "os.sched_setaffinity is not available on this platform (Linux only)",
    }


def test_a_run_limited_by_its_harness_says_so_on_stderr_and_only_there(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`limited_by` set: the JSON line stays the only thing on stdout; one line on stderr names the parts
    that were the limit."""
    from bridge.cli import main

    figures = {
        "frames_lost": 0,
        "failed_calls": 0,
        "generator_cpu_share": 0.95,
        "standin_cpu_share": 0.9,
        "harness_cpu_share": None,
        "limited_by": ["generator", "standin"],
    }
    monkeypatch.setattr(loadtest_module, "run", lambda *args, **kwargs: figures)
    sigterm = signal.getsignal(signal.SIGTERM)
    try:
        assert main(["loadtest", "--calls", "1"]) == 0
    finally:
        signal.signal(signal.SIGTERM, sigterm)
    out, err = capsys.readouterr()
    assert [json.loads(line) for line in out.splitlines()] == [figures]
    assert err.count("\n") == 1 and err.startswith("bridge loadtest: limited by the callers (generator_cpu_share 0.95")
    assert "the Gladia stand-in (standin_cpu_share 0.9" in err and "not the bridge" in err
    figures["limited_by"] = None
    try:
        assert main(["loadtest", "--calls", "1"]) == 0
    finally:
        signal.signal(signal.SIGTERM, sigterm)
    assert capsys.readouterr().err == ""


@pytest.mark.timeout(120)
async def test_the_reference_forwarder_runs_under_the_same_load() -> None:
    """`--reference` measures a bare forwarder under the identical load, so the bridge's figures can be read
    as ratios on a noisy machine; it must carry the same frames and finals to be a fair floor."""
    result = await loadtest("--calls", "6", "--seconds", "6", "--reference")
    assert result["under_test"] == "reference_forwarder"
    if len(os.sched_getaffinity(0)) >= 2:  # one process: pinned apart whatever --workers says
        assert result["pinning"] is not None and not set(result["pinning"]["bridge"]) & set(
            result["pinning"]["harness"]
        )
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


@pytest.mark.timeout(120)
async def test_a_two_track_loadtest_carries_every_caller_frame_and_gets_finals_twice_as_often() -> None:
    """`--tracks both`: two-party calls, interleaved by the bridge into two-channel sessions; a frame is still
    one frame of the caller's track (measured on channel 0), and a final comes each 1 s of a call."""
    result = await loadtest("--calls", "4", "--seconds", "4", "--generators", "1", "--tracks", "both")
    assert result["tracks"] == "both" and result["under_test"] == "bridge"
    assert result["frames_sent"] == 4 * 200 and result["media_messages_sent"] == 2 * 4 * 200
    assert result["frames_lost"] == 0 and result["failed_calls"] == 0
    assert result["final_every_s"] == 1.0
    assert result["finals_delivered"] == result["finals_expected"] == 4 * 4
    assert result["bridge_cpu_ms_per_call_second"] > 0


async def test_the_reference_forwarder_refuses_two_tracks() -> None:
    """The reference forwarder forwards one track: `--reference --tracks both` exits 2 with one line."""
    proc = await run_bridge("loadtest", "--reference", "--tracks", "both", env=None, timeout=20)
    out, err = proc.out, proc.err
    assert proc.returncode == 2 and out == b""
    assert err.decode().strip() == "bridge loadtest: --tracks both: --reference forwards one track"


def _processes_mentioning(text: str) -> list[str]:
    """The command lines of the processes whose command line or environment holds ``text``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
            environ = (proc / "environ").read_bytes()
        except OSError:
            continue
        if text.encode() in cmdline or text.encode() in environ:
            found.append(cmdline.replace(b"\0", b" ").decode(errors="replace"))
    return found


@pytest.mark.timeout(120)
async def test_a_fleet_loadtest_runs_two_bridges_on_its_own_redis_behind_a_balancer(tmp_path: Path) -> None:
    """`--instances 2`: two bridges on a redis-server of the tool's own, dialled through its round-robin
    balancer, carry every frame and final; the Redis commands are counted; and once it exits nothing it
    started is left running or on disk (every process it starts inherits TMPDIR, where its dirs go)."""
    redis_binary()
    env = dict(os.environ, TMPDIR=str(tmp_path))
    result = await loadtest("--calls", "6", "--seconds", "4", "--generators", "1", "--instances", "2", env=env)
    assert result["instances"] == 2 and result["fleet"] is True and result["under_test"] == "bridge"
    assert result["frames_sent"] == 6 * 200
    assert result["frames_lost"] == 0 and result["failed_calls"] == 0
    assert result["finals_delivered"] == result["finals_expected"] == 6 * 2
    assert result["redis_server"] == "started" and result["redis_appendfsync"] == "everysec"
    assert result["redis_ops_per_call_second"] > 0 and result["redis_ops_per_call"] > 0
    assert result["redis_commands_per_call_second"]["evalsha"] > 0
    assert result["bridge_cpu_ms_per_call_second"] > 0
    assert result["redis_cpu_ms_per_call_second"] >= 0 and result["balancer_cpu_ms_per_call_second"] >= 0
    # 6 calls and the health check, in turn: both instances carried calls
    assert len(result["balancer_connections"]) == 2 and min(result["balancer_connections"]) >= 3
    assert _processes_mentioning(str(tmp_path)) == []
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["--instances", "0"], "--instances must be at least 1"),
        (["--fleet", "--reference"], "fleet mode (--instances, --fleet) starts its own bridges: not with --reference"),
        (
            ["--instances", "2", "--bridge-url", "http://127.0.0.1:1"],
            "fleet mode (--instances, --fleet) starts its own bridges: not with --bridge-url",
        ),
        (["--redis-url", "redis://127.0.0.1:1/0"], "--redis-url is for fleet mode: add --fleet or --instances N"),
    ],
)
def test_fleet_mode_refuses_what_does_not_go_with_it(
    args: list[str], line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Arguments that do not go together exit 2 with one line, before anything is started."""
    from bridge.cli import main

    assert main(["loadtest", *args]) == 2
    assert capsys.readouterr().err.strip() == f"bridge loadtest: {line}"


async def test_fleet_mode_without_redis_server_exits_2_saying_how_to_install_it(tmp_path: Path) -> None:
    """No redis-server on PATH and no --redis-url: exit 2 with one line saying how to install it, before
    anything is started."""
    proc = await run_bridge("loadtest", "--instances", "2", env=dict(os.environ, PATH=str(tmp_path)), timeout=20)
    out, err = proc.out, proc.err
    assert proc.returncode == 2 and out == b""
    assert err.decode().strip() == f"bridge loadtest: {REDIS_MISSING}"
    assert "apt-get install redis-server" in REDIS_MISSING


@pytest.mark.parametrize("chunk", [1, 3, 7, 160, 161, 320, 333, 1000])
def test_the_load_gladia_reads_channel_0_send_times_from_any_chunking(chunk: int) -> None:
    """Channel 0 of an interleaved two-channel stream, cut into chunks of any size (odd offsets, timestamps
    split between chunks): one send time per caller frame, in order, none from channel 1."""
    inbound = [SEND_TIME.pack(float(i)) + b"\xff" * (FRAME - SEND_TIME.size) for i in range(10)]
    outbound = [SEND_TIME.pack(100.0 + i) + b"\xff" * (FRAME - SEND_TIME.size) for i in range(10)]
    stream = bytearray()
    for a, b in zip(inbound, outbound, strict=True):
        pair = bytearray(2 * FRAME)
        pair[0::2], pair[1::2] = a, b
        stream += pair
    reader = FirstChannel(2)
    stamps = [t for i in range(0, len(stream), chunk) for t in reader.feed(bytes(stream[i : i + chunk]))]
    assert stamps == [float(i) for i in range(10)]
    mono = FirstChannel(1)
    whole = b"".join(inbound)
    assert [t for i in range(0, len(whole), chunk) for t in mono.feed(whole[i : i + chunk])] == stamps


def test_the_load_bot_counts_a_retried_final_once_from_its_first_arrival() -> None:
    """Past ``webhook.timeout`` the bridge posts a final again under the same ``webhook-id`` (the bot
    dedupes): the load bot counts it as one final delivered, timed at its first arrival, and one retry."""
    stats = StandinStats()
    stats.final_arrived("msg_a", 0.004)
    stats.final_arrived("msg_b", 0.003)
    stats.final_arrived("msg_a", 5.2)  # the retry after a 5 s timeout
    assert (stats.webhook_finals, stats.webhook_redelivered, stats.webhook) == (2, 1, [0.004, 0.003])


def _unknown_fields(obj: Any, path: str = "message") -> list[str]:
    """Where a message the SDK read holds keys its types do not know (``_unknown_fields``), recursively."""
    found: list[str] = []
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        if obj._unknown_fields:  # type: ignore[attr-defined]
            found.append(f"{path}: {sorted(obj._unknown_fields)}")  # type: ignore[attr-defined]
        for f in dataclasses.fields(obj):
            if f.name != "_unknown_fields":
                found += _unknown_fields(getattr(obj, f.name), f"{path}.{f.name}")
    elif isinstance(obj, list):
        for i, item in enumerate(obj):
            found += _unknown_fields(item, f"{path}[{i}]")
    return found


def test_the_load_gladias_addon_messages_are_what_the_official_sdk_reads() -> None:
    """After a final, the load Gladia sends what a session body with translation to two languages and
    sentiment analysis asks for: each message read by the official SDK as its type (no key it does not
    know, none missing, no null where it wants a value: warnings are errors), linked to the final."""
    from gladiaio_sdk.v2.live.generated_types import (
        LiveV2SentimentAnalysisMessage,
        LiveV2TranslationMessage,
        create_live_v2_web_socket_message_from_dict,
    )

    body = {
        "realtime_processing": {
            "translation": True,
            "translation_config": {"target_languages": ["fr", "es"]},
            "sentiment_analysis": True,
        }
    }
    plan = addon_plan(body)
    assert plan == AddonPlan(("fr", "es"), True)
    utterance = {
        "start": 2.0,
        "end": 4.0,
        "confidence": 1.0,
        "channel": 1,
        "text": "t=12.5",
        "language": "en",
        "words": [],
    }
    messages = addon_messages("sid-1", "00_00000002", utterance, plan)
    assert [m["type"] for m in messages] == ["translation", "translation", "sentiment_analysis"]
    read = [create_live_v2_web_socket_message_from_dict(copy.deepcopy(m)) for m in messages]
    for message, parsed in zip(messages, read, strict=True):
        assert _unknown_fields(parsed) == []
        assert parsed.to_dict() | {"error": None} == message  # what the SDK would send back, nothing lost
        assert message["error"] is None and message["session_id"] == "sid-1"
    fr, es, sentiment = read
    assert isinstance(fr, LiveV2TranslationMessage) and isinstance(es, LiveV2TranslationMessage)
    assert isinstance(sentiment, LiveV2SentimentAnalysisMessage)
    assert fr.data is not None and es.data is not None and sentiment.data is not None
    assert [fr.data.target_language, es.data.target_language] == ["fr", "es"]
    for translation in (fr.data, es.data):
        assert translation.utterance_id == "00_00000002" and translation.original_language == "en"
        assert translation.translated_utterance.language == translation.target_language
        assert (translation.translated_utterance.start, translation.translated_utterance.end) == (2.0, 4.0)
        assert translation.translated_utterance.channel == 1
    assert sentiment.data.utterance_id == "00_00000002" and len(sentiment.data.results) == 1
    result = sentiment.data.results[0]
    assert (result.start, result.end, result.channel, result.text) == (2.0, 4.0, 1, "t=12.5")
    # the oracle has teeth: a translation without its translated utterance is refused
    broken = copy.deepcopy(messages[0])
    del broken["data"]["translated_utterance"]
    with pytest.raises(KeyError):
        create_live_v2_web_socket_message_from_dict(broken)


@pytest.mark.parametrize(
    ("body", "plan"),
    [
        ({}, AddonPlan()),
        ({"realtime_processing": {"sentiment_analysis": True}}, AddonPlan((), True)),
        # the switch off: no translation, whatever the languages say
        ({"realtime_processing": {"translation_config": {"target_languages": ["fr"]}}}, AddonPlan()),
        (
            {
                "realtime_processing": {"translation": True, "translation_config": {"target_languages": ["de"]}},
                "messages_config": {"receive_realtime_processing_events": False},
            },
            AddonPlan(),
        ),
    ],
)
def test_the_load_gladia_sends_only_the_addons_a_session_asks_for(body: dict[str, Any], plan: AddonPlan) -> None:
    assert addon_plan(body) == plan
    utterance = {"start": 0.0, "end": 2.0, "confidence": 1.0, "channel": 0, "text": "t=1", "language": "en"}
    assert len(addon_messages("s", "00_00000001", utterance | {"words": []}, plan)) == len(plan.translations) + int(
        plan.sentiment
    )


def test_the_addons_profile_is_added_to_a_given_config_unless_it_sets_its_own() -> None:
    """``--addons`` with ``--config``: the file's settings stay and the profile is added; a file with its
    own ``[stt.default.realtime_processing]`` is used as it is; one that cannot take it is refused."""
    import tomllib

    assert tomllib.loads(addons_config(None)) == {
        "stt": {
            "default": {
                "realtime_processing": {
                    "translation": True,
                    "sentiment_analysis": True,
                    "translation_config": {"target_languages": ["fr", "es"]},
                }
            }
        }
    }
    given = "[gladia]\nchunk_ms = 40\n\n[stt.default]\nendpointing = 0.2\n"
    merged = tomllib.loads(addons_config(given))
    assert merged["gladia"] == {"chunk_ms": 40}
    assert merged["stt"]["default"]["endpointing"] == 0.2
    assert (
        merged["stt"]["default"]["realtime_processing"]
        == tomllib.loads(ADDONS_PROFILE)["stt"]["default"]["realtime_processing"]
    )
    own = "[stt.default.realtime_processing]\nsentiment_analysis = true\n"
    assert addons_config(own) == own
    with pytest.raises(ValueError, match="cannot add"):
        addons_config("stt = { numbers = {} }\n")
    with pytest.raises(ValueError):
        addons_config("not toml [")


def test_addons_refuse_the_reference_forwarder_and_a_config_that_cannot_take_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--addons` with `--reference` (which reads finals only), or with a `--config` file it cannot add the
    profile to: exit 2 with one line, before anything is started."""
    from bridge.cli import main

    assert main(["loadtest", "--addons", "--reference"]) == 2
    assert capsys.readouterr().err.strip() == "bridge loadtest: --addons: the reference forwarder reads finals only"
    inline = tmp_path / "inline.toml"
    inline.write_text("stt = { numbers = {} }\n")
    assert main(["loadtest", "--addons", "--config", str(inline)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"bridge loadtest: --addons: --config {inline}: cannot add [stt.default.realtime_processing]")
    missing = tmp_path / "missing.toml"
    assert main(["loadtest", "--addons", "--config", str(missing)]) == 2
    assert capsys.readouterr().err.strip() == f"bridge loadtest: --config {missing}: No such file or directory"


@pytest.mark.timeout(120)
async def test_a_loadtest_with_addons_gets_translations_and_sentiment_after_every_final() -> None:
    """`--addons`: the bridge's sessions ask for translation to two languages and sentiment (the load Gladia
    answers what each body asks for, so its count proves the profile reached Gladia), every frame and final
    still arrive, and the bot's add-on events are counted."""
    result = await loadtest("--calls", "3", "--seconds", "4", "--generators", "1", "--addons")
    assert result["addons"] is True and result["under_test"] == "bridge"
    assert result["frames_lost"] == 0 and result["failed_calls"] == 0
    assert result["finals_delivered"] == result["finals_expected"] == 3 * 2
    assert result["addon_messages_sent"] == 3 * result["finals_expected"]  # fr, es and a sentiment per final
    # the bridge delivers every add-on message to the bot, once
    assert result["addon_events"] == result["addon_messages_sent"], result
    assert result["addon_events_failed"] == 0
    assert result["bridge_cpu_ms_per_call_second"] > 0


@pytest.mark.timeout(60)
async def test_the_load_gladia_answers_each_sessions_addons_after_its_final_and_the_bot_counts_their_events() -> None:
    """The load Gladia of `--addons`, on its own: a session whose body asks for translation to two
    languages and sentiment gets, right after its final, the three add-on messages (read by the official
    SDK, linked to the final); a session asking for none gets none. The bot counts each add-on event
    once, however often it is posted (the same `webhook-id`), and `stt.addon_failed` apart."""
    from gladiaio_sdk.v2.live.generated_types import (
        LiveV2SentimentAnalysisMessage,
        LiveV2TranslationMessage,
        create_live_v2_web_socket_message_from_dict,
    )

    ctx = multiprocessing.get_context("spawn")
    port_q, results, stop = ctx.Queue(), ctx.Queue(), ctx.Event()
    proc = ctx.Process(target=gladia_and_bot, args=(port_q, stop, results, False, True), daemon=True)
    proc.start()
    try:
        port = await asyncio.to_thread(port_q.get, timeout=30)
        base = f"http://127.0.0.1:{port}"
        asks = {
            "channels": 1,
            "realtime_processing": {
                "translation": True,
                "translation_config": {"target_languages": ["fr", "es"]},
                "sentiment_analysis": True,
            },
        }
        stream = b"".join(SEND_TIME.pack(time.monotonic()) + b"\xff" * (FRAME - SEND_TIME.size) for _ in range(100))
        seen: list[list[dict[str, Any]]] = []
        async with aiohttp.ClientSession() as http:
            for body in (asks, {"channels": 1}):
                async with http.post(base + "/v2/live", json=body) as resp:
                    assert resp.status == 201
                    url = (await resp.json())["url"]
                async with http.ws_connect(url) as ws:
                    await ws.send_bytes(stream)  # 2 s of one track: one final
                    await ws.send_str(json.dumps({"type": "stop_recording"}))
                    seen.append([json.loads(m.data) async for m in ws if m.type is aiohttp.WSMsgType.TEXT])
            for kind, key in [
                ("utterance.translation", "msg_1"),
                ("utterance.translation", "msg_1"),  # a retry
                ("utterance.translation", "msg_2"),
                ("utterance.sentiment", "msg_3"),
                ("utterance.entities", "msg_4"),
                ("stt.addon_failed", "msg_5"),
                ("call.started", "msg_6"),
            ]:
                async with http.post(base + "/hook", json={"type": kind}, headers={"webhook-id": key}) as resp:
                    assert resp.status == 204
        stop.set()
        figures = await asyncio.to_thread(results.get, timeout=30)
    finally:
        stop.set()
        await asyncio.to_thread(proc.join, 10)
        if proc.is_alive():
            proc.kill()
    with_addons, without = seen
    kinds = ["audio_chunk", "transcript", "translation", "translation", "sentiment_analysis", "end_session"]
    assert [m["type"] for m in with_addons] == kinds
    assert [m["type"] for m in without] == ["audio_chunk", "transcript", "end_session"]
    final = with_addons[1]["data"]
    for message in with_addons[2:5]:
        parsed = create_live_v2_web_socket_message_from_dict(message)
        assert isinstance(parsed, (LiveV2TranslationMessage, LiveV2SentimentAnalysisMessage))
        assert _unknown_fields(parsed) == [] and parsed.data is not None
        assert parsed.data.utterance_id == final["id"] and parsed.data.utterance.to_dict() == final["utterance"]
    assert [m["data"]["target_language"] for m in with_addons[2:4]] == ["fr", "es"]
    assert figures["finals_sent"] == 2 and figures["addon_messages_sent"] == 3
    assert (figures["addon_events"], figures["addon_events_failed"]) == (4, 1)
