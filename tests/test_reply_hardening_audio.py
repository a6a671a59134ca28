"""Hardening of the way back to the caller (issue 25): what a WAV may declare, a per-call task that
survives any one action, playout state that forgets ended actions, ids that name one live action, a
bound on the marks waiting on a call, and a play url whose body arrives in pieces.

The call-side tests drive a real :class:`~bridge.reply.call_reply.CallReply` on a jambonz audio fork
(8 kHz PCM, no marks: the clock says when audio played), recording what it sends and emits."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
import ssl
import struct
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np
import pytest
import structlog
import trustme
from aiohttp import web

from bridge.adapters.audiofork import AudioForkAdapter
from bridge.audio import RateConverter
from bridge.errors import WavError
from bridge.reply.actions import parse_actions
from bridge.reply.call_reply import CallReply
from bridge.reply.playout import PlaybackInterrupted, Playout, Segment
from bridge.reply.producer import MAX_PENDING_MARKS
from bridge.reply.tts import Speaker, Speech
from bridge.settings import ReplySettings
from bridge.wav import MAX_WAV_RATE, MIN_WAV_RATE, read_wav
from tests.support.calls import BridgeFactory, wait_for
from tests.support.fakes import FakeWebhook
from tests.support.phone import phone_call

pytestmark = pytest.mark.timeout(60)


API_TOKEN = "test-api-token-0123456789"


def wav(seconds: float, rate: int = 8000, *, level: float = 0.3) -> bytes:
    """A 16-bit mono PCM WAV of a 440 Hz tone; ``rate`` is what the header declares."""
    n = round(seconds * rate)
    tone = level * np.sin(2 * np.pi * 440 * np.arange(n) / max(rate, 1))
    return wav_of(np.clip(np.rint(tone * 32767), -32768, 32767).astype("<i2").tobytes(), rate)


def wav_of(data: bytes, rate: int, *, tag: int = 1, bits: int = 16, channels: int = 1) -> bytes:
    block = channels * bits // 8
    header = struct.pack("<HHIIHH", tag, channels, rate, (rate * block) & 0xFFFFFFFF, block, bits)
    return (
        b"RIFF"
        + struct.pack("<I", 36 + len(data))
        + b"WAVE"
        + b"fmt "
        + struct.pack("<I", 16)
        + header
        + b"data"
        + struct.pack("<I", len(data))
        + data
    )


@dataclass
class Line:
    """A CallReply on a jambonz fork, with what it emitted and sent."""

    reply: CallReply
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    sent: list[str | bytes] = field(default_factory=list)

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [p for t, p in self.events if t == kind]

    def outcome(self, action_id: str) -> tuple[str, dict[str, Any]] | None:
        for kind, payload in self.events:
            ended = kind in ("playback.finished", "playback.interrupted", "action.failed")
            if ended and payload.get("action_id") == action_id:
                return kind, payload
        return None

    def apply(self, *actions: dict[str, Any]) -> list[Any]:
        return self.reply.apply(parse_actions({"actions": list(actions)}))


class FailingEngine:
    """A TTS engine that breaks in a way no one planned for (not a TtsError)."""

    name = "failing"

    async def synthesize(self, text: str, voice: str | None) -> Speech:
        raise RuntimeError(f"engine crashed on {text!r}")

    async def aclose(self) -> None:
        return None


@asynccontextmanager
async def line(
    *,
    speaker: Speaker | None = None,
    http: aiohttp.ClientSession | None = None,
    settings: ReplySettings | None = None,
    emit: Callable[[Line, str, dict[str, Any]], None] | None = None,
) -> AsyncIterator[Line]:
    adapter = AudioForkAdapter(default_sample_rate=8000)
    adapter.subprotocol = "audio.jambonz.org"
    adapter.receive(json.dumps({"callSid": "x", "sampleRate": 8000}))
    holder: list[Line] = []

    def record(kind: str, payload: dict[str, Any]) -> None:
        holder[0].events.append((kind, payload))
        if emit is not None:
            emit(holder[0], kind, payload)

    async def send(message: str | bytes) -> None:
        holder[0].sent.append(message)

    reply = CallReply(
        "c1",
        settings=settings or ReplySettings(),
        speaker=speaker,
        http=http,
        emit=record,
        on_hangup=lambda: None,
    )
    holder.append(Line(reply))
    reply.attach(adapter, send)
    try:
        yield holder[0]
    finally:
        await reply.close()


def queued(call: Line) -> list[str]:
    """The ids the playout holds (queued or playing)."""
    playout = call.reply.playout
    return playout.queued_actions if playout is not None else []


def played_and_waiting(call: Line, stream: str) -> bool:
    """The stream's piece played out and the playout waits for its next piece."""
    return {"action_id": stream} in call.of("playback.started") and stream not in queued(call)


