"""The bot WebSocket's contract (issue 25): a reader that survives anything a bot sends, a backoff that
grows against a bot that breaks every connection, at-least-once events with cumulative acks, answers
that name the request and the actions they answer, streamed text spoken from its first sentence,
`speech.started` shaped like every event, a wrong token logged as such, and a TTS request that
follows no redirect.

The socket tests run the real :class:`~bridge.reply.bot_socket.BotSocket` and a real
:class:`~bridge.reply.call_reply.CallReply` against a scripted bot on 127.0.0.1; the end-to-end
ones a whole bridge with a Twilio phone. The pure pieces (the message decoder, the window of
unacknowledged events, the sentence buffer) are tested without an event loop."""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
import structlog
from aiohttp import web

from bridge.errors import TtsError
from bridge.reply.actions import parse_actions
from bridge.reply.bot_channel import Ack, Refused, Request, Unacknowledged, decode
from bridge.reply.bot_socket import BotSocket
from bridge.reply.call_reply import CallReply
from bridge.reply.tts import OpenAiSpeech, SentenceBuffer
from bridge.settings import BotWsSettings, ReplySettings
from tests.support.calls import BridgeFactory, wait_for
from tests.support.fakes import FakeGladia, FakeWebhook
from tests.support.phone import phone_call

pytestmark = pytest.mark.timeout(60)

Handler = Callable[[web.WebSocketResponse, "Connection"], Awaitable[None]]


@dataclass
class Connection:
    number: int
    query: dict[str, str]
    headers: dict[str, str]
    received: list[dict[str, Any]] = field(default_factory=list)
    opened: float = field(default_factory=time.monotonic)

    def sequences(self) -> list[int]:
        return [m["sequence"] for m in self.received if "sequence" in m]

    def answers(self) -> list[dict[str, Any]]:
        return [m for m in self.received if m.get("type", "").startswith("actions.")]


class ScriptedBot:
    """A bot on 127.0.0.1: each connection runs ``handler`` (what the bot sends, when it closes);
    every message the bridge sends is recorded on its connection. ``status``: answer the handshake
    with that HTTP status instead (e.g. 401)."""

    def __init__(self, handler: Handler | None = None, status: int | None = None) -> None:
        self.handler = handler
        self.status = status
        self.connections: list[Connection] = []
        self.attempts: list[float] = []
        self.app = web.Application()
        self.app.router.add_get("/bot", self._socket)

    async def _socket(self, request: web.Request) -> web.StreamResponse:
        self.attempts.append(time.monotonic())
        if self.status is not None:
            return web.Response(status=self.status, text="no")
        ws = web.WebSocketResponse(max_msg_size=16 * 1024 * 1024)
        await ws.prepare(request)
        conn = Connection(len(self.connections) + 1, dict(request.query), dict(request.headers))
        self.connections.append(conn)
        reader = asyncio.create_task(self._record(ws, conn))
        try:
            if self.handler is not None:
                await self.handler(ws, conn)
            else:
                await reader
        finally:
            if not ws.closed:
                await ws.close()
            reader.cancel()
            with _suppress_cancel():
                await reader
        return ws

    async def _record(self, ws: web.WebSocketResponse, conn: Connection) -> None:
        async for msg in ws:
            if msg.type is aiohttp.WSMsgType.TEXT:
                conn.received.append(json.loads(msg.data))

    def received(self) -> list[dict[str, Any]]:
        return [m for c in self.connections for m in c.received]

    def answers(self) -> list[dict[str, Any]]:
        return [m for c in self.connections for m in c.answers()]


class _suppress_cancel:
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> bool:
        return kind is asyncio.CancelledError


@dataclass
class Rig:
    bot: ScriptedBot
    url: str
    http: aiohttp.ClientSession
    reply: CallReply
    emitted: list[tuple[str, dict[str, Any]]]

    def socket(self, **settings: Any) -> BotSocket:
        return BotSocket(BotWsSettings(url=self.url, **settings), self.http, "call-1", self.reply.apply)


