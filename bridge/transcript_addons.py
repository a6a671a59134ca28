"""A call's add-ons on record: what the transcript store keeps of each (a final's translations, named
entities, sentiment; the post-call analysis) and how they join the transcript's utterances.

Pure: bot event payloads in, JSON text out (:func:`addon_row`, :func:`analysis_body`); rows read back in,
the transcript's utterances completed (:func:`attach`). No event loop, no disk, no logger.

In the transcript an utterance gains, when it has them, ``translations`` (``{language: text}``, one per
target language), ``entities`` (``[{type, text, start, end}]``) and ``sentiment`` (``[{sentiment,
emotion, text, start, end}]``), as the bot's ``utterance.translation`` / ``utterance.entities`` /
``utterance.sentiment`` events carried them. The same add-on again for an utterance (a language
translated twice, a second entities message) replaces the first.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

# bot event type -> (kind in the store, the key an utterance shows it under)
ADDON_TYPES: dict[str, tuple[str, str]] = {
    "utterance.translation": ("translation", "translations"),
    "utterance.entities": ("entities", "entities"),
    "utterance.sentiment": ("sentiment", "sentiment"),
}
_SHOWN_AS = dict(ADDON_TYPES.values())


def _dumps(value: Any) -> str:
    return orjson.dumps(value, default=str).decode()


def addon_row(type_: str, item: Mapping[str, Any]) -> tuple[str, str, str]:
    """What the store keeps of an add-on event (``type_`` one of :data:`ADDON_TYPES`, ``item`` its payload
    without ``call``): ``(utterance_id, kind, body)``, ``body`` the JSON shown with the utterance.

    Raises:
        ValueError, TypeError: not an add-on event (unknown type, no utterance id, a field of the
            wrong type, not JSON); the store counts it dropped.
    """
    if type_ not in ADDON_TYPES:
        raise ValueError(f"not an add-on event type: {str(type_)[:60]!r}")
    kind = ADDON_TYPES[type_][0]
    uid = item.get("utterance_id")
    if not isinstance(uid, str) or not uid:
        raise ValueError(f"{type_} without an utterance_id")
    body: Any
    if kind == "translation":
        language, text = item.get("language"), item.get("text")
        if not isinstance(language, str) or not language or not isinstance(text, str):
            raise ValueError(f"{type_} without a language and a text")
        body = {"language": language, "text": text}
    else:
        body = item.get("entities" if kind == "entities" else "results")
        if not isinstance(body, list):
            raise TypeError(f"{type_} without a list of {'entities' if kind == 'entities' else 'results'}")
    return uid, kind, _dumps(body)


def analysis_body(analysis: Mapping[str, Any]) -> str:
    """What the store keeps of a call's post-call analysis (``{status, summary?, chapters?, errors?}``).

    Raises:
        ValueError, TypeError: no ``status`` string, or not JSON.
    """
    if not isinstance(analysis.get("status"), str):
        raise ValueError("an analysis without a status")
    return _dumps(dict(analysis))


def attach(utterances: Mapping[int, dict[str, Any]], rows: Iterable[tuple[int | None, str, str]]) -> None:
    """Give each utterance its add-ons: ``utterances`` by their row's ``seq``; ``rows`` the call's add-ons
    as ``(utterance_seq, kind, body)`` in the order they were recorded. A row whose utterance is not
    among them (replaced since, or not read) is left out."""
    for seq, kind, body in rows:
        utterance = utterances.get(seq) if seq is not None else None
        key = _SHOWN_AS.get(kind)
        if utterance is None or key is None:
            continue
        value = json.loads(body)
        if key == "translations":
            utterance.setdefault(key, {})[value["language"]] = value["text"]
        else:
            utterance[key] = value
