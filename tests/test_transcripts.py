"""Transcripts on record: the renderers (pure), the SQLite store (real files, real processes, a real
lock), and the API over HTTP on loopback against a bridge whose store is filled through its public
methods."""

from __future__ import annotations

import asyncio
import html
import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import webvtt
from aiohttp.test_utils import TestServer

from bridge.call.registry import CALLS
from bridge.clock import Clock
from bridge.errors import ConfigError
from bridge.http.transcripts import TRANSCRIPTS
from bridge.settings import Settings
from bridge.transcript_render import iso, parse_since, render_json, render_txt, render_vtt, turns
from bridge.transcripts import FILENAME, TranscriptStore
from tests.support.calls import BridgeFactory, wait_for
from tests.support.fakes import VirtualClock
from tests.support.phone import phone_call

pytestmark = pytest.mark.timeout(60)

TOKEN = "test-api-token-0123456789"
DAY = 86400.0


def words(text: str, start: float, end: float) -> list[dict[str, Any]]:
    parts = text.split()
    step = (end - start) / len(parts)
    return [
        {"word": w, "start": round(start + i * step, 3), "end": round(start + (i + 1) * step, 3), "confidence": 0.9}
        for i, w in enumerate(parts)
    ]


def utt(uid: str, channel: int, start: float, end: float, text: str, speaker: str | None = None) -> dict[str, Any]:
    return {
        "id": uid,
        "channel": channel,
        "speaker": speaker if speaker is not None else ("caller", "agent")[channel],
        "start": start,
        "end": end,
        "text": text,
        "language": "en",
        "confidence": 0.9,
        "words": words(text, start, end) if text.strip() else [],
    }


# A two-speaker conversation, given out of start order (two channels finish independently).
UTTERANCES = [
    utt("u1", 0, 1.25, 3.5, "Hello, I'd like to check my balance."),
    utt("u3", 1, 4.0, 6.2, "Sure. Which account?"),
    utt("u2", 0, 3.6, 3.95, "Please."),
    utt("u4", 0, 6.5, 8.0, "Savings & <checking> -> both."),
    utt("u5", 1, 8.1, 8.1, "Done."),  # no duration
    utt("u6", 1, 9.0, 9.5, "   "),  # nothing said
    utt("u7", 0, 3725.0, 3726.5, "Still here, after an hour."),
]
IN_ORDER = sorted(UTTERANCES, key=lambda u: float(u["start"]))
CALL = {
    "id": "call-1",
    "provider": "twilio",
    "call_sid": "CA" + "1" * 32,
    "stream_sid": "MZ" + "1" * 32,
    "from": "+15550001",
    "to": "+15550002",
    "parameters": {"lang": "en", "note": "é"},
}
STARTED = 1_780_000_000.0  # 2026-05-28T20:26:40Z


def transcript(utterances: list[dict[str, Any]] | None = None, started: float = STARTED) -> dict[str, Any]:
    return {
        **{k: v for k, v in CALL.items()},
        "started_at": iso(started),
        "ended_at": iso(started + 3730),
        "end_reason": "stop",
        "active": False,
        "utterances": UTTERANCES if utterances is None else utterances,
    }


# -- the renderers (pure) ------------------------------------------------------------------------


def test_txt_has_one_line_per_turn_in_start_order() -> None:
    """Consecutive utterances of a speaker are one turn; times are from the call's start, in tenths."""
    assert render_txt(transcript()) == (
        "[00:00:01.2] caller: Hello, I'd like to check my balance. Please.\n"
        "[00:00:04.0] agent: Sure. Which account?\n"
        "[00:00:06.5] caller: Savings & <checking> -> both.\n"
        "[00:00:08.1] agent: Done.\n"
        "[01:02:05.0] caller: Still here, after an hour.\n"
    )


