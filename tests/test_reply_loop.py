"""The bot talks back, end to end on loopback: a Twilio phone (real-time playback, mark echoes, clears),
the bridge with the embedded TTS (Piper), a bot that answers with actions, Gladia faked with scripted
speech events (or the real local recogniser to hear what the caller heard)."""

from __future__ import annotations

import asyncio
import base64
import io
import itertools
import json
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import numpy as np
import pytest
import structlog
from aiohttp import web

from bridge.audio import samples_to_float
from bridge.tools.speech import normalised_words
from tests.support.calls import BridgeFactory, wait_for
from tests.support.fakes import FakeGladia, FakeWebhook
from tests.support.phone import PhoneCall, phone_call

pytestmark = pytest.mark.timeout(90)

WELCOME = "Welcome to the bridge bank. How can I help you today?"
LONG = (
    "Your balance is one thousand two hundred dollars. Your last payment was to the electricity company. "
    "Would you like to hear the other payments of this month?"
)
TOKEN = "test-api-token-0123456789"


def stream_url(server: Any) -> str:
    return str(server.make_url("/twilio/stream"))


def answer_to(event_type: str, actions: list[dict[str, Any]]) -> Callable[[dict[str, Any]], Any]:
    def answer(event: dict[str, Any]) -> Any:
        return {"actions": actions} if event["type"] == event_type else None

    return answer


def events(hook: FakeWebhook, *types: str) -> list[dict[str, Any]]:
    return [e for e in hook.events() if e["type"] in types]


def quiet(fake_gladia: FakeGladia) -> None:
    """No transcripts from the fake's one-second segments: only the scripted speech events count."""
    fake_gladia.segment_seconds = 3600.0


def speech(at: float, started: bool) -> tuple[float, dict[str, Any]]:
    return at, {"type": "speech_start" if started else "speech_end", "data": {"time": at, "channel": 0}}


def partial(at: float, text: str) -> tuple[float, dict[str, Any]]:
    utterance = {
        "start": at - 0.5,
        "end": at,
        "text": text,
        "words": [],
        "language": "en",
        "confidence": 0.9,
        "channel": 0,
    }
    return at, {"type": "transcript", "data": {"id": f"p_{at}", "is_final": False, "utterance": utterance}}


def heard_seconds(call: PhoneCall) -> float:
    return len(call.ear.heard()) / 8000


@pytest.mark.recognition
async def test_a_say_is_spoken_and_the_caller_hears_the_words(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str], recognizer: Any
) -> None:
    """The bot answers call.started with a say: the caller hears it (transcribed back by the local
    recogniser from what the phone played), one sentence at a time, marked, and the bot learns it played."""
    hook, _ = webhook
    quiet(fake_gladia)
    hook.answer = answer_to("call.started", [{"type": "say", "id": "welcome", "text": WELCOME}])
    server = await make_bridge()
    call = await phone_call(stream_url(server), b"", until=lambda c: bool(hook.events("playback.finished")))
    started, finished = hook.events("playback.started"), hook.events("playback.finished")
    assert [e["action_id"] for e in started] == ["welcome"] and [e["action_id"] for e in finished] == ["welcome"]
    assert len(call.texts("mark")) == 2  # one mark per sentence
    heard = call.ear.heard()
    assert finished[0]["played_ms"] == pytest.approx(len(heard) / 8, abs=40)
    audio = samples_to_float(heard, "ulaw")
    from bridge.audio import resample

    text = recognizer.transcribe(resample(audio, 8000, 16000).astype(np.float32)).text
    said, got = normalised_words(WELCOME), normalised_words(text)
    assert sum(w in got for w in said) >= 0.6 * len(said), (text, WELCOME)
    first = call.ear.first_audio_at()
    assert first is not None and first < 2.0  # the first sentence plays while the next is synthesised