@pytest.fixture
async def rig(aiohttp_server: Any) -> AsyncIterator[Callable[[ScriptedBot], Awaitable[Rig]]]:
    sessions: list[aiohttp.ClientSession] = []

    async def make(bot: ScriptedBot) -> Rig:
        server = await aiohttp_server(bot.app, host="127.0.0.1")
        http = aiohttp.ClientSession()
        sessions.append(http)
        emitted: list[tuple[str, dict[str, Any]]] = []
        reply = CallReply(
            "call-1",
            settings=ReplySettings(),
            speaker=None,
            http=None,
            emit=lambda t, p: emitted.append((t, p)),
            on_hangup=lambda: None,
        )
        url = str(server.make_url("/bot")).replace("http://", "ws://")
        return Rig(bot, url, http, reply, emitted)

    yield make
    for http in sessions:
        await http.close()


def event(sequence: int, type_: str = "utterance.final") -> str:
    return json.dumps({"type": type_, "sequence": sequence, "timestamp": "t", "call": {"id": "call-1"}})


async def stop(socket: BotSocket) -> None:
    await socket.close(timeout=3.0)


# -- 5: the reader survives anything a bot sends --------------------------------------------------


async def test_deeply_nested_json_is_refused_and_the_reader_keeps_reading(
    rig: Callable[[ScriptedBot], Awaitable[Rig]],
) -> None:
    """~5,000 nested brackets (json.loads would overflow the stack), then a valid request on the same
    connection: the first is refused, the second accepted, no redial, nothing reaches the loop."""

    async def bot(ws: web.WebSocketResponse, conn: Connection) -> None:
        await ws.send_str('{"actions": ' + "[" * 5000 + "]" * 5000 + "}")
        await ws.send_str("[" * 1000 + "]" * 1000)
        await ws.send_str(json.dumps({"actions": [{"type": "mark", "id": "m1", "name": "a"}]}))
        await asyncio.sleep(30)

    r = await rig(ScriptedBot(bot))
    socket = r.socket()
    await wait_for(lambda: len(r.bot.answers()) >= 3, timeout=5)
    answers = r.bot.answers()
    assert [a["type"] for a in answers] == ["actions.refused", "actions.refused", "actions.accepted"]
    assert "deep" in answers[0]["error"] and "deep" in answers[1]["error"]
    assert len(r.bot.connections) == 1
    await stop(socket)


async def test_binary_and_non_object_messages_are_refused_and_reading_goes_on(
    rig: Callable[[ScriptedBot], Awaitable[Rig]],
) -> None:
    async def bot(ws: web.WebSocketResponse, conn: Connection) -> None:
        await ws.send_bytes(b"\x00\x01")
        await ws.send_str("nul")
        await ws.send_str('"just a string"')
        await ws.send_str(json.dumps({"type": "ack", "sequence": "x"}))
        await ws.send_str(json.dumps({"actions": [{"type": "mark", "id": "m1", "name": "a"}]}))
        await asyncio.sleep(30)

    r = await rig(ScriptedBot(bot))
    socket = r.socket()
    await wait_for(lambda: any(a["type"] == "actions.accepted" for a in r.bot.answers()), timeout=5)
    assert [a["type"] for a in r.bot.answers()] == ["actions.refused"] * 4 + ["actions.accepted"]
    assert len(r.bot.connections) == 1
    await stop(socket)