def test_vtt_is_exactly_the_expected_captions() -> None:
    """Header, numbered cues in start order, HH:MM:SS.mmm timings, voice spans, escaped text; a cue
    without duration lasts one millisecond; an utterance without words has no cue."""
    assert render_vtt(transcript()) == (
        "WEBVTT\n\n"
        "1\n00:00:01.250 --> 00:00:03.500\n<v caller>Hello, I'd like to check my balance.\n\n"
        "2\n00:00:03.600 --> 00:00:03.950\n<v caller>Please.\n\n"
        "3\n00:00:04.000 --> 00:00:06.200\n<v agent>Sure. Which account?\n\n"
        "4\n00:00:06.500 --> 00:00:08.000\n<v caller>Savings &amp; &lt;checking&gt; -&gt; both.\n\n"
        "5\n00:00:08.100 --> 00:00:08.101\n<v agent>Done.\n\n"
        "6\n01:02:05.000 --> 01:02:06.500\n<v caller>Still here, after an hour.\n"
    )


def test_vtt_parses_with_a_webvtt_parser() -> None:
    """webvtt-py (strict) reads every cue back: times, voices and text as recorded, end after start,
    cues in start order."""
    captions = webvtt.from_string(render_vtt(transcript()), strict=True).captions
    spoken = sorted((u for u in UTTERANCES if u["text"].strip()), key=lambda u: u["start"])
    assert len(captions) == len(spoken)
    for caption, u in zip(captions, spoken, strict=True):
        assert caption.voice == u["speaker"]
        assert html.unescape(caption.text) == u["text"]
        start = caption.start_time.in_milliseconds() / 1000
        end = caption.end_time.in_milliseconds() / 1000
        assert start == pytest.approx(u["start"], abs=0.001) and end > start
        assert end == pytest.approx(max(u["end"], u["start"] + 0.001), abs=0.001)
    starts = [c.start_time.in_milliseconds() for c in captions]
    assert starts == sorted(starts)


def test_vtt_of_an_empty_transcript_and_of_odd_labels_is_valid() -> None:
    """No utterance: just the header. A speaker label with markup characters is escaped; no label:
    the channel; bad times are clamped to zero."""
    assert render_vtt(transcript([])) == "WEBVTT\n"
    assert webvtt.from_string(render_vtt(transcript([])), strict=True).captions == []
    odd = [
        {**utt("a", 0, -3.0, float("nan"), "first"), "speaker": "Dr <A> & Co"},
        {**utt("b", 1, 2.0, 2.5, "second line\nwith a break"), "speaker": None},
    ]
    text = render_vtt(transcript(odd))
    captions = webvtt.from_string(text, strict=True).captions
    assert [html.unescape(c.voice or "") for c in captions] == ["Dr <A> & Co", "channel 1"]
    assert captions[0].start == "00:00:00.000" and captions[0].end == "00:00:00.001"
    assert captions[1].text == "second line with a break"


def test_json_keeps_everything_and_writes_utf8() -> None:
    """The JSON rendering is the transcript itself, words and all, with non-ASCII kept as such."""
    body = render_json(transcript())
    assert json.loads(body) == transcript() and "é" in body


def test_turns_merge_only_consecutive_utterances_of_one_speaker() -> None:
    merged = turns(UTTERANCES)
    assert [(t.speaker, t.start, t.end) for t in merged] == [
        ("caller", 1.25, 3.95),
        ("agent", 4.0, 6.2),
        ("caller", 6.5, 8.0),
        ("agent", 8.1, 8.1),
        ("caller", 3725.0, 3726.5),
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1780000000", 1_780_000_000.0),
        ("1780000000.5", 1_780_000_000.5),
        ("2026-05-28T20:26:40Z", 1_780_000_000.0),
        ("2026-05-28T22:26:40+02:00", 1_780_000_000.0),
        ("2026-05-28T20:26:40", 1_780_000_000.0),  # no zone: UTC
        ("2026-05-28T20:26:40.250Z", 1_780_000_000.25),
        ("2026-05-28", 1_779_926_400.0),
    ],
)
def test_since_accepts_iso_8601_and_unix_seconds(text: str, expected: float) -> None:
    assert parse_since(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["", "yesterday", "-5", "nan", "inf", "2026-13-01T00:00:00Z", "1" * 100])
