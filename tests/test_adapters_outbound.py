"""The way back to the caller, per carrier: the literal messages each carrier's documents show, and the
sizes each one accepts (reference: shared/reference/carrier-conformance.md section 4 and M6)."""

from __future__ import annotations

import base64
import json

import pytest

from bridge.adapters.asterisk import AsteriskAdapter
from bridge.adapters.audiofork import AudioForkAdapter
from bridge.adapters.base import AudioOut, OutboundFraming
from bridge.adapters.exotel import ExotelAdapter
from bridge.adapters.plivo import PlivoAdapter
from bridge.adapters.signalwire import SignalWireAdapter
from bridge.adapters.telnyx import TelnyxAdapter
from bridge.adapters.twilio import TwilioAdapter
from bridge.adapters.vonage import VonageAdapter
from bridge.audio import ULAW_8K, AudioFormat
from bridge.errors import UnsupportedOperation
from bridge.tools.writers.twilio import TwilioStreamWriter


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_audio_out_cuts_whole_frames_within_bounds_and_pads_the_tail() -> None:
    """Pure framing: whole frames only, at least min and at most max per chunk; the rest held until
    more audio comes; flush pads it with silence to an acceptable size; drop forgets it."""
    out = AudioOut(OutboundFraming(4, min_frames=2, max_frames=3), silence_byte=0xFF)
    assert out.push(b"abcdef") == [] and out.held == 6  # 1.5 frames: under min_frames
    assert out.push(b"gh") == [b"abcdefgh"]
    assert out.push(b"0123456789abcdefXY") == [b"0123456789ab"] and out.held == 6  # max 3 frames, then < min
    assert out.flush() == [b"cdefXY\xff\xff"]  # padded to min_frames (2 frames)
    out.push(b"zz")
    assert out.drop() == 2 and out.flush() == []


def test_twilio_and_signalwire_media_mark_clear() -> None:
    """Twilio's documented shapes, the stream's sid in each; 20 ms frames, at most 1 s a message."""
    for adapter in (TwilioAdapter(), SignalWireAdapter()):
        writer = TwilioStreamWriter("CA1", "MZ1")
        adapter.receive(writer.start())
        audio = bytes(range(256)) * 10  # 2,560 bytes: 16 frames of 160, then 0 left
        (message,) = adapter.audio_messages(audio)
        assert json.loads(message) == {"event": "media", "streamSid": "MZ1", "media": {"payload": b64(audio)}}
        assert (
            adapter.audio_messages(b"\xff" * 8000 * 2)
            == adapter.audio_messages(b"")[:0]
            + [json.dumps({"event": "media", "streamSid": "MZ1", "media": {"payload": b64(b"\xff" * 8000)}})] * 2
        )
        assert json.loads(adapter.mark_message("greeting")) == {
            "event": "mark",
            "streamSid": "MZ1",
            "mark": {"name": "greeting"},
        }
        assert json.loads(adapter.clear_message()) == {"event": "clear", "streamSid": "MZ1"}


def _telnyx(encoding: str, rate: int = 8000) -> TelnyxAdapter:
    a = TelnyxAdapter()
    a.receive(
        json.dumps(
            {
                "event": "start",
                "sequence_number": "1",
                "stream_id": "32de0dea",
                "start": {
                    "call_control_id": "v3:abc",
                    "media_format": {"encoding": encoding, "sample_rate": rate, "channels": 1},
                },
            }
        )
    )
    return a


@pytest.mark.parametrize("inbound", ["PCMU", "PCMA"])
def test_telnyx_plays_back_in_the_bidirectional_codec(inbound: str) -> None:
    """Telnyx plays back in stream_bidirectional_codec (PCMU by default) whatever comes in; messages
    carry no stream id; 20 ms is the smallest chunk Telnyx takes."""
    a = _telnyx(inbound)
    assert a.outbound_format == ULAW_8K
    assert a.audio_messages(b"\xff" * 100) == []  # under 20 ms: held
    (message,) = a.audio_messages(b"\xff" * 60)
    assert json.loads(message) == {"event": "media", "media": {"payload": b64(b"\xff" * 160)}}
    assert json.loads(a.mark_message("m")) == {"event": "mark", "mark": {"name": "m"}}
    assert json.loads(a.clear_message()) == {"event": "clear"}


