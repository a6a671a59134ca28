"""Every call's events as one SSE stream (``GET /v1/events``, bridge.http.all_events) and the notices on the
live streams (``speech.started``, ``utterance.partial``).

The feed on its own (ids, resume, bounds, the type filter); then a real bridge on 127.0.0.1 (the in-process
app, fake Gladia and bot of tests/support) read by aiohttp's client and parsed by the WHATWG reader of
tests/test_call_events.py: resuming with Last-Event-ID mid-call loses and repeats nothing, 200 idle readers
hold, a reader that never reads is dropped without slowing the call, and the token is checked. Under
``--workers``: tests/test_sse_workers.py.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from bridge.app import drain_calls
from bridge.event_feed import EventFeed, FeedLimit
from bridge.event_tap import EventTap
from bridge.http.all_events import event_types, positions
from bridge.http.call_events import EVENT_TAP, sse_frame
from bridge.http.merged_events import SseBlocks
from tests.support.calls import BridgeFactory, caller_audio, play_call, wait_for
from tests.support.fakes import FakeGladia, FakeWebhook
from tests.test_call_events import SpecEvent, spec_parse
from tests.test_reply_loop import partial, speech

TOKEN = "all-events-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
A, B = "a" * 32, "b" * 32


# -- the feed ----------------------------------------------------------------------------------------


def test_feed_ids_resume_and_what_is_kept() -> None:
    """Ids grow by one from ``start``; a follower from an id gets the kept events after it, one without an
    id only what comes next; notices reach followers live and are never kept."""
    feed = EventFeed(start=100)
    assert feed.publish(A, "call.started", "a1") == 101
    assert feed.publish(B, "call.started", "b1") == 102
    live = feed.follow()
    resumed = feed.follow(after=101)
    everything = feed.follow(after=0)
    feed.notice(A, "utterance.partial", "p")
    feed.publish(A, "utterance.final", "a2")
    assert [e[:3] for e in live.take()] == [(0, A, "utterance.partial"), (103, A, "utterance.final")]
    assert [e[0] for e in resumed.take()] == [102, 0, 103]
    assert [e[0] for e in everything.take()] == [101, 102, 0, 103] and everything.lost_upto == 0
    assert everything.position == 103  # a notice moves no position
    late = feed.follow(after=0)
    assert [e[0] for e in late.take()] == [101, 102, 103]  # the notice was not kept
    for follower in (live, resumed, everything, late):
        follower.close()
    assert feed.followers == 0


def test_feed_bounds_say_what_was_lost() -> None:
    """The ring keeps ``size`` events and ``max_bytes``; a follower from before what is kept learns up to
    which id events are gone; an id from before the process, or never given, is told apart."""
    feed = EventFeed(size=3, max_bytes=10, start=0)
    for _ in range(5):
        feed.publish(A, "utterance.final", "xx")
    follower = feed.follow(after=1)
    assert [e[0] for e in follower.take()] == [3, 4, 5] and follower.lost_upto == 2
    follower.close()
    feed.publish(A, "transcript.completed", "y" * 9)  # 2 + 2 + 9 > 10: the oldest go
    assert feed.bytes <= 10 and [e[0] for e in feed.follow(after=0).take()] == [6]
    restarted = EventFeed(start=1000)
    restarted.publish(A, "call.started", "x")
    before = restarted.follow(after=900)
    assert before.lost_upto == 1000 and [e[0] for e in before.take()] == [1001]
    ahead = restarted.follow(after=5000)
    assert ahead.unknown and ahead.take() == [] and ahead.position == 1001


def test_feed_followers_are_bounded_and_the_slow_one_is_ended() -> None:
    """At most ``max_followers`` (FeedLimit beyond); one with more than ``max_behind`` waiting is ended, its
    queue freed, publishing unaffected."""
    feed = EventFeed(max_behind=3, max_followers=2, start=0)
    slow, other = feed.follow(), feed.follow()
    with pytest.raises(FeedLimit):
        feed.follow()
    for _ in range(4):
        feed.publish(A, "utterance.final", "x")
        other.take()
    assert slow.reason == "behind" and slow.finished() and feed.ended_behind == 1 and feed.followers == 1
    feed.follow().close()  # its place is free again


def test_a_long_resume_is_not_taken_for_falling_behind() -> None:
    """A follower that starts with more kept events than ``max_behind`` is not ended by the next event
    before it took them; once taken, the bound is the usual one."""
    feed = EventFeed(max_behind=3, start=0)
    for _ in range(10):
        feed.publish(A, "utterance.final", "x")
    follower = feed.follow(after=0)
    feed.publish(A, "utterance.final", "x")
    assert follower.reason is None and len(follower.take()) == 11
    for _ in range(4):
        feed.publish(A, "utterance.final", "x")
    assert follower.reason == "behind"


def test_type_filter() -> None:
    """``?types=`` keeps the names given and ``family.*``; anything else is 400."""
    feed = EventFeed(start=0)
    follower = feed.follow(types=event_types("utterance.final,call.*"))  # type: ignore[arg-type]
    for type_ in ("call.started", "utterance.partial", "utterance.final", "playback.started", "call.ended"):
        feed.publish(A, type_, "x")
    assert [e[2] for e in follower.take()] == ["call.started", "utterance.final", "call.ended"]
    assert isinstance(event_types("a,,"), frozenset) and event_types(None) is None
    for bad in ("", "Bad", "a b", "*", ",".join(["x"] * 33), "a.*.b"):
        assert isinstance(event_types(bad), str), bad


def test_positions_parse() -> None:
    """One number per worker, dotted, or one for all; anything else is refused."""
    assert positions(None, 2) is None
    assert positions("7", 1) == [7] and positions("0", 3) == [0, 0, 0] and positions("5.9", 2) == [5, 9]
    for bad in ("", "x", "1.2.3", "-1", "1..2", "١"):
        assert isinstance(positions(bad, 2), str), bad


def test_tap_notices_reach_call_followers_without_an_id() -> None:
    """A notice reaches the call's followers as sequence 0 (not kept, no position moved) and is framed with
    no ``id`` line, so a reader's last event id stays the previous event's."""
    tap = EventTap()
    assert not tap.hears(A)
    tap.publish(A, 1, "call.started", "{}")
    follower = tap.follow(A)
    assert tap.hears(A) and not tap.hears(B)
    tap.notice(A, "speech.started", '{"type":"speech.started"}')
    tap.notice(B, "speech.started", "{}")  # nobody follows B: dropped at once
    assert [e[:2] for e in follower.take()] == [(1, "call.started"), (0, "speech.started")]
    assert follower.position == 1 and tap.follow(A, after=0).take()[-1][0] == 1
    stream = (sse_frame(1, "call.started", "{}") + sse_frame(0, "speech.started", "{}")).encode()
    events, _ = spec_parse(stream)
    assert events == [SpecEvent("call.started", "{}", "1"), SpecEvent("speech.started", "{}", "1")]


def test_a_feed_reader_that_takes_no_notice_makes_no_call_build_one() -> None:
    """A reader of every call's events whose ``?types=`` keep no notice type (the console's live list) makes
    no call build a notice's body; one that keeps one (or all types) does, and so does none once it left."""
    tap = EventTap()
    listing = tap.feed.follow(None, frozenset({"call.*", "playback.started"}))
    assert not tap.hears(A)
    partials = tap.feed.follow(None, frozenset({"utterance.*"}))
    assert tap.hears(A) and tap.hears(B)
    partials.close()
    assert not tap.hears(A)
    everything = tap.feed.follow()
    assert tap.hears(A)
    everything.close()
    listing.close()
    assert not tap.hears(A)


