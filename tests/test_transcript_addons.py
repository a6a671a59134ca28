"""Gladia's add-ons on record: a final's translations, entities and sentiment, and the post-call analysis,
kept by the transcript store (real SQLite files), carried by ``transcript.completed``, and served by the
transcript API over HTTP on loopback (``json``, and ``txt``/``vtt`` with ``?lang=``).

The oracle for what each add-on holds is the official SDK: every Gladia message here is built from its
types (:mod:`tests.support.gladia_addons`, each read back by the SDK), and the bot event payloads the store
is given are read out of those messages field by field, as the bot events are documented
(``utterance.translation {utterance_id, channel, speaker, language, original_language, text}`` ...).
"""

from __future__ import annotations

import asyncio
import html
import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import webvtt
from aiohttp.test_utils import TestServer

from bridge.call.record import CallRecord
from bridge.http.transcripts import TRANSCRIPTS
from bridge.transcript_addons import addon_row
from bridge.transcript_render import in_language, parse_lang, render_txt
from bridge.transcripts import FILENAME, TranscriptStore
from tests.support import gladia_addons as gladia
from tests.support.calls import BridgeFactory

pytestmark = pytest.mark.timeout(60)

TOKEN = "test-api-token-0123456789"
SESSION = "45463597-20b7-4af7-b3b3-f5fb778203ab"
STARTED = 1_780_000_000.0
DAY = 86400.0
SPEAKERS = ("caller", "agent")


def final(uid: str, channel: int, start: float, end: float, text: str) -> dict[str, Any]:
    """An ``utterance.final``'s utterance, as the store is given it."""
    parts = text.split()
    step = (end - start) / len(parts)
    return {
        "id": uid,
        "text": text,
        "start": start,
        "end": end,
        "language": "en",
        "confidence": 0.9,
        "channel": channel,
        "speaker": SPEAKERS[channel],
        "words": [
            {"word": w, "start": round(start + i * step, 3), "end": round(start + (i + 1) * step, 3), "confidence": 0.9}
            for i, w in enumerate(parts)
        ],
    }


def gladia_utterance(u: dict[str, Any]) -> dict[str, Any]:
    """The final as Gladia's ``UtteranceDTO`` said it."""
    return {k: u[k] for k in ("start", "end", "confidence", "channel", "words", "text", "language")}


# The bot events' payloads (without "call"), read out of the SDK-built Gladia messages.


def translation_item(u: dict[str, Any], target: str, text: str) -> dict[str, Any]:
    wire = gladia.translation(SESSION, u["id"], gladia_utterance(u), "en", target, text)
    data = wire["data"]
    return {
        "utterance_id": data["utterance_id"],
        "channel": data["utterance"]["channel"],
        "speaker": SPEAKERS[data["utterance"]["channel"]],
        "language": data["target_language"],
        "original_language": data["original_language"],
        "text": data["translated_utterance"]["text"],
        "stt_session_id": wire["session_id"],
    }


def entities_item(u: dict[str, Any], results: list[dict[str, Any]]) -> dict[str, Any]:
    data = gladia.entities(SESSION, u["id"], gladia_utterance(u), results)["data"]
    return {
        "utterance_id": data["utterance_id"],
        "channel": u["channel"],
        "speaker": u["speaker"],
        "entities": [
            {"type": r["entity_type"], "text": r["text"], "start": r["start"], "end": r["end"]} for r in data["results"]
        ],
    }


def sentiment_item(u: dict[str, Any], results: list[dict[str, Any]]) -> dict[str, Any]:
    data = gladia.sentiment(SESSION, u["id"], gladia_utterance(u), results)["data"]
    return {
        "utterance_id": data["utterance_id"],
        "channel": u["channel"],
        "speaker": u["speaker"],
        "results": [{k: r[k] for k in ("sentiment", "emotion", "text", "start", "end")} for r in data["results"]],
    }


