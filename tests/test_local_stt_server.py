"""The local Gladia-compatible live server, spoken to over HTTP and WebSocket on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
from typing import Any

import aiohttp
import pytest

from tests.support.speech import FIRST_SENTENCE, SPANS, ULAW, encode_as, words

# What these tests assert is the server's plumbing: acknowledged ranges, one final per utterance,
# timings, lifecycle. Recognition quality (which words come back) depends on the CPU's instruction
# set and is asserted once, over the whole sample corpus, in test_recognition_quality.py.

ULAW_REQUEST = {"encoding": "wav/ulaw", "sample_rate": 8000, "bit_depth": 8, "endpointing": 0.3}


def assert_within_the_sentence(utterance: dict[str, Any], span: tuple[float, float]) -> None:
    """The utterance and its words lie on the sentence's sound in the audio (VAD margins allowed)."""
    start, end = span
    assert start - 0.35 <= utterance["start"] < utterance["end"] <= end + 0.35, (utterance, span)
    assert utterance["end"] - utterance["start"] >= 0.5 * (end - start)
    for w in utterance.get("words", []):
        assert start - 0.35 <= w["start"] <= w["end"] <= end + 0.35, (w, span)


async def create(http: aiohttp.ClientSession, server: Any, body: dict[str, Any], **headers: str) -> dict[str, Any]:
    async with http.post(server.make_url("/v2/live"), json=body, headers=headers) as resp:
        assert resp.status == 201, await resp.text()
        data: dict[str, Any] = await resp.json()
        return data


async def stream(ws: aiohttp.ClientWebSocketResponse, audio: bytes, chunk: int = 1600) -> None:
    for i in range(0, len(audio), chunk):
        await ws.send_bytes(audio[i : i + chunk])


async def collect(ws: aiohttp.ClientWebSocketResponse) -> list[dict[str, Any]]:
    out = []
    async for msg in ws:
        if msg.type is aiohttp.WSMsgType.TEXT:
            out.append(json.loads(msg.data))
    return out


@pytest.mark.recognition
async def test_create_validates_like_gladia(make_stt_server: Any) -> None:
    """400 for malformed bodies, 422 for bad values, 401 without the configured key, 201 otherwise."""
    _, server = await make_stt_server(api_key="k1")
    async with aiohttp.ClientSession() as http:
        async with http.post(server.make_url("/v2/live"), json={}) as resp:
            assert resp.status == 401
            assert (await resp.json())["message"] == "gladia key not found"
        headers = {"x-gladia-key": "k1"}
        async with http.post(server.make_url("/v2/live"), data=b"{", headers=headers) as resp:
            assert resp.status == 400 and (await resp.json())["statusCode"] == 400
        async with http.post(server.make_url("/v2/live"), json={"sample_rate": 11025}, headers=headers) as resp:
            body = await resp.json()
            assert resp.status == 422 and any("sample_rate" in e for e in body["validation_errors"])
        data = await create(http, server, ULAW_REQUEST, **headers)
        assert set(data) == {"id", "created_at", "url"}
        assert data["url"].startswith(f"ws://127.0.0.1:{server.port}/v2/live?token=")


@pytest.mark.recognition
async def test_url_follows_host_and_forwarded_proto(make_stt_server: Any) -> None:
    """Behind a TLS proxy the session URL is wss:// on the proxy's host."""
    _, server = await make_stt_server()
    async with aiohttp.ClientSession() as http:
        data = await create(http, server, {}, **{"X-Forwarded-Proto": "https", "Host": "stt.example.org"})
    assert data["url"].startswith("wss://stt.example.org/v2/live?token=")


@pytest.mark.recognition
async def test_sessions_beyond_capacity_get_429(make_stt_server: Any) -> None:
    """More concurrent sessions than the server recognises in real time: a clear 429."""
    _, server = await make_stt_server(max_sessions=2)
    async with aiohttp.ClientSession() as http:
        await create(http, server, {})
        await create(http, server, {})
        async with http.post(server.make_url("/v2/live"), json={}) as resp:
            assert resp.status == 429
            assert "Too many concurrent sessions" in (await resp.json())["message"]


