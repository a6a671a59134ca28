"""Twilio Media Streams adapter (pure): literal messages in, events out; malformed input refused."""

from __future__ import annotations

import base64
import json

import pytest

from bridge.adapters.base import Audio, CallStarted, CallStopped, Dtmf, Gap, Ignored, MarkReached, StreamState
from bridge.adapters.twilio import TwilioAdapter, connect_stream_twiml, fork_stream_twiml, signature, signature_valid
from bridge.audio import ULAW_8K
from bridge.errors import PhoneProtocolError
from bridge.tools.writers.twilio import TwilioStreamWriter

SID = "MZ00000000000000000000000000000001"
CONNECTED = '{"event": "connected", "protocol": "Call", "version": "1.0.0"}'
START = json.dumps(
    {
        "event": "start",
        "sequenceNumber": "1",
        "streamSid": SID,
        "start": {
            "streamSid": SID,
            "accountSid": "AC00000000000000000000000000000001",
            "callSid": "CA00000000000000000000000000000001",
            "tracks": ["inbound"],
            "customParameters": {"From": "+15550001", "To": "+15550002"},
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        },
    }
)


def media(seq: int, payload: bytes, track: str = "inbound") -> str:
    return json.dumps(
        {
            "event": "media",
            "sequenceNumber": str(seq),
            "streamSid": SID,
            "media": {
                "track": track,
                "chunk": str(seq - 1),
                "timestamp": str(20 * (seq - 2)),
                "payload": base64.b64encode(payload).decode(),
            },
        }
    )


def started() -> TwilioAdapter:
    adapter = TwilioAdapter()
    adapter.receive(CONNECTED)
    adapter.receive(START)
    return adapter


def test_a_whole_stream_gives_the_expected_events() -> None:
    """connected/start/media/dtmf/mark/stop map to typed events with the call's ids."""
    adapter = TwilioAdapter()
    assert adapter.receive(CONNECTED) == [Ignored("connected")]
    (start,) = adapter.receive(START)
    assert start == CallStarted(
        carrier="twilio",
        call_sid="CA00000000000000000000000000000001",
        stream_sid=SID,
        account_sid="AC00000000000000000000000000000001",
        parameters={"From": "+15550001", "To": "+15550002"},
        audio_format=ULAW_8K,
        tracks=("inbound",),
    )
    assert adapter.receive(media(2, b"\xff" * 160)) == [Audio(b"\xff" * 160)]
    assert adapter.receive(
        json.dumps(
            {"event": "dtmf", "streamSid": SID, "sequenceNumber": "3", "dtmf": {"track": "inbound_track", "digit": "7"}}
        )
    ) == [Dtmf("7")]
    assert adapter.receive(
        json.dumps({"event": "mark", "streamSid": SID, "sequenceNumber": "4", "mark": {"name": "utt-1"}})
    ) == [MarkReached("utt-1")]
    stop = json.dumps(
        {"event": "stop", "sequenceNumber": "5", "streamSid": SID, "stop": {"accountSid": "AC0", "callSid": "CA0"}}
    )
    assert adapter.receive(stop) == [CallStopped("stop")]
    assert adapter.state is StreamState.ENDED
    assert adapter.counters.audio_bytes == 160


def test_writer_and_adapter_agree() -> None:
    """The simulator's messages parse back into the audio it played."""
    writer = TwilioStreamWriter("CA1", "MZ1", parameters={"x": "y"})
    adapter = TwilioAdapter()
    audio = bytes(range(256)) * 3
    events = [e for m in writer.call(audio) for e in adapter.receive(m)]
    assert b"".join(e.payload for e in events if isinstance(e, Audio)) == audio
    assert not [e for e in events if isinstance(e, Gap)]


def test_sequence_gaps_are_reported_not_fatal() -> None:
    """A skipped sequenceNumber gives a Gap event and the audio still comes through."""
    adapter = started()
    adapter.receive(media(2, b"\x00"))
    events = adapter.receive(media(5, b"\x01"))
    assert events == [Gap(3, 5), Audio(b"\x01")]
    assert adapter.counters.gaps == 1


def test_outbound_track_audio_is_ignored() -> None:
    """With both_tracks, what is played to the caller is not transcribed."""
    adapter = started()
    assert adapter.receive(media(2, b"\x00", track="outbound")) == [Ignored("outbound_media")]


def test_unknown_events_are_ignored_and_flagged() -> None:
    """A future Twilio event does not end the call; it is reported as unknown."""
    adapter = started()
    assert adapter.receive(json.dumps({"event": "newthing", "sequenceNumber": "2", "streamSid": SID})) == [
        Ignored("newthing", unknown=True)
    ]


