"""The bot's answers and requests cannot break a call (issue 25): deep JSON, answers without actions,
answer loops, bodies in several writes, floods of failing actions, a failing part of a call's end,
bad bytes in a token, duplicate action ids, repeated Idempotency-Keys after the end, and a hangup
while the call waits for a restarted stream."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestServer

from bridge.adapters.base import CallStarted
from bridge.adapters.stream_auth import stream_token_valid
from bridge.adapters.twilio import signature_valid
from bridge.audio import ULAW_8K
from bridge.backoff import Backoff
from bridge.call.lifetime import Call
from bridge.call.services import CallServices
from bridge.delivery import CallDelivery, DeliveryContext, PendingEvent
from bridge.delivery import Delivery as Deliveries
from bridge.delivery.webhook import Delivered, WebhookClient, WebhookEvent, WebhookResponse
from bridge.errors import ActionError
from bridge.phone_stream import CallResult
from bridge.reply.actions import parse_actions
from bridge.settings import Settings, WebhookSettings
from bridge.stats import CallStats
from bridge.transcripts import TranscriptStore
from bridge.untrusted import MAX_JSON_DEPTH, json_too_deep, loads, read_bounded, same_secret
from tests.support.calls import FAST, BridgeFactory, caller_audio, play_call, wait_for
from tests.support.fakes import FakeGladia, FakeWebhook, expected_texts
from tests.test_stream_restart import CALL_SID, stream_part, voice_parameters

pytestmark = pytest.mark.timeout(60)

TOKEN = "test-api-token-0123456789"
NESTED = b"[" * 1000 + b"]" * 1000  # 2 KB: Python's json recurses once per bracket


class RawBot:
    """A bot webhook that answers each event with raw bytes: ``answer(event)`` gives (status, body,
    content type) or None for 204; ``parts`` > 1 writes the body in that many writes ``pause`` apart
    (``chunked``: with chunked transfer encoding, else with a Content-Length)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.answer: Callable[[dict[str, Any]], tuple[int, bytes, str] | None] | None = None
        self.parts = 1
        self.pause = 0.0
        self.chunked = False
        self.app = web.Application()
        self.app.router.add_post("/hook", self._hook)

    def types(self) -> list[str]:
        return [e["type"] for e in self.events]

    async def _hook(self, request: web.Request) -> web.StreamResponse:
        event = json.loads(await request.read())
        self.events.append(event)
        answer = self.answer(event) if self.answer is not None else None
        if answer is None:
            return web.Response(status=204)
        status, body, content_type = answer
        resp = web.StreamResponse(status=status, headers={"Content-Type": content_type})
        if self.chunked:
            resp.enable_chunked_encoding()
        else:
            resp.content_length = len(body)
        await resp.prepare(request)
        size = -(-len(body) // self.parts)
        for i in range(0, len(body), size):
            if i:
                await asyncio.sleep(self.pause)
            await resp.write(body[i : i + size])
        await resp.write_eof()
        return resp


@pytest.fixture
async def raw_bot(aiohttp_server: Any) -> tuple[RawBot, str]:
    bot = RawBot()
    server: TestServer = await aiohttp_server(bot.app, host="127.0.0.1")
    return bot, str(server.make_url("/hook"))


def _bridge(make_bridge: BridgeFactory, url: str, **overrides: Any) -> Any:
    return make_bridge({"BOT_WEBHOOK_URL": url, "BRIDGE_API_TOKEN": TOKEN}, **overrides)


async def _api(
    http: aiohttp.ClientSession, server: Any, path: str, body: Any, token: str = TOKEN, **headers: str
) -> tuple[int, Any]:
    headers["Authorization"] = f"Bearer {token}"
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with http.post(server.make_url(path), data=data, headers=headers) as resp:
        return resp.status, await resp.json()


# -- the pure checks --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "deep"),
    [
        (b"[]", False),
        (b'{"actions": [{"type": "say", "text": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}]}', False),
        (b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH, False),
        (b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1), True),
        (b"[[]]" * 10_000, False),  # many brackets, shallow
        (b'{"a": "\\"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}', False),  # escaped quote inside
        (NESTED, True),
        (b'{"a":' * 40 + b"1" + b"}" * 40, True),
        ("[" * 40 + "\udcff" + "]" * 40, True),  # a str with surrogate escapes
    ],
)
def test_json_depth_is_checked_without_parsing(text: bytes | str, deep: bool) -> None:
    """json_too_deep counts nesting outside strings, in linear time, on bytes or str."""
    assert json_too_deep(text) is deep


