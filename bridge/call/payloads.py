"""The payloads of a call's bot events (pure): the ``call`` object every event carries, ``call.started``'s
STT format, an ``utterance.final``'s utterance, an add-on's result, who speaks on a channel.

What the call says about itself comes from the start of the stream carrying it (``CallStarted``): its
ids, the carrier's numbers and its stream parameters, the resume token left out.
"""

from __future__ import annotations

from typing import Any

from bridge.adapters.base import CallStarted
from bridge.audio import AudioFormat
from bridge.call.resume import RESUME_PARAMETER
from bridge.stt.addons import AddonFailed, Entities, Translation, in_session_time
from bridge.stt.notices import AddonResult, FinalUtterance
from bridge.stt.protocol import init_request
from bridge.stt.utterance import Utterance


def param(started: CallStarted, name: str) -> str | None:
    """``from``/``to``: what the carrier said, else a stream parameter of that name (any case)."""
    known = {"from": started.caller, "to": started.called}.get(name)
    if known:
        return known
    for key, value in started.parameters.items():
        if key.lower() == name:
            return value
    return None


def call_json(call_id: str, started: CallStarted, direction: str = "inbound") -> dict[str, Any]:
    """The ``call`` object of every bot event (``direction``: ``outbound`` for a call the bot ordered)."""
    return {
        "id": call_id,
        "provider": started.carrier,
        "call_sid": started.call_sid,
        "stream_sid": started.stream_sid,
        "from": param(started, "from"),
        "to": param(started, "to"),
        "parameters": {k: v for k, v in started.parameters.items() if k != RESUME_PARAMETER},
        "direction": direction,
    }


def started_json(
    call: dict[str, Any],
    stt_format: AudioFormat,
    speakers: tuple[str, str],
    capabilities: dict[str, bool],
    refused: tuple[str, ...] = (),
) -> dict[str, Any]:
    """``call.started``: the call, what Gladia gets (and which of the call's ``stt.*`` parameters were
    refused, one line each: name and why), who is on each channel it gets, and what the bot can do on it
    (``capabilities``: transfer, announce, return, gather)."""
    return {
        "call": call,
        "stt": {
            "encoding": stt_format.encoding,
            "sample_rate": stt_format.sample_rate,
            "bit_depth": stt_format.bit_depth,
            "channels": stt_format.channels,
            "refused": list(refused),
        },
        "speakers": list(speakers[: stt_format.channels]),
        "capabilities": capabilities,
    }


def utterance_json(final: FinalUtterance, speakers: tuple[str, str]) -> dict[str, Any]:
    """An ``utterance.final``'s utterance: its times and its words' on the call's clock, its speaker."""
    utt = final.utterance
    shift = final.call_start - utt.start
    return {
        "id": final.id,
        "text": utt.text.strip(),
        "start": round(final.call_start, 3),
        "end": round(final.call_end, 3),
        "language": utt.language,
        "confidence": utt.confidence,
        "channel": utt.channel,
        "speaker": speakers[utt.channel] if 0 <= utt.channel < len(speakers) else f"channel {utt.channel}",
        "words": [
            {
                "word": w.word.strip(),
                "start": round(w.start + shift, 3),
                "end": round(w.end + shift, 3),
                "confidence": w.confidence,
            }
            for w in utt.words
        ],
    }


def who(both_parties: bool, speakers: tuple[str, str], channel: int) -> dict[str, Any]:
    """Who a realtime event's words are from: nothing on a call of one party, else channel and speaker."""
    if not both_parties:
        return {}
    return {"channel": channel, "speaker": speakers[channel] if channel in (0, 1) else f"channel {channel}"}


def stt_request(profile_body: dict[str, Any], call_id: str, started: CallStarted) -> dict[str, Any]:
    """The call's Gladia session request: its profile, with the call's ids as ``custom_metadata``."""
    return init_request(
        profile_body,
        {
            "bridge_call_id": call_id,
            "provider": started.carrier,
            "call_sid": started.call_sid,
            "stream_sid": started.stream_sid,
        },
    )


def _times(start: float, end: float, origin: float, analysed: Utterance | None) -> tuple[float, float]:
    """An entity's or a sentiment's times in call time when they read as the session's seconds, else as
    Gladia gave them (offsets in the text: see :func:`bridge.stt.addons.in_session_time`)."""
    if in_session_time(start, end, analysed):
        return round(origin + start, 3), round(origin + end, 3)
    return start, end


def addon_json(notice: AddonResult, speakers: tuple[str, str]) -> tuple[str, dict[str, Any]]:
    """The bot event of an add-on's result, without its ``call``: ``utterance.translation``,
    ``utterance.entities``, ``utterance.sentiment``, or ``stt.addon_failed``."""
    result = notice.result
    if isinstance(result, AddonFailed):
        return "stt.addon_failed", {
            "addon": result.addon,
            "utterance_id": result.utterance_id,
            "error": result.error,
            "stt_session_id": notice.session_id,
        }
    channel = notice.channel if notice.channel is not None else 0
    linked: dict[str, Any] = {
        "utterance_id": result.utterance_id,
        "channel": channel,
        "speaker": speakers[channel] if 0 <= channel < len(speakers) else f"channel {channel}",
    }
    if isinstance(result, Translation):
        return "utterance.translation", {
            **linked,
            "language": result.language,
            "original_language": result.original_language,
            "text": result.utterance.text.strip(),
            "stt_session_id": notice.session_id,
        }
    if isinstance(result, Entities):
        entities = []
        for e in result.entities:
            start, end = _times(e.start, e.end, notice.origin, result.utterance)
            entities.append({"type": e.type, "text": e.text, "start": start, "end": end})
        return "utterance.entities", {**linked, "entities": entities, "stt_session_id": notice.session_id}
    results = []
    for r in result.results:
        start, end = _times(r.start, r.end, notice.origin, result.utterance)
        results.append({"sentiment": r.sentiment, "emotion": r.emotion, "text": r.text, "start": start, "end": end})
    return "utterance.sentiment", {**linked, "results": results, "stt_session_id": notice.session_id}