async def test_an_unexpected_error_while_applying_is_refused_logged_and_reading_goes_on(
    aiohttp_server: Any,
) -> None:
    """Whatever goes wrong in the bridge with one message (here the call's apply raises) is answered
    actions.refused and logged with its traceback; the next message is read on the same socket."""
    calls = 0

    def apply(actions: list[Any], key: str | None) -> list[Any]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise KeyError("boom")
        return []

    async def bot(ws: web.WebSocketResponse, conn: Connection) -> None:
        for _ in range(2):
            await ws.send_str(json.dumps({"actions": [{"type": "stop"}]}))
        await asyncio.sleep(30)

    scripted = ScriptedBot(bot)
    server = await aiohttp_server(scripted.app, host="127.0.0.1")
    url = str(server.make_url("/bot")).replace("http://", "ws://")
    async with aiohttp.ClientSession() as http:
        with structlog.testing.capture_logs() as logs:
            socket = BotSocket(BotWsSettings(url=url), http, "call-1", apply)
            await wait_for(lambda: len(scripted.answers()) >= 2, timeout=5)
            await stop(socket)
    assert [a["type"] for a in scripted.answers()] == ["actions.refused", "actions.accepted"]
    assert len(scripted.connections) == 1
    (failed,) = [e for e in logs if e["event"] == "bot_socket.message_failed"]
    assert failed["log_level"] == "error" and failed.get("exc_info")


# -- 13: the backoff grows against a bot that breaks every connection --------------------------------


async def test_a_bot_that_sends_too_big_a_message_on_each_connection_is_redialed_with_a_growing_backoff(
    rig: Callable[[ScriptedBot], Awaitable[Rig]],
) -> None:
    """A message over 8 MiB closes the connection (1009) right after it opened: such a connection
    never proved healthy, so the backoff keeps growing (0.2, 0.4, 0.8, 1.6 s...) instead of starting
    over at every connect (about 40 redials in 10 s before)."""
    big = '{"actions": [], "x": "' + "a" * (8 * 1024 * 1024 + 10) + '"}'

    async def bot(ws: web.WebSocketResponse, conn: Connection) -> None:
        with _suppress_cancel():
            await ws.send_str(big)
            await asyncio.sleep(5)

    r = await rig(ScriptedBot(bot))
    socket = r.socket()
    await asyncio.sleep(3.2)
    opened = [c.opened for c in r.bot.connections]
    await stop(socket)
    assert 2 <= len(opened) <= 6, len(opened)
    gaps = [b - a for a, b in itertools.pairwise(opened)]
    assert gaps[-1] > 2 * gaps[0]


async def test_a_healthy_connection_starts_the_backoff_over(rig: Callable[[ScriptedBot], Awaitable[Rig]]) -> None:
    """A connection on which the bot acknowledged an event proved healthy: after it drops, the next
    dial comes after the first delay again, not after a grown one."""

    async def bot(ws: web.WebSocketResponse, conn: Connection) -> None:
        if conn.number <= 3:
            await ws.close()  # three unhealthy connections: the delay grows to 0.8 s
            return
        await wait_for(lambda: bool(conn.sequences()), timeout=10)
        await ws.send_str(json.dumps({"type": "ack", "sequence": conn.sequences()[-1]}))
        await asyncio.sleep(0.1)
        if conn.number == 4:
            await ws.close()
            return
        await asyncio.sleep(30)

    r = await rig(ScriptedBot(bot))
    socket = r.socket()
    socket.send_event(event(1))
    await wait_for(lambda: len(r.bot.connections) >= 5, timeout=10)
    c = r.bot.connections
    assert c[4].opened - c[3].opened < 0.6  # 0.1 s up + a 0.2 s (+20 %) delay, not 1.6 s
    await stop(socket)


# -- 21: at-least-once events, cumulative acks ----------------------------------------------------------