# -- a real bridge -------------------------------------------------------------------------------------


class Reader:
    """One SSE response read as it comes, parsed by the spec reader (complete events only)."""

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self.resp = resp
        self.raw = b""
        self.ended = False

    def parsed(self) -> tuple[list[SpecEvent], list[str]]:
        cut = self.raw.rfind(b"\n\n")
        return spec_parse(self.raw[: cut + 2]) if cut >= 0 else ([], [])

    async def until(self, done: Any, timeout: float = 15.0) -> list[SpecEvent]:
        async with asyncio.timeout(timeout):
            while True:
                events, comments = self.parsed()
                if done(events, comments):
                    return events
                chunk = await self.resp.content.readany()
                if not chunk:
                    self.ended = True
                    return events
                self.raw += chunk


def bodies(events: list[SpecEvent], call_id: str) -> list[dict[str, Any]]:
    out = [json.loads(e.data) for e in events]
    return [b for b in out if b.get("call_id", (b.get("call") or {}).get("id")) == call_id]


def has(type_: str, count: int = 1) -> Any:
    return lambda events, _: sum(e.type == type_ for e in events) >= count


async def bridge_with_token(make_bridge: BridgeFactory, **overrides: Any) -> tuple[TestServer, EventTap, str]:
    server = await make_bridge({"BRIDGE_API_TOKEN": TOKEN}, **overrides)
    return server, server.app[EVENT_TAP], str(server.make_url("")).rstrip("/")


