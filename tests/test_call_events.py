"""A call's events as a live SSE stream (bridge.http.call_events) and ``bridge dial`` (bridge.tools.dial_command).

The tap is tested on its own (bounds, order, resume, forgetting, slow followers); the route on a real aiohttp
app on 127.0.0.1 read by aiohttp's client, its framing checked by an SSE parser written here from the WHATWG
HTML standard's rules (not the command's); ``bridge dial`` against a small fake bridge serving ``POST
/v1/calls`` and the events route with literal SSE text.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bridge.app_keys import SETTINGS
from bridge.event_tap import EventTap, FollowerLimit
from bridge.http.call_events import EVENT_TAP, add_routes, sse_frame
from bridge.settings import Settings
from bridge.tools.dial_command import SseParser, add_arguments, dial_command, event_line, order_body

TOKEN = "events-api-token-0123456789"
CALL = "0123456789abcdef0123456789abcdef"
OTHER = "fedcba9876543210fedcba9876543210"


# -- an SSE reader written from the WHATWG HTML standard, 9.2.6 "Interpreting an event stream" ---------


@dataclass
class SpecEvent:
    type: str
    data: str
    last_event_id: str


def spec_parse(stream: bytes) -> tuple[list[SpecEvent], list[str]]:
    """Every event a conforming reader dispatches from a complete stream, and the comment lines it skips.
    Decoding: UTF-8, one leading BOM dropped. Lines end at CRLF, a lone LF, or a lone CR (scanned character
    by character). Per line: empty -> dispatch; ':' first -> comment; else split at the first ':' (a single
    space after it removed) or the whole line is the field name with an empty value. Fields: event sets the
    type buffer; data appends value + LF; id sets the last event ID buffer unless it holds NULL; anything
    else is ignored. Dispatch: the last event ID is the buffer's; no data -> both buffers reset, nothing
    dispatched; else one trailing LF removed, the type 'message' when empty. An unterminated last block is
    discarded (the stream ended before its blank line)."""
    text = stream.decode("utf-8", errors="replace")
    if text.startswith("\ufeff"):
        text = text[1:]
    lines: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\r":
            lines.append("".join(current))
            current = []
            if i + 1 < len(text) and text[i + 1] == "\n":
                i += 1
        elif ch == "\n":
            lines.append("".join(current))
            current = []
        else:
            current.append(ch)
        i += 1
    events: list[SpecEvent] = []
    comments: list[str] = []
    data_buffer, type_buffer, id_buffer = "", "", ""
    for line in lines:
        if line == "":
            if data_buffer == "":
                type_buffer = ""
                continue
            if data_buffer.endswith("\n"):
                data_buffer = data_buffer[:-1]
            events.append(SpecEvent(type_buffer or "message", data_buffer, id_buffer))
            data_buffer, type_buffer = "", ""
            continue
        if line[0] == ":":
            comments.append(line[1:])
            continue
        if ":" in line:
            at = line.index(":")
            name, value = line[:at], line[at + 1 :]
            if value[:1] == " ":
                value = value[1:]
        else:
            name, value = line, ""
        if name == "event":
            type_buffer = value
        elif name == "data":
            data_buffer += value + "\n"
        elif name == "id" and "\x00" not in value:
            id_buffer = value
    return events, comments


def body(type_: str, sequence: int, **payload: Any) -> str:
    """An event body shaped as bridge.delivery.context.event_body writes it."""
    return json.dumps(
        {"type": type_, "sequence": sequence, "timestamp": "2026-12-06T21:00:00+00:00", **payload},
        separators=(",", ":"),
        ensure_ascii=False,
    )


def publish(tap: EventTap, call_id: str, sequence: int, type_: str, **payload: Any) -> None:
    tap.publish(call_id, sequence, type_, body(type_, sequence, **payload))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def collect(events: AsyncIterator[tuple[int, str, str]], timeout: float = 5.0) -> list[tuple[int, str]]:
    got: list[tuple[int, str]] = []

    async def run() -> None:
        async for sequence, type_, _ in events:
            got.append((sequence, type_))

    await asyncio.wait_for(run(), timeout)
    return got


# -- the tap ----------------------------------------------------------------------------------------


async def test_follow_gives_kept_events_after_then_live_ones_and_ends_after_transcript() -> None:
    """A follower gets the kept events above ``after`` in order, then live ones, and ends once
    transcript.completed follows call.ended."""
    tap = EventTap()
    for seq, type_ in [(1, "call.dialing"), (2, "call.started"), (3, "utterance.final")]:
        publish(tap, CALL, seq, type_)
    follower = tap.follow(CALL, after=1)
    task = asyncio.create_task(collect(follower))
    await asyncio.sleep(0.01)
    publish(tap, CALL, 4, "playback.started")
    publish(tap, CALL, 5, "call.ended", summary={"end_reason": "hangup"})
    publish(tap, CALL, 6, "transcript.completed")
    got = await task
    assert got == [
        (2, "call.started"),
        (3, "utterance.final"),
        (4, "playback.started"),
        (5, "call.ended"),
        (6, "transcript.completed"),
    ]
    assert follower.reason == "ended" and tap.followers == 0


async def test_follower_ends_after_the_linger_without_transcript() -> None:
    """Without transcript.completed the follower ends ``linger_s`` after call.ended; a late one is not given."""
    tap = EventTap(linger_s=0.2)
    publish(tap, CALL, 1, "call.started")
    follower = tap.follow(CALL)
    publish(tap, CALL, 2, "call.ended")
    started = time.monotonic()
    got = await collect(follower)
    assert got == [(1, "call.started"), (2, "call.ended")]
    assert 0.15 <= time.monotonic() - started < 2.0
    publish(tap, CALL, 3, "transcript.completed")
    assert [e[0] async for e in tap.follow(CALL, after=2)] == [3]  # a later follower still gets it


def test_per_call_bound_drops_the_oldest_and_counts() -> None:
    """Only ``per_call`` events are kept, the oldest dropped first and counted; a follower from the start
    learns up to which sequence events were lost."""
    tap = EventTap(per_call=3)
    for seq in range(1, 6):
        publish(tap, CALL, seq, "utterance.final")
    follower = tap.follow(CALL)
    assert [e[0] for e in follower.take()] == [3, 4, 5]
    assert follower.lost_upto == 2 and tap.dropped == 2
    follower.close()
    late = tap.follow(CALL, after=3)
    assert [e[0] for e in late.take()] == [4, 5] and late.lost_upto == 0
    late.close()


def test_sequences_not_increasing_are_ignored() -> None:
    """A repeated or older sequence is refused (counted): followers resume by sequence."""
    tap = EventTap()
    publish(tap, CALL, 2, "call.started")
    publish(tap, CALL, 2, "call.started")
    publish(tap, CALL, 1, "call.dialing")
    publish(tap, CALL, 3, "utterance.final")
    follower = tap.follow(CALL)
    assert [(e[0], e[1]) for e in follower.take()] == [(2, "call.started"), (3, "utterance.final")]
    assert tap.out_of_order == 2
    follower.close()


def test_max_calls_forgets_the_oldest_ended_call_first() -> None:
    """Beyond ``max_calls`` the oldest ended call goes first, even when a live call is older; with no ended
    call, the oldest call."""
    tap = EventTap(max_calls=2)
    live, ended, third, fourth = "a" * 32, "b" * 32, "c" * 32, "d" * 32
    publish(tap, live, 1, "call.started")
    publish(tap, ended, 1, "call.started")
    publish(tap, ended, 2, "call.ended")
    publish(tap, third, 1, "call.started")
    assert tap.knows(live) and not tap.knows(ended) and tap.knows(third)
    publish(tap, fourth, 1, "call.started")
    assert not tap.knows(live) and tap.knows(third) and tap.knows(fourth)


def test_a_call_is_forgotten_keep_s_after_its_end() -> None:
    """A call's events are kept ``keep_s`` after call.ended (by the tap's clock), then forgotten."""
    clock = Clock()
    tap = EventTap(keep_s=600.0, clock=clock)
    publish(tap, CALL, 1, "call.started")
    clock.now += 10_000  # a live call is never forgotten by age
    assert tap.knows(CALL)
    publish(tap, CALL, 2, "call.ended")
    clock.now += 599.0
    assert tap.knows(CALL)
    clock.now += 2.0
    assert not tap.knows(CALL)


def test_open_makes_a_call_known_before_its_first_event() -> None:
    """``open`` lets a follower start before the call's first event (the 201 comes first)."""
    tap = EventTap()
    assert not tap.knows(CALL)
    tap.open(CALL)
    assert tap.knows(CALL)
    follower = tap.follow(CALL)
    publish(tap, CALL, 1, "call.dialing")
    assert [e[1] for e in follower.take()] == ["call.dialing"]
    follower.close()


