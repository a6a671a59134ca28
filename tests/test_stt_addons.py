"""Gladia's add-on messages read by ``bridge.stt.protocol`` / ``bridge.stt.addons``, against the SDK.

The oracle is the official Python SDK (``gladiaio_sdk``): every well-formed message here is built
from its types by :mod:`tests.support.gladia_addons` (which asserts the SDK reads it back unchanged),
and the utterance is the documented literal of Gladia's ``UtteranceDTO``. Hostile shapes are those
messages bent out of shape. The last part drives the fake Gladia's add-on switches over a real socket
on 127.0.0.1 with a plain client, and checks its ``GET /v2/live/{id}`` body with
``LiveV2Response.from_dict``.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType
from gladiaio_sdk.v2.live.generated_types import LiveV2Response, create_live_v2_web_socket_message_from_dict

from bridge.stt.addons import (
    MAX_ERROR,
    MAX_ITEMS,
    MAX_SUMMARY,
    MAX_TEXT,
    AddonFailed,
    Entities,
    Entity,
    PostResults,
    Sentiment,
    Sentiments,
    Translation,
    post_results,
    requested_addons,
    target_languages,
)
from bridge.stt.protocol import ServerError, SttEvent, parse_server_message
from tests.support import gladia_addons as g
from tests.support.fakes import FakeGladia

SID = "45463597-20b7-4af7-b3b3-f5fb778203ab"
UID = "00_00000003"
# Gladia's documented UtteranceDTO example (docs: gladia-live-v2.md §2.3)
UTT: dict[str, Any] = {
    "start": 0.19,
    "end": 1.28,
    "confidence": 0.97,
    "channel": 0,
    "words": [
        {"word": " Hello", "start": 0.19, "end": 0.73, "confidence": 0.98},
        {"word": " world", "start": 0.74, "end": 1.28, "confidence": 0.96},
    ],
    "text": " Hello world",
    "language": "en",
}
REALTIME = ("translation", "named_entity_recognition", "sentiment_analysis")


def parse(message: dict[str, Any]) -> SttEvent:
    return parse_server_message(json.dumps(message))


# -- well-formed messages (built from the SDK's types) -------------------------------------------------


def test_translation_to_two_languages() -> None:
    """One translation message per target language, each read as a Translation of the final it names."""
    events = [
        parse(g.translation(SID, UID, UTT, "en", "fr", " Bonjour le monde")),
        parse(g.translation(SID, UID, UTT, "en", "de", " Hallo Welt")),
    ]
    assert [type(e) for e in events] == [Translation, Translation]
    fr, de = events
    assert isinstance(fr, Translation) and isinstance(de, Translation)
    assert (fr.utterance_id, fr.language, fr.original_language) == (UID, "fr", "en")
    assert (de.utterance_id, de.language, de.original_language) == (UID, "de", "en")
    assert (fr.utterance.text, de.utterance.text) == (" Bonjour le monde", " Hallo Welt")
    assert (fr.utterance.start, fr.utterance.end, fr.utterance.channel, fr.utterance.language) == (0.19, 1.28, 0, "fr")
    assert [w.word for w in de.utterance.words] == [" Hallo", " Welt"]


def test_named_entities() -> None:
    """A named_entity_recognition message: its entities, and the utterance Gladia analysed."""
    results = [
        {"entity_type": "greeting", "text": "Hello", "start": 0.19, "end": 0.73},
        {"entity_type": "location", "text": "world", "start": 0.74, "end": 1.28},
    ]
    event = parse(g.entities(SID, UID, UTT, results))
    assert isinstance(event, Entities)
    assert event.utterance_id == UID
    assert event.entities == (Entity("greeting", "Hello", 0.19, 0.73), Entity("location", "world", 0.74, 1.28))
    assert event.utterance is not None and event.utterance.text == " Hello world"


def test_sentiment() -> None:
    """A sentiment_analysis message: each result with its sentiment, emotion, text, times and channel."""
    results = [
        {"sentiment": "positive", "emotion": "joy", "text": "Hello world", "start": 0.19, "end": 1.28, "channel": 0}
    ]
    event = parse(g.sentiment(SID, UID, UTT, results))
    assert isinstance(event, Sentiments)
    assert event.utterance_id == UID
    assert event.results == (Sentiment("positive", "joy", "Hello world", 0.19, 1.28, 0),)


@pytest.mark.parametrize("kind", REALTIME)
def test_failed_realtime_addon(kind: str) -> None:
    """error set and data null: an AddonFailed with the add-on's name and the error text, not a crash."""
    event = parse(g.addon_failed(kind, SID, f"{kind} is unavailable"))
    assert event == AddonFailed(kind, None, f"{kind} is unavailable")