async def test_barge_in_pauses_confirms_and_reports_what_was_heard(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    """The caller speaks over a long reply: speech start pauses it (a clear at once), two words confirm
    it, the rest is dropped and playback.interrupted says what the caller heard."""
    hook, _ = webhook
    quiet(fake_gladia)
    fake_gladia.script = [speech(4.0, True), partial(4.6, "wait a second")]
    hook.answer = answer_to("call.started", [{"type": "say", "id": "balance", "text": LONG}])
    server = await make_bridge()
    call = await phone_call(
        stream_url(server), b"", until=lambda c: bool(hook.events("playback.interrupted")), max_seconds=20
    )
    (interrupted,) = hook.events("playback.interrupted")
    assert interrupted["action_id"] == "balance" and interrupted["reason"] == "speech"
    assert not hook.events("playback.finished")
    heard_words = interrupted["heard_text"].split()
    assert heard_words and LONG.split()[: len(heard_words)] == heard_words  # a prefix, in order
    assert len(heard_words) < len(LONG.split())
    (clear_at, _) = next((t, m) for t, m in call.received if '"clear"' in m)
    assert 3.9 < clear_at < 4.6  # paused on speech start, before any word
    # what the bridge says was heard is what the phone played, to within the lead
    assert interrupted["played_ms"] == pytest.approx(heard_seconds(call) * 1000, abs=350)
    await wait_for(lambda: bool(hook.events("call.ended")))
    summary = hook.events("call.ended")[0]["summary"]
    assert summary["reply_interrupted"] == 1 and summary["reply_actions"] == 1
    assert 0 < summary["reply_cleared_ms"] <= 400  # a clear throws away at most the lead (and a chunk)


async def test_a_false_start_resumes_where_it_paused(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    """A cough: speech starts and stops without a word. The reply pauses, then after
    false_interruption_timeout plays on from where it stopped: the caller hears every sentence once."""
    hook, _ = webhook
    quiet(fake_gladia)
    fake_gladia.script = [speech(3.0, True), speech(3.3, False)]
    hook.answer = answer_to("call.started", [{"type": "say", "id": "balance", "text": LONG}])
    server = await make_bridge(reply__false_interruption_timeout=1.0)
    call = await phone_call(
        stream_url(server), b"", until=lambda c: bool(hook.events("playback.finished")), max_seconds=30
    )
    assert not hook.events("playback.interrupted")
    (finished,) = hook.events("playback.finished")
    assert len(call.ear.clears) == 1
    # nothing lost, nothing played twice: what the phone played is the whole reply
    assert finished["played_ms"] == pytest.approx(heard_seconds(call) * 1000, abs=40)
    times = [t for t, m in call.received if '"media"' in m]
    assert any(b - a > 0.8 for a, b in itertools.pairwise(times))  # the pause
    await wait_for(lambda: bool(hook.events("call.ended")))
    summary = hook.events("call.ended")[0]["summary"]
    assert summary["barge_in_resumed"] == 1 and summary["reply_underruns"] == 0
    assert summary["reply_played_ms"] == finished["played_ms"]


async def test_hangup_after_playback_waits_for_the_last_mark(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    """say + hangup(after=playback): the bridge closes the stream only once the carrier has echoed the
    goodbye's last mark (late here), never on a timer; the call ends with bot_hangup."""
    hook, _ = webhook
    quiet(fake_gladia)
    hook.answer = answer_to(
        "call.started",
        [{"type": "say", "text": "Thank you for calling. Goodbye."}, {"type": "hangup", "after": "playback"}],
    )
    server = await make_bridge()
    call = await phone_call(stream_url(server), b"", until=lambda c: False, max_seconds=20, mark_delay=1.5)
    assert call.closed_by_bridge_at is not None and call.ws.close_code == 1000
    last_mark = max(t for t, _ in call.ear.marks)
    assert call.closed_by_bridge_at >= last_mark + 1.5 - 0.1  # after the (delayed) echo went out
    assert call.closed_by_bridge_at > call.ear.finished_at()
    await wait_for(lambda: bool(hook.events("call.ended")))
    assert hook.events("call.ended")[0]["summary"]["end_reason"] == "bot_hangup"
    assert [e["type"] for e in events(hook, "playback.started", "playback.finished")] == [
        "playback.started",
        "playback.finished",
    ]
    async with aiohttp.ClientSession() as http, http.get(server.make_url("/metrics")) as resp:
        metrics = await resp.text()
    values = {line.split()[0]: float(line.split()[1]) for line in metrics.splitlines() if line.startswith("bridge_")}
    assert values["bridge_reply_actions_total"] == 2.0  # the say and the hangup
    assert values["bridge_reply_played_seconds_total"] > 1.0 and values["bridge_reply_interrupted_total"] == 0.0


async def test_a_key_press_interrupts_audio_that_allows_it(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    hook, _ = webhook
    quiet(fake_gladia)
    hook.answer = answer_to("call.started", [{"type": "say", "id": "menu", "text": LONG, "interrupt": "dtmf"}])
    server = await make_bridge()
    sent: list[float] = []

    def press(call: PhoneCall, t: float) -> list[str]:
        if t > 3.0 and not sent:
            sent.append(t)
            return [
                json.dumps(
                    {
                        "event": "dtmf",
                        "streamSid": "MZ" + "1" * 32,
                        "sequenceNumber": "999",
                        "dtmf": {"track": "inbound_track", "digit": "1"},
                    }
                )
            ]
        return []

    await phone_call(
        stream_url(server), b"", until=lambda c: bool(hook.events("playback.interrupted")), max_seconds=20, events=press
    )
    (interrupted,) = hook.events("playback.interrupted")
    assert interrupted["reason"] == "dtmf" and interrupted["heard_text"]
    assert hook.events("call.dtmf")[0]["digit"] == "1"


async def test_a_retried_event_applies_its_answer_once(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    """The bot's first answer to call.started comes after the bridge gave up waiting (it retries): the
    bot answers the retry with the same actions; the reply plays once."""
    hook, _ = webhook
    quiet(fake_gladia)
    hook.delays = [2.5]  # the bridge's webhook timeout is 2 s in the tests
    hook.answer = answer_to("call.started", [{"type": "say", "id": "greet", "text": "Hello."}])
    server = await make_bridge()
    with structlog.testing.capture_logs() as logs:
        await phone_call(
            stream_url(server), b"", until=lambda c: bool(hook.events("playback.finished")), max_seconds=20
        )
    retried = {line["webhook_id"] for line in logs if line["event"] == "webhook.retry"}
    started_id = hook.requests[0].headers["webhook-id"]
    assert hook.requests[0].json["type"] == "call.started" and retried == {started_id}
    assert [e["action_id"] for e in hook.events("playback.started")] == ["greet"]


# -- the REST channel ----------------------------------------------------------------------------


async def _api(
    http: aiohttp.ClientSession,
    server: Any,
    method: str,
    path: str,
    body: Any = None,
    token: str | None = TOKEN,
    **headers: str,
) -> tuple[int, Any]:
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    raw = body if isinstance(body, bytes) else (json.dumps(body).encode() if body is not None else None)
    data = io.BytesIO(raw) if raw is not None else None
    async with http.request(method, server.make_url(path), data=data, headers=headers) as resp:
        return resp.status, await resp.json()


async def test_the_rest_api_acts_on_a_running_call(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    """Bearer auth, 404/409/413/422, Idempotency-Key, the allowlist for play urls, stale replies, state."""
    hook, _ = webhook
    server = await make_bridge({"BRIDGE_API_TOKEN": TOKEN, "BRIDGE_PLAY_URL_HOSTS": "prompts.example.com"})
    results: dict[str, Any] = {}

    async def bot(http: aiohttp.ClientSession) -> None:
        await wait_for(lambda: len(hook.events("utterance.final")) >= 2, timeout=15)
        call_id = hook.events("call.started")[0]["call"]["id"]
        u1, u2 = (e["utterance"]["id"] for e in hook.events("utterance.final")[:2])
        path = f"/v1/calls/{call_id}/actions"
        results["no token"] = await _api(http, server, "POST", path, {"actions": []}, token=None)
        results["bad token"] = await _api(http, server, "POST", path, {"actions": []}, token="nope")
        results["unknown"] = await _api(http, server, "POST", "/v1/calls/nope/actions", {"actions": []})
        results["bad body"] = await _api(http, server, "POST", path, {"actions": [{"type": "say"}]})
        results["too big"] = await _api(http, server, "POST", path, b"x" * (9 * 1024 * 1024))
        results["outside"] = await _api(
            http, server, "POST", path, {"actions": [{"type": "play", "url": "https://evil.example/a.wav"}]}
        )
        stale = {"actions": [{"type": "say", "id": "late", "text": "About that.", "in_reply_to": u1}]}
        results["stale"] = await _api(http, server, "POST", path, stale)
        fresh = {"actions": [{"type": "say", "id": "now", "text": "Yes.", "in_reply_to": u2, "interrupt": "none"}]}
        results["first"] = await _api(http, server, "POST", path, fresh, **{"Idempotency-Key": "k1"})
        results["repeat"] = await _api(http, server, "POST", path, fresh, **{"Idempotency-Key": "k1"})
        results["list"] = await _api(http, server, "GET", "/v1/calls")
        results["one"] = await _api(http, server, "GET", f"/v1/calls/{call_id}")
        await wait_for(lambda: bool(hook.events("playback.finished")), timeout=15)
        results["call_id"] = call_id

    async with aiohttp.ClientSession() as http:
        task = asyncio.create_task(bot(http))
        await phone_call(stream_url(server), b"", until=lambda c: task.done(), max_seconds=40)
        await task
        await wait_for(lambda: bool(hook.events("call.ended")))
        results["ended"] = await _api(
            http, server, "POST", f"/v1/calls/{results['call_id']}/actions", {"actions": [{"type": "stop"}]}
        )
    assert results["no token"][0] == 401 and results["bad token"][0] == 401
    assert results["unknown"][0] == 404
    assert results["bad body"][0] == 422 and "actions[0].text" in results["bad body"][1]["error"]
    assert results["too big"][0] == 413
    status, body = results["outside"]
    assert status == 202 and body["actions"][0]["status"] == "failed"
    assert "evil.example" in body["actions"][0]["error"]
    assert results["stale"][0] == 202
    failures = {e["action_id"]: e["error"] for e in hook.events("action.failed")}
    assert "stale reply" in failures["late"] and "late" not in [e["action_id"] for e in hook.events("playback.started")]
    assert results["first"] == (202, {"actions": [{"id": "now", "status": "queued"}]})
    assert results["repeat"] == results["first"]
    assert [e["action_id"] for e in hook.events("playback.started")] == ["now"]  # applied once
    assert [c["id"] for c in results["list"][1]["calls"]] == [results["call_id"]]
    assert results["one"][1]["state"] in ("speaking", "listening") and "queue" in results["one"][1]
    one = results["one"][1]  # who and how long, for a list of live calls (the console's)
    assert (one["from"], one["to"], one["direction"]) == ("+15550001", "+15550002", "inbound")
    assert 0 < one["duration_s"] < 60 and results["list"][1]["calls"][0]["from"] == "+15550001"
    assert results["ended"][0] == 409


async def test_the_api_is_off_without_a_token(make_bridge: BridgeFactory) -> None:
    server = await make_bridge()
    async with aiohttp.ClientSession() as http:
        status, body = await _api(http, server, "GET", "/v1/calls")
    assert status == 403 and "BRIDGE_API_TOKEN" in body["error"]


# -- the bot WebSocket ---------------------------------------------------------------------------


class FakeBotSocket:
    """A bot reached by WebSocket: records what the bridge sends, answers call.started with a streamed
    say, and drops its first connection once the reply has started (the bridge must dial again)."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.queries: list[dict[str, str]] = []
        self.app = web.Application()
        self.app.router.add_get("/bot", self._socket)

    def types(self) -> list[str]:
        return [m.get("type", "") for m in self.received]

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.headers.append(dict(request.headers))
        self.queries.append(dict(request.query))
        first = len(self.headers) == 1
        async for msg in ws:
            data = json.loads(msg.data)
            if "sequence" in data:  # a durable event: acknowledged; one seen before (resent) is dropped
                await ws.send_str(json.dumps({"type": "ack", "sequence": data["sequence"]}))
                if data["sequence"] in {m.get("sequence") for m in self.received}:
                    continue
            self.received.append(data)
            if data["type"] == "call.started":
                for piece, last in (("Hello there. How ", False), ("can I help?", True)):
                    await ws.send_str(
                        json.dumps({"actions": [{"type": "say", "stream_id": "s1", "text": piece, "last": last}]})
                    )
            if data["type"] == "playback.started" and first:
                await ws.close()
        return ws


async def test_the_bot_websocket_streams_text_and_survives_a_drop(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str], aiohttp_server: Any
) -> None:
    """BOT_WS_URL: the bridge dials the bot for the call (bearer token, call id), sends its events and
    the real-time speech.started, speaks a streamed say as one action, and when the bot's socket drops
    it dials again and sends what the bot had not seen."""
    hook, _ = webhook
    quiet(fake_gladia)
    fake_gladia.script = [speech(5.0, True), speech(5.2, False)]
    bot = FakeBotSocket()
    bot_server = await aiohttp_server(bot.app, host="127.0.0.1")
    ws_url = str(bot_server.make_url("/bot")).replace("http://", "ws://")
    server = await make_bridge({"BOT_WS_URL": ws_url, "BOT_WS_TOKEN": "bot-token"})
    await phone_call(
        stream_url(server),
        b"",
        until=lambda c: bool(hook.events("playback.finished")) and "speech.started" in bot.types(),
        max_seconds=20,
    )
    await wait_for(lambda: "call.ended" in bot.types(), timeout=10)
    assert len(bot.headers) == 2 and all(h["Authorization"] == "Bearer bot-token" for h in bot.headers)
    call_id = hook.events("call.started")[0]["call"]["id"]
    assert bot.queries[0] == {"call_id": call_id}
    assert bot.types().count("actions.accepted") == 2
    durable = [m for m in bot.received if "sequence" in m]
    assert [m["sequence"] for m in durable] == sorted({m["sequence"] for m in durable})  # in order, once
    assert [e["type"] for e in hook.events()] == [m["type"] for m in durable]  # the same events as the webhook
    (finished,) = hook.events("playback.finished")
    assert finished["action_id"] == "s1"
    assert [e["action_id"] for e in hook.events("playback.started")] == ["s1"]


# -- another dialect: Asterisk chan_websocket (binary audio, text commands) -----------------------------


async def asterisk_phone(
    url: str, seconds: float = 20, xoff: tuple[float, float] | None = None
) -> tuple[bytearray, list[tuple[float, str]], list[float]]:
    """An Asterisk channel on chan_websocket (plain text): streams silence, plays the binary audio it
    gets at real time, answers MEDIA_MARK_PROCESSED when a mark's audio has played, until the bridge
    closes. ``xoff=(at, for)``: MEDIA_XOFF at that time, MEDIA_XON that long after. Returns the audio
    heard, the text log (commands in, what it sent) and when each binary message arrived."""
    from bridge.tools.writers.asterisk import AsteriskStreamWriter

    writer = AsteriskStreamWriter("1700000000.1")
    heard = bytearray()
    log: list[tuple[float, str]] = []
    arrivals: list[float] = []
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        await ws.send_str(writer.media_start(160))
        t0 = time.monotonic()
        busy_until = 0.0
        pending: list[tuple[float, str]] = []

        async def listen() -> None:
            nonlocal busy_until
            async for msg in ws:
                now = time.monotonic() - t0
                if msg.type is aiohttp.WSMsgType.BINARY:
                    heard.extend(msg.data)
                    arrivals.append(now)
                    busy_until = max(now, busy_until) + len(msg.data) / 8000
                elif msg.type is aiohttp.WSMsgType.TEXT:
                    log.append((now, msg.data))
                    if msg.data.startswith("MARK_MEDIA "):
                        pending.append((max(now, busy_until), msg.data.split(" ", 1)[1]))

        listener = asyncio.create_task(listen())
        frames = 0
        flow = list(xoff or ())
        while not ws.closed and time.monotonic() - t0 < seconds:
            now = time.monotonic() - t0
            if flow and now >= flow[0]:
                command = "MEDIA_XOFF" if len(flow) == 2 else "MEDIA_XON"
                await ws.send_str(command)
                log.append((now, command))
                flow = [now + flow[1]] if len(flow) == 2 else []
            for due, name in [p for p in pending if p[0] <= now]:
                pending.remove((due, name))
                await ws.send_str(f"MEDIA_MARK_PROCESSED {name}")
                log.append((now, f"echo {name}"))
            await ws.send_bytes(b"\xff" * 160)
            frames += 1
            await asyncio.sleep(max(0.0, t0 + frames * 0.02 - time.monotonic()))
        await asyncio.wait_for(listener, 5)
    return heard, log, arrivals


async def test_asterisk_hears_the_answer_and_is_hung_up_by_command(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    """On Asterisk the answer goes out as binary ulaw frames, a MARK_MEDIA follows each sentence (the
    phone answers MEDIA_MARK_PROCESSED when it has played it), and the hang-up is the HANGUP command,
    sent only after the last mark came back."""
    hook, _ = webhook
    quiet(fake_gladia)
    hook.answer = answer_to(
        "call.started", [{"type": "say", "text": "Thank you for calling. Goodbye."}, {"type": "hangup"}]
    )
    server = await make_bridge()
    heard, log, _ = await asterisk_phone(str(server.make_url("/asterisk/stream")))
    commands = [what for _, what in log]
    assert sum(c.startswith("MARK_MEDIA") for c in commands) == 2
    assert commands[-1] == "HANGUP" and commands[-2].startswith("echo ")  # the last mark came back first
    await wait_for(lambda: bool(hook.events("call.ended")))
    (finished,) = hook.events("playback.finished")
    assert finished["played_ms"] == pytest.approx(len(heard) / 8, abs=20)
    assert hook.events("call.ended")[0]["summary"]["end_reason"] == "bot_hangup"


async def test_asterisk_flow_control_holds_the_audio_until_xon(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    """MEDIA_XOFF: not one frame until MEDIA_XON; then the answer goes on and ends whole."""
    hook, _ = webhook
    quiet(fake_gladia)
    hook.answer = answer_to("call.started", [{"type": "say", "text": LONG}, {"type": "hangup"}])
    server = await make_bridge()
    heard, log, arrivals = await asterisk_phone(str(server.make_url("/asterisk/stream")), seconds=30, xoff=(2.0, 1.5))
    xoff_at = next(t for t, what in log if what == "MEDIA_XOFF")
    xon_at = next(t for t, what in log if what == "MEDIA_XON")
    assert xon_at - xoff_at >= 1.4
    assert not [t for t in arrivals if xoff_at + 0.05 < t < xon_at]  # nothing sent while the queue is full
    assert any(t > xon_at for t in arrivals)
    (finished,) = hook.events("playback.finished")
    assert finished["played_ms"] == pytest.approx(len(heard) / 8, abs=20)


async def test_a_bots_own_audio_streams_in_pieces_as_one_action(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    """`audio` pieces (PCM16 at 24 kHz here, as a bot's own TTS sends them) with one stream_id play as
    one action named by the stream, resampled to the carrier's 8 kHz mu-law, nothing lost."""
    hook, _ = webhook
    quiet(fake_gladia)
    server = await make_bridge({"BRIDGE_API_TOKEN": TOKEN})
    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(24000) / 24000) * 32767).astype("<i2").tobytes()  # 1 s
    pieces = [tone[i : i + 16000] for i in range(0, len(tone), 16000)]

    async def bot(http: aiohttp.ClientSession) -> None:
        await wait_for(lambda: bool(hook.events("call.started")), timeout=10)
        path = f"/v1/calls/{hook.events('call.started')[0]['call']['id']}/actions"
        for n, piece in enumerate(pieces):
            action = {
                "type": "audio",
                "stream_id": "tts-1",
                "sample_rate": 24000,
                "audio": base64.b64encode(piece).decode(),
                "last": n == len(pieces) - 1,
            }
            status, _ = await _api(http, server, "POST", path, {"actions": [action]})
            assert status == 202
            await asyncio.sleep(0.2)  # pieces come faster than they play: no gap, one action

    async with aiohttp.ClientSession() as http:
        task = asyncio.create_task(bot(http))
        call = await phone_call(
            stream_url(server), b"", until=lambda c: bool(hook.events("playback.finished")), max_seconds=15
        )
        await task
    (finished,) = hook.events("playback.finished")
    assert finished["action_id"] == "tts-1" and [e["action_id"] for e in hook.events("playback.started")] == ["tts-1"]
    assert finished["played_ms"] == pytest.approx(1000, abs=25) == pytest.approx(heard_seconds(call) * 1000, abs=25)


async def test_nothing_follows_call_ended_not_even_a_bad_answer_to_it(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    """A bot answering call.ended with a bad action list gets no event after call.ended (it would sit
    in the outbox of a finished call): call.ended, then transcript.completed, stay the call's last events."""
    hook, _ = webhook
    quiet(fake_gladia)
    hook.answer = answer_to("call.ended", [{"type": "sing"}])
    server = await make_bridge()
    await phone_call(stream_url(server), b"\xff" * 8000, until=lambda c: True, max_seconds=5)
    await wait_for(lambda: bool(hook.events("call.ended")))
    await asyncio.sleep(0.5)
    types = [e["type"] for e in hook.events()]
    assert types[-2:] == ["call.ended", "transcript.completed"] and not hook.events("action.failed")
    async with aiohttp.ClientSession() as http, http.get(server.make_url("/healthz")) as resp:
        assert (await resp.json())["outbox"]["pending"] == 0


# -- another dialect: Plivo (checkpoints that a clear silences) -------------------------------------------


async def test_plivo_barge_in_then_a_goodbye_despite_checkpoints_a_clear_never_answers(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    """Plivo answers a checkpoint (playedStream) only when its audio played: after the caller barges in
    (clearAudio -> clearedAudio), the checkpoints of the dropped audio never come back. The interruption
    is reported, and the goodbye that follows is confirmed by its own checkpoint, after which the bot's
    hang-up closes the stream."""
    from bridge.tools.writers.plivo import PlivoStreamWriter

    hook, _ = webhook
    quiet(fake_gladia)
    # The caller speaks at 5 s of the call: well after the offer's first sentence (about 2.7 s of speech)
    # ended and its checkpoint went out, on a machine whose speech synthesis starts late too.
    fake_gladia.script = [speech(5.0, True), partial(5.5, "no thanks")]

    def bot(event: dict[str, Any]) -> Any:
        if event["type"] == "call.started":
            return {"actions": [{"type": "say", "id": "offer", "text": LONG}]}
        if event["type"] == "playback.interrupted":
            return {"actions": [{"type": "say", "id": "bye", "text": "Okay. Goodbye."}, {"type": "hangup"}]}
        return None

    hook.answer = bot
    server = await make_bridge()
    writer = PlivoStreamWriter("plivo-call-1", "plivo-stream-1")
    heard = bytearray()
    log: list[tuple[float, str]] = []
    async with aiohttp.ClientSession() as http, http.ws_connect(server.make_url("/plivo/stream")) as ws:
        await ws.send_str(writer.start())
        t0 = time.monotonic()
        busy_until = 0.0
        pending: list[tuple[float, str]] = []
        replies: list[str] = []

        async def listen() -> None:
            nonlocal busy_until
            async for msg in ws:
                now = time.monotonic() - t0
                data = json.loads(msg.data)
                log.append((now, data["event"]))
                if data["event"] == "playAudio":
                    audio = base64.b64decode(data["media"]["payload"])
                    heard.extend(audio)
                    busy_until = max(now, busy_until) + len(audio) / 8000
                elif data["event"] == "checkpoint":
                    pending.append((max(now, busy_until), data["name"]))
                elif data["event"] == "clearAudio":
                    pending.clear()  # dropped audio: its checkpoints are never answered
                    busy_until = now
                    replies.append(writer.cleared_audio())

        listener = asyncio.create_task(listen())
        frames = 0
        while not ws.closed and time.monotonic() - t0 < 25:
            now = time.monotonic() - t0
            for due, name in [p for p in pending if p[0] <= now]:
                pending.remove((due, name))
                replies.append(writer.played_stream(name))
            while replies:
                await ws.send_str(replies.pop(0))
            await ws.send_str(writer.media(b"\xff" * 160))
            frames += 1
            await asyncio.sleep(max(0.0, t0 + frames * 0.02 - time.monotonic()))
        await asyncio.wait_for(listener, 5)
    events_in = [what for _, what in log]
    assert "clearAudio" in events_in and events_in.count("checkpoint") >= 3
    (interrupted,) = hook.events("playback.interrupted")
    assert interrupted["action_id"] == "offer" and interrupted["reason"] == "speech" and interrupted["heard_text"]
    (finished,) = hook.events("playback.finished")
    assert finished["action_id"] == "bye"
    await wait_for(lambda: bool(hook.events("call.ended")))
    assert hook.events("call.ended")[0]["summary"]["end_reason"] == "bot_hangup"


# -- both parties on a stream that plays back (jambonz stereo): only the caller barges in ----------------


async def test_on_a_stereo_stream_only_the_callers_channel_can_interrupt(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    """jambonz listen with mixType stereo and bidirectional audio: channel 1 is what the caller hears,
    the bot's own voice. Speech and words on channel 1 must not pause or interrupt the bot; the same
    on channel 0 (the caller) does."""
    hook, _ = webhook
    quiet(fake_gladia)

    def on(channel: int, at: float, text: str) -> list[tuple[float, dict[str, Any]]]:
        start, words = speech(at, True), partial(at + 0.3, text)
        start[1]["data"]["channel"] = channel
        words[1]["data"]["utterance"]["channel"] = channel
        return [start, words]

    # The caller speaks at 4.5 s: the offer (started within about a second, later on a slow CPU) has
    # then played for well over 2 s, and at 1 s (channel 1's words) for under 1 s.
    fake_gladia.script = [*on(1, 1.0, "hello there friend"), *on(0, 4.5, "stop please")]
    hook.answer = answer_to("call.started", [{"type": "say", "id": "offer", "text": LONG}])
    server = await make_bridge()
    url = str(server.make_url("/audiofork/stream")) + "?mix=stereo"
    sent_back: list[str] = []
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(url, protocols=("audio.jambonz.org",)) as ws,
    ):
        await ws.send_str(json.dumps({"callSid": "jb-1", "from": "+15550100", "to": "+15550199", "sampleRate": 8000}))

        async def listen() -> None:
            async for msg in ws:
                if msg.type is aiohttp.WSMsgType.TEXT:
                    sent_back.append(json.loads(msg.data)["type"])

        listener = asyncio.create_task(listen())
        t0 = time.monotonic()
        for k in range(400):  # 8 s of stereo silence, in real time
            await ws.send_bytes(b"\x00\x00" * 2 * 160)
            await asyncio.sleep(max(0.0, t0 + (k + 1) * 0.02 - time.monotonic()))
        await ws.close()
        await asyncio.wait_for(listener, 5)
    await wait_for(lambda: bool(hook.events("call.ended")))
    (started,) = hook.events("call.started")
    assert started["stt"]["channels"] == 2
    (interrupted,) = hook.events("playback.interrupted")
    assert interrupted["action_id"] == "offer" and interrupted["reason"] == "speech"
    # not at 1 s (words on channel 1) but at 4.5 s (the caller's): more than 2 s played, never paused before
    assert interrupted["played_ms"] > 2000, interrupted
    assert hook.events("call.ended")[0]["summary"]["barge_in_resumed"] == 0
    assert "playAudio" in sent_back and "killAudio" in sent_back