# A two-party call: three finals (Gladia's ids), translated to French and Spanish (the last one only to
# French), entities on the last, sentiment on the first; then the post-call analysis.
U0 = final("00_00000000", 0, 1.0, 2.5, "Hello, I need help with my account.")
U1 = final("01_00000001", 1, 3.0, 4.2, "Sure, what is your name?")
U2 = final("00_00000002", 0, 5.0, 6.0, "John Smith from Paris.")
FINALS = [U0, U1, U2]
FR = {U0["id"]: "Bonjour, j'ai besoin d'aide avec mon compte.", U1["id"]: "Bien sûr, quel est votre nom ?"}
FR[U2["id"]] = "John Smith de Paris."
ES = {U0["id"]: "Hola, necesito ayuda con mi cuenta.", U1["id"]: "Claro, ¿cuál es su nombre?"}
ENTITIES = [
    {"entity_type": "person", "text": "John Smith", "start": 5.0, "end": 5.6},
    {"entity_type": "location", "text": "Paris", "start": 5.7, "end": 6.0},
]
SENTIMENT = [
    {"sentiment": "negative", "emotion": "frustration", "text": U0["text"], "start": 1.0, "end": 2.5, "channel": 0}
]
SUMMARY = gladia.post_summarization(SESSION, "The caller, John Smith, asked for help with an account.")["data"][
    "results"
]
ANALYSIS = {"status": "done", "summary": SUMMARY, "chapters": [{"headline": "Account help", "start": 1.0, "end": 6.0}]}


def addons() -> list[tuple[str, dict[str, Any]]]:
    """The call's add-on events in the order a call gets them (each after its final)."""
    out: list[tuple[str, dict[str, Any]]] = []
    for u in FINALS:
        for lang, texts in (("fr", FR), ("es", ES)):
            if u["id"] in texts:
                out.append(("utterance.translation", translation_item(u, lang, texts[u["id"]])))
    out.append(("utterance.sentiment", sentiment_item(U0, SENTIMENT)))
    out.append(("utterance.entities", entities_item(U2, ENTITIES)))
    return out


def record_call(store: TranscriptStore, call_id: str, started: float, ended: float | None = None) -> None:
    """The call as it writes its record: start, each final then its add-ons, the analysis, the end."""
    store.call_started({"id": call_id, "provider": "twilio", "call_sid": "CA1", "parameters": {}}, started)
    for u in FINALS:
        store.utterance(call_id, u)
        for type_, item in addons():
            if item["utterance_id"] == u["id"]:
                store.addon(call_id, type_, item)
    store.analysis(call_id, ANALYSIS)
    if ended is not None:
        store.call_ended(call_id, ended, "stop")


def expected_utterances() -> list[dict[str, Any]]:
    """What the transcript's utterances must be: each final as given, with its add-ons."""
    return [
        {
            **U0,
            "translations": {"fr": FR[U0["id"]], "es": ES[U0["id"]]},
            "sentiment": sentiment_item(U0, SENTIMENT)["results"],
        },
        {**U1, "translations": {"fr": FR[U1["id"]], "es": ES[U1["id"]]}},
        {**U2, "translations": {"fr": FR[U2["id"]]}, "entities": entities_item(U2, ENTITIES)["entities"]},
    ]


# -- pure pieces -----------------------------------------------------------------------------------


def test_an_addon_row_keeps_what_the_transcript_shows() -> None:
    """A translation keeps its language and text, entities and sentiment their lists, all linked by the
    final's id; the rest of the event (channel, speaker, session) is the utterance's already."""
    uid, kind, body = addon_row("utterance.translation", translation_item(U1, "fr", FR[U1["id"]]))
    assert (uid, kind, json.loads(body)) == (U1["id"], "translation", {"language": "fr", "text": FR[U1["id"]]})
    uid, kind, body = addon_row("utterance.entities", entities_item(U2, ENTITIES))
    assert (uid, kind) == (U2["id"], "entities")
    assert json.loads(body) == [
        {"type": "person", "text": "John Smith", "start": 5.0, "end": 5.6},
        {"type": "location", "text": "Paris", "start": 5.7, "end": 6.0},
    ]
    uid, kind, body = addon_row("utterance.sentiment", sentiment_item(U0, SENTIMENT))
    assert (uid, kind) == (U0["id"], "sentiment")
    assert json.loads(body) == [
        {"sentiment": "negative", "emotion": "frustration", "text": U0["text"], "start": 1.0, "end": 2.5}
    ]


