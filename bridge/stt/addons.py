"""Gladia's add-ons, sans-I/O: which a session body switches on, and their WebSocket messages read into
typed events (pure).

Realtime add-ons (``realtime_processing``) send one message per final utterance, linked to it by
``data.utterance_id`` (the final's ``data.id``): ``translation`` (one per target language),
``named_entity_recognition`` and ``sentiment_analysis``. Post-processing add-ons
(``post_processing.summarization``, ``chapterization``) come after the recording ends, in
``post_summarization`` / ``post_chapterization`` and inside ``post_final_transcript``; they are also in
``GET /v2/live/{id}``'s ``result`` once the session is ``done``.

Shapes follow the official Python SDK's types (``gladiaio_sdk.v2.live.generated_types``:
``LiveV2TranslationMessage``, ``LiveV2NamedEntityRecognitionMessage``, ``LiveV2SentimentAnalysisMessage``,
``LiveV2PostSummarizationMessage``, ``LiveV2PostFinalTranscriptMessage``), with the tolerances of
:mod:`bridge.stt.protocol`: a message with ``error`` (and ``data`` null or missing) is an
:class:`AddonFailed`, never a crash; a field of the wrong type is left out, not trusted. Everything
read is bounded (texts, list lengths), since it goes on to the bot and to disk.

The times of entities and sentiment results: Gladia's documents do not say whether ``start``/``end``
are seconds of the session or character offsets in the utterance (UNVERIFIED). They are kept as
given here; :func:`in_session_time` tells the call which reading fits an utterance.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bridge.stt.utterance import Utterance, Word, parse_utterance

# Which add-ons a body switches on is the profile's to say (the settings check per_call_addons against it).
from bridge.stt_profile import ADDON_SWITCHES as ADDON_SWITCHES
from bridge.stt_profile import requested_addons as requested_addons

REALTIME_ADDONS = frozenset({"translation", "named_entity_recognition", "sentiment_analysis"})
POST_ADDONS = frozenset({"summarization", "chapterization"})
# the WebSocket message types of the add-ons (a realtime add-on's message type is its name)
REALTIME_KINDS = REALTIME_ADDONS
POST_KINDS = frozenset({"post_final_transcript", "post_summarization", "post_chapterization", "post_transcript"})

MAX_TEXT = 10_000  # characters of one translated utterance, entity or sentiment text
MAX_ITEMS = 200  # entities or sentiment results of one utterance; chapters of a call
MAX_SUMMARY = 100_000  # characters of a summary
MAX_ERROR = 500


def target_languages(body: Mapping[str, Any]) -> tuple[str, ...]:
    """The translation's target languages (``realtime_processing.translation_config.target_languages``)."""
    rt = body.get("realtime_processing")
    config = rt.get("translation_config") if isinstance(rt, Mapping) else None
    langs = config.get("target_languages") if isinstance(config, Mapping) else None
    return tuple(v for v in langs if isinstance(v, str)) if isinstance(langs, list) else ()


@dataclass(frozen=True, slots=True)
class Translation:
    """One final translated into one language: ``utterance`` is the translated utterance (session times)."""

    utterance_id: str
    language: str
    original_language: str | None
    utterance: Utterance


@dataclass(frozen=True, slots=True)
class Entity:
    type: str
    text: str
    start: float
    end: float


@dataclass(frozen=True, slots=True)
class Entities:
    utterance_id: str
    entities: tuple[Entity, ...]
    utterance: Utterance | None  # the utterance Gladia analysed (session times), when it says


@dataclass(frozen=True, slots=True)
class Sentiment:
    sentiment: str
    emotion: str
    text: str
    start: float
    end: float
    channel: int | None


@dataclass(frozen=True, slots=True)
class Sentiments:
    utterance_id: str
    results: tuple[Sentiment, ...]
    utterance: Utterance | None


@dataclass(frozen=True, slots=True)
class AddonFailed:
    """An add-on message with ``error``: ``addon`` is its name (``translation``, ``summarization`` ...),
    ``utterance_id`` the final it was about when the message says (``data`` is usually null then)."""

    addon: str
    utterance_id: str | None
    error: str


@dataclass(frozen=True, slots=True)
class PostResults:
    """What a post-processing message holds for the call's analysis: the summary and the chapters when
    it carries them (None: not in this message), and the add-ons it says failed (name -> error).
    ``post_transcript`` (the whole transcript again) holds nothing the bridge reads."""

    kind: str
    summary: str | None = None
    chapters: tuple[dict[str, Any], ...] | None = None
    failed: tuple[tuple[str, str], ...] = ()


AddonEvent = Translation | Entities | Sentiments | AddonFailed | PostResults


def _str(value: Any, limit: int = MAX_TEXT) -> str:
    return value[:limit] if isinstance(value, str) else ""


