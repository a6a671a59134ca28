"""The bot socket is durable across a bridge crash when it is the only channel (BOT_WS_URL, no
BOT_WEBHOOK_URL): the outbox keeps each event until the bot acknowledges it on the socket, and the
next start dials the bot for each call a crash left and sends what it had not acknowledged, in order,
with the same sequence numbers, then ``call.ended`` with ``end_reason: bridge_restarted``.

A real ``bridge serve`` is SIGKILLed mid-call and started again on the same data dir; the bot is an
aiohttp WebSocket server on 127.0.0.1. The start-up resend's own rules (actions refused, what the bot
never acknowledges kept until ``webhook.max_age``, then dead) run in-process against a real outbox.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bridge.delivery import PendingEvent, event_body, webhook_id
from bridge.delivery.outbox import Outbox, OutboxWriter
from bridge.reply.bot_resend import resend_left_over
from bridge.settings import BotWsSettings
from bridge.tools.writers.twilio import TwilioStreamWriter
from tests.support.bridge_process import start_bridge
from tests.support.calls import BridgeFactory, caller_audio, play_call, wait_for
from tests.support.fakes import FakeGladia
from tests.support.process import minimal_env

pytestmark = pytest.mark.timeout(90)


@dataclass
class Socket:
    call_id: str
    token: str | None
    received: list[dict[str, Any]] = field(default_factory=list)
    close_code: int | None = None

    def durable(self) -> list[dict[str, Any]]:
        return [m for m in self.received if "sequence" in m]


class AckingBot:
    """A bot on 127.0.0.1 that acknowledges every durable event up to ``ack_through`` (None: all;
    0: none). ``actions``: sent once on each socket, right after the first durable event."""

    def __init__(self, ack_through: int | None = None, actions: dict[str, Any] | None = None) -> None:
        self.ack_through = ack_through
        self.actions = actions
        self.sockets: list[Socket] = []
        self.app = web.Application()
        self.app.router.add_get("/bot", self._socket)

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        sock = Socket(request.query.get("call_id", ""), request.headers.get("Authorization"))
        self.sockets.append(sock)
        async for msg in ws:
            data = json.loads(msg.data)
            sock.received.append(data)
            sequence = data.get("sequence")
            if sequence is None:
                continue
            if self.ack_through is None or sequence <= self.ack_through:
                await ws.send_str(json.dumps({"type": "ack", "sequence": sequence}))
            if self.actions is not None and len(sock.durable()) == 1:
                await ws.send_str(json.dumps(self.actions))
        sock.close_code = ws.close_code
        return ws


async def serve_bot(bot: AckingBot, aiohttp_server: Any) -> str:
    server = await aiohttp_server(bot.app, host="127.0.0.1")
    return str(server.make_url("/bot")).replace("http://", "ws://")


def stored(data: Path, call_id: str | None = None) -> tuple[list[tuple[int, str]], list[str]]:
    """The outbox file's events (sequence, state) for ``call_id``, and its unfinished calls."""
    if not (data / "outbox.sqlite3").exists():
        return [], []
    box = Outbox.in_dir(data)
    try:
        return [(e.sequence, e.state) for e in box.events(call_id=call_id)], [c[0] for c in box.unfinished_calls()]
    finally:
        box.close()