@pytest.mark.parametrize(
    ("type_", "item"),
    [
        ("utterance.final", {"utterance_id": "u", "text": "x"}),  # not an add-on
        ("stt.addon_failed", {"addon": "translation", "utterance_id": "u", "error": "boom"}),
        ("utterance.translation", {"language": "fr", "text": "x"}),  # no utterance id
        ("utterance.translation", {"utterance_id": "", "language": "fr", "text": "x"}),
        ("utterance.translation", {"utterance_id": "u", "text": "x"}),  # no language
        ("utterance.translation", {"utterance_id": "u", "language": "fr", "text": None}),
        ("utterance.entities", {"utterance_id": "u", "entities": "John"}),
        ("utterance.sentiment", {"utterance_id": "u"}),
    ],
)
def test_what_is_not_an_addon_is_refused(type_: str, item: dict[str, Any]) -> None:
    with pytest.raises((ValueError, TypeError)):
        addon_row(type_, item)


@pytest.mark.parametrize(
    ("text", "code"), [("fr", "fr"), ("FR", "fr"), ("pt-BR", "pt-br"), ("es-419", "es-419"), ("haw", "haw")]
)
def test_lang_accepts_a_language_and_an_optional_region(text: str, code: str) -> None:
    assert parse_lang(text) == code


@pytest.mark.parametrize(
    "text", ["", "f", "fren", "french", "fr_FR", "fr-", "fr-FRA", "fr-12", "fr-CA-x", "é", "fr\n", "1a"]
)
def test_lang_refuses_anything_else_and_names_itself(text: str) -> None:
    with pytest.raises(ValueError, match="lang"):
        parse_lang(text)


def test_in_language_shows_each_translation_and_keeps_the_rest() -> None:
    """The text of each utterance in the language asked for (code in any case; a code with a region
    takes the language's own translation); an utterance without that translation keeps its words."""
    transcript: dict[str, Any] = {"id": "c", "utterances": expected_utterances()}
    assert [u["text"] for u in in_language(transcript, "es")["utterances"]] == [ES[U0["id"]], ES[U1["id"]], U2["text"]]
    assert [u["text"] for u in in_language(transcript, "fr-ca")["utterances"]] == [FR[u["id"]] for u in FINALS]
    assert [u["text"] for u in in_language(transcript, "de")["utterances"]] == [u["text"] for u in FINALS]
    assert transcript["utterances"][0]["text"] == U0["text"]  # the transcript itself is untouched
    upper = {"id": "c", "utterances": [{**U0, "translations": {"PT-BR": "Olá", "pt": "Oi"}}]}
    assert in_language(upper, parse_lang("pt-BR"))["utterances"][0]["text"] == "Olá"
    assert in_language(upper, "pt-pt")["utterances"][0]["text"] == "Oi"


