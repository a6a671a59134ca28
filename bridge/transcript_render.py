"""How a transcript on record is shown: JSON, text lines or WebVTT captions, and the ``since`` of a listing.

Pure: a transcript dict (what :meth:`bridge.transcripts.TranscriptStore.get` returns, its shape in
:mod:`bridge.transcripts`) in, a string out; no event loop, no disk, no logger. :func:`turns` merges
consecutive utterances of one speaker, :func:`speaker_of` names who spoke, :func:`iso` writes unix
seconds as ISO 8601 UTC, :func:`parse_since` reads the ``since`` of ``GET /v1/calls?since=``;
:func:`parse_lang` reads a transcript's ``?lang=`` and :func:`in_language` shows each utterance in it.
Utterance ``start``/``end`` are seconds from the start of the call (:func:`call_seconds`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

MAX_SINCE_CHARS = 64
# a language (2-3 letters), optionally a region (2 letters or 3 digits: BCP 47's), ASCII only
_LANG = re.compile(r"[A-Za-z]{2,3}(?:-(?:[A-Za-z]{2}|[0-9]{3}))?", re.ASCII)


def iso(ts: float | None) -> str | None:
    """Unix seconds as ISO 8601 UTC with milliseconds (``2026-01-31T12:00:00.000Z``)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_since(text: str) -> float:
    """The ``since`` of ``GET /v1/calls?since=``: an ISO 8601 timestamp (no zone: UTC) or unix seconds.

    Raises:
        ValueError: neither; the message says what is accepted.
    """
    value = text.strip()
    problem = "since must be an ISO 8601 timestamp (e.g. 2026-01-31T12:00:00Z) or unix seconds"
    if not value or len(value) > MAX_SINCE_CHARS:
        raise ValueError(problem)
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(problem)
        return seconds
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(problem) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def speaker_of(utterance: Mapping[str, Any]) -> str:
    """The label a turn is shown under: the utterance's speaker, else its channel."""
    speaker = utterance.get("speaker")
    if isinstance(speaker, str) and speaker.strip():
        return " ".join(speaker.split())
    channel = utterance.get("channel")
    return f"channel {channel}" if channel is not None else "speaker"


@dataclass(frozen=True, slots=True)
class Turn:
    """Consecutive utterances of one speaker."""

    speaker: str
    start: float
    end: float
    text: str


def call_seconds(value: Any) -> float:
    """A time from the start of the call: the number given when finite and positive, else 0."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return 0.0
    return seconds if math.isfinite(seconds) and seconds > 0 else 0.0


def _spoken(utterances: Iterable[Mapping[str, Any]]) -> list[tuple[float, float, str, str]]:
    """(start, end, speaker, text) of each utterance with words in it, in start order (stable)."""
    out = []
    for u in utterances:
        text = " ".join(str(u.get("text") or "").split())  # one line, whatever came in
        if text:
            start = call_seconds(u.get("start"))
            out.append((start, max(start, call_seconds(u.get("end"))), speaker_of(u), text))
    out.sort(key=lambda item: item[0])
    return out


def turns(utterances: Iterable[Mapping[str, Any]]) -> list[Turn]:
    """The conversation as turns: utterances in start order, consecutive ones of a speaker merged."""
    merged: list[Turn] = []
    for start, end, speaker, text in _spoken(utterances):
        if merged and merged[-1].speaker == speaker:
            last = merged[-1]
            merged[-1] = Turn(speaker, last.start, max(last.end, end), f"{last.text} {text}")
        else:
            merged.append(Turn(speaker, start, end, text))
    return merged


def _ms(seconds: float) -> int:
    """Whole milliseconds, rounded down (so a time never moves later); ``seconds`` is finite and >= 0."""
    return int(seconds * 1000 + 1e-6)


def _clock(ms: int, decimals: int) -> str:
    """``HH:MM:SS`` and the first ``decimals`` (1 to 3) digits of the second."""
    whole, fraction = divmod(ms, 1000)
    hours, rest = divmod(whole, 3600)
    return f"{hours:02d}:{rest // 60:02d}:{rest % 60:02d}.{fraction // 10 ** (3 - decimals):0{decimals}d}"


def parse_lang(text: str) -> str:
    """The ``lang`` of ``GET /v1/calls/{id}/transcript?format=txt&lang=``: a language code of 2 or 3
    letters, optionally with a region (``fr``, ``pt-BR``, ``es-419``); returned lower-cased.

    Raises:
        ValueError: anything else; the message names ``lang`` and says what is accepted.
    """
    if _LANG.fullmatch(text) is None:
        raise ValueError(
            f"lang must be a language code like fr or pt-BR (2 or 3 letters, an optional region), got {text[:20]!r}"
        )
    return text.lower()


def translation_of(utterance: Mapping[str, Any], lang: str) -> str | None:
    """The utterance's translation into ``lang`` (a :func:`parse_lang` code), if it has one: the same code
    (any case), else, for a code with a region, the language alone (``fr-CA`` shows a ``fr`` translation)."""
    translations = utterance.get("translations")
    if not isinstance(translations, Mapping) or not translations:
        return None
    by_code = {str(code).lower(): text for code, text in translations.items() if isinstance(text, str)}
    found = by_code.get(lang)
    return found if found is not None else by_code.get(lang.partition("-")[0])


def in_language(transcript: Mapping[str, Any], lang: str) -> dict[str, Any]:
    """The transcript with each utterance's text in ``lang`` where it has that translation (an utterance
    without one keeps its own words): what the txt and vtt renderings show for ``?lang=``."""
    shown = []
    for u in transcript["utterances"]:
        text = translation_of(u, lang)
        shown.append(u if text is None else {**u, "text": text})
    return {**transcript, "utterances": shown}


def render_json(transcript: Mapping[str, Any]) -> str:
    """The transcript as one JSON document (UTF-8 text, not ASCII-escaped)."""
    return json.dumps(transcript, ensure_ascii=False, separators=(",", ":"))


def render_txt(transcript: Mapping[str, Any]) -> str:
    """One line per turn, ``[HH:MM:SS.d] speaker: text``, the time from the start of the call."""
    return "".join(f"[{_clock(_ms(t.start), 1)}] {t.speaker}: {t.text}\n" for t in turns(transcript["utterances"]))


def _vtt_escape(text: str) -> str:
    # The three characters WebVTT cue text cannot hold as themselves (and so no "-->" either).
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def render_vtt(transcript: Mapping[str, Any]) -> str:
    """WebVTT captions: one cue per utterance, in start order, with a ``<v speaker>`` voice span.

    Cue times are ``HH:MM:SS.mmm`` from the start of the call; a cue whose end is not after its start
    (an utterance without duration) lasts one millisecond, as WebVTT wants end > start.
    """
    out = ["WEBVTT", ""]
    for n, (start, end, speaker, text) in enumerate(_spoken(transcript["utterances"]), 1):
        begin = _ms(start)
        finish = max(_ms(end), begin + 1)
        out += [
            str(n),
            f"{_clock(begin, 3)} --> {_clock(finish, 3)}",
            f"<v {_vtt_escape(speaker)}>{_vtt_escape(text)}",
            "",
        ]
    return "\n".join(out)
