"""Exotel Stream/Voicebot applets and ExoML <StartStream> (pure): the messages of Exotel's WebSocket
protocol page, built by hand here (reference: shared/reference/carrier-conformance.md M4, L7 and
section 3.4). The media_format Exotel sends for mu-law is not documented: the spellings are guesses."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from bridge.adapters.base import Audio, CallStarted, CallStopped, Dtmf, Gap, Ignored, MarkReached
from bridge.adapters.exotel import ExotelAdapter
from bridge.audio import ULAW_8K, AudioFormat
from bridge.errors import PhoneProtocolError
from bridge.tools.writers.exotel import ExotelStreamWriter

SID = "b6d2a1c2e3f4a5b6c7d8e9f0a1b2c3d4"
CALL = "a1c2e3f4b5d6c7e8f9a0b1c2d3e4f5a6"


def start(media_format: dict[str, str]) -> str:
    return json.dumps(
        {
            "event": "start",
            "sequence_number": "1",
            "stream_sid": SID,
            "start": {
                "stream_sid": SID,
                "call_sid": CALL,
                "account_sid": "exotel1",
                "from": "09999999999",
                "to": "08888888888",
                "custom_parameters": {"lang": "hi"},
                "media_format": media_format,
            },
        }
    )


def media(seq: int, payload: bytes) -> str:
    return json.dumps(
        {
            "event": "media",
            "sequence_number": str(seq),
            "stream_sid": SID,
            "media": {
                "chunk": str(seq - 1),
                "timestamp": str((seq - 2) * 100),
                "payload": base64.b64encode(payload).decode(),
            },
        }
    )


def started(media_format: dict[str, str]) -> tuple[ExotelAdapter, CallStarted]:
    a = ExotelAdapter()
    assert a.receive('{"event": "connected"}') == [Ignored("connected")]
    (event,) = a.receive(start(media_format))
    assert isinstance(event, CallStarted)
    return a, event


MULAW_FORMATS = [
    {"encoding": encoding + suffix, **rate, **bits}
    for encoding in ("audio/x-mulaw", "audio/mulaw", "mulaw", "ulaw", "audio/pcmu", "pcmu", "AUDIO/X-MULAW")
    for suffix in ("", ";rate=8000")
    for rate in ({"sample_rate": "8000"}, {})
    for bits in ({"bit_rate": "8"}, {})
]


@pytest.mark.parametrize("media_format", MULAW_FORMATS, ids=lambda f: "/".join(f.values()))
def test_mulaw_stream_is_accepted_as_ulaw_8k(media_format: dict[str, str]) -> None:
    """ExoML <StartStream>'s default audio/x-mulaw;rate=8000, in any usual spelling: 8 kHz mu-law."""
    _, event = started(media_format)
    assert event.audio_format == ULAW_8K


def test_mulaw_audio_passes_through_whole_odd_chunks_included() -> None:
    """Mu-law bytes come out unchanged, an odd-length chunk whole (no 16-bit sample to complete)."""
    a, _ = started({"encoding": "audio/x-mulaw;rate=8000", "sample_rate": "8000", "bit_rate": "8"})
    assert a.receive(media(2, b"\x01\x02\x03")) == [Audio(b"\x01\x02\x03")]
    assert a.receive(media(3, b"\xff" * 800)) == [Audio(b"\xff" * 800)]


@pytest.mark.parametrize("rate", ["8000", "16000", "24000"])
def test_raw_pcm_applet_streams_are_unchanged(rate: str) -> None:
    """The applets' documented audio/x-raw 16-bit at 8/16/24 kHz is still 16-bit PCM at that rate."""
    _, event = started({"encoding": "audio/x-raw", "sample_rate": rate, "bit_rate": "16"})
    assert event.audio_format == AudioFormat("pcm16", int(rate))


@pytest.mark.parametrize(
    "media_format",
    [
        {"encoding": "audio/x-alaw", "sample_rate": "8000", "bit_rate": "8"},
        {"encoding": "audio/x-mulaw", "sample_rate": "16000", "bit_rate": "8"},
        {"encoding": "audio/x-mulaw;rate=16000"},
        {"encoding": "audio/x-mulaw", "sample_rate": "8000", "bit_rate": "16"},
        {"encoding": "audio/x-raw", "sample_rate": "11025", "bit_rate": "16"},
        {"encoding": "audio/x-raw", "sample_rate": "8000", "bit_rate": "8"},
        {"encoding": "opus", "sample_rate": "16000"},
    ],
    ids=lambda f: "/".join(f.values()),
)
def test_other_formats_are_refused_with_1003_naming_what_is_accepted(media_format: dict[str, str]) -> None:
    """Anything but raw 16-bit PCM (8/16/24 kHz) or 8 kHz mu-law: unsupported data (1003), and the
    reason names both accepted formats."""
    with pytest.raises(PhoneProtocolError) as err:
        ExotelAdapter().receive(start(media_format))
    assert err.value.close_code == 1003
    assert "audio/x-raw" in err.value.reason and "audio/x-mulaw" in err.value.reason


