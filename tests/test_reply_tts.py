"""Speech out: sentence cutting, the streamed-text buffer, the cache, and the OpenAI-compatible engine
against a loopback server that checks the request the way OpenAI documents it."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bridge.errors import TtsError
from bridge.reply.tts import OpenAiSpeech, SentenceBuffer, Speaker, Speech, sentences


def test_text_is_cut_into_sentences_and_long_ones_at_commas() -> None:
    assert sentences("Hello there!  How are you?\nFine. Thanks") == ["Hello there!", "How are you?", "Fine.", "Thanks"]
    long = "one, " * 100 + "end."
    parts = sentences(long)
    assert all(len(p) <= 300 for p in parts) and " ".join(parts).replace(" ,", ",") == long.strip()


def test_streamed_text_comes_out_a_sentence_at_a_time() -> None:
    buffer = SentenceBuffer()
    pieces = [("Hello the", False), ("re! How a", False), ("re you? I am", False), (" fine.", False), (" Bye", True)]
    assert [buffer.push(text, last) for text, last in pieces] == [
        [],
        ["Hello there!"],
        ["How are you?"],
        ["I am fine."],  # a piece that ends a sentence completes it: no wait for more text
        ["Bye"],
    ]


class CountingEngine:
    name = "counting"

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def synthesize(self, text: str, voice: str | None) -> Speech:
        self.calls.append(text)
        return Speech(text, b"\x00\x01" * 1000, 8000)

    async def aclose(self) -> None:
        return None


async def test_the_cache_makes_repeated_prompts_free_and_stays_bounded() -> None:
    engine = CountingEngine()
    speaker = Speaker(engine, cache_bytes=10000)
    for _ in range(3):
        assert [s.text async for s in speaker.speak("Press one. Press two.")] == ["Press one.", "Press two."]
    assert engine.calls == ["Press one.", "Press two."] and speaker.hits == 4
    for i in range(5):
        await speaker.sentence(f"Other {i}.")
    assert speaker._cached <= 10000 and len(speaker._cache) == 5  # bounded: the oldest went


@pytest.fixture
async def tts_server(aiohttp_server: Any) -> tuple[list[dict[str, Any]], str]:
    seen: list[dict[str, Any]] = []

    async def speech(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        seen.append({"auth": request.headers.get("Authorization"), **body})
        if body["input"] == "fail":
            return web.json_response({"error": {"message": "bad voice"}}, status=400)
        resp = web.StreamResponse()
        await resp.prepare(request)
        for _ in range(3):  # streamed in pieces, one odd byte at the end
            await resp.write(b"\x01\x02" * 2400)
        await resp.write(b"\x07")
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_post("/v1/audio/speech", speech)
    server = await aiohttp_server(app, host="127.0.0.1")
    return seen, str(server.make_url("/")).rstrip("/")


async def test_the_openai_compatible_engine_asks_for_raw_pcm_and_reads_the_stream(
    tts_server: tuple[list[dict[str, Any]], str],
) -> None:
    seen, url = tts_server
    async with aiohttp.ClientSession() as http:
        engine = OpenAiSpeech(http, url, api_key="sk-test", voice="alloy", model="tts-1")
        speech = await engine.synthesize("Hello.", "nova")
        with pytest.raises(TtsError, match="400"):
            await engine.synthesize("fail", None)
    assert seen[0] == {
        "auth": "Bearer sk-test",
        "model": "tts-1",
        "input": "Hello.",
        "voice": "nova",
        "response_format": "pcm",
    }
    assert speech.sample_rate == 24000 and speech.pcm == b"\x01\x02" * 7200  # whole samples only
    assert seen[1]["voice"] == "alloy"


def test_streamed_text_without_a_sentence_end_is_cut_not_hoarded() -> None:
    """A bot streaming words with no full stop: the buffer never holds more than a long sentence."""
    buffer = SentenceBuffer()
    out: list[str] = []
    for _ in range(200):
        out += buffer.push("and then some more words, ", False)
        assert len(buffer._text) <= 300
    out += buffer.push("end.", True)
    assert all(len(s) <= 300 for s in out) and " ".join(out).endswith("end.")
    assert " ".join(out).count("more words") == 200
