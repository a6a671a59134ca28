"""Gladia's add-on messages and session results as wire dicts, built from the official SDK's types.

Every builder constructs the ``gladiaio_sdk`` dataclasses (``gladiaio_sdk.v2.live.generated_types``)
and serialises them with ``to_dict()``, then puts back the ``"error": None`` / ``"data": None`` that
``to_dict()`` drops but the wire carries. Before returning, :func:`checked` reads the dict back with the
SDK (``create_live_v2_web_socket_message_from_dict``, or ``LiveV2Response.from_dict`` for a ``GET
/v2/live/{id}`` body) and asserts that nothing was lost or coerced on the way, so a fake built on these
can never send what the SDK would refuse or read differently.

Shapes: ``docs``: /work/shared/reference/gladia-live-v2.md §2.3 (server messages) and §4.1 (``GET``).
Chapterization is not in the SDK's types (deprecated there); its block rides in the SDK's catch-all of
unknown fields, which ``to_dict()`` gives back unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

from gladiaio_sdk.v2.live.generated_types import (
    LiveV2AddonError,
    LiveV2EndRecordingMessage,
    LiveV2EndRecordingMessageData,
    LiveV2Error,
    LiveV2NamedEntityRecognitionData,
    LiveV2NamedEntityRecognitionMessage,
    LiveV2PostFinalTranscriptMessage,
    LiveV2PostSummarizationMessage,
    LiveV2PostSummarizationMessageData,
    LiveV2PostTranscriptMessage,
    LiveV2Response,
    LiveV2SentimentAnalysisData,
    LiveV2SentimentAnalysisMessage,
    LiveV2Summarization,
    LiveV2Transcription,
    LiveV2TranscriptionMetadata,
    LiveV2TranscriptionResult,
    LiveV2TranslationData,
    LiveV2TranslationMessage,
    create_live_v2_web_socket_message_from_dict,
)

CREATED_AT = "2026-01-01T00:00:00.000Z"

# the add-on messages that carry ``error`` and a nullable ``data``, by type
_FAILABLE: dict[str, type[Any]] = {
    "translation": LiveV2TranslationMessage,
    "named_entity_recognition": LiveV2NamedEntityRecognitionMessage,
    "sentiment_analysis": LiveV2SentimentAnalysisMessage,
    "post_summarization": LiveV2PostSummarizationMessage,
}


def _plain(value: Any) -> Any:
    """``value`` without None-valued keys at any depth (``to_dict()`` drops them unevenly: not in lists)."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _shape(value: Any) -> Hashable:
    """The keys and value types of ``value``, at any depth (a list: the set of its items' shapes)."""
    if isinstance(value, Mapping):
        return ("{", tuple(sorted((str(k), _shape(v)) for k, v in value.items())))
    if isinstance(value, list):
        return ("[", frozenset(_shape(v) for v in value))
    return type(value).__name__


def _reduced(value: Any) -> Any:
    """``value`` with each list cut to one item per distinct shape: what the SDK makes of it says what it
    makes of the whole (its reading depends on keys and value types only, never on the values)."""
    if isinstance(value, Mapping):
        return {k: _reduced(v) for k, v in value.items()}
    if isinstance(value, list):
        firsts: dict[Hashable, Any] = {}
        for item in value:
            firsts.setdefault(_shape(item), item)
        return [_reduced(v) for v in firsts.values()]
    return value


# (reader, type, shape) the SDK has read back unchanged: one check per shape is as good as one per
# message, and a fake sending messages per final or long results does not stall its event loop on each
_CHECKED: set[tuple[str, str, Hashable]] = set()


def _reads_back(name: str, read: Callable[[dict[str, Any]], Any], value: dict[str, Any]) -> Any:
    """Assert that ``read`` (an SDK ``from_dict``) takes ``value`` and gives it back equal: no field
    missing, none coerced to another type. Returns what it read (None when the shape was checked before)."""
    key = (name, str(value.get("type")), _shape(value))  # the SDK picks a message's class by its type
    if key in _CHECKED:
        return None
    sample = _reduced(value)
    parsed = read(sample)
    assert _plain(parsed.to_dict()) == _plain(sample), (name, sample, parsed)
    _CHECKED.add(key)
    return parsed


def checked(message: dict[str, Any]) -> dict[str, Any]:
    """``message`` itself, after asserting that the SDK reads it as its own type (not an unknown message)
    and gives it back equal. Use on any WebSocket message a fake sends."""
    parsed = _reads_back("message", create_live_v2_web_socket_message_from_dict, message)
    assert parsed is None or type(parsed).__name__ != "LiveV2UnknownWebSocketMessage", message.get("type")
    return message