async def test_a_slow_follower_is_ended_and_resumes_from_what_it_got() -> None:
    """A follower more than ``max_behind`` events behind is ended (its queue freed); the call goes on, and a
    new follower after its last sequence gets the kept events."""
    tap = EventTap(max_behind=5)
    publish(tap, CALL, 1, "call.started")
    follower = tap.follow(CALL)
    assert [e[0] for e in follower.take()] == [1]
    for seq in range(2, 8):  # 6 more: one over the bound
        publish(tap, CALL, seq, "utterance.final")
    assert follower.reason == "behind" and follower.finished() and tap.ended_behind == 1
    assert await collect(follower) == []
    assert tap.followers == 0
    publish(tap, CALL, 8, "utterance.final")  # publishing goes on as before
    again = tap.follow(CALL, after=follower.position)
    assert [e[0] for e in again.take()] == [2, 3, 4, 5, 6, 7, 8]
    again.close()


async def test_forgetting_a_call_ends_its_waiting_followers() -> None:
    """A follower waiting on a call that gets forgotten (here: evicted by ``max_calls``) ends at once."""
    tap = EventTap(max_calls=1)
    publish(tap, CALL, 1, "call.started")
    follower = tap.follow(CALL)
    task = asyncio.create_task(collect(follower, timeout=2.0))
    await asyncio.sleep(0.01)
    publish(tap, OTHER, 1, "call.started")
    assert await task == [(1, "call.started")]
    assert follower.reason == "forgotten"