def test_since_refuses_anything_else(text: str) -> None:
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_since(text)


def test_the_transcript_module_imports_no_event_loop_or_logger() -> None:
    """bridge.transcripts (renderers and store) stays free of asyncio, aiohttp and structlog: the shell
    (bridge.http.transcripts) does the awaiting and the logging."""
    code = (
        "import sys, bridge.transcripts; "
        "bad = [m for m in ('asyncio', 'aiohttp', 'structlog') if m in sys.modules]; print(bad); sys.exit(bool(bad))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout


# -- the settings --------------------------------------------------------------------------------


def test_transcript_settings_come_from_the_environment() -> None:
    defaults = Settings.load(environ={}).transcripts
    assert defaults.enabled and defaults.retention_days == 30.0 and defaults.purge_interval == 3600.0
    s = Settings.load(environ={"BRIDGE_TRANSCRIPTS": "false", "BRIDGE_TRANSCRIPT_RETENTION_DAYS": "7.5"})
    assert not s.transcripts.enabled and s.transcripts.retention_days == 7.5
    with pytest.raises(ConfigError) as err:
        Settings.load(environ={"BRIDGE_TRANSCRIPT_RETENTION_DAYS": "0"})
    assert "transcripts.retention_days" in str(err.value) and "BRIDGE_TRANSCRIPT_RETENTION_DAYS" in str(err.value)


# -- the store -----------------------------------------------------------------------------------


def fill(store: TranscriptStore, call_id: str, started: float, ended: float | None, n: int = 2) -> None:
    store.call_started({**CALL, "id": call_id}, started)
    for i in range(n):
        store.utterance(call_id, utt(f"{call_id}-u{i}", i % 2, float(i), i + 0.5, f"words {i}"))
    if ended is not None:
        store.call_ended(call_id, ended, "stop")


def test_the_store_records_a_call_and_serves_it_back(tmp_path: Path) -> None:
    """What a call writes comes back as its transcript: metadata, times, utterances in start order
    (a repeated utterance id replaces the first), active until the end is recorded."""
    store = TranscriptStore.in_dir(tmp_path)
    try:
        store.call_started(CALL, STARTED)
        for u in UTTERANCES:
            store.utterance("call-1", u)
        store.utterance("call-1", {**UTTERANCES[0], "text": "Hello, I would like to check my balance."})
        assert store.flush(5)
        running = store.get("call-1")
        assert running is not None and running["active"] and running["ended_at"] is None
        store.call_ended("call-1", STARTED + 3730, "stop")
        assert store.flush(5)
        got = store.get("call-1")
        assert store.get("nope") is None
    finally:
        store.close()
    assert (tmp_path / FILENAME).exists()
    assert got is not None
    assert {k: got[k] for k in ("id", "provider", "call_sid", "stream_sid", "from", "to", "parameters")} == CALL
    assert got["started_at"] == "2026-05-28T20:26:40.000Z" and got["ended_at"] == "2026-05-28T21:28:50.000Z"
    assert got["end_reason"] == "stop" and got["active"] is False
    assert [u["id"] for u in got["utterances"]] == ["u1", "u2", "u3", "u4", "u5", "u6", "u7"]
    assert got["utterances"][0]["text"] == "Hello, I would like to check my balance."
    assert got["utterances"][2] == UTTERANCES[1]  # words, speaker, channel: as given
    assert store.dropped == 0 and store.write_failures == 0


def test_an_utterance_or_end_without_a_start_still_lands(tmp_path: Path) -> None:
    """A call whose start was lost (a dropped write, another process) still has its utterances."""
    store = TranscriptStore(tmp_path / FILENAME, clock=lambda: STARTED)
    try:
        store.utterance("orphan", utt("x", 0, 1.0, 2.0, "hello"))
        store.call_ended("late", STARTED + 5, "socket_closed")
        assert store.flush(5)
        orphan, late = store.get("orphan"), store.get("late")
    finally:
        store.close()
    assert orphan is not None and orphan["started_at"] == iso(STARTED) and len(orphan["utterances"]) == 1
    assert late is not None and late["end_reason"] == "socket_closed" and late["utterances"] == []


def test_a_lone_surrogate_in_a_call_field_does_not_stop_the_writer(tmp_path: Path) -> None:
    """A carrier's parameters may carry a JSON escape like \\ud800 (a lone surrogate, which SQLite refuses):
    it is stored as "?", and the writes after it still land (it used to end the writer thread)."""
    store = TranscriptStore(tmp_path / FILENAME, clock=lambda: STARTED)
    try:
        call = {"id": "c1", "provider": "twilio", "from": "+1555\ud800", "parameters": {"k": "v\udc00"}}
        store.call_started(call, STARTED)
        store.utterance("c1", utt("x", 0, 1.0, 2.0, "hello"))
        store.call_ended("c1", STARTED + 5, "stop")
        assert store.flush(5) and store.degraded is None
        record = store.get("c1")
    finally:
        store.close()
    assert record is not None and record["from"] == "+1555?" and record["parameters"] == {"k": "v?"}
    assert len(record["utterances"]) == 1 and record["end_reason"] == "stop"


def test_list_since_is_newest_first_and_bounded(tmp_path: Path) -> None:
    """Calls that started (or ended) at or after `since`, newest start first, at most `limit`."""
    store = TranscriptStore.in_dir(tmp_path)
    try:
        fill(store, "old", STARTED - 100, STARTED - 90)
        fill(store, "spanning", STARTED - 50, STARTED + 10, n=3)
        fill(store, "new", STARTED + 20, None, n=1)
        fill(store, "newest", STARTED + 30, STARTED + 40, n=0)
        assert store.flush(5)
        listed = store.list_since(STARTED, 10)
        limited = store.list_since(STARTED, 2)
    finally:
        store.close()
    assert [c["id"] for c in listed] == ["newest", "new", "spanning"]
    assert [c["utterances"] for c in listed] == [0, 1, 3]
    assert listed[1]["active"] is True and listed[1]["ended_at"] is None
    assert [c["id"] for c in limited] == ["newest", "new"]
    assert set(listed[0]) >= {"id", "provider", "call_sid", "from", "to", "started_at", "ended_at", "end_reason"}


def test_purge_deletes_calls_past_retention_with_their_utterances(tmp_path: Path) -> None:
    """A call that ended before the cutoff goes, with its utterances; so does one that started before
    it and never ended; a call that ended after the cutoff stays, even if it started before."""
    store = TranscriptStore.in_dir(tmp_path)
    try:
        fill(store, "ended-long-ago", STARTED - 40 * DAY, STARTED - 40 * DAY + 60)
        fill(store, "never-ended", STARTED - 31 * DAY, None)
        fill(store, "long-call", STARTED - 30 * DAY - 60, STARTED - 29 * DAY)
        fill(store, "recent", STARTED - DAY, STARTED - DAY + 60)
        assert store.flush(5)
        gone = store.purge(STARTED - 30 * DAY)
        left = [c["id"] for c in store.list_since(0, 100)]
        again = store.purge(STARTED - 30 * DAY)
    finally:
        store.close()
    assert gone == 2 and again == 0
    assert left == ["recent", "long-call"]
    with sqlite3.connect(tmp_path / FILENAME) as db:
        owners = {row[0] for row in db.execute("SELECT DISTINCT call_id FROM utterances")}
    assert owners == {"recent", "long-call"}


WRITER = """
import sys, time
from pathlib import Path
from bridge.transcripts import TranscriptStore

path, worker, calls, per_call = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
store = TranscriptStore(path, busy_timeout=10.0)
for c in range(calls):
    call_id = f"w{worker}-c{c}"
    store.call_started({"id": call_id, "provider": "twilio", "call_sid": call_id}, time.time())
    for u in range(per_call):
        store.utterance(call_id, {"id": str(u), "channel": u % 2, "start": float(u), "end": u + 0.5, "text": "hi"})
        if u % 3 == 0:
            assert store.flush(20)  # many small transactions: the processes take turns on the lock
    store.call_ended(call_id, time.time(), "stop")
assert store.flush(20)
store.close()
print(store.dropped, store.write_failures, store.committed)
"""


def test_several_processes_write_one_file(tmp_path: Path) -> None:
    """Four processes (as under --workers 4) write to one file at once while this one reads: WAL and
    the busy timeout make every write land, none dropped, and every reader sees whole calls."""
    path = tmp_path / FILENAME
    TranscriptStore(path).close()  # the schema exists before the race (as after a first start)
    calls, per_call = 30, 7
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), str(w), str(calls), str(per_call)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(4)
    ]
    reader = TranscriptStore(path)
    try:
        deadline = time.monotonic() + 40
        while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
            reader.list_since(0, 1000)  # reads while the others write
            time.sleep(0.01)
        outputs = [p.communicate(timeout=max(1.0, deadline - time.monotonic())) for p in procs]
        listed = reader.list_since(0, 1000)
        sample = reader.get("w3-c29")
    finally:
        reader.close()
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err
        dropped, _failures, committed = (int(x) for x in out.split())
        assert dropped == 0 and committed == calls * (per_call + 2)
    assert len(listed) == 4 * calls
    assert all(c["utterances"] == per_call and c["end_reason"] == "stop" for c in listed)
    assert sample is not None and [u["id"] for u in sample["utterances"]] == [str(u) for u in range(per_call)]