def test_deep_json_is_a_value_error_not_a_recursion_error() -> None:
    """loads refuses deep JSON with ValueError (RecursionError escaped every handler that caught ValueError)."""
    with pytest.raises(ValueError, match="nested deeper"):
        loads(NESTED)
    assert loads(b'{"a": [1, {"b": "]]]"}]}') == {"a": [1, {"b": "]]]"}]}


@pytest.mark.parametrize(
    "body", [NESTED, b'{"actions": ' + NESTED + b"}", b'{"actions": [{"type": "say", "text": ' + NESTED + b"}]}"]
)
def test_parse_actions_refuses_deep_json_as_an_action_error(body: bytes) -> None:
    """A nested body is a bad request (422), not a RecursionError (500 on REST, a dead delivery task)."""
    with pytest.raises(ActionError, match="nested deeper"):
        parse_actions(body)


def test_two_actions_with_one_id_in_a_request_are_refused() -> None:
    """Ids the bot chose must differ within a request; say pieces of one stream and audio chunks may share
    their stream_id."""
    actions = [{"type": "mark", "name": f"m{i}", "id": f"a{i}"} for i in range(3)] + [{"type": "stop", "id": "a1"}]
    with pytest.raises(ActionError) as refused:
        parse_actions({"actions": actions})
    assert str(refused.value) == "actions[3].id: duplicate id 'a1'"
    pieces = [{"type": "say", "text": t, "stream_id": "s", "last": t == "b."} for t in ("a.", "b.")]
    chunks = [{"type": "audio", "stream_id": "s", "audio": "AAAAAA==", "sample_rate": 8000} for _ in range(2)]
    assert len(parse_actions({"actions": [*pieces, *chunks, {"type": "stop"}, {"type": "stop"}]})) == 6


def test_secrets_are_compared_whatever_bytes_the_peer_sent() -> None:
    """A token, a stream token or a Twilio signature with bytes that are not UTF-8 (surrogate escapes,
    as aiohttp decodes such headers) or not ASCII is wrong, not an exception."""
    bad = "Bearer \udcff\udcfe" + "x"
    assert not same_secret(bad, TOKEN) and same_secret(TOKEN, TOKEN)
    assert not stream_token_valid("secret", {"Authorization": bad, "X-Stream-Token": "\udcff"}, "caf\u00e9")
    assert stream_token_valid("secret", {"X-Stream-Token": "secret"}, None)
    assert not signature_valid("auth-token", "https://bridge.example/twilio/voice", "\u00e9\udcff")


# -- webhook answers ------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunked", [False, True])
async def test_an_answer_written_in_parts_is_read_whole(raw_bot: tuple[RawBot, str], chunked: bool) -> None:
    """A valid answer sent in several writes 200 ms apart (with a Content-Length, or chunked) is read
    whole (read(n) returned the first write: the answer was refused as not JSON)."""
    bot, url = raw_bot
    answer = json.dumps({"actions": [{"type": "mark", "name": f"m{i}"} for i in range(32)]}).encode()
    bot.answer = lambda _e: (200, answer, "application/json")
    bot.parts, bot.pause, bot.chunked = 3, 0.2, chunked
    async with WebhookClient(url, secret=None, timeout=5.0) as client:
        outcome = await client.post(WebhookEvent("msg_c_1", "{}"))
    assert isinstance(outcome, Delivered)
    assert outcome.response.body == answer and not outcome.response.truncated
    big = b'{"x": "' + b"y" * 3000 + b'"}'
    bot.answer = lambda _e: (200, big, "application/json")
    bot.parts, bot.pause = 4, 0.05
    async with WebhookClient(url, secret=None, timeout=5.0, max_response_bytes=1000) as client:
        outcome = await client.post(WebhookEvent("msg_c_2", "{}"))
    assert isinstance(outcome, Delivered)
    assert outcome.response.body == big[:1000] and outcome.response.truncated