def test_documented_voicebot_call() -> None:
    """connected, start, media, dtmf, mark, stop as documented: parameters, numbers, audio, the digit,
    the mark and the stop reason, without a gap."""
    a, event = started({"encoding": "audio/x-raw", "sample_rate": "8000", "bit_rate": "16"})
    assert event.parameters == {"lang": "hi"} and (event.caller, event.called) == ("09999999999", "08888888888")
    assert event.call_sid == CALL and event.stream_sid == SID and event.account_sid == "exotel1"
    pcm = b"\x01\x00" * 800  # 100 ms at 8 kHz
    messages = [
        media(2, pcm),
        json.dumps(
            {"event": "dtmf", "sequence_number": "3", "stream_sid": SID, "dtmf": {"digit": "5", "duration": "250"}}
        ),
        json.dumps({"event": "mark", "sequence_number": "4", "stream_sid": SID, "mark": {"name": "greeting"}}),
        json.dumps(
            {
                "event": "stop",
                "sequence_number": "5",
                "stream_sid": SID,
                "stop": {"call_sid": CALL, "account_sid": "exotel1", "reason": "callended"},
            }
        ),
    ]
    events = [e for m in messages for e in a.receive(m)]
    assert events == [Audio(pcm), Dtmf("5"), MarkReached("greeting"), CallStopped("callended")]
    assert not any(isinstance(e, Gap) for e in events)


def expected_call(pcm: bytes, media_format: dict[str, str], step_ms: int) -> list[dict[str, Any]]:
    chunks = [pcm[i : i + len(pcm) // 3] for i in range(0, len(pcm), len(pcm) // 3)]
    return [
        {"event": "connected"},
        {
            "event": "start",
            "sequence_number": "1",
            "stream_sid": SID,
            "start": {
                "stream_sid": SID,
                "call_sid": CALL,
                "account_sid": "exotel1",
                "from": "09999999999",
                "to": "08888888888",
                "custom_parameters": {"lang": "hi"},
                "media_format": media_format,
            },
        },
        *(
            {
                "event": "media",
                "sequence_number": str(n + 2),
                "stream_sid": SID,
                "media": {"chunk": str(n + 1), "timestamp": str(n * step_ms), "payload": base64.b64encode(c).decode()},
            }
            for n, c in enumerate(chunks)
        ),
        {
            "event": "stop",
            "sequence_number": "5",
            "stream_sid": SID,
            "stop": {"call_sid": CALL, "account_sid": "exotel1", "reason": "callended"},
        },
    ]


def test_writer_sends_exotels_documented_messages() -> None:
    """ExotelStreamWriter's connected, start, media, dtmf, mark and stop are Exotel's messages field by
    field, values as strings; media timestamps advance by each chunk's duration (100 ms), not 20 ms;
    with ulaw=True it declares mu-law and sends the bytes as given."""
    pcm = (bytes(range(256)) * 19)[:4800]  # three chunks of 1,600 bytes: 100 ms each at 8 kHz
    w = ExotelStreamWriter(CALL, SID, "09999999999", "08888888888", 8000, {"lang": "hi"}, account_sid="exotel1")
    raw = {"encoding": "audio/x-raw", "sample_rate": "8000", "bit_rate": "16"}
    assert [json.loads(m) for m in w.call(pcm, 1600)] == expected_call(pcm, raw, 100)
    assert json.loads(w.dtmf("5")) == {
        "event": "dtmf",
        "sequence_number": "6",
        "stream_sid": SID,
        "dtmf": {"digit": "5", "duration": "250"},
    }
    assert json.loads(w.mark("greeting")) == {
        "event": "mark",
        "sequence_number": "7",
        "stream_sid": SID,
        "mark": {"name": "greeting"},
    }

    w16 = ExotelStreamWriter(CALL, SID, "09999999999", "08888888888", 16000, {"lang": "hi"}, account_sid="exotel1")
    raw16 = {"encoding": "audio/x-raw", "sample_rate": "16000", "bit_rate": "16"}
    assert [json.loads(m) for m in w16.call(pcm * 2, 3200)] == expected_call(pcm * 2, raw16, 100)

    ulaw = bytes(range(256)) * 3 + b"\x00" * 96  # three chunks of 288 bytes: 36 ms each
    wu = ExotelStreamWriter(
        CALL, SID, "09999999999", "08888888888", parameters={"lang": "hi"}, ulaw=True, account_sid="exotel1"
    )
    mulaw = {"encoding": "audio/x-mulaw", "sample_rate": "8000", "bit_rate": "8"}
    assert [json.loads(m) for m in wu.call(ulaw, 288)] == expected_call(ulaw, mulaw, 36)