@pytest.mark.parametrize("kind", REALTIME)
def test_failed_addon_that_names_its_final(kind: str) -> None:
    """An error on a message that still has data: failed, and linked to the final its data names."""
    builders: dict[str, Callable[[], dict[str, Any]]] = {
        "translation": lambda: g.translation(SID, UID, UTT, "en", "fr", " Bonjour"),
        "named_entity_recognition": lambda: g.entities(SID, UID, UTT, []),
        "sentiment_analysis": lambda: g.sentiment(SID, UID, UTT, []),
    }
    message = builders[kind]()
    message["error"] = {"message": "timed out"}
    g.checked(message)
    assert parse(message) == AddonFailed(kind, UID, "timed out")


def test_post_final_transcript_with_summary() -> None:
    """post_final_transcript with a summarization block: PostResults.summary, nothing failed."""
    event = parse(g.post_final_transcript(SID, [UTT], "The caller greets the world.", None, None))
    assert event == PostResults("post_final_transcript", "The caller greets the world.", None, ())


def test_post_final_transcript_with_failed_summary() -> None:
    """A summarization block with success false and an error: the add-on is listed as failed."""
    event = parse(g.post_final_transcript(SID, [UTT], None, "summary model overloaded", None))
    assert event == PostResults("post_final_transcript", None, None, (("summarization", "summary model overloaded"),))


def test_post_final_transcript_without_addons() -> None:
    """A post_final_transcript with only the transcript holds no analysis."""
    assert parse(g.post_final_transcript(SID, [UTT], None, None, None)) == PostResults("post_final_transcript")


def test_post_final_transcript_with_chapters() -> None:
    """The chapterization block's chapters, with the fields the bridge passes on."""
    chapter = {
        "headline": "Greeting",
        "gist": "hello",
        "keywords": ["hello", "world"],
        "start": 0.19,
        "end": 1.28,
        "sentences": ["Hello world."],
    }
    event = parse(g.post_final_transcript(SID, [UTT], "Hi.", None, [chapter]))
    assert isinstance(event, PostResults)
    assert event.summary == "Hi."
    assert event.chapters == (
        {"headline": "Greeting", "gist": "hello", "keywords": ["hello", "world"], "start": 0.19, "end": 1.28},
    )


def test_post_summarization_and_its_error() -> None:
    """post_summarization: the summary; with error and data null: summarization failed."""
    assert parse(g.post_summarization(SID, "A greeting.")) == PostResults("post_summarization", summary="A greeting.")
    failed = parse(g.post_summarization_failed(SID, "no transcript to summarize"))
    assert failed == PostResults("post_summarization", failed=(("summarization", "no transcript to summarize"),))


def test_post_transcript_holds_nothing() -> None:
    """post_transcript (the whole transcript again) holds nothing the bridge reads."""
    assert parse(g.post_transcript(SID, [UTT, UTT])) == PostResults("post_transcript")


def test_the_builders_check_refuses_what_the_sdk_reads_otherwise() -> None:
    """The check every fake message passes is real: a missing required field, a value the SDK would
    coerce, or a type the SDK does not know are refused."""
    missing = g.translation(SID, UID, UTT, "en", "fr", " Bonjour")
    del missing["data"]["utterance"]
    with pytest.raises(KeyError):
        g.checked(missing)
    coerced = g.post_summarization(SID, "ok")
    coerced["data"]["results"] = 5
    with pytest.raises(AssertionError):
        g.checked(coerced)
    with pytest.raises(AssertionError):
        g.checked({"type": "post_sentiment", "session_id": SID, "created_at": g.CREATED_AT, "data": None})
    with pytest.raises(KeyError):
        g.live_response(SID, "done", None, {"transcription": g.transcription([UTT])})  # no metadata