async def test_read_bounded_stops_at_the_bound_on_every_read() -> None:
    """read_bounded asks for no more than the bound allows, plus one byte to tell there was more."""

    class Parts:
        def __init__(self, parts: list[bytes]) -> None:
            self.parts: list[bytes] = parts
            self.asked: list[int] = []

        async def read(self, n: int = -1) -> bytes:
            self.asked.append(n)
            return self.parts.pop(0)[:n] if self.parts else b""

    content = Parts([b"ab", b"cd", b"efgh", b"ij"])
    assert await read_bounded(content, 5) == (b"abcde", True)
    assert content.asked == [6, 4, 2]
    assert await read_bounded(Parts([b"ab", b"c"]), 5) == (b"abc", False)


async def test_a_deeply_nested_answer_stops_nothing(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, raw_bot: tuple[RawBot, str]
) -> None:
    """The bot answers call.started with ~1,000 nested brackets (2 KB). The answer is refused as bad and
    the call goes on: every final, call.ended and transcript.completed still arrive (the RecursionError
    killed the call's delivery task: nothing after call.started, nothing logged)."""
    bot, url = raw_bot
    deep = b'{"actions": ' + NESTED + b"}"
    bot.answer = lambda e: (200, deep, "application/json") if e["type"] == "call.started" else None
    server = await _bridge(make_bridge, url)
    audio = caller_audio(2.0)
    with structlog.testing.capture_logs() as logs:
        assert await play_call(str(server.make_url("/twilio/stream")), audio) == 1000
        await wait_for(lambda: "transcript.completed" in bot.types())
    types = bot.types()
    assert [t for t in types if t != "action.failed"] == [
        "call.started",
        "utterance.final",
        "utterance.final",
        "call.ended",
        "transcript.completed",
    ]
    (failed,) = [e for e in bot.events if e["type"] == "action.failed"]
    assert "nested deeper" in failed["error"] and failed["action_id"] is None
    assert [e["utterance"]["text"] for e in bot.events if e["type"] == "utterance.final"] == expected_texts(audio, 8000)
    assert not [line for line in logs if line["log_level"] in ("error", "critical")]


async def test_a_failing_answer_handler_does_not_stop_the_delivery(raw_bot: tuple[RawBot, str]) -> None:
    """Whatever the answer handler raises is logged with its traceback, and the next events still go."""
    bot, url = raw_bot
    bot.answer = lambda _e: (200, b"{}", "application/json")
    settings = WebhookSettings(url=url)
    seen: list[str] = []

    def handler(event: PendingEvent, response: WebhookResponse) -> None:
        seen.append(event.type)
        raise RecursionError("a bug in the handler")

    async with WebhookClient(url, secret=None, timeout=2.0) as client:
        context = DeliveryContext(
            settings=settings,
            client=client,
            outbox=None,
            metrics=None,
            backoff=Backoff(0.01, 0.05),
        )
        delivery = CallDelivery("c1", context, on_done=lambda _d: None, on_response=handler)
        with structlog.testing.capture_logs() as logs:
            for type_ in ("call.started", "utterance.final", "call.ended"):
                delivery.submit(type_, {})
            delivery.close()
            assert await delivery.wait(5.0)
    assert bot.types() == seen == ["call.started", "utterance.final", "call.ended"]
    failed = [line for line in logs if line["event"] == "webhook.answer_handler_failed"]
    assert len(failed) == 3 and all(line.get("exc_info") for line in failed)