def test_a_locked_file_degrades_without_raising_and_recovers(tmp_path: Path) -> None:
    """Another process holds the write lock: the call's writes return at once, stay queued, are
    retried; beyond the queue's bound they are dropped and counted. Each change of state is reported
    once (not per write), and when the lock goes everything queued is written."""
    path = tmp_path / FILENAME
    reports: list[tuple[str, dict[str, Any]]] = []
    store = TranscriptStore(
        path, max_queue=5, busy_timeout=0.05, retry_seconds=0.05, report=lambda e, f: reports.append((e, f))
    )
    blocker = sqlite3.connect(path, isolation_level=None)
    try:
        blocker.execute("BEGIN EXCLUSIVE")
        t0 = time.monotonic()
        store.call_started(CALL, STARTED)
        for i in range(20):
            store.utterance("call-1", utt(f"u{i}", 0, float(i), i + 0.5, f"word {i}"))
        assert time.monotonic() - t0 < 0.05  # queued, not written: nothing waited on the lock
        deadline = time.monotonic() + 5
        while store.degraded is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert store.degraded is not None and "locked" in store.degraded
        time.sleep(0.3)  # several retries, still locked
        blocker.execute("ROLLBACK")
        assert store.flush(5)
        kept = store.get("call-1")
    finally:
        blocker.close()
        store.close()
    assert kept is not None and store.write_failures >= 2
    # what was queued when the bound was hit is kept (the first writes, in order); the rest is counted
    n = len(kept["utterances"])
    assert [u["id"] for u in kept["utterances"]] == [f"u{i}" for i in range(n)]
    assert n >= 4 and store.dropped == 20 - n
    events = [e for e, _ in reports]
    assert events.count("transcripts.dropping") == 1 and events.count("transcripts.degraded") == 1
    assert events.count("transcripts.recovered") == 1 and events.count("transcripts.caught_up") == 1
    assert dict(reports)["transcripts.caught_up"] == {"dropped": store.dropped}
    assert "queue is full" in dict(reports)["transcripts.dropping"]["reason"]


