"""Add-on results reach the call after their final, once; the post-call analysis; a session read back
(pure: no event loop)."""

from __future__ import annotations

import json

from bridge.stt.addon_links import AddonLinks
from bridge.stt.addons import AddonFailed, Entities, Entity, PostResults, Sentiments, Translation
from bridge.stt.analysis import CallAnalysis
from bridge.stt.read_back import read_back
from bridge.stt.utterance import Utterance


def utt(text: str = " hello there", start: float = 1.0, end: float = 2.0, channel: int = 0) -> Utterance:
    return Utterance(start, end, text, "en", 0.9, channel, ())


def tr(uid: str, lang: str) -> Translation:
    return Translation(uid, lang, "en", utt(f" [{lang}] hello"))


def test_a_result_before_its_final_waits_for_it_then_comes_in_order() -> None:
    links = AddonLinks(("translation", "sentiment_analysis"), ("fr", "es"))
    assert links.result("s1", tr("00_1", "fr")) == []  # its final is not delivered yet
    assert links.result("s1", Sentiments("00_1", (), None)) == []
    assert links.held == 2
    released = links.final("s1", "00_1", 1, " hello there")
    assert [type(r.result) for r in released] == [Translation, Sentiments]
    assert all(r.channel == 1 and r.session_id == "s1" for r in released)
    (late,) = links.result("s1", tr("00_1", "es"))
    assert late.result.language == "es" and late.channel == 1  # type: ignore[union-attr]
    assert links.owed("s1") == 0 and links.held == 0


def test_a_repeat_is_dropped_but_the_same_id_in_another_session_is_new() -> None:
    links = AddonLinks(("named_entity_recognition",), ())
    links.final("s1", "00_0", 0, "x")
    entities = Entities("00_0", (Entity("person", "Ann", 1.0, 1.2),), None)
    assert len(links.result("s1", entities)) == 1
    assert links.result("s1", entities) == [] and links.duplicates == 1
    links.final("s2", "00_0", 0, "y")  # a replacement session counts its ids from 0 again
    assert len(links.result("s2", entities)) == 1


def test_what_a_delivered_final_still_lacks_is_owed_until_it_comes_or_fails() -> None:
    links = AddonLinks(("translation", "named_entity_recognition"), ("fr", "de"))
    links.final("s1", "00_0", 0, "hello")
    links.final("s1", "00_1", 0, "   ")  # an empty final is owed nothing
    assert links.owed("s1") == 3
    links.result("s1", tr("00_0", "fr"))
    links.result("s1", AddonFailed("translation", "00_0", "quota"))  # which language failed: not said
    assert links.owed("s1") == 1  # the entities
    assert links.owed("s2") == 0


def test_a_failure_naming_no_final_passes_at_once_every_time() -> None:
    links = AddonLinks(("translation",), ("fr",))
    failure = AddonFailed("translation", None, "injected failure")
    assert [r.channel for r in links.result("s1", failure)] == [None]
    assert len(links.result("s1", failure)) == 1  # another utterance's failure, not a repeat


def test_held_results_are_bounded_and_counted() -> None:
    links = AddonLinks(("sentiment_analysis",), (), max_held=3)
    for i in range(5):
        links.result("s1", Sentiments(f"00_{i}", (), None))
    assert links.held == 3 and links.dropped == 2
    assert links.final("s1", "00_0", 0, "x") == []  # pushed out
    assert len(links.final("s1", "00_4", 0, "x")) == 1
    assert links.orphans() == 2 and links.held == 0


def test_the_analysis_of_one_and_of_two_sessions() -> None:
    analysis = CallAnalysis(("summarization",))
    assert not analysis.complete("s1")
    analysis.take("s1", PostResults("post_transcript"))
    assert not analysis.complete("s1")
    analysis.take("s1", PostResults("post_summarization", summary="First part."))
    assert analysis.complete("s1")
    assert analysis.json(["s1"]) == {"status": "done", "summary": "First part."}
    analysis.take("s2", PostResults("post_final_transcript", summary="Second part."))
    assert analysis.json(["s1", "s2"])["summary"] == "First part.\n\nSecond part."
    assert analysis.json(["s1", "s2"], timed_out=True) == {"status": "timeout"}


def test_a_failed_analysis_says_why_and_a_later_result_replaces_the_failure() -> None:
    analysis = CallAnalysis(("summarization", "chapterization"))
    analysis.take("s1", PostResults("post_final_transcript", failed=(("summarization", "LLM down"),)))
    analysis.fail("s1", "Gladia's session ended in error")
    assert analysis.complete("s1")
    assert analysis.json(["s1"]) == {
        "status": "failed",
        "errors": {"summarization": "LLM down", "chapterization": "Gladia's session ended in error"},
    }
    analysis.take("s1", PostResults("post_chapterization", chapters=({"headline": "Billing"},)))
    assert analysis.json(["s1"]) == {
        "status": "done",
        "chapters": [{"headline": "Billing"}],
        "errors": {"summarization": "LLM down"},
    }


def _msg(type_: str, **fields: object) -> str:
    return json.dumps({"type": type_, "session_id": "s1", "created_at": "2026-01-01T00:00:00Z", **fields})


def test_a_read_back_takes_finals_with_their_ids_from_the_messages() -> None:
    u = {"start": 0.1, "end": 1.0, "text": " hi", "language": "en", "confidence": 1, "channel": 0, "words": []}
    body = {
        "id": "s1",
        "status": "done",
        "result": {
            "transcription": {"utterances": [u, u]},
            "summarization": {"success": True, "is_empty": False, "exec_time": 1.0, "error": None, "results": "S"},
            "messages": [
                _msg("transcript", data={"id": "00_7", "is_final": True, "utterance": u}),
                _msg("transcript", data={"id": "00_8", "is_final": False, "utterance": u}),
                _msg("sentiment_analysis", error=None, data={"utterance_id": "00_7", "utterance": u, "results": []}),
                _msg("translation", error={"message": "boom"}, data=None),  # names no final: left out
                "not json",
                42,
            ],
        },
    }
    back = read_back(body)
    assert back.done and [i for i, _ in back.finals] == ["00_7"]
    assert [type(a) for a in back.addons] == [Sentiments]
    assert back.post is not None and back.post.summary == "S"
    assert read_back({"status": "processing", "result": None}).done is False
    no_messages = read_back({"status": "done", "result": {"transcription": {"utterances": [u, u]}}})
    assert [i for i, _ in no_messages.finals] == [None, None]
    assert read_back("garbage").done is False


def test_a_result_about_a_final_another_instance_delivered_is_passed_on() -> None:
    """Fleet mode: the call was carried on from another instance, which delivered the session's finals up
    to 2.0 s on channel 0: a late result about one of them comes through (on its own utterance's channel),
    one about a later final still waits for it."""
    links = AddonLinks(("sentiment_analysis",), ())
    links.seed("s1", {0: 2.0})
    (early,) = links.result("s1", Sentiments("00_1", (), utt(start=1.0, end=2.0)))
    assert early.channel == 0
    assert links.result("s1", Sentiments("00_2", (), utt(start=2.5, end=3.0))) == []
    assert links.result("s1", Sentiments("01_0", (), utt(start=0.5, end=1.0, channel=1))) == []