async def test_sigkill_mid_call_then_restart_resends_the_unacknowledged_events_on_the_bot_socket(
    fake_gladia: FakeGladia, aiohttp_server: Any, tmp_path: Path
) -> None:
    """Socket only: the bot acknowledges events up to 2 of a call; the bridge is SIGKILLed mid-call.
    Started again on the same data dir, it dials the bot for that call (same call id and token) and
    sends the events the bot had not acknowledged, in order, with their sequence numbers, then
    call.ended with bridge_restarted; once the bot acknowledges them the outbox holds nothing of the
    call. An action sent on that socket is refused: the call has ended."""
    bot = AckingBot(ack_through=2, actions={"request_id": "late", "actions": [{"type": "say", "text": "hi"}]})
    bot_url = await serve_bot(bot, aiohttp_server)
    data = tmp_path / "data"
    env = minimal_env(
        GLADIA_API_URL=fake_gladia.base_url,
        GLADIA_API_KEY="test-key",
        BOT_WS_URL=bot_url,
        BOT_WS_TOKEN="bot-token",
        BRIDGE_DATA_DIR=str(data),
    )
    bridge = await start_bridge(env)
    audio = caller_audio(3.0)
    writer = TwilioStreamWriter("CA" + "8" * 32, "MZ" + "8" * 32, parameters={"From": "+1", "To": "+2"})
    try:
        async with aiohttp.ClientSession() as http, http.ws_connect(f"{bridge.ws}/twilio/stream") as ws:
            await ws.send_str(writer.connected())
            await ws.send_str(writer.start())
            for i in range(0, len(audio), 160):
                await ws.send_str(writer.media(audio[i : i + 160]))
            # call.started + the finals reached the bot; the outbox accepted what it did not acknowledge
            await wait_for(lambda: len(bot.sockets) == 1 and len(bot.sockets[0].durable()) >= 4, timeout=20)
            call_id = bot.sockets[0].call_id

            def unacknowledged() -> list[int]:
                return [m["sequence"] for m in bot.sockets[0].durable() if m["sequence"] > 2]

            await wait_for(lambda: stored(data, call_id)[0] == [(s, "pending") for s in unacknowledged()], timeout=10)
            assert stored(data)[1] == [call_id]  # the call never recorded its end
            bridge.proc.send_signal(signal.SIGKILL)
            await bridge.proc.wait()
    finally:
        await bridge.stop()
    sent = [m["sequence"] for m in bot.sockets[0].durable()]
    unacked = [s for s in sent if s > 2]
    assert sent == list(range(1, len(sent) + 1)) and len(unacked) >= 2
    assert bot.sockets[0].durable()[0]["type"] == "call.started"

    bot.ack_through = None  # the bot acknowledges everything from now on
    bridge = await start_bridge(env)
    try:
        await wait_for(lambda: len(bot.sockets) == 2 and bot.sockets[1].close_code is not None, timeout=20)
        await wait_for(lambda: stored(data) == ([], []), timeout=5)
    finally:
        await bridge.stop()
    again = bot.sockets[1]
    assert again.call_id == call_id and again.token == "Bearer bot-token"
    resent = again.durable()
    assert [m["sequence"] for m in resent] == [*unacked, unacked[-1] + 1]  # in order, the same numbers
    first = {m["sequence"]: m for m in bot.sockets[0].durable()}
    assert resent[:-1] == [first[s] for s in unacked]  # the very same bodies
    ended = resent[-1]
    assert ended["type"] == "call.ended" and ended["summary"]["end_reason"] == "bridge_restarted"
    assert ended["call"]["id"] == call_id and ended["call"]["call_sid"] == "CA" + "8" * 32
    refused = [m for m in again.received if m.get("type") == "actions.refused"]
    assert refused == [
        {"type": "actions.refused", "request_id": "late", "error": "the call has ended", "action_ids": [None]}
    ]
    assert again.close_code == 1000


@pytest.mark.parametrize("ack_through", [None, 0], ids=["acks-everything", "never-acks"])
async def test_a_call_that_ends_leaves_nothing_in_the_outbox(
    make_bridge: BridgeFactory, aiohttp_server: Any, tmp_path: Path, ack_through: int | None
) -> None:
    """Socket only, no crash: once the call is over its events leave the outbox, whether the bot
    acknowledged each (released by its acks) or never acknowledges anything (it had every event once
    when the socket closed: nothing is kept for it), so the outbox does not grow call after call."""
    bot = AckingBot(ack_through=ack_through)
    bot_url = await serve_bot(bot, aiohttp_server)
    server = await make_bridge({"BOT_WEBHOOK_URL": "", "BOT_WS_URL": bot_url})
    await play_call(str(server.make_url("/twilio/stream")), caller_audio(2.0))
    await wait_for(lambda: len(bot.sockets) == 1 and bot.sockets[0].close_code is not None)
    types = [m["type"] for m in bot.sockets[0].durable()]
    assert types[0] == "call.started" and types[-2:] == ["call.ended", "transcript.completed"]
    await server.close()  # the outbox writer commits what it has queued
    assert (tmp_path / "data" / "outbox.sqlite3").exists()
    assert stored(tmp_path / "data") == ([], [])