def test_follower_bounds() -> None:
    """At most ``followers_per_call`` per call and ``max_followers`` in all; closing frees a place."""
    tap = EventTap(followers_per_call=2, max_followers=3)
    publish(tap, CALL, 1, "call.started")
    publish(tap, OTHER, 1, "call.started")
    first, second = tap.follow(CALL), tap.follow(CALL)
    with pytest.raises(FollowerLimit):
        tap.follow(CALL)
    third = tap.follow(OTHER)
    with pytest.raises(FollowerLimit):
        tap.follow(OTHER)
    first.close()
    first.close()  # twice is harmless
    fourth = tap.follow(OTHER)
    assert tap.followers == 3
    for f in (second, third, fourth):
        f.close()
    assert tap.followers == 0


def test_sse_frame_splits_lines_per_the_spec() -> None:
    """A body with CR, LF or CRLF inside becomes several data lines, joined back with LF by a reader."""
    frame = sse_frame(7, "call.odd", "one\ntwo\r\nthree\rfour")
    events, _ = spec_parse(frame.encode())
    assert events == [SpecEvent("call.odd", "one\ntwo\nthree\nfour", "7")]


# -- the route --------------------------------------------------------------------------------------


def events_app(tap: EventTap, token: str | None = TOKEN) -> web.Application:
    app = web.Application()
    app[SETTINGS] = Settings.load(environ={"BRIDGE_API_TOKEN": token} if token else {})
    app[EVENT_TAP] = tap
    add_routes(app)
    return app


async def serve(aiohttp_server: Any, app: web.Application) -> str:
    server: TestServer = await aiohttp_server(app, host="127.0.0.1")
    return str(server.make_url("")).rstrip("/")


AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def test_route_refuses_without_token_and_unknown_calls(aiohttp_server: Any) -> None:
    """401 a wrong token, 403 with the API off, 404 an impossible id or a call the tap does not hold, 400 a bad
    Last-Event-ID; every error body is ``{"error": ...}``."""
    tap = EventTap()
    publish(tap, CALL, 1, "call.started")
    base = await serve(aiohttp_server, events_app(tap))
    off = await serve(aiohttp_server, events_app(EventTap(), token=None))
    async with aiohttp.ClientSession() as http:
        cases = [
            (f"{base}/v1/calls/{CALL}/events", {"Authorization": "Bearer wrong"}, 401),
            (f"{off}/v1/calls/{CALL}/events", AUTH, 403),
            (f"{base}/v1/calls/not-a-call/events", AUTH, 404),
            (f"{base}/v1/calls/{OTHER}/events", AUTH, 404),
            (f"{base}/v1/calls/{CALL}/events", {**AUTH, "Last-Event-ID": "x1"}, 400),
            (f"{base}/v1/calls/{CALL}/events?after=-1", AUTH, 400),
        ]
        for url, headers, status in cases:
            async with http.get(url, headers=headers) as resp:
                assert resp.status == status, url
                assert "error" in await resp.json()
        async with http.get(f"{base}/v1/calls/{OTHER}/events", headers=AUTH) as resp:
            assert (await resp.json())["error"].startswith(f"no call {OTHER}")


async def test_stream_framing_resume_and_end(aiohttp_server: Any) -> None:
    """Each event arrives as id/event/data exactly as published (a body with a line break split and joined
    back), the stream ends after call.ended and transcript.completed, Last-Event-ID and ?after= resume, and
    once nothing more can come the answer is 204."""
    tap = EventTap()
    published = [
        (1, "call.dialing", body("call.dialing", 1, carrier_call_id="CA42")),
        (2, "call.started", body("call.started", 2, call={"id": CALL, "direction": "outbound"})),
        (3, "utterance.final", body("utterance.final", 3, utterance={"text": "héllo\nthere"})),
    ]
    for event in published:
        tap.publish(CALL, *event)
    base = await serve(aiohttp_server, events_app(tap))
    url = f"{base}/v1/calls/{CALL}/events"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        async with http.get(url, headers=AUTH) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].split(";")[0] == "text/event-stream"
            assert resp.headers["Cache-Control"] == "no-cache"
            first = await resp.content.readuntil(b"\n\n")
            assert spec_parse(first)[0] == [SpecEvent("call.dialing", published[0][2], "1")]
            live = [
                (4, "call.ended", body("call.ended", 4, summary={"end_reason": "hangup"})),
                (5, "transcript.completed", body("transcript.completed", 5, conversation=[])),
            ]
            for event in live:
                tap.publish(CALL, *event)
            rest = await asyncio.wait_for(resp.content.read(), 5.0)  # the server ends the stream
        events, _ = spec_parse(first + rest)
        assert [(int(e.last_event_id), e.type, e.data) for e in events] == [*published, *live]
        async with http.get(url, headers={**AUTH, "Last-Event-ID": "3"}) as resp:
            events, _ = spec_parse(await asyncio.wait_for(resp.read(), 5.0))
            assert [e.last_event_id for e in events] == ["4", "5"]
        async with http.get(f"{url}?after=4", headers=AUTH) as resp:
            events, _ = spec_parse(await asyncio.wait_for(resp.read(), 5.0))
            assert [e.type for e in events] == ["transcript.completed"]
        async with http.get(url, headers={**AUTH, "Last-Event-ID": "5"}) as resp:
            assert resp.status == 204


