"""``bridge call --dtmf``: the key schedule, the carriers' DTMF messages on the wire, the keys reaching
the bot as ``call.dtmf`` events in order and about when they were asked for."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestServer

from bridge.adapters import CARRIERS
from bridge.tools.dialects import keys_unsupported
from bridge.tools.keypad import KeyPress, parse_keys
from bridge.tools.player import play_call
from tests.support.bridge_process import run_bridge
from tests.support.calls import BridgeFactory, caller_audio, wait_for
from tests.support.fakes import FakeWebhook
from tests.support.process import minimal_env
from tests.test_call_command import wav_bytes

GOOD = [
    ("1", [(0.0, "1")]),
    ("1234#@6s", [(6.0, "1"), (6.2, "2"), (6.4, "3"), (6.6, "4"), (6.8, "#")]),
    ("1234#@6s,9@12.5s", [(6.0, "1"), (6.2, "2"), (6.4, "3"), (6.6, "4"), (6.8, "#"), (12.5, "9")]),
    ("*0@1", [(1.0, "*"), (1.2, "0")]),  # the "s" may be left out
    (" 9 @ 2s , ab@0s ", [(0.0, "A"), (0.2, "B"), (2.0, "9")]),  # spaces; a-d as A-D; sorted by time
    ("5@3s,6@3s", [(3.0, "5"), (3.0, "6")]),  # the same moment: the order given
    ("D@0.25s", [(0.25, "D")]),
]
BAD = [
    ("", "no keys"),
    ("   ", "no keys"),
    ("12,,3", "a group is KEYS"),
    ("@5s", "no keys before"),
    ("12E@1s", "'E' is not a keypad key"),
    ("1 2", "' ' is not a keypad key"),
    ("1@", "is not a time in seconds"),
    ("1@soon", "is not a time in seconds"),
    ("1@-2s", "between 0 and"),
    ("1@nans", "between 0 and"),
    ("1@1e9s", "between 0 and"),
    ("1@2s@3s", "a group is KEYS"),
    ("1@2ss", "is not a time in seconds"),
]


@pytest.mark.parametrize(("text", "presses"), GOOD)
def test_schedules_that_read(text: str, presses: list[tuple[float, str]]) -> None:
    got = parse_keys(text)
    assert [(round(p.at, 6), p.key) for p in got] == presses


@pytest.mark.parametrize(("text", "message"), BAD)
def test_schedules_that_do_not_read_say_why(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        parse_keys(text)


def test_every_carrier_has_a_dtmf_message() -> None:
    """Each dialect bridge call speaks sends keys the way its carrier documents (jambonz passDtmf for forks)."""
    assert {c: keys_unsupported(c) for c in CARRIERS} == dict.fromkeys(CARRIERS)


# -- on the wire ---------------------------------------------------------------------------------


async def _recording_server(aiohttp_server: Any) -> tuple[TestServer, list[str | bytes]]:
    """A stream endpoint that keeps every message it gets (the carrier side is what is under test)."""
    got: list[str | bytes] = []

    async def stream(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=("audio.jambonz.org",))
        await ws.prepare(request)
        async for msg in ws:
            got.append(msg.data if msg.type is WSMsgType.TEXT else bytes(msg.data))
            if msg.type is WSMsgType.TEXT and json.loads(msg.data).get("event") == "stop":
                break  # the call is over: close, as a bridge does
        await ws.close()
        return ws

    app = web.Application()
    app.router.add_get("/stream", stream)
    server: TestServer = await aiohttp_server(app, host="127.0.0.1")
    return server, got


async def test_twilio_keys_are_twilios_documented_message_in_sequence(aiohttp_server: Any) -> None:
    """Twilio documents ``{"event":"dtmf","streamSid","sequenceNumber","dtmf":{"track":"inbound_track",
    "digit"}}`` (Media Streams, WebSocket messages); sequenceNumber counts every message, keys included."""
    server, got = await _recording_server(aiohttp_server)
    keys = [KeyPress(0.1, "4"), KeyPress(0.3, "#")]
    call = play_call(str(server.make_url("/stream")), caller_audio(0.6), realtime=False, keys=keys)
    report = await asyncio.wait_for(call, 10)
    messages = [json.loads(m) for m in got]
    dtmf = [m for m in messages if m["event"] == "dtmf"]
    assert [set(m) for m in dtmf] == [{"event", "streamSid", "sequenceNumber", "dtmf"}] * 2
    assert [m["dtmf"] for m in dtmf] == [
        {"track": "inbound_track", "digit": "4"},
        {"track": "inbound_track", "digit": "#"},
    ]
    assert {m["streamSid"] for m in dtmf} == {report.stream_sid}
    numbers = [int(m["sequenceNumber"]) for m in messages if m["event"] != "connected"]
    assert numbers == list(range(1, len(numbers) + 1))  # no gap, no repeat
    media_before = [sum(1 for m in messages[: messages.index(d)] if m["event"] == "media") for d in dtmf]
    assert media_before == [5, 15]  # between the frames of 0.1 s and 0.3 s (20 ms each)
    assert [k for _, k in report.keys_sent] == ["4", "#"]


async def test_telnyx_and_jambonz_keys_are_their_documented_messages(aiohttp_server: Any) -> None:
    """Telnyx: ``{event:"dtmf", stream_id, occurred_at, sequence_number, dtmf{digit}}``; jambonz listen with
    passDtmf: text ``{"event":"dtmf","dtmf":"5","duration":...}`` (shared/reference/carrier-conformance.md)."""
    server, got = await _recording_server(aiohttp_server)
    url = str(server.make_url("/stream"))
    await asyncio.wait_for(
        play_call(url, caller_audio(0.3), realtime=False, carrier="telnyx", keys=[KeyPress(0.0, "7")]), 10
    )
    (key,) = [m for m in map(json.loads, got) if m["event"] == "dtmf"]
    assert set(key) == {"event", "stream_id", "occurred_at", "sequence_number", "dtmf"}
    assert key["dtmf"] == {"digit": "7"} and key["occurred_at"].endswith("Z")
    got.clear()
    fork = play_call(url, caller_audio(0.3), realtime=False, carrier="audiofork", keys=[KeyPress(0.0, "5")])
    await asyncio.wait_for(fork, 10)
    texts = [json.loads(m) for m in got if isinstance(m, str)]
    assert [m for m in texts if m.get("event") == "dtmf"] == [{"event": "dtmf", "dtmf": "5", "duration": 250}]


# -- into a bridge ---------------------------------------------------------------------------------


def _timed(hook: FakeWebhook) -> list[tuple[float, dict[str, Any]]]:
    """Every event the fake bot gets, with the time it got it."""
    seen: list[tuple[float, dict[str, Any]]] = []

    def answer(event: dict[str, Any]) -> None:
        seen.append((time.monotonic(), event))

    hook.answer = answer
    return seen


async def test_keys_reach_the_bot_in_order_at_about_their_time(
    make_bridge: BridgeFactory, webhook: tuple[FakeWebhook, str], tmp_path: Path
) -> None:
    """``bridge call --dtmf`` against a bridge: ``call.dtmf`` events with the digits in order, each about
    when the schedule says (after ``call.started``, loose bounds: the bot's webhook is in the way)."""
    hook, _ = webhook
    seen = _timed(hook)
    server: Any = await make_bridge()
    path = tmp_path / "call.wav"
    path.write_bytes(wav_bytes(0.2 * np.sin(2 * np.pi * 300 * np.arange(8000 * 2) / 8000), 8000))
    proc = await run_bridge(
        "call",
        str(path),
        "--no-twiml",
        "--dtmf",
        "12@0.5s,#@2.5s",
        "--url",
        str(server.make_url("/twilio/stream")),
        env=minimal_env(),
        timeout=30,
    )
    assert proc.returncode == 0, proc.err.decode()
    err = proc.err.decode()
    assert "key 1 pressed at" in err and "key # pressed at" in err  # printed as they go
    await wait_for(lambda: bool(hook.events("call.ended")), timeout=20)
    (started_at,) = [t for t, e in seen if e["type"] == "call.started"]
    keys = [(t - started_at, e["digit"]) for t, e in seen if e["type"] == "call.dtmf"]
    assert [k for _, k in keys] == ["1", "2", "#"]
    for (at, _), asked in zip(keys, (0.5, 0.7, 2.5), strict=True):
        assert asked - 0.3 < at < asked + 0.8, keys
    ended = hook.events("call.ended")[0]
    assert ended["summary"]["end_reason"] == "stop"  # the call went on to the end of the last key


@pytest.mark.parametrize("carrier", list(CARRIERS))
async def test_every_dialects_keys_become_call_dtmf(
    make_bridge: BridgeFactory, webhook: tuple[FakeWebhook, str], carrier: str
) -> None:
    hook, _ = webhook
    server: Any = await make_bridge()
    keys = parse_keys("90#@0.1s")
    url = str(server.make_url(f"/{carrier}/stream"))
    await asyncio.wait_for(play_call(url, caller_audio(0.5), realtime=False, carrier=carrier, keys=keys), 20)
    await wait_for(lambda: bool(hook.events("call.ended")), timeout=20)
    assert [e["digit"] for e in hook.events("call.dtmf")] == ["9", "0", "#"]


async def test_bad_schedule_is_refused_before_calling(tmp_path: Path) -> None:
    path = tmp_path / "call.wav"
    path.write_bytes(wav_bytes(np.zeros(800), 8000))
    proc = await run_bridge(
        "call", str(path), "--dtmf", "12X@1s", "--url", "ws://127.0.0.1:9/twilio/stream", env=minimal_env(), timeout=30
    )
    assert proc.returncode == 2
    assert "--dtmf: '12X@1s': 'X' is not a keypad key" in proc.err.decode()