async def test_events_the_bot_did_not_acknowledge_are_resent_after_a_redial(
    rig: Callable[[ScriptedBot], Awaitable[Rig]],
) -> None:
    """Events 1-3 are written; the bot acks 1 and its socket goes away. After the redial the bridge
    sends 2 and 3 again, in order, with the same sequence numbers, then what came meanwhile."""

    async def bot(ws: web.WebSocketResponse, conn: Connection) -> None:
        if conn.number == 1:
            await wait_for(lambda: len(conn.sequences()) == 3, timeout=10)
            await ws.send_str(json.dumps({"type": "ack", "sequence": 1}))
            await asyncio.sleep(0.1)
            await ws.close()
            return
        while True:
            await asyncio.sleep(0.02)
            if conn.sequences():
                await ws.send_str(json.dumps({"type": "ack", "sequence": conn.sequences()[-1]}))

    r = await rig(ScriptedBot(bot))
    socket = r.socket()
    for n in (1, 2, 3):
        socket.send_event(event(n))
    await wait_for(lambda: len(r.bot.connections) == 2, timeout=5)
    socket.send_event(event(4))
    await wait_for(lambda: 4 in r.bot.connections[1].sequences(), timeout=5)
    assert r.bot.connections[0].sequences() == [1, 2, 3]
    assert r.bot.connections[1].sequences() == [2, 3, 4]
    await stop(socket)


async def test_a_bot_that_never_acks_still_works_and_gets_unacknowledged_events_again(
    rig: Callable[[ScriptedBot], Awaitable[Rig]],
) -> None:
    """No acks at all: every event is written, actions are applied; after a redial the events it
    never acknowledged come again (it drops duplicates by ``sequence``)."""

    async def bot(ws: web.WebSocketResponse, conn: Connection) -> None:
        if conn.number == 1:
            await wait_for(lambda: len(conn.sequences()) == 2, timeout=10)
            await ws.send_str(json.dumps({"actions": [{"type": "mark", "id": "m1", "name": "a"}]}))
            await asyncio.sleep(0.1)
            await ws.close()
            return
        await asyncio.sleep(30)

    r = await rig(ScriptedBot(bot))
    socket = r.socket()
    socket.send_event(event(1))
    socket.send_event(event(2))
    await wait_for(lambda: len(r.bot.connections) == 2 and len(r.bot.connections[1].sequences()) == 2, timeout=5)
    assert r.bot.connections[1].sequences() == [1, 2]
    assert r.bot.answers()[0]["type"] == "actions.accepted"
    await stop(socket)


async def test_the_close_after_call_ended_waits_for_the_last_ack(rig: Callable[[ScriptedBot], Awaitable[Rig]]) -> None:
    """A bot that acknowledges gets to acknowledge call.ended before the socket is closed with 1000."""
    acked_at: list[float] = []

    async def bot(ws: web.WebSocketResponse, conn: Connection) -> None:
        await wait_for(lambda: 1 in conn.sequences(), timeout=10)
        await ws.send_str(json.dumps({"type": "ack", "sequence": 1}))
        await wait_for(lambda: 2 in conn.sequences(), timeout=10)
        await asyncio.sleep(0.5)  # a slow bot
        await ws.send_str(json.dumps({"type": "ack", "sequence": 2}))
        acked_at.append(time.monotonic())
        await asyncio.sleep(10)

    r = await rig(ScriptedBot(bot))
    socket = r.socket()
    socket.send_event(event(1))
    await wait_for(lambda: bool(r.bot.connections) and 1 in r.bot.connections[0].sequences(), timeout=5)
    await asyncio.sleep(0.1)
    socket.send_event(event(2, "call.ended"))
    await socket.close(timeout=5.0)
    closed_at = time.monotonic()
    assert acked_at and acked_at[0] <= closed_at
    assert socket.unacknowledged == 0


# -- 23 and 24: answers that say what they answer ---------------------------------------------------