def arrived(call: Line, action_id: str) -> bool:
    """The action reached the playout (or already ended)."""
    return action_id in queued(call) or call.outcome(action_id) is not None


async def max_loop_lag(until: Callable[[], bool], timeout: float) -> float:
    """How late a 10 ms timer ran, at worst, until ``until()`` holds."""
    worst = 0.0
    async with asyncio.timeout(timeout):
        while not until():
            t = time.monotonic()
            await asyncio.sleep(0.01)
            worst = max(worst, time.monotonic() - t - 0.01)
    return worst


# -- 1. what a WAV may declare ----------------------------------------------------------------------


@pytest.mark.parametrize("rate", [1000, 7999, 48001, 300_007, 4_294_967_291])
def test_a_wav_rate_outside_the_telephone_range_is_refused_with_the_range(rate: int) -> None:
    """A header rate outside 8000-48000 Hz is refused, and the message names the range."""
    with pytest.raises(WavError, match=rf"{MIN_WAV_RATE}.*{MAX_WAV_RATE}"):
        read_wav(wav_of(b"\x00\x00" * 20, rate))


@pytest.mark.parametrize("rate", [8000, 11025, 22050, 44100, 47999, 48000])
def test_a_wav_rate_inside_the_range_reads(rate: int) -> None:
    """Every rate from 8000 to 48000 Hz reads, odd ones included."""
    assert read_wav(wav(0.1, rate)).sample_rate == rate


def test_a_wav_over_the_duration_bound_is_refused_from_its_header() -> None:
    """``max_seconds`` is checked from the header: a long WAV is refused before anything is decoded."""
    long = wav_of(b"\xff" * (8000 * 301), 8000, tag=7, bits=8)  # 301 s of mu-law
    with pytest.raises(WavError, match=r"301\.0 s.*300 s"):
        read_wav(long, max_seconds=300.0)
    assert read_wav(long).seconds == pytest.approx(301.0)