@pytest.mark.parametrize(
    ("message", "code", "match"),
    [
        ("not json", 1007, "not valid JSON"),
        ("[1, 2]", 1007, "not a JSON object"),
        ('{"no_event": 1}', 1007, "no 'event'"),
        ('{"event": "start", "sequenceNumber": "1"}', 1007, "start.start"),
        ('{"event": "start", "start": {"streamSid": "MZ1"}}', 1007, "callSid"),
        (
            '{"event": "start", "start": {"streamSid": "MZ1", "callSid": "CA1", "customParameters": {"a": 1}}}',
            1007,
            "customParameters",
        ),
        (
            '{"event": "start", "start": {"streamSid": "MZ1", "callSid": "CA1", '
            '"mediaFormat": {"encoding": "audio/x-l16", "sampleRate": 16000, "channels": 1}}}',
            1003,
            "mediaFormat",
        ),
        ('{"event": "start", "sequenceNumber": "x", "start": {}}', 1007, "sequenceNumber"),
    ],
)
def test_malformed_messages_before_start(message: str, code: int, match: str) -> None:
    """Each malformed message is refused with a close code and a reason that names the problem."""
    with pytest.raises(PhoneProtocolError, match=match) as err:
        TwilioAdapter().receive(message)
    assert err.value.close_code == code


def test_media_before_start_is_a_policy_violation() -> None:
    """Audio before the stream's start closes with 1008."""
    adapter = TwilioAdapter()
    with pytest.raises(PhoneProtocolError, match="before 'start'") as err:
        adapter.receive(media(1, b"\xff"))
    assert err.value.close_code == 1008


@pytest.mark.parametrize(
    ("message", "code", "match"),
    [
        (media(2, b"").replace('"payload": ""', '"payload": "@@not base64@@"'), 1007, "base64"),
        (
            json.dumps({"event": "media", "streamSid": SID, "sequenceNumber": "2", "media": {"track": "inbound"}}),
            1007,
            "payload",
        ),
        (
            json.dumps({"event": "media", "streamSid": "MZother", "sequenceNumber": "2", "media": {"payload": ""}}),
            1008,
            "streamSid",
        ),
        (START, 1008, "second 'start'"),
        (json.dumps({"event": "dtmf", "streamSid": SID, "sequenceNumber": "2", "dtmf": {}}), 1007, "digit"),
    ],
)
def test_malformed_messages_while_streaming(message: str, code: int, match: str) -> None:
    """Bad base64, missing fields, a foreign streamSid or a second start are refused."""
    with pytest.raises(PhoneProtocolError, match=match) as err:
        started().receive(message)
    assert err.value.close_code == code


def test_binary_frames_are_unsupported_data() -> None:
    """Twilio only sends text; a binary frame closes with 1003."""
    with pytest.raises(PhoneProtocolError) as err:
        TwilioAdapter().receive(b"\x00\x01")
    assert err.value.close_code == 1003


def test_messages_after_stop_are_refused() -> None:
    adapter = started()
    adapter.receive(json.dumps({"event": "stop", "streamSid": SID, "sequenceNumber": "2", "stop": {}}))
    with pytest.raises(PhoneProtocolError, match="after stop"):
        adapter.receive(media(3, b"\xff"))


def test_outbound_messages() -> None:
    """Audio back, mark and clear carry the stream's sid (for the bot reply loop)."""
    adapter = started()
    (message,) = adapter.audio_messages(b"\xff" * 160)  # 20 ms, Twilio's unit
    assert json.loads(message) == {"event": "media", "streamSid": SID, "media": {"payload": "////" * 53 + "/w=="}}
    assert json.loads(adapter.mark_message("m1")) == {"event": "mark", "streamSid": SID, "mark": {"name": "m1"}}
    assert json.loads(adapter.clear_message()) == {"event": "clear", "streamSid": SID}


def test_twiml_connects_the_stream_with_parameters_then_hangs_up() -> None:
    """The TwiML is what the official SDK builds: a <Connect><Stream> with escaped <Parameter>s (empty
    ones left out), then <Hangup/> (or a <Redirect>) for when the stream ends."""
    from xml.etree.ElementTree import canonicalize

    from twilio.twiml.voice_response import Connect, VoiceResponse

    def official(after_url: str) -> str:
        response = VoiceResponse()
        connect = Connect()
        stream = connect.stream(url="wss://b.example/twilio/stream")
        stream.parameter(name="From", value="+1<2>")
        stream.parameter(name="To", value="+3")
        response.append(connect)
        if after_url:
            response.redirect(after_url)
        else:
            response.hangup()
        return canonicalize(str(response))

    xml = connect_stream_twiml("wss://b.example/twilio/stream", {"From": "+1<2>", "To": "+3", "X": ""})
    assert canonicalize(xml) == official("")
    xml = connect_stream_twiml(
        "wss://b.example/twilio/stream", {"From": "+1<2>", "To": "+3"}, "https://app.example/next?a=1&b=2"
    )
    assert canonicalize(xml) == official("https://app.example/next?a=1&b=2")
    # with an action URL (what /twilio/voice writes): <Connect action=...> and nothing after it
    response = VoiceResponse()
    connect = Connect(action="https://b.example/twilio/after-stream?x=1&y=2")
    connect.stream(url="wss://b.example/twilio/stream").parameter(name="From", value="+1")
    response.append(connect)
    xml = connect_stream_twiml(
        "wss://b.example/twilio/stream", {"From": "+1"}, action_url="https://b.example/twilio/after-stream?x=1&y=2"
    )
    assert canonicalize(xml) == canonicalize(str(response))


