"""Every carrier dialect (pure): literal messages shaped as in the carriers' documents, in and out,
and malformed ones refused with the right close code."""

from __future__ import annotations

import base64
import json

import pytest

from bridge.adapters import CARRIERS, make_adapter
from bridge.adapters.asterisk import AsteriskAdapter, parse_control
from bridge.adapters.audiofork import AudioForkAdapter
from bridge.adapters.base import (
    Audio,
    CallStarted,
    CallStopped,
    Dtmf,
    Gap,
    Ignored,
    MarkReached,
    StreamState,
)
from bridge.adapters.exotel import ExotelAdapter
from bridge.adapters.plivo import PlivoAdapter
from bridge.adapters.signalwire import SignalWireAdapter
from bridge.adapters.telnyx import ChunkReorderer, TelnyxAdapter
from bridge.adapters.vonage import VonageAdapter
from bridge.audio import ALAW_8K, ULAW_8K, AudioFormat
from bridge.errors import PhoneProtocolError, UnsupportedOperation

B64 = base64.b64encode(b"\x01\x02\x03\x04").decode()
SW_SID = "4b2ca3ed-0c28-4c1e-a0d2-5b4d0f1f2a11"


def refused(adapter: object, message: str | bytes) -> int:
    with pytest.raises(PhoneProtocolError) as err:
        adapter.receive(message)  # type: ignore[attr-defined]
    return err.value.close_code


# -- SignalWire ---------------------------------------------------------------------------------


def sw_start(encoding: str = "audio/x-mulaw", rate: int = 8000) -> str:
    return json.dumps(
        {
            "event": "start",
            "sequenceNumber": "1",
            "streamSid": SW_SID,
            "start": {
                "streamSid": SW_SID,
                "accountSid": "a1b2c3d4-0000-0000-0000-000000000000",
                "callSid": "c0ffee00-1111-2222-3333-444455556666",
                "tracks": ["inbound"],
                "customParameters": {"k": "v"},
                "mediaFormat": {"encoding": encoding, "sampleRate": rate, "channels": 1},
            },
        }
    )


def test_signalwire_uuid_ids_l16_and_wrapped_events() -> None:
    """UUID sids, L16 at 16 kHz, and the documents' rawEvent wrapper are all accepted."""
    a = SignalWireAdapter()
    a.receive(json.dumps({"event": "connected", "protocol": "Call", "version": "0.2.0"}))
    (start,) = a.receive(sw_start("audio/x-L16", 16000))
    assert isinstance(start, CallStarted) and start.carrier == "signalwire"
    assert start.audio_format == AudioFormat("pcm16", 16000) and start.call_sid.startswith("c0ffee00")
    wrapped = json.dumps(
        {
            "timestamp": 1.0,
            "direction": "inbound",
            "eventType": "media",
            "rawEvent": {
                "event": "media",
                "sequenceNumber": "2",
                "streamSid": SW_SID,
                "media": {"track": "inbound", "chunk": "1", "timestamp": "0", "payload": B64},
            },
        }
    )
    assert a.receive(wrapped) == [Audio(b"\x01\x02\x03\x04")]
    dtmf = json.dumps(
        {"event": "dtmf", "streamSid": SW_SID, "sequenceNumber": "3", "dtmf": {"digit": "7", "duration": 250}}
    )
    assert a.receive(dtmf) == [Dtmf("7")]
    assert json.loads(a.clear_message()) == {"event": "clear", "streamSid": SW_SID}


def test_signalwire_refuses_unknown_formats() -> None:
    assert refused(SignalWireAdapter(), sw_start("audio/x-L16", 11025)) == 1003
    assert SignalWireAdapter().receive(sw_start())[0].audio_format == ULAW_8K  # type: ignore[union-attr]


# -- Telnyx -------------------------------------------------------------------------------------

