"""SignalWire cXML <Stream> (pure): the example messages of SignalWire's <Stream> page, copied by hand
(reference: shared/reference/carrier-conformance.md M2, L5, L7 and section 3.1)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from bridge.adapters.base import Audio, CallStarted, CallStopped, Dtmf, Gap, Ignored, MarkReached, StreamState
from bridge.adapters.signalwire import SignalWireAdapter
from bridge.audio import ULAW_8K, AudioFormat
from bridge.errors import PhoneProtocolError
from bridge.tools.writers.signalwire import SignalWireStreamWriter

STREAM = "7d56cc11-536d-4a45-b4fb-ed3d55be843b"
CALL = "76ac3c36-56da-4a3e-a0d6-b5f8df6da9ad"
ACCOUNT = "b08dacad-2f6c-4de1-93d6-cc732e0c69c5"
L16_20MS = bytes(range(240)) * 4  # 960 bytes: 20 ms of L16 at 24 kHz (the page's 1280 base64 characters)

CONNECTED: dict[str, Any] = {
    "timestamp": "2025-09-26T16:25:04.792Z",
    "direction": "inbound",
    "eventType": "connected",
    "rawEvent": {"event": "connected", "protocol": "Call", "version": "0.2.0"},
}


def start(media_format: dict[str, Any] | None = None, tracks: list[str] | None = None) -> dict[str, Any]:
    return {
        "timestamp": "2025-09-26T16:25:04.794Z",
        "direction": "inbound",
        "eventType": "start",
        "streamSid": STREAM,
        "callSid": CALL,
        "sequenceNumber": "1",
        "rawEvent": {
            "event": "start",
            "sequenceNumber": "1",
            "start": {
                "streamSid": STREAM,
                "accountSid": ACCOUNT,
                "callSid": CALL,
                "tracks": tracks or ["inbound"],
                "mediaFormat": media_format or {"encoding": "audio/x-L16", "sampleRate": 24000, "channels": 1},
            },
        },
    }


def media(seq: int, payload: bytes = L16_20MS, track: str = "inbound") -> dict[str, Any]:
    return {
        "timestamp": "2025-09-26T16:25:24.821Z",
        "direction": "inbound",
        "eventType": "media",
        "streamSid": STREAM,
        "sequenceNumber": str(seq),
        "rawEvent": {
            "event": "media",
            "sequenceNumber": str(seq),
            "media": {
                "track": track,
                "chunk": str(seq - 1),
                "timestamp": str((seq - 2) * 20),
                "payload": base64.b64encode(payload).decode(),
            },
        },
    }


def dtmf(seq: int, digit: str = "8") -> dict[str, Any]:
    """The page's DTMF: sequenceNumber on the envelope only, none in rawEvent."""
    return {
        "timestamp": "2025-09-26T16:25:15.123Z",
        "direction": "inbound",
        "eventType": "dtmf",
        "streamSid": STREAM,
        "sequenceNumber": str(seq),
        "rawEvent": {"event": "dtmf", "streamSid": STREAM, "dtmf": {"duration": 2700, "digit": digit}},
    }


MARK: dict[str, Any] = {
    "timestamp": "2025-09-26T16:25:24.740Z",
    "direction": "inbound",
    "eventType": "mark",
    "streamSid": STREAM,
    "rawEvent": {"event": "mark", "streamSid": STREAM, "mark": {"name": "item_CK5XvgANb1jVorf5VQlKQ:43500"}},
}
CLEAR: dict[str, Any] = {
    "timestamp": "2025-09-26T16:25:12.018Z",
    "direction": "outbound",
    "eventType": "clear",
    "streamSid": STREAM,
    "rawEvent": {"event": "clear", "streamSid": STREAM},
}


def stop(seq: int) -> dict[str, Any]:
    return {
        "timestamp": "2025-09-26T16:25:24.863Z",
        "direction": "inbound",
        "eventType": "stop",
        "streamSid": STREAM,
        "sequenceNumber": str(seq),
        "rawEvent": {"event": "stop", "sequenceNumber": str(seq)},
    }


def feed(a: SignalWireAdapter, *messages: dict[str, Any]) -> list[Any]:
    return [e for m in messages for e in a.receive(json.dumps(m))]


def started(**kwargs: Any) -> SignalWireAdapter:
    a = SignalWireAdapter()
    assert feed(a, CONNECTED) == [Ignored("connected")]
    (event,) = feed(a, start(**kwargs))
    assert isinstance(event, CallStarted)
    return a


def test_documented_wrapped_call_has_no_false_gap() -> None:
    """The page's connected, start, media, DTMF, media, mark and stop: audio, the digit, the mark and
    the stop, and no Gap (the wrapped DTMF's number is on its envelope)."""
    a = SignalWireAdapter()
    events = feed(a, CONNECTED, start(), media(2), dtmf(3), media(4), MARK, stop(5))
    started_event = events[1]
    assert isinstance(started_event, CallStarted) and started_event.audio_format == AudioFormat("pcm16", 24000)
    assert (started_event.call_sid, started_event.stream_sid, started_event.account_sid) == (CALL, STREAM, ACCOUNT)
    assert events[2:] == [
        Audio(L16_20MS),
        Dtmf("8"),
        Audio(L16_20MS),
        MarkReached("item_CK5XvgANb1jVorf5VQlKQ:43500"),
        CallStopped("stop"),
    ]
    assert a.counters.gaps == 0 and a.state is StreamState.ENDED