def test_writes_that_cannot_be_stored_are_dropped_not_raised(tmp_path: Path) -> None:
    """A malformed call or utterance, or a write after close: counted, never an exception."""
    store = TranscriptStore.in_dir(tmp_path)
    store.call_started({"provider": "twilio"}, STARTED)  # no id
    circular: dict[str, Any] = {"id": "c"}
    circular["self"] = circular
    store.utterance("call-1", circular)
    store.call_ended("call-1", "soon", "stop")  # type: ignore[arg-type]
    store.close()
    store.utterance("call-1", utt("late", 0, 1.0, 2.0, "after close"))
    assert store.dropped == 4


# -- the API over HTTP ---------------------------------------------------------------------------


async def _get(
    http: aiohttp.ClientSession, server: TestServer, path: str, token: str | None = TOKEN
) -> tuple[int, str, str]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with http.get(server.make_url(path), headers=headers) as resp:
        return resp.status, resp.headers.get("Content-Type", ""), await resp.text()


def store_of(server: TestServer) -> TranscriptStore:
    store = server.app[TRANSCRIPTS]
    assert isinstance(store, TranscriptStore)  # no BRIDGE_DATABASE_URL: the SQLite file
    return store


async def test_the_transcript_api_serves_each_format_and_refuses_bad_requests(make_bridge: BridgeFactory) -> None:
    """JSON (default), txt and vtt with their content types; a running call's transcript says active;
    401 for a wrong token, 404 for an unknown call, 422 for an unknown format."""
    server = await make_bridge({"BRIDGE_API_TOKEN": TOKEN})
    store = store_of(server)
    started = round(time.time() - 7200, 3)  # recent: well inside retention
    store.call_started(CALL, started)
    for u in UTTERANCES:
        store.utterance("call-1", u)
    store.call_started({**CALL, "id": "running"}, started + 10)
    store.utterance("running", UTTERANCES[0])
    assert await asyncio.to_thread(store.flush, 5)
    path = "/v1/calls/call-1/transcript"
    async with aiohttp.ClientSession() as http:
        active = await _get(http, server, "/v1/calls/running/transcript")
        store.call_ended("call-1", started + 3730, "stop")
        assert await asyncio.to_thread(store.flush, 5)
        as_json = await _get(http, server, path)
        as_json_named = await _get(http, server, path + "?format=json")
        as_txt = await _get(http, server, path + "?format=txt")
        as_vtt = await _get(http, server, path + "?format=vtt")
        bad_format = await _get(http, server, path + "?format=srt")
        unknown = await _get(http, server, "/v1/calls/nope/transcript?format=vtt")
        no_token = await _get(http, server, path, token=None)
        wrong_token = await _get(http, server, path, token="wrong")
    status, ctype, body = active
    assert status == 200 and json.loads(body)["active"] is True and len(json.loads(body)["utterances"]) == 1
    status, ctype, body = as_json
    assert status == 200 and ctype == "application/json; charset=utf-8"
    got = json.loads(body)
    assert got == transcript(IN_ORDER, started) and got["active"] is False
    assert as_json_named == as_json
    assert as_txt == (200, "text/plain; charset=utf-8", render_txt(transcript()))
    status, ctype, body = as_vtt
    assert status == 200 and ctype == "text/vtt; charset=utf-8" and body == render_vtt(transcript())
    assert len(webvtt.from_string(body, strict=True).captions) == 6
    status, _, body = bad_format
    assert status == 422 and all(f in json.loads(body)["error"] for f in ("json", "txt", "vtt"))
    status, _, body = unknown
    assert status == 404 and "nope" in json.loads(body)["error"]
    assert no_token[0] == 401 and wrong_token[0] == 401 and "error" in json.loads(wrong_token[2])


