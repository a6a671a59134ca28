"""What the two call-record stores (:mod:`bridge.transcripts`, SQLite; :mod:`bridge.transcripts_pg`,
PostgreSQL) share about their reads: a ``calls`` row as the API's call fields, and a call's rows (its
utterances, their add-ons, its analysis) as the transcript ``get`` answers. Pure: rows in, dicts out."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from bridge.transcript_addons import attach
from bridge.transcript_render import iso

MAX_UTTERANCES_READ = 50_000  # a transcript longer than this is served cut, with "truncated": true
MAX_ADDONS_READ = 8 * MAX_UTTERANCES_READ  # add-on rows read with it (translations: one per language)


def call_fields(row: Sequence[Any]) -> dict[str, Any]:
    """A row of ``SELECT CALL_COLUMNS`` (:mod:`bridge.transcript_schema`) as the API shows a call."""
    call_id, provider, call_sid, stream_sid, caller, called, _, started_at, ended_at, end_reason = row[:10]
    return {
        "id": call_id,
        "provider": provider,
        "call_sid": call_sid,
        "stream_sid": stream_sid,
        "from": caller,
        "to": called,
        "started_at": iso(started_at),
        "ended_at": iso(ended_at),
        "end_reason": end_reason,
        "active": ended_at is None,
    }


def transcript_of(
    row: Sequence[Any], bodies: Sequence[Sequence[Any]], addons: Sequence[Sequence[Any]], analysis: Any
) -> dict[str, Any]:
    """A call's transcript from its row, its utterances ``(seq, body)`` in start order (at most one more
    than :data:`MAX_UTTERANCES_READ`: the extra says it was cut), its add-ons ``(utterance_seq, kind, body)``
    (likewise) and its analysis row (or None)."""
    by_seq = {seq: json.loads(body) for seq, body in bodies[:MAX_UTTERANCES_READ]}  # in start order
    attach(by_seq, [tuple(a) for a in addons[:MAX_ADDONS_READ]])
    transcript = call_fields(row)
    transcript["parameters"] = json.loads(row[6])
    transcript["utterances"] = list(by_seq.values())
    if analysis is not None:
        transcript["analysis"] = json.loads(analysis[0])
    if len(bodies) > MAX_UTTERANCES_READ or len(addons) > MAX_ADDONS_READ:
        transcript["truncated"] = True
    return transcript