TELNYX_STREAM = "32de0dea-53cb-4b21-89a4-9e6a3eb1d9bb"
TELNYX_START = json.dumps(
    {
        "event": "start",
        "sequence_number": "1",
        "stream_id": TELNYX_STREAM,
        "start": {
            "user_id": "3e6f995f-85f7-4705-9741-53b116d28237",
            "call_control_id": "v3:MdI91X4lWFEs7IgbBEOT9M4AigoY08M0WWZFISt1Yw2axZ_IiE4pqg",
            "call_session_id": "ff55a038-4f5b-11ee-9e7c-02420a0d4169",
            "from": "+13122010094",
            "to": "+13122123456",
            "client_state": "aGF2ZSBhIG5pY2UgZGF5ID1d",
            "media_format": {"encoding": "PCMU", "sample_rate": 8000, "channels": 1},
        },
    }
)


def telnyx_media(chunk: int, payload: bytes = b"\x00") -> str:
    return json.dumps(
        {
            "event": "media",
            "sequence_number": str(chunk + 2),
            "stream_id": "32de0dea-53cb-4b21-89a4-9e6a3eb1d9bb",
            "media": {
                "track": "inbound",
                "chunk": str(chunk),
                "timestamp": str(chunk * 20),
                "payload": base64.b64encode(payload).decode(),
            },
        }
    )


def test_telnyx_stream_and_numbers() -> None:
    """call_control_id, stream_id and the numbers come from start; events map as documented."""
    a = TelnyxAdapter()
    assert a.receive('{"event": "connected", "version": "1.0.0"}') == [Ignored("connected")]
    (start,) = a.receive(TELNYX_START)
    assert isinstance(start, CallStarted)
    assert start.call_sid.startswith("v3:") and start.caller == "+13122010094" and start.called == "+13122123456"
    assert start.audio_format == ULAW_8K
    assert a.receive(telnyx_media(1, b"\x05")) == [Audio(b"\x05")]
    assert a.receive(
        json.dumps(
            {
                "event": "dtmf",
                "stream_id": a.stream_id,
                "occurred_at": "2026-01-01T00:00:00Z",
                "sequence_number": "9",
                "dtmf": {"digit": "1"},
            }
        )
    ) == [Dtmf("1")]
    assert a.receive(
        json.dumps(
            {"event": "error", "stream_id": a.stream_id, "payload": {"code": 100003, "title": "malformed_frame"}}
        )
    ) == [Ignored("error")]
    assert a.receive(
        json.dumps(
            {
                "event": "stop",
                "sequence_number": "10",
                "stream_id": a.stream_id,
                "stop": {"user_id": "u", "call_control_id": "c"},
            }
        )
    ) == [CallStopped("stop")]
    (audio,) = a.audio_messages(b"\xff" * 160)  # PCMU, Telnyx's default bidirectional codec
    assert json.loads(audio) == {"event": "media", "media": {"payload": base64.b64encode(b"\xff" * 160).decode()}}
    assert json.loads(a.mark_message("m")) == {"event": "mark", "mark": {"name": "m"}}


def test_telnyx_media_is_reordered_by_chunk() -> None:
    """Chunks 1,3,2,5,4 come out 1,2,3,4,5; a chunk missing beyond the window becomes a gap."""
    a = TelnyxAdapter()
    a.receive(TELNYX_START)
    out = [e for c in (1, 3, 2, 5, 4) for e in a.receive(telnyx_media(c, bytes([c])))]
    assert [e.payload for e in out if isinstance(e, Audio)] == [bytes([c]) for c in (1, 2, 3, 4, 5)]
    out = [e for c in (7, 8, 9, 10, 11, 12) for e in a.receive(telnyx_media(c, bytes([c])))]
    assert isinstance(out[0], Gap) and out[0].expected == 6
    assert [e.payload for e in out if isinstance(e, Audio)] == [bytes([c]) for c in (7, 8, 9, 10, 11, 12)]
    assert a.receive(telnyx_media(6)) == [] and a.counters.gaps == 1


def test_chunk_reorderer_drops_late_and_duplicate_chunks() -> None:
    r = ChunkReorderer(window=2)
    assert [p for p, _ in r.push(2, b"b")] == []
    assert [p for p, _ in r.push(1, b"a")] == [b"a", b"b"]
    assert r.push(1, b"a") == [] and r.late == 1


