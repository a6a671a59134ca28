"""The payloads of a call's bot events (pure): the ``call`` object every event carries, ``call.started``'s
STT format, an ``utterance.final``'s utterance, who speaks on a channel.

What the call says about itself comes from the start of the stream carrying it (``CallStarted``): its
ids, the carrier's numbers and its stream parameters, the resume token left out.
"""

from __future__ import annotations

from typing import Any

from bridge.adapters.base import CallStarted
from bridge.audio import AudioFormat
from bridge.call.resume import RESUME_PARAMETER
from bridge.stt.notices import FinalUtterance
from bridge.stt.protocol import init_request


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
    call: dict[str, Any], stt_format: AudioFormat, speakers: tuple[str, str], capabilities: dict[str, bool]
) -> dict[str, Any]:
    """``call.started``: the call, what Gladia gets, who is on each channel it gets, and what the bot
    can do on it (``capabilities``: transfer, announce, return, gather)."""
    return {
        "call": call,
        "stt": {
            "encoding": stt_format.encoding,
            "sample_rate": stt_format.sample_rate,
            "bit_depth": stt_format.bit_depth,
            "channels": stt_format.channels,
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