async def test_answers_echo_the_request_id_and_name_the_actions_by_their_stream(
    rig: Callable[[ScriptedBot], Awaitable[Rig]],
) -> None:
    """actions.accepted carries the bot's request_id and, for a streamed say piece or an audio chunk,
    the stream_id as the action's id (the id the playback events use); actions.refused carries the
    request_id and the ids of the actions in the refused message. One bad action refuses the whole
    message: nothing of it is applied."""
    messages = [
        {"request_id": "r1", "actions": [{"type": "say", "stream_id": "s1", "text": "Hello. ", "last": False}]},
        {"request_id": "r2", "actions": [{"type": "say", "stream_id": "s1", "text": "Bye.", "last": True}]},
        {"request_id": "r3", "actions": [{"type": "audio", "stream_id": "a1", "sample_rate": 8000, "audio": ""}]},
        {"request_id": "r4", "actions": [{"type": "mark", "id": "m1", "name": "ok"}, {"type": "say", "id": "x"}]},
        {"actions": [{"type": "mark", "id": "m2", "name": "ok"}]},
    ]

    async def bot(ws: web.WebSocketResponse, conn: Connection) -> None:
        for m in messages:
            await ws.send_str(json.dumps(m))
        await asyncio.sleep(30)

    r = await rig(ScriptedBot(bot))
    socket = r.socket()
    await wait_for(lambda: len(r.bot.answers()) >= len(messages), timeout=5)
    a = r.bot.answers()
    assert [x.get("request_id") for x in a] == ["r1", "r2", "r3", "r4", None]
    assert [x["type"] for x in a] == ["actions.accepted"] * 3 + ["actions.refused", "actions.accepted"]
    assert [x["id"] for x in a[0]["actions"]] == ["s1"]
    assert [x["id"] for x in a[1]["actions"]] == ["s1"]
    assert [x["id"] for x in a[2]["actions"]] == ["a1"]
    assert a[3]["action_ids"] == ["m1", "x"] and a[3]["error"].startswith("actions[1].text")
    assert "m1" not in r.reply.state()["queue"] and "m2" in r.reply.state()["queue"]  # none of r4 applied
    await stop(socket)


def test_a_streamed_action_is_named_by_its_stream() -> None:
    (say, audio, named) = parse_actions(
        {
            "actions": [
                {"type": "say", "stream_id": "s1", "text": "Hi.", "last": False},
                {"type": "audio", "stream_id": "a1", "sample_rate": 8000},
                {"type": "say", "id": "s2", "stream_id": "s2", "text": "Hi."},
            ]
        }
    )
    assert (say.id, audio.id, named.id) == ("s1", "a1", "s2")
    with pytest.raises(Exception, match="stream_id"):
        parse_actions({"actions": [{"type": "say", "id": "other", "stream_id": "s1", "text": "Hi."}]})


# -- 22: streamed text, joined as text and spoken from its first sentence --------------------------


@pytest.mark.parametrize(
    ("pieces", "expected"),
    [
        # one bare sentence per piece: each is complete when its piece ends
        (
            [("Saturday morning.", False), ("The pharmacy opens at nine.", False), ("Bye", True)],
            [["Saturday morning."], ["The pharmacy opens at nine."], ["Bye"]],
        ),
        # pieces that carry their own spaces
        ([("Hello there. How ", False), ("can I help?", True)], [["Hello there."], ["How can I help?"]]),
        # a word cut across pieces is joined as is
        ([("Satur", False), ("day morning", False), (". Then", True)], [[], [], ["Saturday morning.", "Then"]]),
        # a decimal number is not a sentence end: the next piece decides
        ([("It costs 3.", False), ("50 dollars.", True)], [[], ["It costs 3.50 dollars."]]),
        ([("I was born in 1990.", False), ("Then I moved.", True)], [[], ["I was born in 1990.", "Then I moved."]]),
        # quotes and brackets closing a sentence
        ([('He said "yes."', False), ("Fine", True)], [['He said "yes."'], ["Fine"]]),
        ([("Wait!", False), ("", True)], [["Wait!"], []]),
    ],
)
def test_sentence_buffer_joins_pieces_as_text_and_a_piece_ending_a_sentence_completes_it(
    pieces: list[tuple[str, bool]], expected: list[list[str]]
) -> None:
    buffer = SentenceBuffer()
    assert [buffer.push(text, last) for text, last in pieces] == expected