@pytest.mark.recognition
async def test_a_whole_session(make_stt_server: Any) -> None:
    """Speech in: session-wide acknowledgments, speech events, partials, a final with words and timings,
    then on stop_recording the stop ack, post-processing, end_session and close 1000; the result is
    readable with GET and can be deleted."""
    _, server = await make_stt_server()
    body = {**ULAW_REQUEST, "messages_config": {"receive_partial_transcripts": True, "receive_lifecycle_events": True}}
    async with aiohttp.ClientSession() as http:
        session = await create(http, server, body)
        async with http.ws_connect(session["url"]) as ws:
            for i in range(0, len(FIRST_SENTENCE), 1600):
                await ws.send_bytes(FIRST_SENTENCE[i : i + 1600])
                await asyncio.sleep(0.1)  # twice real time: partials get decoded while speech goes on
            await ws.send_str(json.dumps({"type": "stop_recording"}))
            messages = await collect(ws)
            assert ws.close_code == 1000
        types = [m["type"] for m in messages]
        assert types[0] == "start_session" and types[-1] == "end_session"
        acks = [m for m in messages if m["type"] == "audio_chunk"]
        assert acks[0]["data"]["byte_range"] == [0, 1600] and acks[0]["acknowledged"] is True
        assert all(a["data"]["byte_range"][0] == b["data"]["byte_range"][1] for b, a in itertools.pairwise(acks))
        assert acks[-1]["data"]["byte_range"][1] == len(FIRST_SENTENCE)
        assert acks[-1]["data"]["time_range"][1] == pytest.approx(len(FIRST_SENTENCE) / 8000, abs=0.001)
        assert "speech_start" in types and "speech_end" in types
        finals = [m["data"] for m in messages if m["type"] == "transcript" and m["data"]["is_final"]]
        partials = [m["data"] for m in messages if m["type"] == "transcript" and not m["data"]["is_final"]]
        assert len(finals) == 1 and partials and partials[0]["id"] == finals[0]["id"]
        utt = finals[0]["utterance"]
        assert words(utt["text"]) and utt["language"] == "en" and utt["words"]
        assert_within_the_sentence(utt, SPANS[0])
        assert utt["words"][0]["start"] >= utt["start"] - 0.01
        order = [
            t
            for t in types
            if t in ("stop_recording", "end_recording", "post_transcript", "post_final_transcript", "end_session")
        ]
        assert order == ["stop_recording", "end_recording", "post_transcript", "post_final_transcript", "end_session"]
        post = next(m for m in messages if m["type"] == "post_final_transcript")["data"]
        assert post["transcription"]["utterances"][0]["text"] == utt["text"]
        assert post["metadata"]["audio_duration"] == pytest.approx(len(FIRST_SENTENCE) / 8000, abs=0.001)

        async with http.get(server.make_url(f"/v2/live/{session['id']}")) as resp:
            result = await resp.json()
        assert result["status"] == "done" and result["kind"] == "live"
        assert result["result"]["transcription"]["full_transcript"] == utt["text"].strip()
        async with http.delete(server.make_url(f"/v2/live/{session['id']}")) as resp:
            assert resp.status == 202
        async with http.get(server.make_url(f"/v2/live/{session['id']}")) as resp:
            assert resp.status == 404


@pytest.mark.recognition
async def test_base64_audio_chunks_and_defaults(make_stt_server: Any) -> None:
    """JSON audio_chunk messages work like binary frames; without lifecycle events none are sent."""
    _, server = await make_stt_server()
    async with aiohttp.ClientSession() as http:
        session = await create(http, server, ULAW_REQUEST)
        async with http.ws_connect(session["url"]) as ws:
            for i in range(0, len(FIRST_SENTENCE), 4000):
                chunk = base64.b64encode(FIRST_SENTENCE[i : i + 4000]).decode()
                await ws.send_str(json.dumps({"type": "audio_chunk", "data": {"chunk": chunk}}))
            await ws.send_str(json.dumps({"type": "stop_recording"}))
            messages = await collect(ws)
    types = {m["type"] for m in messages}
    assert not types & {"start_session", "start_recording", "end_recording", "end_session"}
    finals = [m for m in messages if m["type"] == "transcript"]
    assert len(finals) == 1 and words(finals[0]["data"]["utterance"]["text"])
    assert_within_the_sentence(finals[0]["data"]["utterance"], SPANS[0])