@pytest.mark.parametrize(
    "answer",
    [(200, b'{"ok": true}', "application/json"), (200, b"ok", "text/plain"), (200, b"<html>[ok]</html>", "text/html")],
)
async def test_an_answer_without_actions_is_accepted_and_ignored(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, raw_bot: tuple[RawBot, str], answer: tuple[int, bytes, str]
) -> None:
    """A bot answering every event 200 with a body that is not {"actions": [...]} (JSON without actions,
    text, HTML) gets the call's events and nothing else, and the bridge logs it once per call (each such
    answer was an action.failed, answered the same way: a loop)."""
    bot, url = raw_bot
    bot.answer = lambda _e: answer
    server = await _bridge(make_bridge, url)
    with structlog.testing.capture_logs() as logs:
        await play_call(str(server.make_url("/twilio/stream")), caller_audio(2.0), pace=0.005)
        await wait_for(lambda: "transcript.completed" in bot.types())
    assert bot.types() == ["call.started", *["utterance.final"] * 2, "call.ended", "transcript.completed"]
    assert len([line for line in logs if line["event"] == "reply.answer_ignored"]) == 1


async def test_a_bot_answering_every_event_with_a_bad_action_gets_a_bounded_number_of_events(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, raw_bot: tuple[RawBot, str]
) -> None:
    """A bot answering EVERY event (its action.failed events too) with an invalid action: each event
    the caller causes brings at most one action.failed; the failure of the answer to an action.failed
    is logged, not posted (the bot and the bridge answered each other for as long as the call lasted)."""
    bot, url = raw_bot
    bot.answer = lambda _e: (200, b'{"actions": [{"type": "nope"}]}', "application/json")
    server = await _bridge(make_bridge, url)
    with structlog.testing.capture_logs() as logs:
        await play_call(str(server.make_url("/twilio/stream")), caller_audio(2.0), pace=0.01)  # ~2 s
        await wait_for(lambda: "transcript.completed" in bot.types())
        await asyncio.sleep(0.3)
    types = bot.types()
    caller_events = [t for t in types if t != "action.failed"]
    assert caller_events == ["call.started", *["utterance.final"] * 2, "call.ended", "transcript.completed"]
    assert types.count("action.failed") <= len(caller_events)
    assert len([line for line in logs if line["event"] == "reply.answer_event_not_sent"]) == 1


# -- floods of failing actions -------------------------------------------------------------------------