def test_plivo_play_audio_checkpoint_clear_audio() -> None:
    """Plivo: playAudio with contentType and sampleRate (no streamId), checkpoint and clearAudio with it."""
    a = PlivoAdapter()
    a.receive(
        json.dumps(
            {
                "sequenceNumber": 0,
                "event": "start",
                "start": {
                    "callId": "c1",
                    "streamId": "s1",
                    "accountId": "a1",
                    "tracks": ["inbound"],
                    "mediaFormat": {"encoding": "audio/x-l16", "sampleRate": 16000},
                },
                "extra_headers": "",
            }
        )
    )
    (message,) = a.audio_messages(b"\x01\x00" * 320)
    assert json.loads(message) == {
        "event": "playAudio",
        "media": {"contentType": "audio/x-l16", "sampleRate": 16000, "payload": b64(b"\x01\x00" * 320)},
    }
    assert json.loads(a.mark_message("cp")) == {"event": "checkpoint", "streamId": "s1", "name": "cp"}
    assert json.loads(a.clear_message()) == {"event": "clearAudio", "streamId": "s1"}


def test_exotel_chunks_are_3200_to_100000_bytes_in_multiples_of_320() -> None:
    """Exotel: media messages of at least 3.2 kB and at most 100 kB, each a multiple of 320 bytes."""
    a = ExotelAdapter()
    a.receive(
        json.dumps(
            {
                "event": "start",
                "sequence_number": "1",
                "stream_sid": "b6d2",
                "start": {
                    "stream_sid": "b6d2",
                    "call_sid": "c",
                    "account_sid": "x",
                    "from": "1",
                    "to": "2",
                    "media_format": {"encoding": "audio/x-raw", "sample_rate": "8000", "bit_rate": "16"},
                },
            }
        )
    )
    assert a.audio_messages(b"\x00" * 3000) == []
    messages = a.audio_messages(b"\x01" * 200_000)
    sizes = [len(base64.b64decode(json.loads(m)["media"]["payload"])) for m in messages]
    assert all(3200 <= s <= 100_000 and s % 320 == 0 for s in sizes) and sum(sizes) == 203_000 - 203_000 % 320
    assert json.loads(messages[0]) == {
        "event": "media",
        "stream_sid": "b6d2",
        "media": {"payload": b64((b"\x00" * 3000 + b"\x01" * 200_000)[: sizes[0]])},
    }
    (tail,) = a.flush_audio()
    assert len(base64.b64decode(json.loads(tail)["media"]["payload"])) == 3200  # padded to the minimum
    assert json.loads(a.mark_message("m")) == {"event": "mark", "stream_sid": "b6d2", "mark": {"name": "m"}}
    assert json.loads(a.clear_message()) == {"event": "clear", "stream_sid": "b6d2"}