def checked_response(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` (a ``GET /v2/live/{id}`` answer) after asserting ``LiveV2Response.from_dict`` reads it
    whole and gives it back equal."""
    _reads_back("response", LiveV2Response.from_dict, body)
    return body


def _wire(message: Any, **nulls: None) -> dict[str, Any]:
    return checked({**_plain(message.to_dict()), **nulls})


def _words(text: str, start: float, end: float) -> list[dict[str, Any]]:
    return [{"word": " " + w, "start": start, "end": end, "confidence": 0.9} for w in text.split()]


def translated_utterance(utterance: Mapping[str, Any], language: str, text: str) -> dict[str, Any]:
    """``utterance`` (an ``UtteranceDTO``) said in ``language`` as ``text``: same times and channel."""
    return {
        **utterance,
        "text": text,
        "language": language,
        "words": _words(text, utterance["start"], utterance["end"]),
    }


def translation(
    session_id: str,
    utterance_id: str,
    utterance: Mapping[str, Any],
    original_language: str,
    target_language: str,
    translated_text: str,
) -> dict[str, Any]:
    """A ``translation`` message: the final ``utterance_id`` (``utterance``) in ``target_language``."""
    data = LiveV2TranslationData.from_dict(
        {
            "utterance_id": utterance_id,
            "utterance": dict(utterance),
            "original_language": original_language,
            "target_language": target_language,
            "translated_utterance": translated_utterance(utterance, target_language, translated_text),
        }
    )
    msg = LiveV2TranslationMessage(session_id=session_id, created_at=CREATED_AT, type="translation", data=data)
    return _wire(msg, error=None)


def entities(
    session_id: str, utterance_id: str, utterance: Mapping[str, Any], results: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """A ``named_entity_recognition`` message; ``results``: ``{entity_type, text, start, end}`` each."""
    data = LiveV2NamedEntityRecognitionData.from_dict(
        {"utterance_id": utterance_id, "utterance": dict(utterance), "results": [dict(r) for r in results]}
    )
    msg = LiveV2NamedEntityRecognitionMessage(
        session_id=session_id, created_at=CREATED_AT, type="named_entity_recognition", data=data
    )
    return _wire(msg, error=None)


def sentiment(
    session_id: str, utterance_id: str, utterance: Mapping[str, Any], results: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """A ``sentiment_analysis`` message; ``results``: ``{sentiment, emotion, text, start, end, channel}``."""
    data = LiveV2SentimentAnalysisData.from_dict(
        {"utterance_id": utterance_id, "utterance": dict(utterance), "results": [dict(r) for r in results]}
    )
    msg = LiveV2SentimentAnalysisMessage(
        session_id=session_id, created_at=CREATED_AT, type="sentiment_analysis", data=data
    )
    return _wire(msg, error=None)


def addon_failed(kind: str, session_id: str, message: str) -> dict[str, Any]:
    """A failed add-on message of type ``kind`` (``translation``, ``named_entity_recognition``,
    ``sentiment_analysis`` or ``post_summarization``): ``error: {message}``, ``data: null``."""
    cls = _FAILABLE[kind]
    msg = cls(session_id=session_id, created_at=CREATED_AT, type=kind, error=LiveV2Error(message=message))
    return _wire(msg, data=None)


def translation_failed(session_id: str, message: str) -> dict[str, Any]:
    """A ``translation`` message with ``error`` and ``data: null``."""
    return addon_failed("translation", session_id, message)


def metadata(duration: float, channels: int = 1) -> dict[str, Any]:
    """A transcription's ``metadata`` (all fields required by the spec)."""
    return LiveV2TranscriptionMetadata(
        audio_duration=duration,
        number_of_distinct_channels=channels,
        billing_time=duration * channels,
        transcription_time=0.1,
    ).to_dict()


def transcription(utterances: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A ``TranscriptionDTO`` of ``utterances`` (``post_transcript.data``, ``result.transcription``)."""
    languages = sorted({str(u["language"]) for u in utterances}) or ["en"]
    full = " ".join(str(u["text"]).strip() for u in utterances)
    dto = {"full_transcript": full, "languages": languages, "utterances": [_plain(u) for u in utterances]}
    _reads_back("transcription", LiveV2Transcription.from_dict, dto)  # long: checked, not rebuilt
    return dto


def addon_error(message: str) -> dict[str, Any]:
    """The ``error`` of a failed add-on block: ``{status_code, exception, message}``."""
    return LiveV2AddonError(status_code=500, exception="InjectedFailure", message=message).to_dict()


def addon_block(results: Any, error: str | None = None) -> dict[str, Any]:
    """An add-on block of a session's result: ``{success, is_empty, exec_time, error, results}``; with
    ``error``, unsuccessful with the error and ``results`` as given (null where the type allows it)."""
    return {
        "success": error is None,
        "is_empty": error is None and not results,
        "exec_time": 0.2,
        "error": None if error is None else addon_error(error),
        "results": results,
    }


def post_transcript(session_id: str, utterances: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A ``post_transcript`` message: the whole transcript again."""
    dto = transcription(utterances)
    msg = LiveV2PostTranscriptMessage(
        session_id=session_id,
        created_at=CREATED_AT,
        type="post_transcript",
        data=LiveV2Transcription.from_dict(_reduced(dto)),  # a long call's transcript: built once, below
    )
    return checked({**_plain(msg.to_dict()), "data": dto})


def post_final_transcript(
    session_id: str,
    utterances: Sequence[Mapping[str, Any]],
    summary: str | None,
    summary_error: str | None,
    chapters: Sequence[Mapping[str, Any]] | None,
    *,
    duration: float | None = None,
) -> dict[str, Any]:
    """A ``post_final_transcript`` message: the transcript with ``metadata`` and, when given, the
    ``summarization`` block (``summary``, or failed with ``summary_error``) and a ``chapterization``
    block of ``chapters``. ``duration`` defaults to the last utterance's end."""
    if duration is None:
        duration = max((float(u["end"]) for u in utterances), default=0.0)
    summarization = None
    if summary is not None or summary_error is not None:
        summarization = LiveV2Summarization.from_dict(addon_block(summary, summary_error))
    dto = transcription(utterances)
    data = LiveV2TranscriptionResult(
        metadata=LiveV2TranscriptionMetadata.from_dict(metadata(duration)),
        transcription=LiveV2Transcription.from_dict(_reduced(dto)),  # a long call's transcript: set below
        summarization=summarization,
    )
    msg = LiveV2PostFinalTranscriptMessage(
        session_id=session_id, created_at=CREATED_AT, type="post_final_transcript", data=data
    )
    wire: dict[str, Any] = _plain(msg.to_dict())
    wire["data"]["transcription"] = dto
    if summarization is not None:
        wire["data"]["summarization"] = addon_block(summary, summary_error)  # with its null error / results
    if chapters is not None:  # not in the SDK's types: carried as an unknown field
        wire["data"]["chapterization"] = addon_block([dict(c) for c in chapters])
    return checked(wire)


def post_summarization(session_id: str, summary: str) -> dict[str, Any]:
    """A ``post_summarization`` message carrying ``summary``."""
    msg = LiveV2PostSummarizationMessage(
        session_id=session_id,
        created_at=CREATED_AT,
        type="post_summarization",
        data=LiveV2PostSummarizationMessageData(results=summary),
    )
    return _wire(msg, error=None)


def post_summarization_failed(session_id: str, message: str) -> dict[str, Any]:
    """A ``post_summarization`` message with ``error`` and ``data: null``."""
    return addon_failed("post_summarization", session_id, message)


def end_recording(session_id: str, duration: float) -> dict[str, Any]:
    """An ``end_recording`` lifecycle message (the spec's shape: ``data: {recording_duration}``)."""
    msg = LiveV2EndRecordingMessage(
        session_id=session_id,
        created_at=CREATED_AT,
        type="end_recording",
        data=LiveV2EndRecordingMessageData(recording_duration=duration),
    )
    return _wire(msg)


def live_response(
    session_id: str, status: str, custom_metadata: Mapping[str, Any] | None, result: Mapping[str, Any] | None
) -> dict[str, Any]:
    """A ``GET /v2/live/{id}`` body (``StreamingResponse``) with ``result`` (None until ``done``),
    checked whole against ``LiveV2Response``."""
    body: dict[str, Any] = {
        "id": session_id,
        "request_id": "G-fake",
        "version": 2,
        "status": status,
        "created_at": CREATED_AT,
        "completed_at": CREATED_AT if status == "done" else None,
        "kind": "live",
        "custom_metadata": dict(custom_metadata) if custom_metadata is not None else None,
        "error_code": None,
        "result": dict(result) if result is not None else None,
    }
    return checked_response(body)