@pytest.mark.parametrize(
    ("encoding", "rate", "fmt"),
    [("PCMA", 8000, ALAW_8K), ("audio/x-mulaw", 8000, ULAW_8K), ("L16", 16000, AudioFormat("pcm16", 16000))],
)
def test_telnyx_media_formats(encoding: str, rate: int, fmt: AudioFormat) -> None:
    msg = json.loads(TELNYX_START)
    msg["start"]["media_format"] = {"encoding": encoding, "sample_rate": rate, "channels": 1}
    assert TelnyxAdapter().receive(json.dumps(msg))[0].audio_format == fmt  # type: ignore[union-attr]


def test_telnyx_malformed() -> None:
    msg = json.loads(TELNYX_START)
    msg["start"]["media_format"]["encoding"] = "OPUS"
    assert refused(TelnyxAdapter(), json.dumps(msg)) == 1003
    assert refused(TelnyxAdapter(), telnyx_media(1)) == 1008
    a = TelnyxAdapter()
    a.receive(TELNYX_START)
    assert refused(a, telnyx_media(1).replace('"payload": "AA=="', '"payload": "%%"')) == 1007
    assert refused(a, telnyx_media(1).replace("32de0dea", "00000000")) == 1008


# -- Plivo --------------------------------------------------------------------------------------