def _num(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def _error_text(error: Any) -> str:
    if isinstance(error, Mapping):
        for key in ("message", "exception"):
            if isinstance(error.get(key), str) and error[key]:
                return str(error[key])[:MAX_ERROR]
        return "add-on failed"
    return str(error)[:MAX_ERROR] if error else "add-on failed"


def _utterance(value: Any) -> Utterance | None:
    if not isinstance(value, Mapping):
        return None
    utt = parse_utterance(value)
    return Utterance(
        utt.start,
        utt.end,
        utt.text[:MAX_TEXT],
        utt.language,
        utt.confidence,
        utt.channel,
        tuple(Word(w.word[:200], w.start, w.end, w.confidence) for w in utt.words[:MAX_ITEMS]),
    )


def parse_addon(kind: str, data: Any, error: Any) -> AddonEvent | None:
    """A realtime add-on or post-processing message (``kind`` in :data:`REALTIME_KINDS` or
    :data:`POST_KINDS`) as an event; None for a message without anything usable (e.g. a translation
    with no ``utterance_id``), which the caller counts as malformed."""
    failed = error is not None and error is not False
    if kind in REALTIME_KINDS:
        uid = data.get("utterance_id") if isinstance(data, Mapping) else None
        uid = str(uid)[:64] if isinstance(uid, (str, int)) and not isinstance(uid, bool) else None
        if failed or not isinstance(data, Mapping):
            return AddonFailed(kind, uid, _error_text(error) if failed else "add-on message without data")
        if uid is None:
            return None
        if kind == "translation":
            translated = _utterance(data.get("translated_utterance"))
            language = data.get("target_language")
            if translated is None or not isinstance(language, str):
                return None
            original = data.get("original_language")
            return Translation(uid, language[:16], original[:16] if isinstance(original, str) else None, translated)
        results = data.get("results")
        items = results[:MAX_ITEMS] if isinstance(results, list) else []
        analysed = _utterance(data.get("utterance"))
        if kind == "named_entity_recognition":
            entities = tuple(
                Entity(_str(r.get("entity_type"), 64), _str(r.get("text")), _num(r.get("start")), _num(r.get("end")))
                for r in items
                if isinstance(r, Mapping)
            )
            return Entities(uid, entities, analysed)
        sentiments = []
        for r in items:
            if not isinstance(r, Mapping):
                continue
            channel = r.get("channel")
            sentiments.append(
                Sentiment(
                    _str(r.get("sentiment"), 64),
                    _str(r.get("emotion"), 64),
                    _str(r.get("text")),
                    _num(r.get("start")),
                    _num(r.get("end")),
                    int(channel) if isinstance(channel, (int, float)) and not isinstance(channel, bool) else None,
                )
            )
        return Sentiments(uid, tuple(sentiments), analysed)
    # post-processing
    if kind == "post_summarization":
        if failed or not isinstance(data, Mapping):
            return PostResults(kind, failed=(("summarization", _error_text(error) if failed else "no data"),))
        if not isinstance(data.get("results"), str):
            return PostResults(kind, failed=(("summarization", "no summary text in the message"),))
        return PostResults(kind, summary=_str(data.get("results"), MAX_SUMMARY))
    if kind == "post_chapterization":
        if failed or not isinstance(data, Mapping):
            return PostResults(kind, failed=(("chapterization", _error_text(error) if failed else "no data"),))
        return PostResults(kind, chapters=_chapters(data.get("results")))
    if kind == "post_final_transcript":
        return post_results(kind, data if isinstance(data, Mapping) else {})
    return PostResults(kind)  # post_transcript: the whole transcript again, not read


def post_results(kind: str, result: Mapping[str, Any]) -> PostResults:
    """The analysis in a ``post_final_transcript``'s ``data`` or a session's ``result`` (``GET
    /v2/live/{id}``): each add-on block is ``{success, is_empty, exec_time, error, results}``."""
    summary: str | None = None
    chapters: tuple[dict[str, Any], ...] | None = None
    failed: list[tuple[str, str]] = []
    block = result.get("summarization")
    if isinstance(block, Mapping):
        if block.get("error") or block.get("success") is False:
            failed.append(("summarization", _error_text(block.get("error"))))
        else:
            summary = _str(block.get("results"), MAX_SUMMARY)
    block = result.get("chapterization")
    if isinstance(block, Mapping):
        if block.get("error") or block.get("success") is False:
            failed.append(("chapterization", _error_text(block.get("error"))))
        else:
            chapters = _chapters(block.get("results"))
    return PostResults(kind, summary, chapters, tuple(failed))


_CHAPTER_TEXT = ("headline", "gist", "summary", "abstractive_summary")
_CHAPTER_TIMES = ("start", "end")


def _chapters(value: Any) -> tuple[dict[str, Any], ...]:
    """Chapters, each with the fields the bridge passes on, of their type (a field of another type is left
    out): texts bounded, ``start``/``end`` numbers, ``keywords`` at most 20 strings."""
    out = []
    for item in value[:MAX_ITEMS] if isinstance(value, list) else []:
        if not isinstance(item, Mapping):
            continue
        chapter: dict[str, Any] = {k: item[k][:MAX_TEXT] for k in _CHAPTER_TEXT if isinstance(item.get(k), str)}
        for key in _CHAPTER_TIMES:
            v = item.get(key)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                chapter[key] = v
        keywords = item.get("keywords")
        if isinstance(keywords, list):
            chapter["keywords"] = [k[:100] for k in keywords[:20] if isinstance(k, str)]
        out.append(chapter)
    return tuple(out)


def in_session_time(start: float, end: float, utterance: Utterance | None) -> bool:
    """Whether an entity's or sentiment's ``start``/``end`` read as seconds of the session: they fall
    within the utterance (0.5 s of slack). Otherwise they are offsets in its text, kept as given."""
    if utterance is None:
        return False
    return utterance.start - 0.5 <= start <= end <= utterance.end + 0.5