async def test_lost_events_keepalive_and_follower_bound(aiohttp_server: Any) -> None:
    """A resume from before the kept events gets a comment naming the loss, an idle stream gets ``:
    keepalive`` comments, and a ninth follower of a call gets 429 with Retry-After."""
    tap = EventTap(per_call=2, keepalive_s=0.2)
    for seq in (1, 2, 3):
        publish(tap, CALL, seq, "utterance.final")
    base = await serve(aiohttp_server, events_app(tap))
    url = f"{base}/v1/calls/{CALL}/events"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        streams = [await http.get(url, headers=AUTH) for _ in range(8)]
        try:
            assert all(r.status == 200 for r in streams)
            async with http.get(url, headers=AUTH) as refused:
                assert refused.status == 429 and refused.headers["Retry-After"].isdigit()
                assert "at most 8" in (await refused.json())["error"]
            head = await asyncio.wait_for(streams[0].content.readuntil(b": keepalive\n\n"), 5.0)
            events, comments = spec_parse(head)
            assert [e.last_event_id for e in events] == ["2", "3"]
            assert comments[0] == " events up to sequence 1 are no longer kept" and comments[-1] == " keepalive"
        finally:
            for r in streams:
                r.close()
        await wait_until(lambda: tap.followers == 0, 5.0)  # the readers went: their places are free