async def test_failing_actions_never_crowd_the_callers_finals_out(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    """A flood of failing actions (32 per request, over REST) while the bot is slow: bot-caused events
    get a smaller share of the call's queue and are refused first; every utterance.final still arrives,
    and the drops are logged as a few lines with counts, not one line each."""
    hook, _ = webhook
    hook.delays = [0.005] * 100_000
    server = await make_bridge(
        {"BRIDGE_API_TOKEN": TOKEN, "BRIDGE_PLAY_URL_HOSTS": "prompts.example.com"}, webhook__max_pending_events=200
    )
    failing = {"actions": [{"type": "play", "url": f"https://evil.example/{i}.wav"} for i in range(32)]}
    audio = caller_audio(4.0)
    sent = 0

    async def flood(http: aiohttp.ClientSession) -> None:
        nonlocal sent
        await wait_for(lambda: bool(hook.events("call.started")))
        path = f"/v1/calls/{hook.events('call.started')[0]['call']['id']}/actions"
        while True:
            status, _ = await _api(http, server, path, failing)
            if status != 202:
                return
            sent += 1
            await asyncio.sleep(0.01)

    with structlog.testing.capture_logs() as logs:
        async with aiohttp.ClientSession() as http:
            task = asyncio.create_task(flood(http))
            await play_call(str(server.make_url("/twilio/stream")), audio, pace=0.005)
            await wait_for(lambda: bool(hook.events("transcript.completed")), timeout=30)
            await task
    assert sent >= 20  # hundreds of failing actions
    finals = [e["utterance"]["text"] for e in hook.events("utterance.final")]
    assert finals == expected_texts(audio, 8000)
    summary = hook.events("call.ended")[0]["summary"]
    assert summary["webhook_dropped"] > 0
    drop_lines = [line for line in logs if line["event"] == "webhook.queue_full"]
    assert 1 <= len(drop_lines) <= 4
    assert sum(sum(line["dropped"].values()) for line in drop_lines) == summary["webhook_dropped"]
    assert all("caller" not in line["dropped"] for line in drop_lines)


# -- the end of a call ------------------------------------------------------------------------------------


class BrokenDisk(TranscriptStore):
    """A transcript store whose disk fails as a call ends."""

    def call_ended(self, call_id: str, ended_at: float, end_reason: str) -> None:
        raise OSError("disk I/O error")


async def test_a_call_ends_whatever_a_part_of_its_end_raises(
    fake_gladia: FakeGladia, raw_bot: tuple[RawBot, str], tmp_path: Path
) -> None:
    """A part of Call.end raising (here the transcript record) is logged with its traceback and the rest
    still runs: call.ended and transcript.completed posted, the call.ended line logged, on_ended called
    (Call.end re-raised: no call.ended line, metrics not updated, REST 404 for the ended call)."""
    bot, url = raw_bot
    env = {"GLADIA_API_URL": fake_gladia.base_url, "GLADIA_API_KEY": "test-key", "BOT_WEBHOOK_URL": url}
    settings = Settings.load(environ={**env, "BRIDGE_DATA_DIR": str(tmp_path)}, overrides=FAST)
    store = BrokenDisk(tmp_path / "transcripts.sqlite3")
    started = CallStarted("twilio", CALL_SID, "MZ" + "1" * 32, None, {}, ULAW_8K)
    ended: list[tuple[str, CallStats]] = []
    try:
        async with aiohttp.ClientSession() as http:
            deliveries = Deliveries(settings.webhook)
            with structlog.testing.capture_logs() as logs:
                services = CallServices(settings, http, deliveries, resume_secret=b"", transcripts=store)
                call = Call.begin(started, services)
                call.on_ended = lambda call_id, stats: ended.append((call_id, stats))
                await asyncio.wait_for(call.end(CallResult("stop")), 10)
                await deliveries.aclose(5.0)
    finally:
        store.close()
    assert bot.types() == ["call.started", "call.ended", "transcript.completed"]
    assert [c for c, _ in ended] == [call.id] and ended[0][1].end_reason == "stop"
    (failed,) = [line for line in logs if line["event"] == "call.end_part_failed"]
    assert failed["part"] == "transcript_record" and failed.get("exc_info")
    assert [line["end_reason"] for line in logs if line["event"] == "call.ended"] == ["stop"]


# -- the REST API ------------------------------------------------------------------------------------------


def _raw_request(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


async def test_bad_requests_get_4xx_not_500(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    """A nested body answers 422 (was 500, RecursionError), an Authorization header that is not UTF-8
    answers 401 (was 500, UnicodeEncodeError), two actions with one id 422 naming the duplicate."""
    hook, _ = webhook
    server = await make_bridge({"BRIDGE_API_TOKEN": TOKEN})
    results: dict[str, Any] = {}

    async def bot(http: aiohttp.ClientSession) -> None:
        await wait_for(lambda: bool(hook.events("call.started")))
        path = f"/v1/calls/{hook.events('call.started')[0]['call']['id']}/actions"
        results["nested"] = await _api(http, server, path, b'{"actions": ' + NESTED + b"}")
        twice = {"actions": [{"type": "mark", "name": "a", "id": "x"}, {"type": "mark", "name": "b", "id": "x"}]}
        results["twice"] = await _api(http, server, path, twice)
        request = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: 2\r\n".encode()
            + b"Authorization: Bearer \xff\xfe"
            + TOKEN.encode()
            + b"\r\n\r\n{}"
        )
        assert server.port is not None
        results["raw"] = await asyncio.to_thread(_raw_request, server.port, request)

    async with aiohttp.ClientSession() as http:
        task = asyncio.create_task(bot(http))
        await play_call(str(server.make_url("/twilio/stream")), caller_audio(1.0), pace=0.005)
        await task
    status, body = results["nested"]
    assert status == 422 and "nested deeper" in body["error"]
    assert results["twice"] == (422, {"error": "actions[1].id: duplicate id 'x'"})
    assert results["raw"].startswith(b"HTTP/1.1 401 "), results["raw"][:200]


async def test_a_repeated_idempotency_key_after_the_end_gets_the_first_answer(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    """A POST repeated with its Idempotency-Key after the call ended answers what the first did (it
    answered 409); a new key after the end still answers 409."""
    hook, _ = webhook
    server = await make_bridge({"BRIDGE_API_TOKEN": TOKEN})
    body = {"actions": [{"type": "mark", "name": "m1", "id": "mark-1"}, {"type": "configure", "voice": "v"}]}
    results: dict[str, Any] = {}

    async def bot(http: aiohttp.ClientSession) -> None:
        await wait_for(lambda: bool(hook.events("call.started")))
        results["path"] = f"/v1/calls/{hook.events('call.started')[0]['call']['id']}/actions"
        results["first"] = await _api(http, server, results["path"], body, **{"Idempotency-Key": "k-1"})

    async with aiohttp.ClientSession() as http:
        task = asyncio.create_task(bot(http))
        await play_call(str(server.make_url("/twilio/stream")), caller_audio(1.0), pace=0.005)
        await task
        await wait_for(lambda: bool(hook.events("call.ended")))
        repeat = await _api(http, server, results["path"], body, **{"Idempotency-Key": "k-1"})
        other = await _api(http, server, results["path"], body, **{"Idempotency-Key": "k-2"})
    assert results["first"][0] == 202 and repeat == results["first"]
    assert other[0] == 409


# -- a hangup while the call waits for a restarted stream ------------------------------------------------------


async def test_a_hangup_ends_a_suspended_call_and_a_later_restart_is_refused(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    """The phone stream drops; while the call waits for a restart, the bot hangs up (after: now). The call
    ends at once (bot_hangup) and a restarted stream is a call of its own (the hangup answered done and
    ended nothing: the restart carried the call on)."""
    hook, _ = webhook
    server = await make_bridge({"BRIDGE_API_TOKEN": TOKEN}, server__stream_restart_grace=20.0)
    url = str(server.make_url("/twilio/stream"))
    params = await voice_parameters(server, CALL_SID)
    audio = caller_audio(1.0)
    await stream_part(url, "MZ" + "1" * 32, audio, False, params)
    await wait_for(lambda: bool(hook.events("utterance.final")))
    call_id = hook.events("call.started")[0]["call"]["id"]
    t0 = time.monotonic()
    async with aiohttp.ClientSession() as http:
        status, answer = await _api(
            http, server, f"/v1/calls/{call_id}/actions", {"actions": [{"type": "hangup", "after": "now"}]}
        )
    assert status == 202 and answer["actions"][0]["status"] == "done"
    await wait_for(lambda: bool(hook.events("call.ended")), timeout=10)
    assert time.monotonic() - t0 < 5  # not the 20 s grace
    assert hook.events("call.ended")[0]["summary"]["end_reason"] == "bot_hangup"
    await stream_part(url, "MZ" + "2" * 32, caller_audio(1.0, seed=2), True, await voice_parameters(server, CALL_SID))
    await wait_for(lambda: len(hook.events("call.ended")) == 2, timeout=10)
    assert not hook.events("call.stream_restarted")
    started = hook.events("call.started")
    assert len(started) == 2 and started[1]["call"]["id"] != call_id