PLIVO_START = json.dumps(
    {
        "event": "start",
        "sequenceNumber": 1,
        "start": {
            "callId": "c1d5e0e2-7a4b-4c0e-9c39-8b8f0b0f0c11",
            "streamId": "20170ada-f610-433b-8758-c02a2aab3662",
            "accountId": "MA00000000000000000A",
            "tracks": ["inbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000},
        },
        "extra_headers": "team=support;lang=en",
    }
)


def test_plivo_stream() -> None:
    """No connected; numbers are numbers; extra_headers become parameters; checkpoints report back."""
    a = PlivoAdapter()
    assert a.close_ends_call
    (start,) = a.receive(PLIVO_START)
    assert isinstance(start, CallStarted) and start.parameters == {"team": "support", "lang": "en"}
    media = {
        "event": "media",
        "sequenceNumber": 2,
        "streamId": a.stream_id,
        "media": {"track": "inbound", "timestamp": "1705312200000", "chunk": 1, "payload": B64},
    }
    assert a.receive(json.dumps(media)) == [Audio(b"\x01\x02\x03\x04")]
    media["sequenceNumber"] = 5
    assert a.receive(json.dumps(media))[0] == Gap(3, 5)
    assert a.receive(
        json.dumps({"event": "playedStream", "sequenceNumber": 6, "streamId": a.stream_id, "name": "greeting"})
    ) == [MarkReached("greeting")]
    assert json.loads(a.mark_message("g")) == {"event": "checkpoint", "streamId": a.stream_id, "name": "g"}
    assert json.loads(a.clear_message()) == {"event": "clearAudio", "streamId": a.stream_id}
    (audio,) = a.audio_messages(b"\xff" * 160)
    assert json.loads(audio)["media"] == {
        "contentType": "audio/x-mulaw",
        "sampleRate": 8000,
        "payload": base64.b64encode(b"\xff" * 160).decode(),
    }


def test_plivo_l16_and_malformed() -> None:
    msg = json.loads(PLIVO_START)
    msg["start"]["mediaFormat"] = {"encoding": "audio/x-l16", "sampleRate": 16000}
    assert PlivoAdapter().receive(json.dumps(msg))[0].audio_format == AudioFormat("pcm16", 16000)  # type: ignore[union-attr]
    msg["start"]["mediaFormat"] = {"encoding": "audio/x-l16", "sampleRate": 44100}
    assert refused(PlivoAdapter(), json.dumps(msg)) == 1003
    assert refused(PlivoAdapter(), json.dumps({"event": "start", "start": {"streamId": "s"}})) == 1007
    assert refused(PlivoAdapter(), b"\x00") == 1003


# -- Exotel -------------------------------------------------------------------------------------


def exotel_start(rate: str = "8000") -> str:
    return json.dumps(
        {
            "event": "start",
            "sequence_number": "1",
            "stream_sid": "b6d2...",
            "start": {
                "stream_sid": "b6d2...",
                "call_sid": "a1c2e3...",
                "account_sid": "exotel1",
                "from": "09999999999",
                "to": "08888888888",
                "custom_parameters": {"lang": "hi"},
                "media_format": {"encoding": "audio/x-raw", "sample_rate": rate, "bit_rate": "16"},
            },
        }
    )


def test_exotel_stream() -> None:
    """Raw 16-bit PCM in base64, string-valued media_format, stop with a reason."""
    a = ExotelAdapter()
    a.receive('{"event": "connected"}')
    (start,) = a.receive(exotel_start("16000"))
    assert isinstance(start, CallStarted) and start.audio_format == AudioFormat("pcm16", 16000)
    assert start.caller == "09999999999" and start.parameters == {"lang": "hi"}
    media = json.dumps(
        {
            "event": "media",
            "sequence_number": "2",
            "stream_sid": "b6d2...",
            "media": {"chunk": "1", "timestamp": "100", "payload": base64.b64encode(b"\x01\x02\x03").decode()},
        }
    )
    assert a.receive(media) == [Audio(b"\x01\x02")]  # the odd byte waits for the next chunk
    stop = {
        "event": "stop",
        "sequence_number": "3",
        "stream_sid": "b6d2...",
        "stop": {"call_sid": "a1c2e3...", "reason": "callended"},
    }
    assert a.receive(json.dumps(stop)) == [CallStopped("callended")]
    assert json.loads(a.clear_message()) == {"event": "clear", "stream_sid": "b6d2..."}


def test_exotel_malformed() -> None:
    assert refused(ExotelAdapter(), exotel_start("11025")) == 1003
    assert refused(ExotelAdapter(), '{"event": "media", "media": {"payload": ""}}') == 1008


# -- Vonage -------------------------------------------------------------------------------------


def test_vonage_text_then_binary() -> None:
    """The first text frame carries the rate and the NCCO headers; then binary L16; DTMF as text."""
    a = VonageAdapter()
    (start,) = a.receive(
        json.dumps(
            {
                "event": "websocket:connected",
                "content-type": "audio/l16;rate=8000",
                "uuid": "aaaaaaaa-bbbb",
                "from": "447700900000",
                "to": "447700900001",
            }
        )
    )
    assert isinstance(start, CallStarted) and start.call_sid == "aaaaaaaa-bbbb"
    assert start.audio_format == AudioFormat("pcm16", 8000) and start.called == "447700900001"
    assert a.receive(b"\x01\x00" * 160) == [Audio(b"\x01\x00" * 160)]
    assert a.receive(json.dumps({"event": "websocket:dtmf", "digit": "5", "duration": 260})) == [Dtmf("5")]
    assert a.receive(json.dumps({"event": "websocket:notify", "payload": {"name": "m1"}})) == [MarkReached("m1")]
    assert a.audio_messages(b"\x00" * 330) == [b"\x00" * 320]  # exactly 20 ms per message
    assert json.loads(a.clear_message()) == {"action": "clear"}


def test_vonage_malformed() -> None:
    assert refused(VonageAdapter(), b"\x00\x00") == 1008
    assert refused(VonageAdapter(), json.dumps({"event": "websocket:connected", "content-type": "audio/pcmu"})) == 1003


# -- jambonz / FreeSWITCH ---------------------------------------------------------------------------


def test_jambonz_listen_metadata_then_l16() -> None:
    a = AudioForkAdapter()
    assert "audio.jambonz.org" in a.subprotocols and "audio.drachtio.org" in a.subprotocols
    (start,) = a.receive(
        json.dumps(
            {
                "callSid": "0d2f3a",
                "from": "+15550001",
                "to": "+15550002",
                "sampleRate": 16000,
                "mixType": "mono",
                "metadata": {"bot": "x"},
            }
        )
    )
    assert isinstance(start, CallStarted) and start.call_sid == "0d2f3a"
    assert start.audio_format == AudioFormat("pcm16", 16000) and start.parameters["metadata.bot"] == "x"
    assert a.receive(b"\x01\x00\x02") == [Audio(b"\x01\x00")]  # half a sample waits
    assert a.receive(json.dumps({"event": "dtmf", "dtmf": "9", "duration": 100})) == [Dtmf("9")]
    a.subprotocol = "audio.jambonz.org"
    assert json.loads(a.clear_message()) == {"type": "killAudio"}
    assert json.loads(a.audio_messages(b"\x00" * 640)[0])["type"] == "playAudio"
    with pytest.raises(UnsupportedOperation):
        a.mark_message("m")


def test_audio_fork_without_metadata_and_stereo() -> None:
    """mod_audio_stream may start with audio (configured rate); stereo is the two legs as two tracks."""
    a = AudioForkAdapter(default_sample_rate=16000)
    events = a.receive(b"\x10\x00\x20\x00")
    assert isinstance(events[0], CallStarted) and events[0].audio_format == AudioFormat("pcm16", 16000)
    b = AudioForkAdapter()
    b.receive(json.dumps({"callSid": "s", "mixType": "stereo", "sampleRate": 8000}))
    assert b.receive(b"\x10\x00\x20\x00") == [Audio(b"\x10\x00", 0), Audio(b"\x20\x00", 1)]
    assert refused(AudioForkAdapter(), json.dumps({"sampleRate": 11025})) == 1003


# -- Asterisk -----------------------------------------------------------------------------------


def test_asterisk_plain_and_json_control() -> None:
    plain = AsteriskAdapter()
    (start,) = plain.receive(
        "MEDIA_START connection_id:abc123 channel:PJSIP/alice-00000001 channel_id:1761245643.1 "
        "format:ulaw optimal_frame_size:160 ptime:20"
    )
    assert isinstance(start, CallStarted) and start.call_sid == "1761245643.1" and start.audio_format == ULAW_8K
    assert plain.receive(b"\xff" * 160) == [Audio(b"\xff" * 160)]
    assert plain.receive("DTMF_END digit:4") == [Dtmf("4")]
    assert plain.receive("QUEUE_DRAINED")[0] == Ignored("QUEUE_DRAINED")
    assert plain.clear_message() == "FLUSH_MEDIA" and plain.mark_message("m1") == "MARK_MEDIA m1"
    js = AsteriskAdapter()
    js.receive(
        json.dumps(
            {
                "event": "MEDIA_START",
                "connection_id": "c",
                "channel": "PJSIP/bob",
                "channel_id": "9.9",
                "format": "slin16",
                "optimal_frame_size": 640,
                "ptime": 20,
                "channel_variables": {"CALLERID(num)": "+15550001"},
            }
        )
    )
    assert js.audio_format == AudioFormat("pcm16", 16000)
    assert js.receive(json.dumps({"event": "MEDIA_MARK_PROCESSED", "correlation_id": "m1"})) == [MarkReached("m1")]
    assert json.loads(js.clear_message()) == {"command": "FLUSH_MEDIA"}


def test_asterisk_malformed() -> None:
    assert refused(AsteriskAdapter(), b"\xff") == 1008
    assert refused(AsteriskAdapter(), "MEDIA_START format:opus") == 1003
    assert refused(AsteriskAdapter(), "{not json") == 1007
    assert parse_control("STATUS queue_length:0") == {"event": "STATUS", "queue_length": "0"}


def test_registry_has_every_route() -> None:
    """Each carrier has its route and a fresh adapter per stream."""
    assert set(CARRIERS) == {"twilio", "signalwire", "telnyx", "plivo", "exotel", "vonage", "audiofork", "asterisk"}
    for name in CARRIERS:
        a = make_adapter(name)
        assert a is not None and a.carrier == name and a.state is StreamState.AWAITING_START
    assert make_adapter("nope") is None