async def test_a_streamed_say_starts_playing_before_its_last_piece_is_sent(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str], aiohttp_server: Any
) -> None:
    """One bare sentence per piece: the first piece is a complete sentence, so playback.started comes
    while the bot still holds its last piece (the bot waits for it, bounded, before sending the rest)."""
    hook, _ = webhook
    fake_gladia.segment_seconds = 3600.0
    order: list[str] = []

    async def bot(ws: web.WebSocketResponse, conn: Connection) -> None:
        await wait_for(lambda: "call.started" in [m.get("type") for m in conn.received], timeout=10)
        await ws.send_str(
            json.dumps({"actions": [{"type": "say", "stream_id": "s1", "text": "Saturday morning.", "last": False}]})
        )
        started = False
        with _suppress_timeout():
            await wait_for(lambda: "playback.started" in [m.get("type") for m in conn.received], timeout=8)
            started = True
        order.append("playback.started" if started else "timeout")
        await ws.send_str(
            json.dumps(
                {"actions": [{"type": "say", "stream_id": "s1", "text": "The pharmacy opens at nine.", "last": True}]}
            )
        )
        order.append("last piece sent")
        await asyncio.sleep(30)

    scripted = ScriptedBot(bot)
    bot_server = await aiohttp_server(scripted.app, host="127.0.0.1")
    ws_url = str(bot_server.make_url("/bot")).replace("http://", "ws://")
    server = await make_bridge({"BOT_WS_URL": ws_url})
    call = await phone_call(
        str(server.make_url("/twilio/stream")),
        b"",
        until=lambda c: bool(hook.events("playback.finished")),
        max_seconds=25,
    )
    assert order == ["playback.started", "last piece sent"]
    (finished,) = hook.events("playback.finished")
    assert finished["action_id"] == "s1"
    assert len(call.texts("mark")) == 2  # two sentences, not "morning dot the pharmacy"
    accepted = [a for a in scripted.answers() if a["type"] == "actions.accepted"]
    assert [x["id"] for a in accepted for x in a["actions"]] == ["s1", "s1"]


class _suppress_timeout:
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> bool:
        return kind is TimeoutError


# -- 25: real-time events shaped like every event; a wrong token logged as such -------------------------


async def test_speech_started_carries_timestamp_and_call_like_every_event(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str], aiohttp_server: Any
) -> None:
    hook, _ = webhook
    fake_gladia.segment_seconds = 3600.0
    fake_gladia.script = [(1.0, {"type": "speech_start", "data": {"time": 1.0, "channel": 0}})]
    scripted = ScriptedBot()
    bot_server = await aiohttp_server(scripted.app, host="127.0.0.1")
    ws_url = str(bot_server.make_url("/bot")).replace("http://", "ws://")
    server = await make_bridge({"BOT_WS_URL": ws_url})
    await phone_call(
        str(server.make_url("/twilio/stream")),
        b"",
        until=lambda c: any(m.get("type") == "speech.started" for m in scripted.received()),
        max_seconds=10,
    )
    (speech,) = [m for m in scripted.received() if m.get("type") == "speech.started"]
    call_id = hook.events("call.started")[0]["call"]["id"]
    assert speech["call_id"] == call_id and speech["call"]["id"] == call_id
    assert "timestamp" in speech and "sequence" not in speech  # real-time: not durable, never resent


async def test_a_wrong_token_is_logged_as_unauthorized_and_retried_with_a_growing_backoff(
    rig: Callable[[ScriptedBot], Awaitable[Rig]],
) -> None:
    r = await rig(ScriptedBot(status=401))
    with structlog.testing.capture_logs() as logs:
        socket = r.socket(token="wrong")
        await asyncio.sleep(2.0)
        await stop(socket)
    unauthorized = [e for e in logs if e["event"] == "bot_socket.unauthorized"]
    assert unauthorized and unauthorized[0]["status"] == 401
    assert not [e for e in logs if e["event"] == "bot_socket.connect_failed"]
    gaps = [b - a for a, b in itertools.pairwise(r.bot.attempts)]
    assert 2 <= len(r.bot.attempts) <= 5 and gaps[-1] > 1.5 * gaps[0]