@pytest.mark.timeout(60)
async def test_resume_mid_call_loses_and_repeats_nothing(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    """A reader of /v1/events that drops mid-call and comes back with its Last-Event-ID has, in both
    streams together, every event the bot got, once each, in order, each body as posted; notices
    (speech.started, utterance.partial) come in between with no id and are not replayed; ids only grow."""
    hook, _ = webhook
    fake_gladia.segment_seconds = 0.5
    fake_gladia.script = [speech(0.2, True), partial(0.4, "hello the")]
    server, tap, base = await bridge_with_token(make_bridge)
    async with aiohttp.ClientSession() as http:
        first = Reader(await http.get(f"{base}/v1/events", headers=AUTH))
        assert first.resp.status == 200 and first.resp.headers["Content-Type"].startswith("text/event-stream")
        url = str(server.make_url("/twilio/stream"))
        call = asyncio.create_task(play_call(url, caller_audio(6.0), pace=0.01))  # 3 s
        got = await first.until(has("utterance.final", 2))
        call_id = json.loads(got[0].data)["call"]["id"]
        first.resp.close()  # the reader drops mid-call
        last_id = got[-1].last_event_id
        assert last_id.isdigit()
        await asyncio.sleep(0.3)  # events go on meanwhile
        second = Reader(await http.get(f"{base}/v1/events", headers={**AUTH, "Last-Event-ID": last_id}))
        rest = await second.until(has("transcript.completed"), timeout=30)
        assert await call == 1000
        second.resp.close()
    await wait_for(lambda: bool(hook.events("transcript.completed")), timeout=10)
    posted = [e for e in hook.events() if e["call"]["id"] == call_id]
    durable = [b for b in bodies(got, call_id) + bodies(rest, call_id) if "sequence" in b]
    assert [b["sequence"] for b in durable] == [e["sequence"] for e in posted]  # all, once, in order
    assert durable == posted
    ids = [int(e.last_event_id) for e in got + rest if "sequence" in json.loads(e.data)]
    assert ids == sorted(set(ids))
    notices = [b for b in bodies(got, call_id) if "sequence" not in b]
    assert [n["type"] for n in notices] == ["speech.started", "utterance.partial"]
    assert notices[1]["text"] == "hello the" and notices[1]["call"]["id"] == call_id
    assert not [b for b in bodies(rest, call_id) if "sequence" not in b]  # not replayed
    await wait_for(lambda: tap.feed.followers == 0, 5)  # the readers went: their places are free


@pytest.mark.timeout(60)
async def test_the_call_stream_carries_notices_without_ids(make_bridge: BridgeFactory, fake_gladia: FakeGladia) -> None:
    """``GET /v1/calls/{id}/events`` followed from the call's start gets speech.started and the partial
    between the call's events, with no ``id`` line (the last event id stays the previous event's)."""
    fake_gladia.segment_seconds = 3600.0
    fake_gladia.script = [speech(1.0, True), partial(1.5, "one two")]
    server, _, base = await bridge_with_token(make_bridge)
    async with aiohttp.ClientSession() as http:
        watcher = Reader(await http.get(f"{base}/v1/events?types=call.started", headers=AUTH))
        call = asyncio.create_task(play_call(str(server.make_url("/twilio/stream")), caller_audio(3.0), pace=0.02))
        (started,) = await watcher.until(has("call.started"))
        watcher.resp.close()
        call_id = json.loads(started.data)["call"]["id"]
        reader = Reader(await http.get(f"{base}/v1/calls/{call_id}/events", headers=AUTH))
        events = await reader.until(has("transcript.completed"), timeout=30)
        await call
    types = [e.type for e in events]
    assert types.index("call.started") < types.index("speech.started") < types.index("utterance.partial")
    notice = events[types.index("utterance.partial")]
    assert json.loads(notice.data)["text"] == "one two" and json.loads(notice.data)["call_id"] == call_id
    assert notice.last_event_id == events[types.index("utterance.partial") - 1].last_event_id
    assert b"id: " not in reader.raw.split(b"event: utterance.partial")[1].split(b"\n\n")[0]


@pytest.mark.timeout(60)
async def test_two_hundred_idle_readers_hold(make_bridge: BridgeFactory) -> None:
    """200 readers of /v1/events at once each get the heartbeat and then the same event; the 201st gets
    429 with Retry-After; once they leave, every place is free."""
    _, tap, base = await bridge_with_token(make_bridge)
    tap.keepalive_s = 0.5
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        responses = await asyncio.gather(*(http.get(f"{base}/v1/events", headers=AUTH) for _ in range(200)))
        try:
            assert [r.status for r in responses] == [200] * 200
            async with http.get(f"{base}/v1/events", headers=AUTH) as refused:
                assert refused.status == 429 and refused.headers["Retry-After"].isdigit()
            readers = [Reader(r) for r in responses]
            await asyncio.gather(*(r.until(lambda _, c: " keepalive" in c, timeout=10) for r in readers))
            tap.publish(A, 1, "call.started", json.dumps({"type": "call.started", "call": {"id": A}}))
            got = await asyncio.gather(*(r.until(has("call.started"), timeout=10) for r in readers))
            assert all(len(g) == 1 and g[0].last_event_id == str(tap.feed.last_id) for g in got)
        finally:
            for r in responses:
                r.close()
    await wait_for(lambda: tap.feed.followers == 0, 10)


@pytest.mark.timeout(60)
async def test_a_reader_that_never_reads_is_dropped_and_the_call_goes_on(
    make_bridge: BridgeFactory, webhook: tuple[FakeWebhook, str]
) -> None:
    """A client of /v1/events that never reads its socket is dropped (its place freed) while a call runs
    and big events pour in; the call's events still reach the bot in time and the tap holds no more than
    its bounds."""
    hook, _ = webhook
    server, tap, _ = await bridge_with_token(make_bridge)
    tap.send_timeout_s = 0.5
    tap.feed.max_bytes = 2 * 1024 * 1024
    assert server.port is not None
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        sock.sendall(f"GET /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode())
        await wait_for(lambda: tap.feed.followers == 1, 5)
        started = time.monotonic()
        call = asyncio.create_task(play_call(str(server.make_url("/twilio/stream")), caller_audio(3.0), pace=0.005))
        big = json.dumps({"type": "utterance.final", "call": {"id": B}, "text": "x" * 200_000})
        slowest = 0.0
        for seq in range(1, 200):
            before = time.perf_counter()
            tap.publish(B, seq, "utterance.final", big)
            slowest = max(slowest, time.perf_counter() - before)
            await asyncio.sleep(0.005)
            if tap.feed.followers == 0:
                break
        await wait_for(lambda: tap.feed.followers == 0, 10)
        assert await call == 1000
        await wait_for(lambda: bool(hook.events("transcript.completed")), 15)
        assert time.monotonic() - started < 15
        assert slowest < 0.05  # publishing never waited for the reader
        assert tap.feed.bytes <= tap.feed.max_bytes and tap.bytes <= tap.max_bytes
        assert tap.held_bytes <= tap.max_bytes + tap.feed.max_bytes
    finally:
        sock.close()


@pytest.mark.timeout(30)
async def test_refusals(make_bridge: BridgeFactory) -> None:
    """401 a wrong or missing token, 400 a bad Last-Event-ID, ?after= or ?types=; each body ``{"error"}``;
    403 with the API off."""
    _, tap, base = await bridge_with_token(make_bridge)
    off = await make_bridge()
    off_base = str(off.make_url("")).rstrip("/")
    async with aiohttp.ClientSession() as http:
        cases = [
            (f"{base}/v1/events", {"Authorization": "Bearer wrong"}, 401),
            (f"{base}/v1/events", {}, 401),
            (f"{base}/v1/events", {**AUTH, "Last-Event-ID": "x"}, 400),
            (f"{base}/v1/events?after=1.2", AUTH, 400),
            (f"{base}/v1/events?types=Nope", AUTH, 400),
            (f"{off_base}/v1/events", AUTH, 403),
        ]
        for url, headers, status in cases:
            async with http.get(url, headers=headers) as resp:
                assert resp.status == status, url
                assert "error" in await resp.json()
    assert tap.feed.followers == 0


@pytest.mark.timeout(30)
async def test_the_stream_ends_once_the_bridge_has_drained(make_bridge: BridgeFactory) -> None:
    """When the bridge stops (its calls drained), a reader's stream ends with a comment saying so, rather
    than holding the shutdown until aiohttp's timeout; the reader reconnects elsewhere with its last id."""
    server, tap, base = await bridge_with_token(make_bridge)
    async with aiohttp.ClientSession() as http:
        reader = Reader(await http.get(f"{base}/v1/events", headers=AUTH))
        await wait_for(lambda: tap.feed.followers == 1, 5)
        await drain_calls(server.app)
        await reader.until(lambda *_: False, timeout=5)  # to the stream's end
        _, comments = reader.parsed()
        assert reader.ended and comments[-1] == " the bridge is stopping: reconnect with Last-Event-ID"
    assert tap.feed.followers == 0


def test_the_merging_reader_parses_our_frames_in_any_chunks() -> None:
    """What a worker reads of a sibling's stream, fed a character at a time: events with their ids, a
    notice with none (0), comments apart."""
    stream = (
        ": worker comment\n\n"
        + sse_frame(5, "call.started", '{"a":"é"}')
        + sse_frame(0, "utterance.partial", "{}")
        + ": keepalive\n\n"
        + sse_frame(6, "odd", "one\ntwo")
    )
    blocks = SseBlocks()
    got = [item for ch in stream for item in blocks.feed(ch)]
    assert got == [
        (-1, "worker comment", ""),
        (5, "call.started", '{"a":"é"}'),
        (0, "utterance.partial", "{}"),
        (-1, "keepalive", ""),
        (6, "odd", "one\ntwo"),
    ]


@pytest.mark.timeout(30)
async def test_a_resume_says_what_it_cannot_give(make_bridge: BridgeFactory) -> None:
    """A resume from before the kept events starts with a comment naming the last id lost, then the kept
    ones; an id this bridge never gave starts with a comment saying so, then live events only."""
    _, tap, base = await bridge_with_token(make_bridge)
    tap.feed.size = 2
    tap.keepalive_s = 0.3
    first = tap.feed.last_id + 1
    for seq in range(1, 5):
        tap.publish(A, seq, "utterance.final", json.dumps({"type": "utterance.final", "sequence": seq}))
    async with aiohttp.ClientSession() as http:
        old = Reader(await http.get(f"{base}/v1/events", headers={**AUTH, "Last-Event-ID": str(first)}))
        events = await old.until(lambda _, c: " keepalive" in c)
        assert [int(e.last_event_id) for e in events] == [first + 2, first + 3]
        assert old.parsed()[1][0] == f" events up to id {first + 1} are no longer kept"
        old.resp.close()
        alien = Reader(await http.get(f"{base}/v1/events?after={first + 10**9}", headers=AUTH))
        assert await alien.until(lambda _, c: " keepalive" in c) == []
        assert alien.parsed()[1][0] == " that id is not one of this bridge's: following from now on"
        alien.resp.close()