@pytest.mark.parametrize(("in_rate", "out_rate"), [(47_999, 8000), (8000, 47_999), (300_007, 8000), (46_349, 16000)])
def test_a_coprime_rate_costs_no_more_than_a_bounded_number_of_phases(in_rate: int, out_rate: int) -> None:
    """A coprime pair of rates is converted with at most ``MAX_PHASES`` filter phases (its ratio
    approximated), quickly, and gives the length the exact ratio would."""
    t = time.monotonic()
    conv = RateConverter(in_rate, out_rate)
    x = np.sin(np.arange(in_rate // 10) * 0.01)
    out = np.concatenate((conv.feed(x), conv.flush()))
    assert time.monotonic() - t < 1.0
    assert conv.up <= RateConverter.MAX_PHASES
    assert len(out) == pytest.approx(len(x) * out_rate / in_rate, rel=1e-3)


def test_the_usual_rates_keep_their_exact_ratio() -> None:
    """44.1 -> 8 kHz and 22.05 -> 48 kHz are not approximated (the resampler's output is unchanged)."""
    assert (RateConverter(44100, 8000).up, RateConverter(44100, 8000).down) == (80, 441)
    assert (RateConverter(22050, 48000).up, RateConverter(22050, 48000).down) == (320, 147)


async def test_a_tiny_wav_at_an_odd_rate_neither_stalls_the_loop_nor_plays() -> None:
    """The 84-byte WAV at 300,007 Hz fails its play at once (action.failed names the range), the event
    loop never waits, and a later dtmf plays."""
    async with line() as call:
        tiny = wav_of(b"\x01\x00" * 20, 300_007)
        assert len(tiny) == 84
        call.apply({"type": "play", "id": "odd", "audio": base64.b64encode(tiny).decode()})
        lag = await max_loop_lag(lambda: call.outcome("odd") is not None, timeout=30)
        kind, payload = call.outcome("odd") or ("", {})
        assert kind == "action.failed" and "8000" in payload["error"] and "48000" in payload["error"]
        assert lag < 0.2
        call.apply({"type": "dtmf", "id": "d1", "digits": "1"})
        await wait_for(lambda: call.outcome("d1") is not None, timeout=5)
        assert (call.outcome("d1") or ("",))[0] == "playback.finished"


async def test_a_wav_longer_than_the_call_may_hold_is_refused_before_conversion() -> None:
    """A 301 s WAV fails with its duration and the bound named, fast (it is never converted)."""
    async with line() as call:
        long = wav_of(b"\xff" * (8000 * 301), 8000, tag=7, bits=8)
        t = time.monotonic()
        call.apply({"type": "play", "id": "long", "audio": base64.b64encode(long).decode()})
        await wait_for(lambda: call.outcome("long") is not None, timeout=10)
        kind, payload = call.outcome("long") or ("", {})
        assert kind == "action.failed" and "301.0 s" in payload["error"] and "300 s" in payload["error"]
        assert time.monotonic() - t < 1.0


# -- 2. one action never kills a call's tasks ------------------------------------------------------


async def test_an_unexpected_error_in_synthesis_fails_that_say_and_the_loop_goes_on() -> None:
    """A TTS engine raising RuntimeError fails its say (action.failed, one log line with the
    traceback); a dtmf queued after it still plays."""
    with structlog.testing.capture_logs() as logs:
        async with line(speaker=Speaker(FailingEngine())) as call:
            call.apply({"type": "say", "id": "s1", "text": "Hello there."}, {"type": "dtmf", "id": "d1", "digits": "1"})
            await wait_for(lambda: call.outcome("d1") is not None, timeout=5)
            assert (call.outcome("s1") or ("",))[0] == "action.failed"
            assert (call.outcome("d1") or ("",))[0] == "playback.finished"
    errors = [e for e in logs if e.get("action_id") == "s1" and e["log_level"] == "error"]
    assert len(errors) == 1 and errors[0].get("exc_info")


async def test_a_wav_that_exhausts_memory_fails_its_play_and_the_loop_goes_on() -> None:
    """A WAV at 4,294,967,291 Hz (numpy's MemoryError before the fix) fails its play; a later dtmf plays."""
    async with line() as call:
        huge = wav_of(b"\x01\x00" * 20, 4_294_967_291)
        call.apply({"type": "play", "id": "p1", "audio": base64.b64encode(huge).decode()})
        call.apply({"type": "dtmf", "id": "d1", "digits": "1"})
        await wait_for(lambda: call.outcome("d1") is not None, timeout=10)
        assert (call.outcome("p1") or ("",))[0] == "action.failed"
        assert (call.outcome("d1") or ("",))[0] == "playback.finished"


async def test_an_error_while_dispatching_does_not_stop_the_sending_task() -> None:
    """The bot channel raising on the first playback.started does not end the sending: that dtmf
    and the next one still play to the end."""
    raised: list[str] = []

    def flaky(call: Line, kind: str, payload: dict[str, Any]) -> None:
        if kind == "playback.started" and not raised:
            raised.append(payload["action_id"])
            raise RuntimeError("the bot channel broke")

    with structlog.testing.capture_logs():
        async with line(emit=flaky) as call:
            call.apply({"type": "dtmf", "id": "d1", "digits": "1"})
            await wait_for(lambda: bool(raised), timeout=5)
            call.apply({"type": "dtmf", "id": "d2", "digits": "2"})
            await wait_for(lambda: call.outcome("d2") is not None, timeout=5)
            assert (call.outcome("d1") or ("",))[0] == "playback.finished"
            assert (call.outcome("d2") or ("",))[0] == "playback.finished"


# -- 14. ended actions are forgotten ----------------------------------------------------------------


def test_streams_stopped_before_their_last_piece_are_forgotten() -> None:
    """100 rounds of a stream started (its piece played) and stopped before its last: each ends with
    playback.interrupted and the playout holds no state for any of them."""
    p = Playout(bytes_per_ms=8.0, frame_bytes=160, silence_byte=0xFF, marks=False)
    t = 0.0
    for i in range(100):
        p.add(Segment(f"s{i}", b"\x11" * 800, last=False), now=t)
        for _ in range(10):
            t = round(t + 0.02, 6)
            p.tick(t)
        assert not p.playing  # the piece played; the stream waits for more
        out = p.interrupt(t, "stop", only_interruptible=False)
        assert [o.action_id for o in out if isinstance(o, PlaybackInterrupted)] == [f"s{i}"]
    assert not p.live_actions


def test_a_barge_in_on_a_waiting_stream_forgets_it_unless_it_cannot_be_interrupted() -> None:
    """Caller speech ends an interruptible stream that waits for its next piece; one whose interrupt
    is none stays."""
    p = Playout(bytes_per_ms=8.0, frame_bytes=160, silence_byte=0xFF, marks=False)
    p.add(Segment("keep", b"\x11" * 800, last=False, interrupt="none"), now=0.0)
    p.add(Segment("talk", b"\x11" * 800, last=False), now=0.0)
    p.add(Segment("now", b"\x11" * 8000), now=0.0)
    p.tick(0.3)
    out = p.interrupt(0.3, "speech")
    assert {o.action_id for o in out if isinstance(o, PlaybackInterrupted)} == {"talk", "now"}
    assert p.live_actions == {"keep"}


async def test_streamed_audio_stopped_round_after_round_leaves_nothing_behind() -> None:
    """On a call, 100 rounds of an audio stream's first piece played then a stop: every stream is
    reported interrupted and the playout tracks none of them."""
    async with line() as call:
        piece = base64.b64encode(b"\x00\x01" * 160).decode()  # 20 ms
        for i in range(100):
            call.apply({"type": "audio", "stream_id": f"t{i}", "sample_rate": 8000, "audio": piece, "last": False})
            await wait_for(functools.partial(played_and_waiting, call, f"t{i}"), 5)
            call.apply({"type": "stop"})
        await wait_for(lambda: len(call.of("playback.interrupted")) >= 100, timeout=5)
        assert call.reply.playout is not None and not call.reply.playout.live_actions
        assert sorted(e["action_id"] for e in call.of("playback.interrupted")) == sorted(f"t{i}" for i in range(100))


async def test_a_stream_stopped_midway_ends_once_and_its_later_pieces_are_dropped() -> None:
    """An audio stream stopped between pieces gets one playback.interrupted; its later pieces (up
    to its last) play nothing and report nothing more."""
    async with line() as call:
        piece = base64.b64encode(b"\x00\x01" * 160).decode()

        def chunk(last: bool) -> dict[str, Any]:
            return {"type": "audio", "stream_id": "t", "sample_rate": 8000, "audio": piece, "last": last}

        call.apply(chunk(False))
        await wait_for(functools.partial(played_and_waiting, call, "t"), 5)
        call.apply({"type": "stop"})
        call.apply(chunk(False))
        call.apply(chunk(True))
        call.apply({"type": "dtmf", "id": "d1", "digits": "1"})
        await wait_for(lambda: call.outcome("d1") is not None, timeout=5)
        about_t = [(kind, p) for kind, p in call.events if p.get("action_id") == "t"]
        assert [kind for kind, _ in about_t] == ["playback.started", "playback.interrupted"]
        assert about_t[1][1]["played_ms"] == 20 and about_t[1][1]["reason"] == "stop"


class SlowEngine:
    """A TTS engine that takes 300 ms a sentence (200 ms of silence at 8 kHz)."""

    name = "slow"

    async def synthesize(self, text: str, voice: str | None) -> Speech:
        await asyncio.sleep(0.3)
        return Speech(text, b"\x00\x00" * 1600, 8000)

    async def aclose(self) -> None:
        return None


async def test_a_say_stopped_while_its_first_sentence_is_synthesised_ends_once() -> None:
    """A stop while the first sentence is being synthesised reports the say interrupted (played_ms 0)
    once; nothing of it plays afterwards."""
    async with line(speaker=Speaker(SlowEngine())) as call:
        call.apply({"type": "say", "id": "s1", "text": "One. Two."})
        await wait_for(lambda: call.reply.state()["state"] == "speaking", timeout=5)
        await asyncio.sleep(0.1)
        call.apply({"type": "stop"})
        call.apply({"type": "dtmf", "id": "d1", "digits": "1"})
        await wait_for(lambda: call.outcome("d1") is not None, timeout=5)
        about = [(kind, p) for kind, p in call.events if p.get("action_id") == "s1"]
        assert about == [
            ("playback.interrupted", {"action_id": "s1", "played_ms": 0, "heard_text": "", "reason": "stop"})
        ]


# -- 17. one id, one live action --------------------------------------------------------------------


async def test_an_id_of_a_live_action_is_refused_and_free_again_once_it_ended() -> None:
    """A play, dtmf or mark reusing the id of a queued or playing action fails (status and
    action.failed); stream pieces share their stream_id until the last one (a piece after it is
    refused); once the action ended its id is free."""
    async with line() as call:
        audio = base64.b64encode(wav(0.6)).decode()
        first = call.apply({"type": "play", "id": "a", "audio": audio})
        again = [
            call.apply(action)[0]
            for action in (
                {"type": "dtmf", "id": "a", "digits": "1"},
                {"type": "mark", "id": "a", "name": "m"},
                {"type": "play", "id": "a", "audio": audio},
            )
        ]
        assert first[0].status == "queued"
        assert [r.status for r in again] == ["failed"] * 3
        assert all("'a'" in (r.error or "") and "live" in (r.error or "") for r in again)
        assert len([e for e in call.of("action.failed") if e["action_id"] == "a"]) == 3
        piece = base64.b64encode(b"\x00\x01" * 800).decode()
        pieces = [
            call.apply({"type": "audio", "stream_id": "t", "sample_rate": 8000, "audio": piece, "last": n == 2})
            for n in range(3)
        ]
        assert [r[0].status for r in pieces] == ["queued"] * 3
        clash = call.apply({"type": "dtmf", "id": "t", "digits": "2"})
        assert clash[0].status == "failed"
        after_last = call.apply({"type": "audio", "stream_id": "t", "sample_rate": 8000, "audio": piece})
        assert after_last[0].status == "failed"  # the stream ended with its last piece: no more of it
        await wait_for(lambda: len(call.of("playback.finished")) == 2, timeout=10)
        assert call.of("playback.finished") == [
            {"action_id": "a", "played_ms": 600},
            {"action_id": "t", "played_ms": 300},
        ]
        reuse = call.apply({"type": "dtmf", "id": "a", "digits": "3"})
        assert reuse[0].status == "queued"


# -- 18. marks waiting on a call are bounded ---------------------------------------------------------


async def test_marks_waiting_on_a_call_are_bounded() -> None:
    """Behind 20 s of audio, the first MAX_PENDING_MARKS marks wait; the next one fails naming the bound."""
    async with line() as call:
        call.apply({"type": "play", "id": "long", "audio": base64.b64encode(wav(20.0)).decode()})
        for start in range(0, MAX_PENDING_MARKS + 1, 32):
            batch = [
                {"type": "mark", "id": f"m{n}", "name": f"n{n}"}
                for n in range(start, min(MAX_PENDING_MARKS + 1, start + 32))
            ]
            call.apply(*batch)
            await wait_for(functools.partial(arrived, call, str(batch[-1]["id"])), 10)
        failed = call.of("action.failed")
        assert [e["action_id"] for e in failed] == [f"m{MAX_PENDING_MARKS}"]
        assert str(MAX_PENDING_MARKS) in failed[0]["error"]
        assert call.reply.playout is not None and call.reply.playout.waiting_marks == MAX_PENDING_MARKS


# -- 6. a play url's whole body --------------------------------------------------------------------


@asynccontextmanager
async def prompt_server(body: bytes) -> AsyncIterator[tuple[str, ssl.SSLContext]]:
    """An https server: /pieces sends ``body`` with a Content-Length in three writes 200 ms apart,
    /chunked the same with chunked transfer encoding."""
    ca = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_tls)
    client_tls = ssl.create_default_context()
    ca.configure_trust(client_tls)

    async def serve(request: web.Request, chunked: bool) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "audio/wav"})
        if chunked:
            resp.enable_chunked_encoding()
        else:
            resp.content_length = len(body)
        await resp.prepare(request)
        third = len(body) // 3
        for n, piece in enumerate((body[:third], body[third : 2 * third], body[2 * third :])):
            if n:
                await asyncio.sleep(0.2)
            await resp.write(piece)
        await resp.write_eof()
        return resp

    async def pieces(request: web.Request) -> web.StreamResponse:
        return await serve(request, chunked=False)

    async def chunked(request: web.Request) -> web.StreamResponse:
        return await serve(request, chunked=True)

    app = web.Application()
    app.router.add_get("/pieces", pieces)
    app.router.add_get("/chunked", chunked)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_tls)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"https://127.0.0.1:{port}", client_tls
    finally:
        await runner.cleanup()