# -- 15: the TTS request follows no redirect ------------------------------------------------------------


async def test_the_tts_request_does_not_follow_a_redirect(aiohttp_server: Any) -> None:
    """A 307 would re-post the text to another origin: the say fails, naming the status, and the
    other origin gets nothing."""
    elsewhere: list[str] = []

    async def other(request: web.Request) -> web.Response:
        elsewhere.append(await request.text())
        return web.Response(body=b"\x00\x00" * 100)

    other_app = web.Application()
    other_app.router.add_post("/v1/audio/speech", other)
    other_server = await aiohttp_server(other_app, host="127.0.0.1")

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect(str(other_server.make_url("/v1/audio/speech")))

    app = web.Application()
    app.router.add_post("/v1/audio/speech", redirect)
    server = await aiohttp_server(app, host="127.0.0.1")
    async with aiohttp.ClientSession() as http:
        engine = OpenAiSpeech(http, str(server.make_url("")), api_key="k", voice="v", model="m")
        with pytest.raises(TtsError, match="307"):
            await engine.synthesize("My account number is 1234.", None)
    assert elsewhere == []


def test_the_bot_channel_core_imports_no_io() -> None:
    code = (
        "import sys, bridge.reply.bot_channel; "
        "bad = [m for m in ('asyncio', 'aiohttp', 'structlog') if m in sys.modules]; "
        "print(','.join(bad)); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout


# -- the pure core ---------------------------------------------------------------------------------------


def test_the_window_resends_what_was_not_acknowledged_and_counts_what_the_bound_dropped() -> None:
    w = Unacknowledged(limit=3)
    for n in (1, 2, 3):
        assert not w.add(n, f"e{n}")
    written = []
    while (item := w.next()) is not None:
        written.append(item[0])
        w.wrote(item[0])
    assert written == [1, 2, 3] and w.all_written
    assert w.ack(99) == 3 and len(w) == 0 and w.acked_through == 3  # an ack past what was sent counts up to it
    for n in (4, 5, 6):
        w.add(n, f"e{n}")
    w.wrote(w.next()[0])  # type: ignore[index]
    assert w.ack(4) == 1 and w.next() == (5, "e5")
    w.rewind()  # a redial: from the first unacknowledged one
    assert w.next() == (5, "e5")
    assert w.add(7, "e7") is False and w.add(8, "e8") is True  # over the bound: the oldest goes
    assert (w.dropped, w.dropped_unsent, [w.next()]) == (1, 1, [(6, "e6")])
    assert w.ack(8) == 0  # nothing past what was written is released


@pytest.mark.parametrize(
    ("text", "kind", "detail"),
    [
        ('{"type": "ack", "sequence": 4}', Ack, 4),
        ('{"type": "ack", "sequence": true}', Refused, "an ack is"),
        ('{"type": "ack", "sequence": 4, "x": 1}', Refused, "an ack is"),
        ('{"actions": [], "request_id": 5}', Refused, "request_id"),
        ('{"actions": [], "idempotency_key": ""}', Refused, "idempotency_key"),
        ("[" * 40 + "]" * 40, Refused, "deeper than 32"),
        ("[1]", Refused, "a message is a JSON object"),
        ('{"actions": [{"type": "stop"}], "request_id": "r", "idempotency_key": "k"}', Request, "r"),
    ],
)
def test_decode_never_raises_and_says_what_was_wrong(text: str, kind: type, detail: Any) -> None:
    message = decode(text)
    assert isinstance(message, kind)
    match message:
        case Ack():
            assert message.sequence == detail
        case Refused():
            assert detail in message.error
        case Request():
            assert message.request_id == detail and message.idempotency_key == "k"