async def wait_until(condition: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_a_reader_that_takes_nothing_is_cut_off(aiohttp_server: Any) -> None:
    """A client that never reads its socket blocks a write; after ``send_timeout_s`` the connection is
    dropped and its follower's place freed, while publishing never waited."""
    tap = EventTap(send_timeout_s=0.5)
    publish(tap, CALL, 1, "call.started")
    server: TestServer = await aiohttp_server(events_app(tap), host="127.0.0.1")
    assert server.port is not None
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        request = f"GET /v1/calls/{CALL}/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
        sock.sendall(request.encode())
        await wait_until(lambda: tap.followers == 1, 5.0)
        big = body("utterance.final", 0, text="x" * 200_000)
        slowest = 0.0
        for seq in range(2, 200):
            started = time.perf_counter()
            tap.publish(CALL, seq, "utterance.final", big)
            slowest = max(slowest, time.perf_counter() - started)
            await asyncio.sleep(0)
            if tap.followers == 0:
                break
        await wait_until(lambda: tap.followers == 0, 5.0)
        assert slowest < 0.05
    finally:
        sock.close()


# -- bridge dial --------------------------------------------------------------------------------------


def dial_args(base: str, *extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bridge dial")
    add_arguments(parser)
    return parser.parse_args(["+15550142", "--from", "+15550002", "--bridge", base, "--token", TOKEN, *extra])


def sse(sequence: int, type_: str, **payload: Any) -> bytes:
    return f"id: {sequence}\nevent: {type_}\ndata: {body(type_, sequence, **payload)}\n\n".encode()


class FakeBridge:
    """POST /v1/calls and the events route, scripted: each GET of the events plays the next script; a
    script ending in None holds the stream open."""

    def __init__(self, scripts: list[list[bytes | None]], create_status: int = 201) -> None:
        self.scripts = scripts
        self.create_status = create_status
        self.orders: list[tuple[dict[str, Any], dict[str, str]]] = []
        self.event_requests: list[dict[str, str]] = []
        self.app = web.Application()
        self.app.router.add_post("/v1/calls", self.create)
        self.app.router.add_get("/v1/calls/{call_id}/events", self.events)

    async def create(self, request: web.Request) -> web.Response:
        self.orders.append((await request.json(), dict(request.headers)))
        if self.create_status != 201:
            return web.json_response({"error": "+15550142 is not in BRIDGE_DIAL_TO"}, status=self.create_status)
        return web.json_response({"id": CALL, "status": "queued", "carrier_call_id": "CA77"}, status=201)

    async def events(self, request: web.Request) -> web.StreamResponse:
        self.event_requests.append(dict(request.headers))
        script = self.scripts.pop(0) if self.scripts else []
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for chunk in script:
            if chunk is None:  # hold the stream open until the client leaves
                while request.transport is not None and not request.transport.is_closing():
                    await asyncio.sleep(0.05)
                break
            await resp.write(chunk)
        return resp


async def run_dial(aiohttp_server: Any, fake: FakeBridge, *extra: str) -> int:
    base = await serve(aiohttp_server, fake.app)
    args = dial_args(base, *extra)
    return await asyncio.wait_for(asyncio.to_thread(dial_command, args), 20.0)


async def test_dial_places_the_call_and_prints_its_events(aiohttp_server: Any, capsys: Any) -> None:
    """The order is POSTed as asked (Idempotency-Key, Bearer), each event printed with its useful fields (the
    live notices skipped), a broken stream resumed with Last-Event-ID, and the exit status is 0 at call.ended."""
    fake = FakeBridge(
        [
            [sse(1, "call.dialing", data={"carrier_call_id": "CA77"}), b": keepalive\n\n"],  # then the connection ends
            [
                sse(2, "call.started", call={"id": CALL, "direction": "outbound"}),
                sse(3, "call.answered_by", answered_by="machine", detection_ms=2300),
                sse(4, "call.beep", after_ms=5400),
                b'event: utterance.partial\ndata: {"type":"utterance.partial","text":"Please"}\n\n',  # not printed
                sse(5, "utterance.final", utterance={"text": "Please leave a message", "speaker": "caller"}),
                sse(6, "playback.interrupted", action_id="first_say", played_ms=800, reason="machine"),
                sse(7, "call.ended", summary={"end_reason": "hangup"}),
                None,
            ],
        ]
    )
    code = await run_dial(
        aiohttp_server, fake, "--machine-detection", "detect_message_end", "--param", "campaign=x", "--first-say", "Hi"
    )
    out = capsys.readouterr().out
    assert code == 0, out
    order, headers = fake.orders[0]
    assert order == {
        "to": "+15550142",
        "from": "+15550002",
        "carrier": "twilio",
        "machine_detection": "detect_message_end",
        "parameters": {"campaign": "x"},
        "first_say": "Hi",
    }
    assert headers["Authorization"] == f"Bearer {TOKEN}" and len(headers["Idempotency-Key"]) >= 16
    assert "Last-Event-ID" not in fake.event_requests[0] and fake.event_requests[1]["Last-Event-ID"] == "1"
    lines = out.splitlines()
    assert lines[0] == f"call {CALL} queued (CA77)"
    expected = [
        "call.dialing           carrier_call_id=CA77",
        "call.started           direction=outbound",
        "call.answered_by       answered_by=machine detection_ms=2300",
        "call.beep              after_ms=5400",
        'utterance.final        speaker=caller text="Please leave a message"',
        "playback.interrupted   action_id=first_say played_ms=800 reason=machine",
        "call.ended             end_reason=hangup",
    ]
    assert [line.split("s  ", 1)[1] for line in lines[1:]] == expected


async def test_dial_exit_status_for_a_call_not_answered(aiohttp_server: Any, capsys: Any) -> None:
    """call.failed then call.ended: exit 1 at once; call.failed with no call.ended: exit 1 after 3 s."""
    fake = FakeBridge([[sse(1, "call.dialing"), sse(2, "call.failed", status="busy"), sse(3, "call.ended"), None]])
    assert await run_dial(aiohttp_server, fake) == 1
    assert "call.failed            status=busy" in capsys.readouterr().out
    fake = FakeBridge([[sse(1, "call.dialing"), sse(2, "call.failed", status="no-answer"), None]])
    started = time.monotonic()
    assert await run_dial(aiohttp_server, fake) == 1
    assert 2.5 < time.monotonic() - started < 10


async def test_dial_exit_status_for_refusals_and_timeouts(aiohttp_server: Any, capsys: Any) -> None:
    """A refused order exits 2 printing the bridge's error body; a call with no end within --timeout exits 3."""
    fake = FakeBridge([], create_status=403)
    assert await run_dial(aiohttp_server, fake) == 2
    assert "403" in (err := capsys.readouterr().err) and "is not in BRIDGE_DIAL_TO" in err
    fake = FakeBridge([[sse(1, "call.dialing"), None]])
    assert await run_dial(aiohttp_server, fake, "--timeout", "0.5") == 3
    assert "no call.ended within 0.5 s" in capsys.readouterr().err


def test_order_body_checks_the_arguments() -> None:
    """--param needs NAME=VALUE and --from is needed; --ring-timeout goes as ring_timeout_s."""
    assert order_body(dial_args("http://x", "--param", "oops")) == "--param needs NAME=VALUE, got 'oops'"
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    no_from = parser.parse_args(["+15550142", "--from", ""])
    assert isinstance(order_body(no_from), str)
    assert order_body(dial_args("http://x", "--ring-timeout", "45", "--carrier", "telnyx")) == {
        "to": "+15550142",
        "from": "+15550002",
        "carrier": "telnyx",
        "machine_detection": "off",
        "ring_timeout_s": 45,
    }


STREAM = (
    "\ufeff: hello\r\n"
    'id: 1\r\nevent: call.dialing\r\ndata: {"a":1}\r\n\r\n'
    "data\n\n"  # a field with no colon: empty data, dispatched as a message
    "id: 2\revent: x\rdata:  two spaces\rdata: second\r\r"
    "id: a\x00b\nevent: ignored-id\ndata: z\n\n"
    "event: nodata\n\n"
    "retry: 3000\nid\ndata: after an empty id\n\n"
    "data: unterminated"
)


@pytest.mark.parametrize("size", [1, 2, 3, 7, len(STREAM)])
def test_command_parser_agrees_with_the_spec_reader(size: int) -> None:
    """The command's incremental parser, fed in chunks of any size (a CRLF split across two), dispatches
    what the spec reader does."""
    parser = SseParser()
    got = []
    for i in range(0, len(STREAM), size):
        got += [(e.type, e.data, e.id) for e in parser.feed(STREAM[i : i + size])]
    expected, _ = spec_parse(STREAM.encode())
    assert got == [(e.type, e.data, e.last_event_id) for e in expected]
    assert got[1] == ("message", "", "1") and got[2] == ("x", " two spaces\nsecond", "2")
    assert got[3][2] == "2" and got[-1] == ("message", "after an empty id", "")
    assert parser.retry == 3000


def test_event_line_finds_fields_wherever_the_body_keeps_them() -> None:
    """Fields are found at the body's top, in ``data``, or in a nested object; other events print bare."""
    assert event_line(1.5, "call.ended", body("call.ended", 9, summary={"end_reason": "not_answered"})).endswith(
        "call.ended             end_reason=not_answered"
    )
    assert event_line(0.25, "call.beep", body("call.beep", 3, data={"after_ms": 4100})).endswith("after_ms=4100")
    assert event_line(0.25, "stt.failed", body("stt.failed", 3, reason="x")).endswith("stt.failed")
    assert event_line(0.25, "odd", "not json").endswith("odd                    not json")


async def test_a_reader_that_leaves_frees_its_place_without_waiting_for_keepalive(aiohttp_server: Any) -> None:
    """A client that closes its connection on an idle stream (no event, keepalive 15 s away) is noticed
    within about a second: its follower's place is free again."""
    tap = EventTap()
    publish(tap, CALL, 1, "call.started")
    base = await serve(aiohttp_server, events_app(tap))
    async with aiohttp.ClientSession() as http:
        resp = await http.get(f"{base}/v1/calls/{CALL}/events", headers=AUTH)
        await resp.content.readuntil(b"\n\n")
        assert tap.followers == 1
        resp.close()
    await wait_until(lambda: tap.followers == 0, 3.0)


def test_the_tap_never_holds_more_than_its_bytes() -> None:
    """The calls ended longest ago are forgotten first, then the oldest events of the call publishing."""
    tap = EventTap(max_bytes=1000)
    body = "x" * 300
    tap.publish("a" * 32, 1, "call.started", body)
    tap.publish("a" * 32, 2, "call.ended", body)
    tap.publish("b" * 32, 1, "call.started", body)
    assert tap.bytes == 900
    tap.publish("b" * 32, 2, "utterance.final", body)  # 1200: the ended call a goes
    assert not tap.knows("a" * 32) and tap.bytes == 600
    tap.publish("b" * 32, 3, "utterance.final", body)
    tap.publish("b" * 32, 4, "utterance.final", body)  # 1200 with b alone: its oldest event goes
    assert tap.bytes == 900 and tap.dropped == 1
    follower = tap.follow("b" * 32)
    assert [e[0] for e in follower._pending] == [2, 3, 4] and follower.lost_upto == 1