async def test_the_transcript_api_is_off_without_a_token(make_bridge: BridgeFactory) -> None:
    server = await make_bridge()
    async with aiohttp.ClientSession() as http:
        results = [
            await _get(http, server, "/v1/calls/call-1/transcript"),
            await _get(http, server, "/v1/calls?since=0"),
        ]
    for status, _, body in results:
        assert status == 403 and "BRIDGE_API_TOKEN" in json.loads(body)["error"]


async def test_recent_calls_are_listed_since_a_time(make_bridge: BridgeFactory) -> None:
    """?since= (ISO 8601 or unix seconds) lists the calls on record, newest first, bounded by limit;
    a bad since or limit is 422."""
    server = await make_bridge({"BRIDGE_API_TOKEN": TOKEN})
    store = store_of(server)
    now = time.time()
    for i, name in enumerate(["a", "b", "c"]):
        fill(store, name, now - 300 + 100 * i, now - 250 + 100 * i, n=i)
    fill(store, "older", now - 2 * DAY, now - 2 * DAY + 60)
    assert await asyncio.to_thread(store.flush, 5)
    since_iso = iso(now - 3600)
    assert since_iso is not None
    async with aiohttp.ClientSession() as http:
        by_iso = await _get(http, server, f"/v1/calls?since={since_iso}")
        by_unix = await _get(http, server, f"/v1/calls?since={now - 3600:.3f}")
        limited = await _get(http, server, "/v1/calls?since=0&limit=2")
        bad_since = await _get(http, server, "/v1/calls?since=last-tuesday")
        bad_limits = [await _get(http, server, f"/v1/calls?since=0&limit={x}") for x in ("0", "1001", "ten", "-1")]
    status, ctype, body = by_iso
    assert status == 200 and ctype.startswith("application/json")
    calls = json.loads(body)["calls"]
    assert [c["id"] for c in calls] == ["c", "b", "a"] and [c["utterances"] for c in calls] == [2, 1, 0]
    assert calls[0]["from"] == CALL["from"] and calls[0]["end_reason"] == "stop" and calls[0]["ended_at"]
    assert by_unix == by_iso
    assert [c["id"] for c in json.loads(limited[2])["calls"]] == ["c", "b"]
    assert bad_since[0] == 422 and "ISO 8601" in json.loads(bad_since[2])["error"]
    for status, _, body in bad_limits:
        assert status == 422 and "1 to 1000" in json.loads(body)["error"]