def test_fork_twiml_starts_a_both_tracks_stream_then_dials_or_redirects() -> None:
    """Fork mode (a call between people) is what the official SDK builds: <Start><Stream
    track="both_tracks"> with the <Parameter>s, then <Dial><Number> or a <Redirect> to the app's TwiML."""
    from xml.etree.ElementTree import canonicalize

    from twilio.twiml.voice_response import Dial, Start, VoiceResponse

    def official(dial: str, redirect: str) -> str:
        response = VoiceResponse()
        start = Start()
        stream = start.stream(url="wss://b.example/twilio/stream", track="both_tracks")
        stream.parameter(name="From", value="+1<2>")
        stream.parameter(name="To", value="+3")
        response.append(start)
        if dial:
            d = Dial()
            d.number(dial)
            response.append(d)
        else:
            response.redirect(redirect)
        return canonicalize(str(response))

    params = {"From": "+1<2>", "To": "+3", "X": ""}
    xml = fork_stream_twiml("wss://b.example/twilio/stream", params, dial="+15550142")
    assert canonicalize(xml) == official("+15550142", "")
    xml = fork_stream_twiml("wss://b.example/twilio/stream", params, redirect_url="https://app.example/t?a=1&b=2")
    assert canonicalize(xml) == official("", "https://app.example/t?a=1&b=2")
    with pytest.raises(ValueError, match="exactly one"):
        fork_stream_twiml("wss://b.example/twilio/stream", params)


def test_a_both_tracks_stream_is_both_parties_and_one_way() -> None:
    """Twilio's both_tracks start (tracks inbound and outbound): two channels, each media message one
    party's track with its timestamp; nothing can be played back on such a stream."""
    adapter = TwilioAdapter()
    (started_event,) = adapter.receive(
        json.dumps(
            {
                "event": "start",
                "sequenceNumber": "1",
                "streamSid": SID,
                "start": {
                    "streamSid": SID,
                    "accountSid": "AC" + "0" * 32,
                    "callSid": "CA" + "0" * 32,
                    "tracks": ["inbound", "outbound"],
                    "customParameters": {},
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                },
            }
        )
    )
    assert isinstance(started_event, CallStarted) and started_event.channels == 2
    # Twilio's own example: an outbound chunk "1" then an inbound chunk "2", timestamps as strings.
    out = adapter.receive(
        json.dumps(
            {
                "event": "media",
                "sequenceNumber": "2",
                "streamSid": SID,
                "media": {"track": "outbound", "chunk": "1", "timestamp": "5", "payload": "/w=="},
            }
        )
    ) + adapter.receive(
        json.dumps(
            {
                "event": "media",
                "sequenceNumber": "3",
                "streamSid": SID,
                "media": {"track": "inbound", "chunk": "2", "timestamp": "5", "payload": "fw=="},
            }
        )
    )
    assert out == [Audio(b"\xff", 1, 5.0), Audio(b"\x7f", 0, 5.0)]
    assert not adapter.plays_audio and not adapter.supports_marks and not adapter.supports_clear


def test_signature_known_vector() -> None:
    """HMAC-SHA1 over URL + sorted form fields (Twilio's documented example, token 12345)."""
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    params = {
        "CallSid": "CA1234567890ABCDE",
        "Caller": "+12349013030",
        "Digits": "1234",
        "From": "+12349013030",
        "To": "+18005551212",
    }
    assert signature("12345", url, params) == "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
    assert signature_valid("12345", url, "0/KCTR6DLpKmkAf8muzZqo1nDgQ=", params)
    assert not signature_valid("12345", url, "0/KCTR6DLpKmkAf8muzZqo1nDgQ=", {**params, "Digits": "9"})
    assert not signature_valid("12345", url, None, params)


def test_signature_accepts_a_trailing_slash_on_websocket_urls() -> None:
    """Twilio may sign the stream URL with a trailing slash; both spellings are accepted."""
    url = "wss://bridge.example.org/twilio/stream"
    assert signature_valid("tok", url, signature("tok", url + "/"))
    assert signature_valid("tok", url, signature("tok", url))
    assert not signature_valid("other", url, signature("tok", url))


@pytest.mark.parametrize("seed", range(20))
def test_signature_matches_the_official_request_validator(seed: int) -> None:
    """Our signature equals twilio.request_validator.RequestValidator's on varied URLs and forms."""
    import random

    from twilio.request_validator import RequestValidator

    rng = random.Random(seed)
    token = rng.randbytes(16).hex()
    url = f"https://bridge{seed}.example.org/twilio/voice" + (f"?q={rng.randint(0, 99)}" if seed % 2 else "")
    params = {
        rng.choice(["From", "To", "CallSid", "Digits", "x"]) + str(i): rng.randbytes(6).hex()
        for i in range(rng.randint(0, 6))
    }
    expected = RequestValidator(token).compute_signature(url, params)
    assert signature(token, url, params) == expected
    assert signature_valid(token, url, expected, params)
