"""A transcribed utterance as Gladia's live v2 messages carry it (``UtteranceDTO``), read tolerantly (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Word:
    word: str
    start: float
    end: float
    confidence: float


@dataclass(frozen=True, slots=True)
class Utterance:
    start: float
    end: float
    text: str
    language: str | None
    confidence: float | None
    channel: int
    words: tuple[Word, ...]


def _num(value: Any, default: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return default
    return float(value)


def parse_utterance(data: Mapping[str, Any]) -> Utterance:
    words = data.get("words")
    parsed: list[Word] = []
    if isinstance(words, list):
        for w in words:
            if isinstance(w, Mapping):
                parsed.append(
                    Word(
                        str(w.get("word", "")), _num(w.get("start")), _num(w.get("end")), _num(w.get("confidence"), 0.0)
                    )
                )
    language = data.get("language")
    confidence = data.get("confidence")
    channel = data.get("channel", 0)
    return Utterance(
        start=_num(data.get("start")),
        end=_num(data.get("end")),
        text=str(data.get("text", "")),
        language=language if isinstance(language, str) else None,
        confidence=_num(confidence) if isinstance(confidence, (int, float)) else None,
        channel=channel if isinstance(channel, int) and not isinstance(channel, bool) else 0,
        words=tuple(parsed),
    )