async def test_recent_calls_are_searched_by_number_and_text(make_bridge: BridgeFactory) -> None:
    """``&q=`` keeps the calls whose numbers or utterance texts hold it (any case, ``%`` and ``_`` as
    themselves); a blank ``q`` is none; over 100 characters is 422."""
    server = await make_bridge({"BRIDGE_API_TOKEN": TOKEN})
    store = store_of(server)
    now = time.time()
    store.call_started({**CALL, "id": "a", "from": "+15557770001"}, now - 300)
    store.utterance("a", utt("a-1", 0, 1.0, 2.0, "My Account number, please"))
    store.call_started({**CALL, "id": "b"}, now - 200)
    store.utterance("b", utt("b-1", 0, 1.0, 2.0, "50% off"))
    assert await asyncio.to_thread(store.flush, 5)
    async with aiohttp.ClientSession() as http:

        async def ids(q: str) -> list[str]:
            status, _, body = await _get(http, server, f"/v1/calls?since=0&q={q}")
            assert status == 200, body
            return [c["id"] for c in json.loads(body)["calls"]]

        assert await ids("account%20NUMBER") == ["a"] and await ids("%2B1555777") == ["a"]
        assert await ids("50%25") == ["b"] and await ids("5_%25") == [] and await ids("%20") == ["b", "a"]
        too_long = await _get(http, server, "/v1/calls?since=0&q=" + "x" * 101)
        longest = await _get(http, server, "/v1/calls?since=0&q=" + "x" * 100)
    assert too_long[0] == 422 and "100 characters" in json.loads(too_long[2])["error"]
    assert longest[0] == 200 and json.loads(longest[2])["calls"] == []