def test_wrapped_dtmf_takes_the_envelopes_sequence_number() -> None:
    """A wrapped DTMF counts with its envelope's sequenceNumber: one skipped before it is a gap, and
    the media after it is not."""
    a = started()
    feed(a, media(2))
    assert feed(a, dtmf(4)) == [Gap(3, 4), Dtmf("8")]
    assert feed(a, media(5)) == [Audio(L16_20MS)]
    assert a.counters.gaps == 1


def test_wrapped_media_for_another_stream_is_refused_with_1008() -> None:
    """The envelope's streamSid stands for the rawEvent's missing one: another stream's is refused."""
    a = started()
    other = media(2)
    other["streamSid"] = "00000000-0000-0000-0000-000000000000"
    with pytest.raises(PhoneProtocolError) as err:
        a.receive(json.dumps(other))
    assert err.value.close_code == 1008


def test_clear_acknowledgement_is_passive() -> None:
    """SignalWire's clear acknowledgement (wrapped or not) is acknowledged, not an unknown event."""
    a = started()
    assert feed(a, CLEAR, CLEAR["rawEvent"]) == [Ignored("clear"), Ignored("clear")]
    assert a.counters.ignored == {}


@pytest.mark.parametrize(
    "media_format",
    [
        {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 2},
        {"encoding": "audio/x-L16", "sampleRate": 16000, "channels": 2},
    ],
)
def test_two_channels_for_both_tracks_are_both_parties(media_format: dict[str, Any]) -> None:
    """channels 2 (both_tracks) is accepted; each media message is one party's mono track: inbound the
    caller's (track 0), outbound the other party's (track 1), with its timestamp, for two channels."""
    a = SignalWireAdapter()
    (event,) = feed(a, start(media_format, ["inbound", "outbound"]))
    assert isinstance(event, CallStarted) and event.tracks == ("inbound", "outbound") and event.channels == 2
    assert event.audio_format == (ULAW_8K if media_format["sampleRate"] == 8000 else AudioFormat("pcm16", 16000))
    assert feed(a, media(2, b"\x01" * 160), media(3, b"\x02" * 160, "outbound"), media(4, b"\x03" * 160)) == [
        Audio(b"\x01" * 160, 0, 0.0),
        Audio(b"\x02" * 160, 1, 20.0),
        Audio(b"\x03" * 160, 0, 40.0),
    ]


@pytest.mark.parametrize("channels", [0, 3, "2"])
def test_other_channel_counts_are_refused_with_1003(channels: Any) -> None:
    """Only 1 or 2 channels are accepted; anything else is unsupported data (1003)."""
    with pytest.raises(PhoneProtocolError) as err:
        SignalWireAdapter().receive(
            json.dumps(start({"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": channels}))
        )
    assert err.value.close_code == 1003


def untimed(message: dict[str, Any] | str) -> dict[str, Any]:
    body = json.loads(message) if isinstance(message, str) else message
    return {k: v for k, v in body.items() if k != "timestamp"}


def test_writer_sends_signalwires_documented_messages() -> None:
    """SignalWireStreamWriter, wrapped, matches the page's examples field by field (version 0.2.0,
    DTMF with duration and its number on the envelope only); unwrapped, it sends each rawEvent."""
    w = SignalWireStreamWriter(CALL, STREAM, sample_rate=24000, wrapped=True, account_sid=ACCOUNT)
    connected, started_msg, media_msg, stop_msg = w.call(L16_20MS, 960)
    assert json.loads(connected) == CONNECTED  # its wall clock starts at the page's example time
    assert untimed(started_msg) == untimed(start())
    assert untimed(media_msg) == untimed(media(2))
    assert untimed(stop_msg) == untimed(stop(3))
    assert json.loads(stop_msg)["timestamp"] == "2025-09-26T16:25:04.812Z"  # after 20 ms of audio
    assert untimed(w.dtmf("8")) == untimed(dtmf(4))
    assert untimed(w.mark("item_CK5XvgANb1jVorf5VQlKQ:43500")) == untimed(MARK)
    assert untimed(w.clear()) == untimed(CLEAR)

    plain = SignalWireStreamWriter(CALL, STREAM, parameters={"FirstName": "Jane"}, account_sid=ACCOUNT)
    connected, started_msg, media_msg, stop_msg = (json.loads(m) for m in plain.call(b"\xff" * 160))
    assert connected == {"event": "connected", "protocol": "Call", "version": "0.2.0"}
    assert started_msg == {
        "event": "start",
        "sequenceNumber": "1",
        "start": {
            "streamSid": STREAM,
            "accountSid": ACCOUNT,
            "callSid": CALL,
            "tracks": ["inbound"],
            "customParameters": {"FirstName": "Jane"},
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        },
    }
    assert media_msg == {
        "event": "media",
        "sequenceNumber": "2",
        "media": {
            "track": "inbound",
            "chunk": "1",
            "timestamp": "0",
            "payload": base64.b64encode(b"\xff" * 160).decode(),
        },
    }
    assert stop_msg == {"event": "stop", "sequenceNumber": "3"}
    assert json.loads(plain.dtmf("1")) == {
        "event": "dtmf",
        "sequenceNumber": "4",
        "streamSid": STREAM,
        "dtmf": {"duration": 2700, "digit": "1"},
    }
