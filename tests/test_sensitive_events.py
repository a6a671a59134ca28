"""A sensitive event (``"sensitive": true`` in its payload: a private gather's ``dtmf.gathered``) reaches
the bot and nothing else: posted signed and in order, retried in memory, sent on the bot's socket; never
in the outbox file, Redis, a dead letter or a log line. Given up, it is dropped with one line that names
it without its digits, where an ordinary event is dead-lettered.

The delivery runs for real against bots on 127.0.0.1 (the webhook fake, a WebSocket bot) and a real
outbox file (and a real redis-server for fleet mode); the signatures are checked with the
``standardwebhooks`` package, and every file the bridge wrote is read back as bytes.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
import structlog
from aiohttp import web
from standardwebhooks.webhooks import Webhook

from bridge.delivery import Delivery
from bridge.delivery.outbox import Outbox, OutboxWriter
from bridge.fleet.leases import Leases, Owned
from bridge.fleet.outbox import FleetOutbox
from bridge.fleet.scripts import FleetRedis
from bridge.reply.bot_socket import BotSocket
from bridge.settings import BotWsSettings, FleetSettings, WebhookSettings
from bridge.tools.phone import TwilioPhone
from bridge.transcripts import TranscriptStore
from tests.support.bridge_process import start_bridge
from tests.support.calls import WEBHOOK_SECRET, caller_audio, wait_for
from tests.support.fakes import FakeGladia, FakeWebhook, VirtualClock
from tests.support.process import minimal_env
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.timeout(60)

DIGITS = "4921"  # what the caller keyed in during a sensitive gather
MARK = "8675309"  # in an ordinary event: on disk when that event is, so the byte search does find things
CALL = {"id": "c1", "provider": "twilio"}


def gathered() -> dict[str, Any]:
    """``dtmf.gathered`` of a sensitive gather, as the reply loop posts it."""
    return {"call": CALL, "action_id": "pin", "digits": DIGITS, "reason": "finish_on_key", "sensitive": True}


def final(text: str) -> dict[str, Any]:
    return {"call": CALL, "utterance": {"text": text}}


def files_holding(root: Path, needle: str) -> list[Path]:
    """Every file under ``root`` (recursively, read as bytes) that contains ``needle``."""
    return [p for p in sorted(root.rglob("*")) if p.is_file() and needle.encode() in p.read_bytes()]


def logged(logs: Sequence[Mapping[str, Any]], event: str) -> list[Mapping[str, Any]]:
    return [line for line in logs if line["event"] == event]


async def serve_hook(hook: FakeWebhook, aiohttp_server: Any) -> str:
    server = await aiohttp_server(hook.app, host="127.0.0.1")
    return str(server.make_url("/hook"))


def delivery_for(url: str, writer: OutboxWriter, clock: VirtualClock | None = None, **settings: Any) -> Delivery:
    webhook = WebhookSettings(url=url, secret=WEBHOOK_SECRET, **settings)
    if clock is None:
        return Delivery(webhook, writer)
    return Delivery(webhook, writer, sleep=clock.sleep, clock=clock.time)


async def test_a_sensitive_event_reaches_the_bot_signed_in_order_and_is_written_nowhere(
    aiohttp_server: Any, tmp_path: Path
) -> None:
    """The bot fails the sensitive event twice (503) then takes it: it is retried in memory with the
    same webhook-id, signed (checked with standardwebhooks), between the events before and after it;
    no file under the data dir and no log line holds its digits, and the store keeps nothing of it."""
    hook = FakeWebhook()
    hook.fail_statuses = [204, 503, 503]  # the first event goes through, the sensitive one is refused twice
    url = await serve_hook(hook, aiohttp_server)
    data = tmp_path / "data"
    writer = OutboxWriter(Outbox.in_dir(data), commit_delay=0.0)
    writer.start()
    clock = VirtualClock()
    try:
        with structlog.testing.capture_logs() as logs:
            delivery = delivery_for(url, writer, clock)
            call = delivery.open("c1", CALL)
            call.submit("utterance.final", final("my account please"))
            event = call.submit("dtmf.gathered", gathered())
            call.submit("utterance.final", final("thank you"))
            call.close()
            assert await call.wait(10)
            await delivery.aclose(5)  # its webhook connections
        assert writer.flush(5)
    finally:
        writer.close()
    assert event is not None and event.sensitive
    assert [(e["type"], e["sequence"]) for e in hook.events()] == [
        ("utterance.final", 1),
        ("dtmf.gathered", 2),
        ("utterance.final", 3),
    ]
    tries = [r for r in hook.requests if r.headers["webhook-id"] == "msg_c1_2"]
    assert [r.status for r in tries] == [503, 503, 204]
    signed = Webhook(WEBHOOK_SECRET).verify(tries[-1].body, tries[-1].headers)
    assert signed["digits"] == DIGITS and signed["sensitive"] is True
    assert len(logged(logs, "webhook.retry")) == 2  # it was logged about, by id only
    assert DIGITS not in repr(logs)
    assert files_holding(data, DIGITS) == []
    box = Outbox.in_dir(data)
    try:
        assert list(box.events()) == [] and box.unfinished_calls() == []
    finally:
        box.close()


@pytest.mark.parametrize("status", [400, 503], ids=["refused", "failing-until-max-age"])
async def test_given_up_a_sensitive_event_is_dropped_with_a_line_where_an_ordinary_one_is_dead_lettered(
    aiohttp_server: Any, tmp_path: Path, status: int
) -> None:
    """A bot that never answers 2xx (a final 400, or 503 until ``max_age``): the ordinary event is
    dead-lettered (a row in the outbox file, its text on disk, ``webhook.dead_lettered``); the sensitive
    one, which the bot was sent, is in no row and no file, and one ``webhook.sensitive_dropped`` line
    names its type, call and sequence, never its digits."""
    hook = FakeWebhook()
    hook.fail_statuses = [status] * 1000
    url = await serve_hook(hook, aiohttp_server)
    data = tmp_path / "data"
    writer = OutboxWriter(Outbox.in_dir(data), commit_delay=0.0)
    writer.start()
    clock = VirtualClock()  # the retries up to max_age take no real time
    try:
        with structlog.testing.capture_logs() as logs:
            delivery = delivery_for(url, writer, clock, max_age=20.0)
            call = delivery.open("c1", CALL)
            call.submit("utterance.final", final(f"call me at {MARK}"))
            call.submit("dtmf.gathered", gathered())
            call.close()
            assert await call.wait(20)
            await delivery.aclose(5)  # its webhook connections
        assert writer.flush(5)
    finally:
        writer.close()
    sent = [r.json for r in hook.requests if r.headers["webhook-id"] == "msg_c1_2"]
    assert sent and all(body["digits"] == DIGITS for body in sent)  # the bot was sent it
    assert call.counters.failed == 2
    (dead,) = logged(logs, "webhook.dead_lettered")
    assert dead["webhook_id"] == "msg_c1_1"
    (dropped,) = logged(logs, "webhook.sensitive_dropped")
    assert (dropped["type"], dropped["call_id"], dropped["sequence"]) == ("dtmf.gathered", "c1", 2)
    assert dropped["status"] == status and dropped["reason"] == "given up"
    assert DIGITS not in repr(logs)
    box = Outbox.in_dir(data)
    try:
        assert [(e.webhook_id, e.state) for e in box.events()] == [("msg_c1_1", "dead")]
    finally:
        box.close()
    assert files_holding(data, MARK) != []  # the dead letter is on disk ...
    assert files_holding(data, DIGITS) == []  # ... the sensitive event is not


async def test_a_crash_after_a_sensitive_event_replays_nothing_of_it_and_numbers_the_end_after_it(
    aiohttp_server: Any, tmp_path: Path
) -> None:
    """The bot takes the first event and then stalls on the sensitive one (the call's last so far); the
    process stops with it still undelivered (the delivery is cancelled). The drop is logged; the outbox
    holds no row of it, but the call's last sequence is the sensitive event's, so what a restart
    recovers is only ``call.ended`` (``bridge_restarted``) with the next webhook-id, never its id again."""
    hook = FakeWebhook()
    hook.fail_statuses = [204] + [503] * 1000
    url = await serve_hook(hook, aiohttp_server)
    data = tmp_path / "data"
    writer = OutboxWriter(Outbox.in_dir(data), commit_delay=0.0)
    writer.start()
    try:
        with structlog.testing.capture_logs() as logs:
            delivery = delivery_for(url, writer, retry_initial_delay=0.02, retry_max_delay=0.02)
            call = delivery.open("c1", CALL)
            call.submit("utterance.final", final("my pin is coming"))
            call.submit("dtmf.gathered", gathered())
            await wait_for(lambda: sum(r.headers["webhook-id"] == "msg_c1_2" for r in hook.requests) >= 2)
            await delivery.aclose(timeout=0.05)  # shutdown: the worker is cancelled mid-retry
        assert writer.flush(5)
    finally:
        writer.close()
    (dropped,) = logged(logs, "webhook.sensitive_dropped")
    assert (dropped["type"], dropped["call_id"], dropped["sequence"]) == ("dtmf.gathered", "c1", 2)
    assert DIGITS not in repr(logs)
    assert files_holding(data, DIGITS) == []
    box = Outbox.in_dir(data)
    try:
        assert list(box.events()) == []
        assert box.unfinished_calls() == [("c1", json.dumps(CALL), 2)]
    finally:
        box.close()
    restarted = OutboxWriter(Outbox.in_dir(data))
    try:
        left = delivery_for(url, restarted).left_over()
    finally:
        restarted.close()
    assert [(e.webhook_id, e.type) for e in left] == [("msg_c1_3", "call.ended")]
    assert json.loads(left[0].body)["summary"]["end_reason"] == "bridge_restarted"


async def test_without_a_webhook_the_log_line_of_a_sensitive_event_has_no_body(tmp_path: Path) -> None:
    """Socket only (``BOT_WS_URL``, no webhook): events are written to the log and kept in the outbox
    until the bot acknowledges them. An ordinary event is, body and all; a sensitive one is logged by
    type and id only, and the outbox holds nothing of it."""
    data = tmp_path / "data"
    writer = OutboxWriter(Outbox.in_dir(data), commit_delay=0.0)
    writer.start()
    try:
        with structlog.testing.capture_logs() as logs:
            delivery = Delivery(WebhookSettings(), writer, bot_socket=True)
            assert delivery.context.socket_acks
            call = delivery.open("c1", CALL)
            call.submit("utterance.final", final(f"call me at {MARK}"))
            call.submit("dtmf.gathered", gathered())
            call.close()
            assert await call.wait(5)
        assert writer.flush(5)
    finally:
        writer.close()
    ordinary, sensitive = logged(logs, "bot.event")
    assert ordinary["body"]["utterance"]["text"] == f"call me at {MARK}"
    assert "body" not in sensitive and sensitive["sensitive"] is True and sensitive["type"] == "dtmf.gathered"
    assert DIGITS not in repr(logs)
    assert files_holding(data, MARK) != [] and files_holding(data, DIGITS) == []


class SocketBot:
    """A bot on 127.0.0.1 that acknowledges the durable events it is sent up to ``ack_through``."""

    def __init__(self, ack_through: int) -> None:
        self.ack_through = ack_through
        self.received: list[dict[str, Any]] = []
        self.app = web.Application()
        self.app.router.add_get("/bot", self._socket)

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            data = json.loads(msg.data)
            self.received.append(data)
            if data["sequence"] <= self.ack_through:
                await ws.send_str(json.dumps({"type": "ack", "sequence": data["sequence"]}))
        return ws


@pytest.mark.parametrize("ack_through", [2, 1], ids=["acknowledged", "not-acknowledged"])
async def test_the_bot_socket_sends_a_sensitive_event_and_logs_its_loss_without_it(
    aiohttp_server: Any, ack_through: int
) -> None:
    """On the bot's socket a sensitive event goes like any other. If the bot (which acknowledges
    events) has not acknowledged it when the call's socket closes, nothing can send it again: one
    ``bot_socket.sensitive_dropped`` line says so, without the digits; acknowledged, no such line."""
    bot = SocketBot(ack_through)
    server = await aiohttp_server(bot.app, host="127.0.0.1")
    settings = BotWsSettings(url=str(server.make_url("/bot")).replace("http://", "ws://"))
    first = json.dumps({"type": "utterance.final", "sequence": 1, **final("hello")})
    second = json.dumps({"type": "dtmf.gathered", "sequence": 2, **gathered()})
    with structlog.testing.capture_logs() as logs:
        async with aiohttp.ClientSession() as http:
            sock = BotSocket(settings, http, "c1", apply=lambda actions, key: [])
            sock.send_event(first, sequence=1)
            sock.send_event(second, sequence=2, sensitive=True)
            await wait_for(lambda: len(bot.received) == 2)
            await sock.close(timeout=5)
    assert [m["sequence"] for m in bot.received] == [1, 2] and bot.received[1]["digits"] == DIGITS
    dropped = logged(logs, "bot_socket.sensitive_dropped")
    if ack_through == 2:
        assert dropped == []
    else:
        (line,) = dropped
        assert (line["type"], line["call_id"], line["sequence"]) == ("dtmf.gathered", "c1", 2)
    assert DIGITS not in repr(logs)


async def test_fleet_mode_keeps_a_sensitive_event_out_of_redis_and_its_dead_letters(
    aiohttp_server: Any, redis_server: RedisServer
) -> None:
    """Fleet mode (a real redis-server, AOF on): a bot that refuses everything. The ordinary event goes
    to the call's stream and then to ``{prefix}:dead``; the sensitive one is never written to Redis (no
    key, no field, nothing in the AOF on disk), only the call's ``last_sequence`` moves past it, so an
    instance taking the call over numbers its ``call.ended`` after it."""
    hook = FakeWebhook()
    hook.fail_statuses = [400] * 1000
    url = await serve_hook(hook, aiohttp_server)
    fleet = FleetRedis(FleetSettings(redis_url=redis_server.url, key_prefix="t"), "A")
    leases = Leases(fleet)
    owned = leases.owned["c1"] = Owned("c1", "twilio", "CA1", None)
    store = FleetOutbox(fleet, leases)
    with structlog.testing.capture_logs() as logs:
        try:
            await leases.take(owned)
            assert owned.epoch == 1
            store.start()
            delivery = Delivery(WebhookSettings(url=url), store)
            call = delivery.open("c1", CALL)
            call.submit("utterance.final", final(f"call me at {MARK}"))
            call.submit("dtmf.gathered", gathered())
            await wait_for(lambda: bool(logged(logs, "webhook.sensitive_dropped")))
            await store.drain("c1")  # every write queued for the call is in Redis
            dump = await redis_dump(fleet.client)
            await delivery.aclose(5)
            await store.drain("c1")
            await asyncio.gather(*leases.pending)
        finally:
            await store.aclose(5)
            await fleet.client.aclose()
    assert hook.requests[1].json["digits"] == DIGITS  # the bot was sent it
    assert MARK in dump and DIGITS not in dump
    assert '"last_sequence": "2"' in dump
    assert logged(logs, "webhook.sensitive_dropped")[0]["sequence"] == 2
    assert DIGITS not in repr(logs)
    aof = redis_server.directory
    assert files_holding(aof, MARK) != [] and files_holding(aof, DIGITS) == []


async def redis_dump(client: aioredis.Redis) -> str:
    """Every key of the Redis and what it holds, as text."""
    out: dict[str, Any] = {}
    async for key in client.scan_iter("*"):
        kind = await client.type(key)
        if kind == "stream":
            out[key] = await client.xrange(key)
        elif kind == "hash":
            out[key] = await client.hgetall(key)
        elif kind == "string":
            out[key] = await client.get(key)
        elif kind == "zset":
            out[key] = await client.zrange(key, 0, -1, withscores=True)
        else:
            out[key] = kind
    return json.dumps(out, sort_keys=True)


# -- end to end: a real `bridge serve`, a Twilio phone keying a PIN during a sensitive gather -----------

API_TOKEN = "test-api-token-0123456789"
STREAM_SID = "MZ" + "4" * 32
# A leak of the PIN: the digits as one token (not inside a longer number, a hex id or a fraction).
LEAKED_PIN = re.compile(rb"(?<![0-9A-Fa-f.])4921(?![0-9A-Fa-f])")


def files_leaking(root: Path) -> list[Path]:
    """The files under ``root`` that hold the PIN (read as bytes); fails if there are no files at all."""
    files = [p for p in sorted(root.rglob("*")) if p.is_file()]
    assert files
    return [p for p in files if LEAKED_PIN.search(p.read_bytes())]


def key(digit: str) -> str:
    """A key press as Twilio documents its media stream's ``dtmf`` message
    (https://www.twilio.com/docs/voice/media-streams/websocket-messages#dtmf-message)."""
    return json.dumps(
        {
            "event": "dtmf",
            "streamSid": STREAM_SID,
            "sequenceNumber": "9999",
            "dtmf": {"track": "inbound_track", "digit": digit},
        }
    )


class SlowBot(FakeWebhook):
    """A bot that takes ``delay`` seconds over every event (longer than the outbox's group commit, so
    each ordinary event is written before it is delivered) and answers ``gathered_status`` to
    ``dtmf.gathered``; ``while_pending()`` runs as it holds that event (pending in the bridge)."""

    def __init__(self, delay: float, gathered_status: int) -> None:
        super().__init__()
        self.delay, self.gathered_status = delay, gathered_status
        self.gathered: list[dict[str, Any]] = []  # every dtmf.gathered it was sent, whatever it answered
        self.while_pending: Callable[[], None] = lambda: None

    async def _hook(self, request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        await asyncio.sleep(self.delay)
        if body["type"] == "dtmf.gathered":
            self.while_pending()
            self.gathered.append(body)
            self.fail_statuses.insert(0, self.gathered_status)
        return await super()._hook(request)


@pytest.mark.parametrize("gathered_status", [204, 400], ids=["bot-takes-it", "bot-refuses-it"])
async def test_a_pin_keyed_during_a_sensitive_gather_reaches_the_bot_and_no_file_or_log_line(
    fake_gladia: FakeGladia, aiohttp_server: Any, tmp_path: Path, gathered_status: int
) -> None:
    """A Twilio call through a real ``bridge serve`` (transcripts on, data dir in tmp_path, debug logs),
    a bot slow enough that the outbox writes every event before it is delivered: the caller speaks
    (finals on record), the bot posts a sensitive gather over the REST API, the phone keys 4921#. The
    bot gets ``dtmf.gathered`` with digits 4921 and ``sensitive: true``; the transcript store has the
    call's finals; no file under the data dir and no log line of the bridge holds 4921. A bot that
    refuses that event (400) gets it dropped with a line, not dead-lettered."""
    hook = SlowBot(0.12, gathered_status)
    hook_url = await serve_hook(hook, aiohttp_server)
    data = tmp_path / "data"
    leaked_while_pending: list[Path] = []
    hook.while_pending = lambda: leaked_while_pending.extend(files_leaking(data))
    env = minimal_env(
        BRIDGE_DATA_DIR=str(data),
        GLADIA_API_URL=fake_gladia.base_url,
        GLADIA_API_KEY="test-key",
        BOT_WEBHOOK_URL=hook_url,
        BOT_WEBHOOK_SECRET=WEBHOOK_SECRET,
        BRIDGE_API_TOKEN=API_TOKEN,
        BRIDGE_TRANSCRIPTS="true",
    )
    bridge = await start_bridge(env, "--log-level", "debug")
    try:
        async with (
            aiohttp.ClientSession() as http,
            TwilioPhone.dial(f"{bridge.ws}/twilio/stream", stream_sid=STREAM_SID) as phone,
        ):
            await phone.say(caller_audio(2.0))
            assert await phone.wait(lambda: len(hook.events("utterance.final")) >= 1, 10)
            call_id = hook.events("call.started")[0]["call"]["id"]
            gather = {"type": "gather", "id": "pin", "finish_on_key": "#", "timeout_ms": 8000, "sensitive": True}
            async with http.post(
                f"{bridge.base}/v1/calls/{call_id}/actions",
                json={"actions": [gather]},
                headers={"Authorization": f"Bearer {API_TOKEN}"},
            ) as resp:
                assert resp.status == 202, await resp.text()
            await phone.wait(lambda: False, 0.3)
            for digit in "4921#":
                await phone.send(key(digit))
                await phone.wait(lambda: False, 0.1)
            assert await phone.wait(lambda: bool(hook.gathered), 5)
        await wait_for(lambda: bool(hook.events("transcript.completed")), timeout=15)
    finally:
        assert await bridge.stop() == 0  # SIGTERM: the stores write what they hold, then close
    (done,) = hook.gathered
    assert (done["action_id"], done["digits"], done["reason"], done["sensitive"]) == (
        "pin",
        "4921",
        "finish_on_key",
        True,
    )
    assert hook.events("call.dtmf") == []  # the gather's keys are its own
    box = TranscriptStore.in_dir(data)
    try:
        record = box.get(call_id)
    finally:
        box.close()
    assert record is not None and record["utterances"]  # the transcript store was written ...
    assert leaked_while_pending == [] and files_leaking(data) == []  # ... but not with the PIN
    assert bridge.logs("reply.gathered") and bridge.logs("call.ended")  # the lines searched are the bridge's
    assert [line for line in bridge.lines if LEAKED_PIN.search(line.encode())] == []
    assert [line for line in bridge.logs() if {"digit", "digits"} & set(line)] == []  # nor one key at a time
    dropped = bridge.logs("webhook.sensitive_dropped")
    if gathered_status == 400:
        (line,) = dropped
        assert (line["type"], line["call_id"], line["sequence"]) == ("dtmf.gathered", call_id, done["sequence"])
        assert bridge.logs("webhook.dead_lettered") == []
    else:
        assert dropped == []