@pytest.mark.recognition
@pytest.mark.parametrize(
    ("encoding", "depth", "rate", "channels"),
    [
        ("wav/alaw", 8, 8000, 1),
        ("wav/pcm", 16, 16000, 1),
        ("wav/pcm", 16, 44100, 1),
        ("wav/pcm", 24, 48000, 1),
        ("wav/pcm", 32, 32000, 2),
        ("wav/pcm", 8, 8000, 1),
    ],
)
async def test_every_encoding_is_transcribed(
    make_stt_server: Any, encoding: str, depth: int, rate: int, channels: int
) -> None:
    """The same sentence in each format Gladia accepts gives one final (per channel: the sentence is on
    every channel), at the sentence's time in the audio (so the format's bytes are turned into time
    correctly), acknowledged in that format's bytes."""
    _, server = await make_stt_server()
    audio = encode_as(FIRST_SENTENCE, encoding, depth, rate, channels)
    body = {"encoding": encoding, "bit_depth": depth, "sample_rate": rate, "channels": channels, "endpointing": 0.3}
    async with aiohttp.ClientSession() as http:
        session = await create(http, server, body)
        async with http.ws_connect(session["url"]) as ws:
            await stream(ws, audio, chunk=(rate * channels * max(1, depth // 8)) // 10)
            await ws.send_str(json.dumps({"type": "stop_recording"}))
            messages = await collect(ws)
    acks = [m["data"]["byte_range"][1] for m in messages if m["type"] == "audio_chunk"]
    assert acks[-1] == len(audio)
    finals = [m["data"]["utterance"] for m in messages if m["type"] == "transcript"]
    assert sorted(f["channel"] for f in finals) == list(range(channels))
    for final in finals:
        assert words(final["text"])
        assert_within_the_sentence(final, SPANS[0])
    assert acks[-1] == len(audio) and messages[-1]["type"] != "error"


@pytest.mark.recognition
async def test_resume_at_the_acknowledged_offset(make_stt_server: Any) -> None:
    """A dropped socket reconnects to the same URL; audio resent from an already-acknowledged offset is
    recognised and skipped, so the session keeps exactly the caller's audio and the same transcript
    as an unbroken session of the same audio."""
    stt, server = await make_stt_server()
    audio = ULAW[: 8000 * 10]
    async with aiohttp.ClientSession() as http:
        unbroken = await create(http, server, ULAW_REQUEST)
        async with http.ws_connect(unbroken["url"]) as ws:
            await stream(ws, audio)
            await ws.send_str(json.dumps({"type": "stop_recording"}))
            reference = [m["data"]["utterance"]["text"] for m in await collect(ws) if m["type"] == "transcript"]
        session = await create(http, server, ULAW_REQUEST)
        first: list[dict[str, Any]] = []
        async with http.ws_connect(session["url"]) as ws:
            await stream(ws, audio[:24000])  # drop mid-sentence
            while not any(
                m.get("data", {}) and m["type"] == "audio_chunk" and m["data"]["byte_range"][1] == 24000 for m in first
            ):
                msg = await ws.receive(timeout=10)
                first.append(json.loads(msg.data))
            await ws.close(code=4500)  # a non-normal close: the session stays resumable
        async with http.ws_connect(session["url"]) as ws:
            # as if the last two acknowledgments had been lost in flight: resend from 20800
            await stream(ws, audio[20800:])
            await ws.send_str(json.dumps({"type": "stop_recording"}))
            second = await collect(ws)
            assert ws.close_code == 1000
    live = stt.sessions[session["id"]].live
    assert live.received_bytes == len(audio) and live.duplicate_bytes == 24000 - 20800
    assert live.connections == 2
    acks = [m["data"]["byte_range"] for m in second if m["type"] == "audio_chunk"]
    assert acks[0][0] == 24000 and acks[-1][1] == len(audio)
    texts = [m["data"]["utterance"]["text"] for m in first + second if m["type"] == "transcript"]
    assert len(texts) == 2 and all(words(t) for t in texts)
    assert texts == reference


@pytest.mark.recognition
async def test_unresumed_session_ends_after_the_grace_period(make_stt_server: Any) -> None:
    """No reconnect within the grace period: the session is finished, its result is readable, and the
    URL is refused with 403 (the session cannot be resumed)."""
    _, server = await make_stt_server(grace_seconds=0.3)
    async with aiohttp.ClientSession() as http:
        session = await create(http, server, ULAW_REQUEST)
        async with http.ws_connect(session["url"]) as ws:
            await stream(ws, FIRST_SENTENCE)
            await ws.close(code=4500)
        for _ in range(100):
            async with http.get(server.make_url(f"/v2/live/{session['id']}")) as resp:
                result = await resp.json()
            if result["status"] == "done":
                break
            await asyncio.sleep(0.1)
        assert result["status"] == "done"
        assert words(result["result"]["transcription"]["full_transcript"])
        (utt,) = result["result"]["transcription"]["utterances"]
        assert_within_the_sentence(utt, SPANS[0])
        with pytest.raises(aiohttp.WSServerHandshakeError) as err:
            await http.ws_connect(session["url"])
        assert err.value.status == 403
        with pytest.raises(aiohttp.WSServerHandshakeError) as err:
            await http.ws_connect(server.make_url("/v2/live?token=nope"))
        assert err.value.status == 404


@pytest.mark.recognition
async def test_frames_over_1_mib_close_with_1009(make_stt_server: Any) -> None:
    """Like Gladia: a frame over 1 MiB closes the socket with 1009."""
    _, server = await make_stt_server()
    async with aiohttp.ClientSession() as http:
        session = await create(http, server, ULAW_REQUEST)
        async with http.ws_connect(session["url"]) as ws:
            await ws.send_bytes(b"\xff" * (1024 * 1024 + 1))
            await collect(ws)
            assert ws.close_code == 1009


@pytest.mark.recognition
async def test_bad_messages_get_error_messages(make_stt_server: Any) -> None:
    """Unknown messages and bad base64 are answered with an error message; the session goes on."""
    _, server = await make_stt_server()
    async with aiohttp.ClientSession() as http:
        session = await create(http, server, ULAW_REQUEST)
        async with http.ws_connect(session["url"]) as ws:
            await ws.send_str("{nope")
            await ws.send_str(json.dumps({"type": "audio_chunk", "data": {"chunk": "@@"}}))
            await ws.send_bytes(b"\xff" * 800)
            await ws.send_str(json.dumps({"type": "stop_recording"}))
            messages = await collect(ws)
            assert ws.close_code == 1000
    errors = [m for m in messages if m["type"] == "error"]
    assert len(errors) == 2 and all(e["error"]["message"] for e in errors)
    assert [m["data"]["byte_range"] for m in messages if m["type"] == "audio_chunk"] == [[0, 800]]


class NeverRecognizes:
    """The recogniser of a server whose tests end before recognition (an init refused): fails if asked,
    and spares the model's loading."""

    name = "none"
    languages = frozenset({"en"})

    def transcribe(
        self, audio: Any, language: str | None = None, prompt: str | None = None, among: tuple[str, ...] = ()
    ) -> Any:
        raise AssertionError("nothing here should reach the recogniser")


async def test_an_init_asking_for_an_addon_gets_422_naming_each_field(aiohttp_server: Any) -> None:
    """The local engine does none of Gladia's add-ons: an init that switches one on is answered 422 in
    Gladia's error shape, one validation error per field, and no session is made (rather than one that
    never sends the translation or summary asked for). The other realtime options stay accepted."""
    from bridge.local_stt.server import LocalSttServer, ServerOptions

    stt = LocalSttServer(ServerOptions(api_key="k1"), recognizer=NeverRecognizes())
    server = await aiohttp_server(stt.app, host="127.0.0.1")
    headers = {"x-gladia-key": "k1"}
    vocabulary = {"custom_vocabulary": True, "custom_vocabulary_config": {"vocabulary": ["Gladia"]}}
    body = {
        **ULAW_REQUEST,
        "realtime_processing": {
            "translation": True,
            "translation_config": {"target_languages": ["fr", "es"]},
            "sentiment_analysis": True,
            **vocabulary,
        },
        "post_processing": {"summarization": True, "chapterization": False},
    }
    async with aiohttp.ClientSession() as http:
        async with http.post(server.make_url("/v2/live"), json=body, headers=headers) as resp:
            assert resp.status == 422
            error = await resp.json()
        assert not stt.sessions
        # Gladia's error body (live v2 reference §1.3): these keys, statusCode in camelCase, a G- request id
        assert set(error) == {"timestamp", "path", "request_id", "statusCode", "message", "validation_errors"}
        assert error["statusCode"] == 422 and error["path"] == "/v2/live" and error["request_id"].startswith("G-")
        assert error["timestamp"].endswith("Z")
        assert error["validation_errors"] == [
            f"{field} must be false: not supported by this server (the local engine does no {addon})"
            for field, addon in (
                ("realtime_processing.translation", "translation"),
                ("realtime_processing.sentiment_analysis", "sentiment_analysis"),
                ("post_processing.summarization", "summarization"),
            )
        ]
        accepted = {
            **ULAW_REQUEST,
            "realtime_processing": {"translation": False, "custom_spelling": False, **vocabulary},
            "post_processing": {"summarization": False},
        }
        data = await create(http, server, accepted, **headers)
        assert list(stt.sessions) == [data["id"]]


class RecordsPrompts:
    """A recogniser that names each utterance by its number and records the prompt it was given."""

    name = "prompts"
    languages = frozenset({"en"})

    def __init__(self) -> None:
        self.prompts: list[str | None] = []

    def transcribe(
        self, audio: Any, language: str | None = None, prompt: str | None = None, among: tuple[str, ...] = ()
    ) -> Any:
        from bridge.local_stt.engine import Recognition

        self.prompts.append(prompt)
        return Recognition(f"Utterance number {len(self.prompts)}.", (), "en", 0.9)


@pytest.mark.parametrize("history", [False, True])
async def test_each_utterance_is_decoded_with_the_vocabulary_and_what_was_said_before(
    aiohttp_server: Any, history: bool
) -> None:
    """Whisper gets the call's context as its prompt: the session's custom vocabulary (strings or
    ``{"value"}`` objects, as Gladia's API carries them), then, with ``history_prompt``, the channel's
    previous finals."""
    from bridge.local_stt.server import LocalSttServer, ServerOptions

    recognizer = RecordsPrompts()
    stt = LocalSttServer(ServerOptions(history_prompt=history), recognizer=recognizer)
    server = await aiohttp_server(stt.app, host="127.0.0.1")
    vocabulary = ["Gladia", {"value": "Twilio", "intensity": 0.5}, 7, {"no": "value"}]
    body = {
        **ULAW_REQUEST,
        "realtime_processing": {"custom_vocabulary": True, "custom_vocabulary_config": {"vocabulary": vocabulary}},
    }
    async with aiohttp.ClientSession() as http:
        session = await create(http, server, body)
        async with http.ws_connect(session["url"]) as ws:
            await stream(ws, ULAW)
            await ws.send_str(json.dumps({"type": "stop_recording"}))
            messages = await collect(ws)
    finals = [m["data"]["utterance"]["text"] for m in messages if m["type"] == "transcript"]
    assert len(finals) >= 2 and len(recognizer.prompts) == len(finals)
    if not history:
        assert recognizer.prompts == ["Gladia, Twilio."] * len(finals)
        return
    assert recognizer.prompts[0] == "Gladia, Twilio."
    assert recognizer.prompts[1] == "Gladia, Twilio. Utterance number 1."
    said = " ".join(f"Utterance number {n}." for n in range(1, len(finals)))
    assert recognizer.prompts[-1] == f"Gladia, Twilio. {said}"  # (a few sentences: under the history's bound)