async def test_a_play_url_body_written_in_pieces_plays_whole() -> None:
    """A 2 s WAV served in three writes 200 ms apart (Content-Length, then chunked) plays all 2 s."""
    settings = ReplySettings(play_url_hosts=("127.0.0.1",))
    async with prompt_server(wav(2.0)) as (base, tls):
        http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls))

        async def play(path: str) -> tuple[str, dict[str, Any]] | None:
            async with line(http=http, settings=settings) as call:
                call.apply({"type": "play", "id": "p", "url": base + path})
                await wait_for(lambda: call.outcome("p") is not None, timeout=10)
                return call.outcome("p")

        try:
            results = await asyncio.gather(play("/pieces"), play("/chunked"))
        finally:
            await http.close()
    assert list(results) == [("playback.finished", {"action_id": "p", "played_ms": 2000})] * 2


# -- the way back's own threads ---------------------------------------------------------------------


async def test_a_busy_default_executor_does_not_delay_a_dtmf(
    make_bridge: BridgeFactory, webhook: tuple[FakeWebhook, str]
) -> None:
    """The loop's default executor taken by blocking work that is not the reply's (what aiohttp's DNS
    lookups on a slow resolver do): a ``dtmf`` posted meanwhile still starts at once, its tones being
    made on the way back's own threads."""
    hook, _ = webhook
    server = await make_bridge({"BRIDGE_API_TOKEN": API_TOKEN})
    loop = asyncio.get_running_loop()
    results: dict[str, float] = {}

    async def bot(http: aiohttp.ClientSession) -> None:
        await wait_for(lambda: bool(hook.events("call.started")), timeout=10)
        call_id = hook.events("call.started")[0]["call"]["id"]
        release = threading.Event()
        stuck = [loop.run_in_executor(None, release.wait, 30.0) for _ in range(40)]  # more than its threads
        await asyncio.sleep(0.1)
        t0 = time.monotonic()
        body = {"actions": [{"type": "dtmf", "id": "tones", "digits": "1"}]}
        headers = {"Authorization": f"Bearer {API_TOKEN}"}
        async with http.post(server.make_url(f"/v1/calls/{call_id}/actions"), json=body, headers=headers) as resp:
            assert resp.status == 202
        with contextlib.suppress(TimeoutError):  # asserted below, with the delay
            await wait_for(lambda: bool(hook.events("playback.started")), timeout=5)
        results["delay"] = time.monotonic() - t0
        release.set()
        await asyncio.gather(*stuck)

    async with aiohttp.ClientSession() as http:
        task = asyncio.create_task(bot(http))
        await phone_call(str(server.make_url("/twilio/stream")), b"", until=lambda _: task.done(), max_seconds=60)
        await task
    assert results["delay"] < 1.0, f"the dtmf's first audio came {results['delay']:.2f} s after it was posted"