def test_post_results_of_a_session_result() -> None:
    """post_results reads GET /v2/live/{id}'s result blocks like post_final_transcript's."""
    result = {
        "summarization": g.addon_block("Short call."),
        "chapterization": g.addon_block(None, "deprecated"),
    }
    assert post_results("result", result) == PostResults(
        "result", "Short call.", None, (("chapterization", "deprecated"),)
    )


@pytest.mark.parametrize(
    ("body", "addons", "languages"),
    [
        ({}, (), ()),
        (
            {
                "realtime_processing": {
                    "translation": True,
                    "translation_config": {"target_languages": ["fr", "de"]},
                    "named_entity_recognition": True,
                    "sentiment_analysis": True,
                },
                "post_processing": {"summarization": True, "chapterization": True},
            },
            (*REALTIME, "summarization", "chapterization"),
            ("fr", "de"),
        ),
        ({"post_processing": {"summarization": True}}, ("summarization",), ()),
        # only a literal true switches an add-on on
        ({"realtime_processing": {"translation": "true", "sentiment_analysis": 1}}, (), ()),
        ({"realtime_processing": {"named_entity_recognition": False}, "post_processing": None}, (), ()),
        ({"realtime_processing": ["translation"], "post_processing": "summarization"}, (), ()),
        # target languages: strings only, in order; anything else is no language
        (
            {"realtime_processing": {"translation_config": {"target_languages": ["es", 3, None, "it"]}}},
            (),
            ("es", "it"),
        ),
        ({"realtime_processing": {"translation_config": {"target_languages": "fr"}}}, (), ()),
        ({"realtime_processing": {"translation_config": None}}, (), ()),
    ],
)
def test_requested_addons_and_target_languages(
    body: dict[str, Any], addons: tuple[str, ...], languages: tuple[str, ...]
) -> None:
    """Which add-ons a StreamingRequest body asks for, and the translation's target languages."""
    assert requested_addons(body) == addons
    assert target_languages(body) == languages


# -- hostile shapes -----------------------------------------------------------------------------------