@pytest.mark.parametrize("rate", [8000, 16000])
def test_vonage_sends_exactly_one_20_ms_frame_per_message(rate: int) -> None:
    """Vonage: each binary message is 320 (8 kHz) or 640 (16 kHz) bytes, exactly 20 ms."""
    a = VonageAdapter()
    a.receive(json.dumps({"event": "websocket:connected", "content-type": f"audio/l16;rate={rate}"}))
    frame = rate // 50 * 2
    messages = a.audio_messages(b"\x02\x00" * (frame * 3 // 2 + 10))
    assert [len(m) for m in messages] == [frame] * 3 and all(isinstance(m, bytes) for m in messages)
    (tail,) = a.flush_audio()
    assert isinstance(tail, bytes) and len(tail) == frame and tail.endswith(b"\x00\x00")
    assert json.loads(a.mark_message("m1")) == {"action": "notify", "payload": {"name": "m1"}}
    assert json.loads(a.clear_message()) == {"action": "clear"}


def test_asterisk_frames_are_whole_optimal_frames_under_65500_bytes() -> None:
    """Asterisk drops a partial frame and hangs up on a message over 65,500 bytes; marks are positional
    in the plain form, JSON commands otherwise."""
    plain = AsteriskAdapter()
    plain.receive(
        "MEDIA_START connection_id:abc channel:PJSIP/alice-1 channel_id:17.1 format:slin16 "
        "optimal_frame_size:640 ptime:20"
    )
    messages = plain.audio_messages(b"\x00" * 100_000)
    assert all(isinstance(m, bytes) and len(m) % 640 == 0 and len(m) <= 65_500 for m in messages)
    assert sum(len(m) for m in messages) == 100_000 - 100_000 % 640
    assert plain.mark_message("end of greeting") == "MARK_MEDIA end of greeting"
    assert plain.clear_message() == "FLUSH_MEDIA"
    assert plain.hangup_message() == "HANGUP"  # the chan_websocket command that ends the call
    js = AsteriskAdapter()
    js.receive(
        json.dumps(
            {
                "event": "MEDIA_START",
                "connection_id": "c",
                "channel_id": "9.9",
                "format": "ulaw",
                "optimal_frame_size": 160,
                "ptime": 20,
            }
        )
    )
    assert js.audio_messages(b"\xff" * 170) == [b"\xff" * 160]
    assert json.loads(js.mark_message("m1")) == {"command": "MARK_MEDIA", "correlation_id": "m1"}
    assert json.loads(js.clear_message()) == {"command": "FLUSH_MEDIA"}
    assert json.loads(js.hangup_message()) == {"command": "HANGUP"}


def test_jambonz_and_mod_audio_fork_play_audio_and_kill_audio() -> None:
    """jambonz / mod_audio_fork (a subprotocol negotiated): playAudio with a numeric sampleRate,
    killAudio; no marks."""
    a = AudioForkAdapter()
    a.subprotocol = "audio.drachtio.org"
    a.receive(json.dumps({"callSid": "x", "sampleRate": 8000}))
    (message,) = a.audio_messages(b"\x00\x01" * 160)
    assert json.loads(message) == {
        "type": "playAudio",
        "data": {"audioContent": b64(b"\x00\x01" * 160), "audioContentType": "raw", "sampleRate": 8000},
    }
    assert json.loads(a.clear_message()) == {"type": "killAudio"}
    with pytest.raises(UnsupportedOperation):
        a.mark_message("m")
    assert not a.supports_marks and a.hangup_message() is None  # closing the socket ends the fork
    jambonz = AudioForkAdapter()
    jambonz.subprotocol = "audio.jambonz.org"
    jambonz.receive(json.dumps({"callSid": "x", "sampleRate": 8000}))
    (message,) = jambonz.audio_messages(b"\x00\x01" * 160)
    assert json.loads(message)["data"]["queuePlay"] is True  # queued behind the chunk playing, not replacing it


def test_every_other_dialect_hangs_up_by_closing_and_echoes_marks() -> None:
    """Only Asterisk has a hang-up command; the others end the stream by closing it (Twilio's TwiML then
    runs <Hangup/>). Every dialect but the forks echoes marks, so playback is confirmed by the carrier."""
    for adapter in (
        TwilioAdapter(),
        PlivoAdapter(),
        ExotelAdapter(),
        VonageAdapter(),
        TelnyxAdapter(),
        SignalWireAdapter(),
    ):
        assert adapter.hangup_message() is None and adapter.supports_marks, type(adapter).__name__


def test_mod_audio_stream_understands_only_stream_audio() -> None:
    """amigniter mod_audio_stream (no subprotocol): streamAudio with audioDataType/sampleRate/audioData;
    it has no way to stop playback or report a mark, which the adapter says instead of sending junk."""
    a = AudioForkAdapter(default_sample_rate=16000)
    a.receive(b"\x00\x00" * 320)
    (message,) = a.audio_messages(b"\x00\x01" * 320)
    assert json.loads(message) == {
        "type": "streamAudio",
        "data": {"audioDataType": "raw", "sampleRate": 16000, "audioData": b64(b"\x00\x01" * 320)},
    }
    with pytest.raises(UnsupportedOperation):
        a.clear_message()
    with pytest.raises(UnsupportedOperation):
        a.mark_message("m")
    assert a.outbound_format == AudioFormat("pcm16", 16000)