def left_over(call_id: str, created: list[float]) -> list[PendingEvent]:
    events = []
    for sequence, at in enumerate(created, start=1):
        body = event_body("utterance.final", sequence, {"call": {"id": call_id}})
        events.append(PendingEvent(webhook_id(call_id, sequence), body, call_id, "utterance.final", sequence, at))
    return events


async def resend(bot_url: str, events: list[PendingEvent], data: Path, *, wait: float, max_age: float = 600.0) -> int:
    """Run the start-up resend of ``events`` (stored in the outbox of ``data`` first); returns how
    many the bot acknowledged. The outbox is closed (everything committed) when it returns."""
    writer = OutboxWriter(Outbox.in_dir(data), commit_delay=0.0)
    for e in events:
        writer.outbox.add(e.webhook_id, e.call_id, e.sequence, e.type, e.body, e.created)
    writer.start()
    async with aiohttp.ClientSession() as http:
        acked = await resend_left_over(
            BotWsSettings(url=bot_url, token="t"), http, events, writer, max_age=max_age, wait=wait
        )
    await asyncio.to_thread(writer.close)
    return acked


async def test_what_the_bot_never_acknowledges_stays_pending_until_max_age_then_is_dead(
    aiohttp_server: Any, tmp_path: Path
) -> None:
    """A bot that acknowledges nothing gets every left-over event once per start (in order, on a socket
    closed with 1000 once the bounded wait is over); each stays pending, but one older than
    webhook.max_age is given up as dead, as the webhook gives up its events."""
    bot = AckingBot(ack_through=0)
    bot_url = await serve_bot(bot, aiohttp_server)
    now = time.time()
    events = left_over("c1", [now - 700.0, now - 10.0, now])
    started = time.monotonic()
    acked = await resend(bot_url, events, tmp_path, wait=0.5, max_age=600.0)
    assert time.monotonic() - started < 5.0
    assert acked == 0
    assert [m["sequence"] for m in bot.sockets[0].durable()] == [1, 2, 3]
    await wait_for(lambda: bot.sockets[0].close_code is not None)
    assert bot.sockets[0].close_code == 1000
    assert stored(tmp_path, "c1") == ([(1, "dead"), (2, "pending"), (3, "pending")], [])


async def test_the_start_up_resend_uses_at_most_eight_sockets_at_once(aiohttp_server: Any, tmp_path: Path) -> None:
    """Twenty calls left over: every call's events reach the bot and are forgotten once acknowledged,
    with never more than eight of the calls' sockets open at once."""
    bot = AckingBot()
    open_now = peak = 0
    inner = bot._socket

    async def counting(request: web.Request) -> web.WebSocketResponse:
        nonlocal open_now, peak
        open_now += 1
        peak = max(peak, open_now)
        try:
            await asyncio.sleep(0.05)  # long enough for the calls to overlap
            return await inner(request)
        finally:
            open_now -= 1

    app = web.Application()
    app.router.add_get("/bot", counting)
    server = await aiohttp_server(app, host="127.0.0.1")
    bot_url = str(server.make_url("/bot")).replace("http://", "ws://")
    events = [e for n in range(20) for e in left_over(f"c{n:02d}", [time.time()] * 2)]
    acked = await resend(bot_url, events, tmp_path, wait=5.0)
    assert acked == 40
    assert sorted(s.call_id for s in bot.sockets) == [f"c{n:02d}" for n in range(20)]
    assert all([m["sequence"] for m in s.durable()] == [1, 2] for s in bot.sockets)
    assert 1 < peak <= 8
    assert stored(tmp_path) == ([], [])