async def test_without_since_the_active_calls_are_listed_as_before(make_bridge: BridgeFactory, tmp_path: Path) -> None:
    """GET /v1/calls with no since still answers with the live calls (the bot API's shape), while
    ?since= answers from the store."""
    server = await make_bridge({"BRIDGE_API_TOKEN": TOKEN})
    store = store_of(server)
    fill(store, "on-record", time.time() - 60, time.time() - 30)
    assert await asyncio.to_thread(store.flush, 5)
    seen: dict[str, Any] = {}

    async def bot(http: aiohttp.ClientSession) -> None:
        await wait_for(lambda: bool(server.app[CALLS].live), timeout=10)
        seen["active"] = await _get(http, server, "/v1/calls")
        seen["recent"] = await _get(http, server, "/v1/calls?since=0")

    async with aiohttp.ClientSession() as http:
        task = asyncio.create_task(bot(http))
        await phone_call(str(server.make_url("/twilio/stream")), b"", until=lambda _: task.done(), max_seconds=20)
        await task
    status, _, body = seen["active"]
    (live,) = json.loads(body)["calls"]
    assert status == 200 and live["provider"] == "twilio" and "state" in live  # the live call, as today
    recent_ids = [c["id"] for c in json.loads(seen["recent"][2])["calls"]]
    assert "on-record" in recent_ids


async def test_transcripts_off_keeps_nothing_and_says_so(make_bridge: BridgeFactory, tmp_path: Path) -> None:
    server = await make_bridge({"BRIDGE_API_TOKEN": TOKEN, "BRIDGE_TRANSCRIPTS": "false"})
    assert server.app[TRANSCRIPTS] is None
    async with aiohttp.ClientSession() as http:
        status, _, body = await _get(http, server, "/v1/calls/call-1/transcript")
        listed = await _get(http, server, "/v1/calls")
    assert status == 404 and "transcripts are off" in json.loads(body)["error"]
    assert listed[0] == 200 and json.loads(listed[2]) == {"calls": []}
    assert not (tmp_path / "data" / FILENAME).exists()


async def test_retention_purges_old_calls_on_the_bridges_clock(make_bridge: BridgeFactory, tmp_path: Path) -> None:
    """At start-up the purge removes what was already past retention; later, moving the bridge's clock
    on 25 days makes a call that ended 10 days ago 35 days old: it goes, a call from yesterday stays."""
    now = time.time()
    seeded = TranscriptStore.in_dir(tmp_path / "data")
    fill(seeded, "ancient", now - 90 * DAY, now - 90 * DAY + 60)
    assert seeded.flush(5)
    seeded.close()
    clock = VirtualClock()
    server = await make_bridge(
        {"BRIDGE_API_TOKEN": TOKEN}, clock=Clock(time=clock.time, sleep=clock.sleep), transcripts__purge_interval=0.05
    )
    store = store_of(server)
    fill(store, "ten-days", now - 10 * DAY, now - 10 * DAY + 60)
    fill(store, "yesterday", now - DAY, now - DAY + 60)
    assert await asyncio.to_thread(store.flush, 5)

    async with aiohttp.ClientSession() as http:

        async def status(call_id: str) -> int:
            return (await _get(http, server, f"/v1/calls/{call_id}/transcript"))[0]

        async def wait_gone(call_id: str) -> None:
            async with asyncio.timeout(10):
                while await status(call_id) != 404:
                    await asyncio.sleep(0.02)

        await wait_gone("ancient")
        await asyncio.sleep(0.2)  # a few purges on the real clock: nothing recent goes
        assert await status("ten-days") == 200 and await status("yesterday") == 200
        clock.offset += 25 * DAY
        await wait_gone("ten-days")
        await asyncio.sleep(0.2)
        assert await status("yesterday") == 200
