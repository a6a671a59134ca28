"""What FakeGladia says for the add-ons a session's POST body asks for (pure: messages as dicts).

The results are made up but predictable, so a test can compute what the bot must get:

* per final, after it: one ``translation`` per target language (text ``f"[{lang}] "`` + the final's
  text, stripped; same times and channel; ``original_language`` ``"en"``), then
  ``named_entity_recognition`` (one entity: type ``"segment"``, text the final's first two words, the
  utterance's start/end), then ``sentiment_analysis`` (one result: ``"neutral"``/``"neutral"``, the
  final's text, the utterance's start/end/channel);
* after the recording: ``post_transcript``, ``post_final_transcript`` (summary
  ``f"Summary of {n} segments"``, n the finals sent; one chapter when chapterization is asked), then
  ``post_summarization``;
* ``GET /v2/live/{id}``'s ``result``: the same, as add-on blocks, plus ``messages``.

An add-on named in ``errors`` fails instead: its messages carry ``error: {"message": "injected <name>
failure"}`` and ``data: null`` (one per target language for translation), its block is unsuccessful.
Every message comes from :mod:`tests.support.gladia_addons`, so the SDK has checked it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence, Set
from typing import Any

from bridge.stt.addons import requested_addons, target_languages
from tests.support import gladia_addons as wire

ORIGINAL_LANGUAGE = "en"


def error_text(addon: str) -> str:
    """The error message of an injected failure of ``addon``."""
    return f"injected {addon} failure"


def summary_text(finals: int) -> str:
    """The summary the fake gives a session that sent ``finals`` finals."""
    return f"Summary of {finals} segments"


def translated_text(language: str, text: str) -> str:
    """What the fake's translation of a final with ``text`` into ``language`` says."""
    return f"[{language}] {text.strip()}"


def wants(body: Mapping[str, Any], flag: str) -> bool:
    """Whether the session's ``messages_config`` lets ``flag``'s messages out (Gladia's default: yes)."""
    config = body.get("messages_config")
    return not (isinstance(config, Mapping) and config.get(flag) is False)


def realtime_messages(
    body: Mapping[str, Any], session_id: str, final: Mapping[str, Any], errors: Set[str]
) -> list[dict[str, Any]]:
    """The realtime add-on messages that follow the final whose ``data`` is ``final``, in order."""
    addons = requested_addons(body)
    if not wants(body, "receive_realtime_processing_events"):
        return []
    uid, utt = str(final["id"]), final["utterance"]
    text = str(utt["text"]).strip()
    out = []
    if "translation" in addons:
        for lang in target_languages(body):
            if "translation" in errors:
                out.append(wire.addon_failed("translation", session_id, error_text("translation")))
            else:
                out.append(wire.translation(session_id, uid, utt, ORIGINAL_LANGUAGE, lang, translated_text(lang, text)))
    if "named_entity_recognition" in addons:
        if "named_entity_recognition" in errors:
            out.append(
                wire.addon_failed("named_entity_recognition", session_id, error_text("named_entity_recognition"))
            )
        else:
            out.append(wire.entities(session_id, uid, utt, [_entity(utt)]))
    if "sentiment_analysis" in addons:
        if "sentiment_analysis" in errors:
            out.append(wire.addon_failed("sentiment_analysis", session_id, error_text("sentiment_analysis")))
        else:
            out.append(wire.sentiment(session_id, uid, utt, [_sentiment(utt)]))
    return out


def _entity(utt: Mapping[str, Any]) -> dict[str, Any]:
    first_two = " ".join(str(utt["text"]).split()[:2])
    return {"entity_type": "segment", "text": first_two, "start": utt["start"], "end": utt["end"]}


def _sentiment(utt: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "sentiment": "neutral",
        "emotion": "neutral",
        "text": str(utt["text"]).strip(),
        "start": utt["start"],
        "end": utt["end"],
        "channel": utt["channel"],
    }


def chapters(finals: int, duration: float) -> list[dict[str, Any]]:
    """The fake's chapters: one, over the whole session."""
    return [
        {
            "headline": f"{finals} segments",
            "gist": "segments",
            "summary": summary_text(finals),
            "keywords": ["segment"],
            "start": 0.0,
            "end": duration,
        }
    ]


def _summary(body: Mapping[str, Any], finals: int, errors: Set[str]) -> tuple[str | None, str | None]:
    if "summarization" not in requested_addons(body):
        return None, None
    if "summarization" in errors:
        return None, error_text("summarization")
    return summary_text(finals), None


def post_messages(
    body: Mapping[str, Any],
    session_id: str,
    utterances: Sequence[Mapping[str, Any]],
    finals: int,
    duration: float,
    errors: Set[str],
) -> list[dict[str, Any]]:
    """The post-processing messages after the recording: ``post_transcript``, ``post_final_transcript``,
    then ``post_summarization`` when summarization was asked."""
    addons = requested_addons(body)
    summary, summary_error = _summary(body, finals, errors)
    chaps = chapters(finals, duration) if "chapterization" in addons else None
    out = [
        wire.post_transcript(session_id, utterances),
        wire.post_final_transcript(session_id, utterances, summary, summary_error, chaps, duration=duration),
    ]
    if summary is not None:
        out.append(wire.post_summarization(session_id, summary))
    elif summary_error is not None:
        out.append(wire.post_summarization_failed(session_id, summary_error))
    return out


def session_result(
    body: Mapping[str, Any],
    utterances: Sequence[Mapping[str, Any]],
    finals: int,
    duration: float,
    messages: Sequence[str],
    errors: Set[str],
) -> dict[str, Any]:
    """``GET /v2/live/{id}``'s ``result`` once the session is done: metadata, transcription, a block per
    add-on asked for, and ``messages`` (every realtime message, as JSON strings)."""
    addons = requested_addons(body)
    result: dict[str, Any] = {
        "metadata": wire.metadata(duration),
        "transcription": wire.transcription(utterances),
        "messages": list(messages),
    }

    def block(addon: str, results: Any, failed_results: Any = None) -> dict[str, Any]:
        if addon in errors:
            return wire.addon_block(failed_results, error_text(addon))
        return wire.addon_block(results)

    if "translation" in addons:
        per_language = [
            {
                "full_transcript": " ".join(translated_text(lang, str(u["text"])) for u in utterances),
                "languages": [lang],
                "utterances": [
                    wire.translated_utterance(u, lang, translated_text(lang, str(u["text"]))) for u in utterances
                ],
                "error": None,
            }
            for lang in target_languages(body)
        ]
        result["translation"] = block("translation", per_language)
    if "named_entity_recognition" in addons:
        result["named_entity_recognition"] = block("named_entity_recognition", [_entity(u) for u in utterances])
    if "sentiment_analysis" in addons:  # the SDK types this block's results as a string
        result["sentiment_analysis"] = block("sentiment_analysis", json.dumps([_sentiment(u) for u in utterances]), "")
    summary, summary_error = _summary(body, finals, errors)
    if summary is not None or summary_error is not None:
        result["summarization"] = wire.addon_block(summary, summary_error)
    if "chapterization" in addons:
        result["chapterization"] = wire.addon_block(chapters(finals, duration))
    return result