def test_the_new_pure_modules_import_no_event_loop_or_logger() -> None:
    code = (
        "import sys, bridge.transcript_addons, bridge.transcript_schema, bridge.transcript_render; "
        "bad = [m for m in ('asyncio', 'aiohttp', 'structlog') if m in sys.modules]; print(bad); sys.exit(bool(bad))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout


# -- the store ------------------------------------------------------------------------------------


def test_addons_and_the_analysis_come_back_with_their_utterances(tmp_path: Path) -> None:
    """Each final comes back with its translations ({language: text}), entities and sentiment, and the
    call with its analysis; a final and its add-ons written in one batch are linked; the same add-on
    again replaces the first; a later analysis replaces the first."""
    store = TranscriptStore.in_dir(tmp_path)
    try:
        record_call(store, "call-1", STARTED, STARTED + 60)
        assert store.flush(5)
        got = store.get("call-1")
        store.addon("call-1", "utterance.translation", translation_item(U1, "fr", "Oui, votre nom ?"))
        later = {"status": "failed", "errors": {"summarization": "timeout"}}
        store.analysis("call-1", later)
        assert store.flush(5)
        again = store.get("call-1")
        listed = store.list_since(0)
    finally:
        store.close()
    assert got is not None and again is not None
    assert got["utterances"] == expected_utterances()
    assert got["analysis"] == ANALYSIS and "truncated" not in got
    assert again["utterances"][1]["translations"] == {"fr": "Oui, votre nom ?", "es": ES[U1["id"]]}
    assert again["analysis"] == later
    assert [c["utterances"] for c in listed] == [3]  # add-ons are not utterances
    assert store.dropped == 0 and store.write_failures == 0


def test_a_call_without_addons_has_no_addon_keys(tmp_path: Path) -> None:
    store = TranscriptStore.in_dir(tmp_path)
    try:
        store.utterance("plain", U0)
        assert store.flush(5)
        got = store.get("plain")
    finally:
        store.close()
    assert got is not None and got["utterances"] == [U0] and "analysis" not in got


def test_an_id_said_again_by_a_new_session_takes_only_its_own_addons(tmp_path: Path) -> None:
    """Gladia numbers finals per session: after a session is replaced, "00_00000000" comes again. The
    new final replaces the old on record, and the old one's translation does not stick to it; the new
    one's add-ons do. An add-on whose final never reached the record is not shown."""
    store = TranscriptStore.in_dir(tmp_path)
    first = final("00_00000000", 0, 1.0, 2.0, "First session words.")
    second = final("00_00000000", 0, 30.0, 31.0, "Second session words.")
    try:
        store.utterance("call-r", first)
        store.addon("call-r", "utterance.translation", translation_item(first, "fr", "Mots de la première session."))
        store.addon("call-r", "utterance.sentiment", sentiment_item(first, SENTIMENT))
        assert store.flush(5)
        store.utterance("call-r", second)
        store.addon("call-r", "utterance.entities", entities_item(second, ENTITIES))
        store.addon("call-r", "utterance.translation", translation_item(U1, "fr", FR[U1["id"]]))  # U1 never recorded
        assert store.flush(5)
        got = store.get("call-r")
    finally:
        store.close()
    assert got is not None
    assert got["utterances"] == [{**second, "entities": entities_item(second, ENTITIES)["entities"]}]


OLD_SCHEMA = """
CREATE TABLE calls (
    call_id TEXT PRIMARY KEY, provider TEXT, call_sid TEXT, stream_sid TEXT, caller TEXT, called TEXT,
    parameters TEXT NOT NULL DEFAULT '{}', started_at REAL NOT NULL, ended_at REAL, end_reason TEXT
);
CREATE INDEX calls_by_start ON calls (started_at);
CREATE INDEX calls_by_end ON calls (ended_at);
CREATE INDEX calls_by_expiry ON calls (coalesce(ended_at, started_at));
CREATE TABLE utterances (
    seq INTEGER PRIMARY KEY, call_id TEXT NOT NULL, utterance_id TEXT NOT NULL, start REAL NOT NULL,
    body TEXT NOT NULL, UNIQUE (call_id, utterance_id)
);
"""


def test_a_file_of_the_old_schema_opens_and_gains_the_new_tables(tmp_path: Path) -> None:
    """A transcripts file written before add-ons existed (its tables exactly as they were) opens: its
    calls read back as before, and add-ons and an analysis can be recorded for them."""
    path = tmp_path / FILENAME
    with sqlite3.connect(path) as db:
        db.executescript(OLD_SCHEMA)
        db.execute(
            "INSERT INTO calls (call_id, provider, started_at, ended_at, end_reason) "
            "VALUES ('old', 'twilio', ?, ?, 'stop')",
            (STARTED, STARTED + 9),
        )
        db.execute(
            "INSERT INTO utterances (call_id, utterance_id, start, body) VALUES ('old', ?, ?, ?)",
            (U0["id"], U0["start"], json.dumps(U0)),
        )
    db.close()
    store = TranscriptStore(path)
    try:
        before = store.get("old")
        store.addon("old", "utterance.translation", translation_item(U0, "es", ES[U0["id"]]))
        store.analysis("old", ANALYSIS)
        assert store.flush(5)
        after = store.get("old")
    finally:
        store.close()
    assert before is not None and before["utterances"] == [U0] and before["end_reason"] == "stop"
    assert after is not None and after["utterances"] == [{**U0, "translations": {"es": ES[U0["id"]]}}]
    assert after["analysis"] == ANALYSIS
    with sqlite3.connect(path) as db:
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    db.close()
    assert tables == {"calls", "utterances", "addons", "analyses", "recording_parts"}


def test_the_purge_deletes_addons_and_analyses_with_their_call(tmp_path: Path) -> None:
    """Retention takes a call's add-ons and analysis with it (nothing of it is left in any table), and
    leaves those of a call still kept."""
    store = TranscriptStore.in_dir(tmp_path)
    try:
        record_call(store, "expired", STARTED - 40 * DAY, STARTED - 40 * DAY + 60)
        record_call(store, "kept", STARTED - DAY, STARTED - DAY + 60)
        store.addon("orphan", "utterance.entities", entities_item(U2, ENTITIES))  # a call seen only by an add-on
        store.analysis("orphan-too", ANALYSIS)
        assert store.flush(5)
        gone = store.purge(STARTED - 30 * DAY)
        gone_later = store.purge(time.time() + DAY)  # everything, the calls seen only by add-on included
    finally:
        store.close()
    assert gone == 1 and gone_later == 3
    with sqlite3.connect(tmp_path / FILENAME) as db:
        left = {
            t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("calls", "utterances", "addons", "analyses")
        }
    db.close()
    assert left == {"calls": 0, "utterances": 0, "addons": 0, "analyses": 0}


def test_the_purge_keeps_a_kept_calls_addons(tmp_path: Path) -> None:
    store = TranscriptStore.in_dir(tmp_path)
    try:
        record_call(store, "expired", STARTED - 40 * DAY, STARTED - 40 * DAY + 60)
        record_call(store, "kept", STARTED - DAY, STARTED - DAY + 60)
        assert store.flush(5)
        assert store.purge(STARTED - 30 * DAY) == 1
        kept = store.get("kept")
    finally:
        store.close()
    with sqlite3.connect(tmp_path / FILENAME) as db:
        owners = {t: {r[0] for r in db.execute(f"SELECT DISTINCT call_id FROM {t}")} for t in ("addons", "analyses")}
    db.close()
    assert owners == {"addons": {"kept"}, "analyses": {"kept"}}
    assert kept is not None and kept["utterances"] == expected_utterances() and kept["analysis"] == ANALYSIS


def test_addons_and_analyses_that_cannot_be_kept_are_dropped_not_raised(tmp_path: Path) -> None:
    """A malformed add-on or analysis, or one after close: counted once each, never an exception, and
    reported as dropping like any write."""
    reports: list[str] = []
    store = TranscriptStore.in_dir(tmp_path, report=lambda event, _fields: reports.append(event))
    store.addon("c", "utterance.translation", {"utterance_id": "u", "text": "no language"})
    store.addon("c", "utterance.partial", {"utterance_id": "u"})
    store.analysis("c", {"summary": "no status"})
    circular: dict[str, Any] = {"status": "done"}
    circular["self"] = circular
    store.analysis("c", circular)
    store.close()
    store.addon("c", "utterance.entities", entities_item(U2, ENTITIES))
    store.analysis("c", ANALYSIS)
    assert store.dropped == 6
    assert reports.count("transcripts.dropping") == 1


# -- the call's record and transcript.completed --------------------------------------------------


def test_a_call_record_keeps_addons_and_transcript_completed_carries_the_analysis(tmp_path: Path) -> None:
    """CallRecord forwards add-ons and the analysis to the store; transcript.completed has "analysis" only
    when one is given; with transcripts off the record takes them and keeps nothing."""
    store = TranscriptStore.in_dir(tmp_path)
    try:
        record = CallRecord("call-r", store)
        record.started({"id": "call-r", "provider": "twilio"}, list(SPEAKERS))
        for u in FINALS:
            record.final(u)
        for type_, item in addons():
            record.addon(type_, item)
        record.analysis(ANALYSIS)
        assert store.flush(5)
        got = store.get("call-r")
    finally:
        store.close()
    assert got is not None and got["utterances"] == expected_utterances() and got["analysis"] == ANALYSIS
    done = record.completed_json({"id": "call-r"}, list(SPEAKERS), 3, ANALYSIS)
    assert done["analysis"] == ANALYSIS and done["transcript_path"] == "/v1/calls/call-r/transcript"
    assert [u["text"] for u in done["utterances"]] == [u["text"] for u in FINALS] and not done["truncated"]
    assert "analysis" not in record.completed_json({"id": "call-r"}, list(SPEAKERS), 3)
    timeout = {"status": "timeout"}
    assert record.completed_json({"id": "call-r"}, list(SPEAKERS), 3, analysis=timeout)["analysis"] == timeout
    off = CallRecord("call-off", None)
    off.final(U0)
    off.addon("utterance.translation", translation_item(U0, "fr", FR[U0["id"]]))
    off.analysis(ANALYSIS)
    done_off = off.completed_json({"id": "call-off"}, ["caller"], 1, ANALYSIS)
    assert done_off["transcript_path"] is None and done_off["analysis"] == ANALYSIS


# -- the API over HTTP ----------------------------------------------------------------------------


async def _get(http: aiohttp.ClientSession, server: TestServer, path: str) -> tuple[int, str, str]:
    async with http.get(server.make_url(path), headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
        return resp.status, resp.headers.get("Content-Type", ""), await resp.text()


async def test_the_transcript_api_serves_addons_and_translations(make_bridge: BridgeFactory) -> None:
    """JSON: each utterance with its translations, entities and sentiment, the call with its analysis.
    txt and vtt with ?lang=: each utterance in that language where it was translated, else in its own
    words; a region falls back to the language; lang on json changes nothing; a bad lang is 422 naming
    lang, whatever the format."""
    server = await make_bridge({"BRIDGE_API_TOKEN": TOKEN})
    store = server.app[TRANSCRIPTS]
    assert isinstance(store, TranscriptStore)
    record_call(store, "call-1", round(time.time() - 600, 3), round(time.time() - 500, 3))
    assert await asyncio.to_thread(store.flush, 5)
    path = "/v1/calls/call-1/transcript"
    async with aiohttp.ClientSession() as http:
        as_json = await _get(http, server, path)
        json_lang = await _get(http, server, path + "?lang=fr")
        txt_fr = await _get(http, server, path + "?format=txt&lang=fr")
        txt_fr_ca = await _get(http, server, path + "?format=txt&lang=fr-CA")
        txt_plain = await _get(http, server, path + "?format=txt")
        txt_de = await _get(http, server, path + "?format=txt&lang=de")
        vtt_es = await _get(http, server, path + "?format=vtt&lang=ES")
        bad = [
            await _get(http, server, f"{path}?format={f}&lang={lang}")
            for f, lang in (("txt", "french"), ("vtt", "fr_FR"), ("json", "x"), ("txt", ""))
        ]
    status, ctype, body = as_json
    got = json.loads(body)
    assert status == 200 and ctype == "application/json; charset=utf-8"
    assert got["utterances"] == expected_utterances() and got["analysis"] == ANALYSIS
    assert json_lang == as_json
    assert txt_fr == (
        200,
        "text/plain; charset=utf-8",
        f"[00:00:01.0] caller: {FR[U0['id']]}\n[00:00:03.0] agent: {FR[U1['id']]}\n"
        f"[00:00:05.0] caller: {FR[U2['id']]}\n",
    )
    assert txt_fr_ca == txt_fr
    assert txt_plain[2] == render_txt({"utterances": FINALS}) and txt_de == txt_plain
    status, ctype, body = vtt_es
    assert status == 200 and ctype == "text/vtt; charset=utf-8"
    captions = webvtt.from_string(body, strict=True).captions
    assert [html.unescape(c.text) for c in captions] == [ES[U0["id"]], ES[U1["id"]], U2["text"]]
    assert [c.voice for c in captions] == ["caller", "agent", "caller"]
    assert [c.start for c in captions] == ["00:00:01.000", "00:00:03.000", "00:00:05.000"]
    for status, _, body in bad:
        assert status == 422 and "lang" in json.loads(body)["error"]