def bent(message: dict[str, Any], change: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
    out = copy.deepcopy(message)
    change(out)
    return out


@pytest.mark.parametrize("kind", REALTIME)
def test_missing_utterance_id_is_a_server_error(kind: str) -> None:
    """A realtime add-on result that does not say which final it is about cannot be linked: ServerError."""
    builders: dict[str, dict[str, Any]] = {
        "translation": g.translation(SID, UID, UTT, "en", "fr", " Bonjour"),
        "named_entity_recognition": g.entities(SID, UID, UTT, []),
        "sentiment_analysis": g.sentiment(SID, UID, UTT, []),
    }
    for change in (lambda m: m["data"].pop("utterance_id"), lambda m: m["data"].update(utterance_id=None)):
        event = parse(bent(builders[kind], change))
        assert isinstance(event, ServerError) and event.kind == kind


@pytest.mark.parametrize(
    "change",
    [
        lambda m: m["data"].pop("translated_utterance"),
        lambda m: m["data"].update(translated_utterance="Bonjour"),
        lambda m: m["data"].update(target_language=None),
        lambda m: m["data"].update(target_language=["fr"]),
    ],
)
def test_translation_without_its_fields_is_a_server_error(change: Callable[[dict[str, Any]], object]) -> None:
    """A translation with no translated utterance or no target language is malformed, not delivered."""
    event = parse(bent(g.translation(SID, UID, UTT, "en", "fr", " Bonjour"), change))
    assert isinstance(event, ServerError) and event.kind == "translation"


@pytest.mark.parametrize("kind", REALTIME)
@pytest.mark.parametrize("data", [[], "text", 3])
def test_data_of_the_wrong_type_without_error(kind: str, data: Any) -> None:
    """data that is not an object (and no error): a failed add-on, said so, never a crash."""
    message = {"type": kind, "session_id": SID, "created_at": g.CREATED_AT, "error": None, "data": data}
    assert parse(message) == AddonFailed(kind, None, "add-on message without data")


@pytest.mark.parametrize(
    ("error", "text"),
    [
        ("plain string", "plain string"),
        ({}, "add-on failed"),
        ({"exception": "TimeoutError"}, "TimeoutError"),
        ({"message": 42}, "add-on failed"),
        ({"message": "x" * 5000}, "x" * MAX_ERROR),
        (True, "True"),
    ],
)
def test_error_of_any_shape(error: Any, text: str) -> None:
    """An add-on error of any shape fails the add-on with bounded text."""
    message = g.addon_failed("sentiment_analysis", SID, "unused")
    message["error"] = error
    assert parse(message) == AddonFailed("sentiment_analysis", None, text)


def test_error_false_is_no_error() -> None:
    """error: false is not a failure (the message's data is read)."""
    message = g.entities(SID, UID, UTT, [{"entity_type": "n", "text": "t", "start": 0.0, "end": 1.0}])
    message["error"] = False
    event = parse(message)
    assert isinstance(event, Entities) and event.entities == (Entity("n", "t", 0.0, 1.0),)


def test_fields_of_the_wrong_type_are_left_out() -> None:
    """Entity and sentiment fields of the wrong type read as empty / zero, items that are not objects
    are skipped, a boolean channel is no channel, results that are not a list are none."""
    entities = g.entities(SID, UID, UTT, [{"entity_type": "x", "text": "y", "start": 0.0, "end": 1.0}])
    entities["data"]["results"] = [
        {"entity_type": 5, "text": ["y"], "start": "0.5", "end": True},
        "not an entity",
        None,
        {"entity_type": "name", "text": "Ada", "start": 1, "end": 2},
    ]
    event = parse(entities)
    assert isinstance(event, Entities)
    assert event.entities == (Entity("", "", 0.0, 0.0), Entity("name", "Ada", 1.0, 2.0))

    sentiments = g.sentiment(SID, UID, UTT, [])
    sentiments["data"]["results"] = [
        {"sentiment": None, "emotion": 1, "text": "t", "start": 0.1, "end": 0.2, "channel": True},
        {"sentiment": "negative", "emotion": "anger", "text": "t", "start": 0.1, "end": 0.2, "channel": 1.0},
    ]
    sentiments["data"]["utterance"] = "not an utterance"
    event = parse(sentiments)
    assert isinstance(event, Sentiments)
    assert event.results == (Sentiment("", "", "t", 0.1, 0.2, None), Sentiment("negative", "anger", "t", 0.1, 0.2, 1))
    assert event.utterance is None

    for results in ("many", {"a": 1}, None):
        entities["data"]["results"] = results
        event = parse(entities)
        assert isinstance(event, Entities) and event.entities == ()


def test_utterance_id_as_a_number_is_read_as_text() -> None:
    """A numeric utterance_id links like its text; a boolean one is no id."""
    message = g.entities(SID, UID, UTT, [])
    message["data"]["utterance_id"] = 17
    event = parse(message)
    assert isinstance(event, Entities) and event.utterance_id == "17"
    message["data"]["utterance_id"] = True
    assert isinstance(parse(message), ServerError)


def test_huge_lists_and_texts_are_bounded() -> None:
    """Lists are cut to MAX_ITEMS, texts to MAX_TEXT, a summary to MAX_SUMMARY, ids to 64 characters."""
    many = [{"entity_type": "n", "text": "t" * (MAX_TEXT + 100), "start": 0.0, "end": 1.0}] * (MAX_ITEMS + 50)
    message = g.entities(SID, "u" * 500, UTT, many)
    event = parse(message)
    assert isinstance(event, Entities)
    assert len(event.entities) == MAX_ITEMS and len(event.entities[0].text) == MAX_TEXT
    assert event.utterance_id == "u" * 64

    sentiments = [{"sentiment": "s" * 1000, "emotion": "e", "text": "t", "start": 0.0, "end": 1.0, "channel": 0}] * (
        MAX_ITEMS * 3
    )
    event = parse(g.sentiment(SID, UID, UTT, sentiments))
    assert isinstance(event, Sentiments)
    assert len(event.results) == MAX_ITEMS and len(event.results[0].sentiment) == 64

    long_words = {**UTT, "words": [UTT["words"][0]] * (MAX_ITEMS + 1), "text": "w" * (MAX_TEXT * 2)}
    translation = g.translation(SID, UID, UTT, "en", "fr", "x")
    translation["data"]["translated_utterance"] = long_words
    event = parse(translation)
    assert isinstance(event, Translation)
    assert len(event.utterance.text) == MAX_TEXT and len(event.utterance.words) == MAX_ITEMS

    event = parse(g.post_summarization(SID, "s" * (MAX_SUMMARY + 10)))
    assert isinstance(event, PostResults) and event.summary == "s" * MAX_SUMMARY

    chapters = [{"headline": "h" * (MAX_TEXT + 1), "keywords": ["k" * 300] * 50, "start": 0.0, "end": 1.0}] * (
        MAX_ITEMS + 7
    )
    event = parse(g.post_final_transcript(SID, [UTT], None, None, chapters))
    assert isinstance(event, PostResults) and event.chapters is not None
    assert len(event.chapters) == MAX_ITEMS
    first = event.chapters[0]
    assert len(first["headline"]) == MAX_TEXT and len(first["keywords"]) == 20 and len(first["keywords"][0]) == 100


def test_hostile_post_processing_shapes() -> None:
    """post_* messages with data of the wrong shape: nothing read, nothing trusted, no crash."""
    kinds = ("post_final_transcript", "post_summarization", "post_transcript")
    for kind in kinds:
        shapes: tuple[Any, ...] = (None, [], "x", {"summarization": "yes"}, {"summarization": {"results": 5}})
        for data in shapes:
            event = parse({"type": kind, "session_id": SID, "created_at": g.CREATED_AT, "data": data})
            assert isinstance(event, PostResults) and event.kind == kind
            assert event.chapters is None
            assert event.summary in (None, "")
    block = g.addon_block(None)
    block["success"] = False  # unsuccessful without an error object
    assert post_results("result", {"summarization": block}).failed == (("summarization", "add-on failed"),)
    chapters = g.addon_block(["not a chapter", {"gist": None, "keywords": [1, "k"], "end": True}])
    assert post_results("result", {"chapterization": chapters}).chapters == ({"keywords": ["k"]},)


def test_chapter_fields_of_the_wrong_type_are_left_out() -> None:
    """A chapter's text field that is a number, or keywords that are a string, are left out (the
    module's rule: a field of the wrong type is not trusted)."""
    chapters = g.addon_block([{"headline": 3, "keywords": "k", "start": 0.0, "end": "1.0"}])
    assert post_results("result", {"chapterization": chapters}).chapters == ({"start": 0.0},)


# -- the fake Gladia's add-ons, over a real socket ------------------------------------------------------

BPS = 16_000  # 8 kHz, 16-bit mono
BODY: dict[str, Any] = {"encoding": "wav/pcm", "sample_rate": 8000, "bit_depth": 16, "channels": 1}
ALL_ADDONS: dict[str, Any] = {
    **BODY,
    "custom_metadata": {"call_sid": "CA1"},
    "realtime_processing": {
        "translation": True,
        "translation_config": {"target_languages": ["fr", "de"]},
        "named_entity_recognition": True,
        "sentiment_analysis": True,
    },
    "post_processing": {"summarization": True, "chapterization": True},
}
AUDIO = bytes(i * 7 % 251 for i in range(int(BPS * 2.5)))  # 2.5 s: finals 0, 1 on the way, 2 at the stop
CHUNK = 3200  # 0.1 s
STOP = json.dumps({"type": "stop_recording"})


def acknowledged(end: int) -> Callable[[dict[str, Any]], bool]:
    """Whether a message acknowledges the session's audio up to ``end``."""
    return lambda m: m["type"] == "audio_chunk" and m["data"]["byte_range"][1] >= end


class Client:
    """A plain Gladia client: POST, then audio in lock-step with its acknowledgments, resuming from the
    acknowledged offset on the same URL after a drop, then stop_recording; records every message."""

    def __init__(self, http: aiohttp.ClientSession, fake: FakeGladia, body: dict[str, Any]) -> None:
        self.http, self.fake, self.body = http, fake, body
        self.session_id = ""
        self.url = ""
        self.acked = 0
        self.messages: list[dict[str, Any]] = []
        self.closes: list[int | None] = []
        self.refused: list[int] = []

    async def run(self, stop_at: str | None = None) -> aiohttp.ClientWebSocketResponse | None:
        """Stream AUDIO to the end; the socket left open once a ``stop_at`` message came (None: the
        session ended with close 1000, or a reconnection was refused)."""
        async with self.http.post(
            self.fake.base_url + "/v2/live", json=self.body, headers={"x-gladia-key": "test-key"}
        ) as resp:
            init = await resp.json()
        self.session_id, self.url = init["id"], init["url"]
        for _ in range(6):
            try:
                ws = await self.http.ws_connect(self.url)
            except aiohttp.WSServerHandshakeError as exc:
                self.refused.append(exc.status)
                return None
            if await self._connection(ws, stop_at):
                return ws
            await ws.close()
            if self.closes[-1] == 1000:
                return None
        raise AssertionError("the session did not end in 6 connections")

    async def _connection(self, ws: aiohttp.ClientWebSocketResponse, stop_at: str | None) -> bool:
        while self.acked < len(AUDIO):
            end = min(self.acked + CHUNK, len(AUDIO))
            with contextlib.suppress(ConnectionResetError):  # dropped: the read below sees it
                await ws.send_bytes(AUDIO[self.acked : end])
            if not await self.read(ws, acknowledged(end)):
                return False
        await ws.send_str(STOP)
        return await self.read(ws, lambda m: m["type"] == stop_at)

    async def read(self, ws: aiohttp.ClientWebSocketResponse, until: Callable[[dict[str, Any]], bool]) -> bool:
        """Read until a message ``until`` accepts (True) or the socket ends (False)."""
        while True:
            msg = await ws.receive(timeout=5)
            if msg.type is not WSMsgType.TEXT:
                self.closes.append(ws.close_code)
                return False
            message = json.loads(msg.data)
            self.messages.append(message)
            if message["type"] == "audio_chunk":
                self.acked = message["data"]["byte_range"][1]
            if until(message):
                return True

    def of_type(self, *kinds: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["type"] in kinds]

    async def get(self) -> dict[str, Any]:
        async with self.http.get(self.fake.base_url + f"/v2/live/{self.session_id}") as resp:
            assert resp.status == 200
            body: dict[str, Any] = await resp.json()
        LiveV2Response.from_dict(body)  # the SDK reads the whole body
        return body


def final_ids(client: Client) -> list[str]:
    return [m["data"]["id"] for m in client.of_type("transcript")]


async def test_fake_sends_each_final_then_its_addons_and_the_summary(fake_gladia: FakeGladia) -> None:
    """Every final is followed by its add-ons (translation per language, entities, sentiment), all of them
    SDK-valid and as the fake recorded; the post-processing results come before end_session, and GET
    /v2/live/{id}'s body (checked with LiveV2Response) holds the same messages and analysis."""
    async with aiohttp.ClientSession() as http:
        client = Client(http, fake_gladia, ALL_ADDONS)
        assert await client.run() is None
        body = await client.get()
    assert client.closes == [1000]
    for message in client.messages:
        create_live_v2_web_socket_message_from_dict(message)
    session = fake_gladia.sessions[client.session_id]
    kinds = [m["type"] for m in client.messages if m["type"] not in ("audio_chunk", "stop_recording")]
    per_final = ["transcript", "translation", "translation", "named_entity_recognition", "sentiment_analysis"]
    assert kinds == per_final * 3 + [
        "end_recording",
        "post_transcript",
        "post_final_transcript",
        "post_summarization",
        "end_session",
    ]
    addons = client.of_type(*REALTIME)
    assert addons == session.addons_sent and session.addons_repeated == 0 and not session.addons_lost
    events = [parse(m) for m in addons]
    ids = final_ids(client)
    assert ids == ["00_00000000", "00_00000001", "00_00000002"]
    finals = {m["data"]["id"]: m["data"]["utterance"]["text"].strip() for m in client.of_type("transcript")}
    translations = [e for e in events if isinstance(e, Translation)]
    assert [(t.utterance_id, t.language) for t in translations] == [(i, lang) for i in ids for lang in ("fr", "de")]
    assert all(t.utterance.text == f"[{t.language}] {finals[t.utterance_id]}" for t in translations)
    entities = [e for e in events if isinstance(e, Entities)]
    assert [(e.utterance_id, e.entities[0].type, e.entities[0].text) for e in entities] == [
        (i, "segment", " ".join(finals[i].split()[:2])) for i in ids
    ]
    sentiments = [e for e in events if isinstance(e, Sentiments)]
    assert [(s.utterance_id, s.results[0].text, s.results[0].sentiment) for s in sentiments] == [
        (i, finals[i], "neutral") for i in ids
    ]
    post = [parse(m) for m in client.of_type("post_final_transcript", "post_summarization")]
    assert [p.summary for p in post if isinstance(p, PostResults)] == ["Summary of 3 segments"] * 2
    assert isinstance(post[0], PostResults) and post[0].chapters is not None and len(post[0].chapters) == 1
    assert session.post_sent == client.of_type("post_transcript", "post_final_transcript", "post_summarization")

    assert body["status"] == "done" and body["custom_metadata"] == {"call_sid": "CA1"}
    result = body["result"]
    realtime = [json.loads(m) for m in result["messages"]]
    assert realtime == client.of_type("transcript", *REALTIME)
    assert post_results("result", result) == PostResults("result", "Summary of 3 segments", post[0].chapters, ())
    assert [r["languages"] for r in result["translation"]["results"]] == [["fr"], ["de"]]
    assert len(result["named_entity_recognition"]["results"]) == 3
    assert len(json.loads(result["sentiment_analysis"]["results"])) == 3


async def test_fake_without_addons_sends_none(fake_gladia: FakeGladia) -> None:
    """No add-on asked (or realtime messages switched off): no add-on message, a GET body the SDK reads."""
    body = {**ALL_ADDONS, "messages_config": {"receive_realtime_processing_events": False}}
    del body["post_processing"]
    async with aiohttp.ClientSession() as http:
        plain, muted = Client(http, fake_gladia, BODY), Client(http, fake_gladia, body)
        assert await plain.run() is None and await muted.run() is None
        got = await plain.get()
        muted_got = await muted.get()
    for client in (plain, muted):
        assert not client.of_type(*REALTIME, "post_summarization", "end_recording")
        assert len(client.of_type("transcript")) == 3 and client.closes == [1000]
    assert "translation" not in got["result"] and "summarization" not in got["result"]
    assert muted_got["result"]["translation"]["success"] is True  # asked for, only not sent on the socket


async def test_fake_addon_errors(fake_gladia: FakeGladia) -> None:
    """addon_errors: each named add-on's messages carry the injected error and data null (read as
    AddonFailed / a failed summarization), and its result block is unsuccessful."""
    fake_gladia.addon_errors = {"translation", "sentiment_analysis", "summarization"}
    async with aiohttp.ClientSession() as http:
        client = Client(http, fake_gladia, ALL_ADDONS)
        await client.run()
        body = await client.get()
    failures = [parse(m) for m in client.of_type("translation", "sentiment_analysis")]
    assert all(m["data"] is None for m in client.of_type("translation", "sentiment_analysis"))
    assert (
        failures
        == [
            AddonFailed("translation", None, "injected translation failure"),
            AddonFailed("translation", None, "injected translation failure"),
            AddonFailed("sentiment_analysis", None, "injected sentiment_analysis failure"),
        ]
        * 3
    )
    assert all(isinstance(parse(m), Entities) for m in client.of_type("named_entity_recognition"))
    failed = (("summarization", "injected summarization failure"),)
    assert [parse(m) for m in client.of_type("post_summarization")] == [
        PostResults("post_summarization", failed=failed)
    ]
    final = parse(client.of_type("post_final_transcript")[0])
    assert isinstance(final, PostResults) and final.failed == failed and final.summary is None
    result = body["result"]
    assert [result[k]["success"] for k in ("translation", "sentiment_analysis", "summarization")] == [False] * 3
    assert result["named_entity_recognition"]["success"] is True
    assert post_results("result", result).failed == failed


async def test_fake_loses_the_addons_of_one_final(fake_gladia: FakeGladia) -> None:
    """lose_addons_at=1: the socket drops right after final 1, its add-ons never arrive on a socket;
    the session resumes and ends normally, and GET's result.messages has them after final 1."""
    fake_gladia.lose_addons_at = 1
    async with aiohttp.ClientSession() as http:
        client = Client(http, fake_gladia, ALL_ADDONS)
        await client.run()
        body = await client.get()
    session = fake_gladia.sessions[client.session_id]
    assert session.connections == 2 and client.closes[-1] == 1000
    assert final_ids(client) == ["00_00000000", "00_00000001", "00_00000002"]  # each once
    lost = session.addons_lost
    assert [m["type"] for m in lost] == ["translation", "translation", "named_entity_recognition", "sentiment_analysis"]
    assert all(m["data"]["utterance_id"] == "00_00000001" for m in lost)
    received = client.of_type(*REALTIME)
    assert not [m for m in received if m in lost] and len(received) == 8
    realtime = [json.loads(m) for m in body["result"]["messages"]]
    after_final_1 = realtime.index(client.of_type("transcript")[1]) + 1
    assert realtime[after_final_1 : after_final_1 + 4] == lost
    assert [m for m in realtime if m["type"] in REALTIME] == session.addons_sent


async def test_fake_repeats_addons_on_resume(fake_gladia: FakeGladia) -> None:
    """repeat_addons_on_resume: after a drop, the new socket first carries the last final's add-ons again."""
    fake_gladia.repeat_addons_on_resume = True
    fake_gladia.drops = [(int(BPS * 1.5), 1011)]
    async with aiohttp.ClientSession() as http:
        client = Client(http, fake_gladia, ALL_ADDONS)
        await client.run()
    session = fake_gladia.sessions[client.session_id]
    assert client.closes == [1011, 1000] and session.addons_repeated == 4
    received = client.of_type(*REALTIME)
    assert len(received) == len(session.addons_sent) + 4
    of_final_0 = [m for m in session.addons_sent if m["data"]["utterance_id"] == "00_00000000"]
    assert [m for m in received if m["data"]["utterance_id"] == "00_00000000"] == of_final_0 * 2


async def test_fake_summary_delay_keeps_the_socket_open(fake_gladia: FakeGladia) -> None:
    """summary_delay: after end_recording the socket stays open and GET says processing; the results
    then come over the socket and GET says done."""
    fake_gladia.summary_delay = 0.6
    async with aiohttp.ClientSession() as http:
        client = Client(http, fake_gladia, ALL_ADDONS)
        ws = await client.run(stop_at="end_recording")
        assert ws is not None
        assert (await client.get())["status"] == "processing"
        assert await client.read(ws, lambda m: m["type"] == "end_session")
        assert (await client.get())["status"] == "done"
        await ws.close()
    assert [m["type"] for m in client.messages[-4:]] == [
        "post_transcript",
        "post_final_transcript",
        "post_summarization",
        "end_session",
    ]


async def test_fake_drop_before_summary(fake_gladia: FakeGladia) -> None:
    """drop_before_summary: the socket is cut after the last final, a new one is refused, and GET has
    the summary once summary_delay has passed."""
    fake_gladia.drop_before_summary = True
    fake_gladia.summary_delay = 0.4
    async with aiohttp.ClientSession() as http:
        client = Client(http, fake_gladia, ALL_ADDONS)
        assert await client.run() is None
        assert client.refused == [404] and client.closes[-1] != 1000
        assert not client.of_type("post_transcript", "post_final_transcript", "post_summarization", "end_session")
        assert len(client.of_type("sentiment_analysis")) == 3  # the last final's add-ons came before the cut
        assert (await client.get())["status"] == "processing"
        await asyncio.sleep(0.5)
        body = await client.get()
    assert body["status"] == "done"
    assert post_results("result", body["result"]).summary == "Summary of 3 segments"


async def test_fake_summary_never(fake_gladia: FakeGladia) -> None:
    """summary_never: end_recording, then nothing on the open socket; GET says processing, also after
    the client has closed."""
    fake_gladia.summary_never = True
    async with aiohttp.ClientSession() as http:
        client = Client(http, fake_gladia, ALL_ADDONS)
        ws = await client.run(stop_at="end_recording")
        assert ws is not None
        with pytest.raises(TimeoutError):
            await ws.receive(timeout=0.3)
        assert (await client.get())["status"] == "processing"
        await ws.close()
        await asyncio.sleep(0.05)
        body = await client.get()
    assert body["status"] == "processing" and body["result"] is None
    assert fake_gladia.sessions[client.session_id].closes == [1000]
