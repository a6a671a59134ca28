"""Vonage Voice API WebSocket adapter (pure), from the literal messages of Vonage's WebSockets guide
(developer.vonage.com voice/voice-api/concepts/websockets): the first text frame, binary L16, DTMF in its
documented flat form, and DTMF shapes the guide does not show, which must never end the call."""

from __future__ import annotations

import json

import pytest

from bridge.adapters.base import Audio, CallStarted, Dtmf, Ignored, StreamState
from bridge.adapters.vonage import VonageAdapter
from bridge.audio import AudioFormat
from bridge.tools.writers.vonage import VonageStreamWriter

# The guide's own example: NCCO headers {"language": "en-GB", "caller-id": "447700900123"} flattened.
CONNECTED = (
    '{"event":"websocket:connected","content-type":"audio/l16;rate=16000","language":"en-GB",'
    '"caller-id":"447700900123"}'
)
CONNECTED_8K_WITH_IDS = (
    '{"event":"websocket:connected","content-type":"audio/l16;rate=8000",'
    '"uuid":"aaaaaaaa-bbbb-cccc-dddd-0123456789ab","from":"442079460000","to":"447700900123"}'
)
DTMF_FLAT = '{"event":"websocket:dtmf","digit":"5","duration":260}'
DTMF_NESTED = '{"event":"websocket:dtmf","dtmf":{"digit":"9","duration":260}}'


def started(message: str = CONNECTED) -> VonageAdapter:
    adapter = VonageAdapter()
    adapter.receive(message)
    return adapter


def test_documented_first_frame_gives_the_rate_and_the_flattened_headers() -> None:
    """The guide's websocket:connected starts the call at its content-type rate, its headers as parameters."""
    (start,) = VonageAdapter().receive(CONNECTED)
    assert isinstance(start, CallStarted)
    assert start.audio_format == AudioFormat("pcm16", 16000)
    assert start.parameters == {"language": "en-GB", "caller-id": "447700900123"}
    assert start.call_sid.startswith("vonage-")  # Vonage itself sends no call id


def test_uuid_and_numbers_passed_as_headers_name_the_call() -> None:
    """An NCCO header uuid is the call id; from/to headers are the caller and called numbers."""
    (start,) = VonageAdapter().receive(CONNECTED_8K_WITH_IDS)
    assert isinstance(start, CallStarted)
    assert start.call_sid == "aaaaaaaa-bbbb-cccc-dddd-0123456789ab"
    assert (start.caller, start.called) == ("442079460000", "447700900123")
    assert start.audio_format == AudioFormat("pcm16", 8000)


def test_binary_frames_are_20_ms_of_l16() -> None:
    """Binary messages after the first frame are the call's audio, 640 bytes per 20 ms at 16 kHz."""
    adapter = started()
    frame = bytes(range(256)) * 2 + bytes(128)
    assert adapter.receive(frame) == [Audio(frame)]


def test_documented_flat_dtmf_gives_the_digit() -> None:
    """{"event":"websocket:dtmf","digit":"5","duration":260}, as documented, is Dtmf("5")."""
    assert started().receive(DTMF_FLAT) == [Dtmf("5")]


def test_nested_dtmf_gives_the_digit() -> None:
    """The nested shape {"dtmf":{"digit":"9",...}} is read as Dtmf("9") instead of ending the call."""
    assert started().receive(DTMF_NESTED) == [Dtmf("9")]


@pytest.mark.parametrize(
    "message",
    [
        '{"event":"websocket:dtmf"}',
        '{"event":"websocket:dtmf","duration":260}',
        '{"event":"websocket:dtmf","digit":"","duration":260}',
        '{"event":"websocket:dtmf","digit":null}',
        '{"event":"websocket:dtmf","digit":true}',
        '{"event":"websocket:dtmf","digit":["5"]}',
        '{"event":"websocket:dtmf","digit":{"value":"5"}}',
        '{"event":"websocket:dtmf","dtmf":{}}',
        '{"event":"websocket:dtmf","dtmf":{"digit":null,"duration":260}}',
        '{"event":"websocket:dtmf","dtmf":{"digit":{"x":1}}}',
        '{"event":"websocket:dtmf","dtmf":["9"]}',
        '{"event":"websocket:dtmf","dtmf":false}',
    ],
)
def test_dtmf_without_a_readable_digit_is_ignored_and_the_call_goes_on(message: str) -> None:
    """Any DTMF shape without a readable digit gives one Ignored event, never a PhoneProtocolError."""
    adapter = started()
    (event,) = adapter.receive(message)
    assert isinstance(event, Ignored) and event.unknown
    assert adapter.state is StreamState.STREAMING
    assert adapter.receive(b"\x01\x00" * 320) == [Audio(b"\x01\x00" * 320)]  # audio keeps flowing
    assert adapter.receive(DTMF_FLAT) == [Dtmf("5")]


def test_writer_sends_the_documented_messages() -> None:
    """VonageStreamWriter's first frame, DTMF and audio frames are the guide's literal messages."""
    writer = VonageStreamWriter(
        "aaaaaaaa-bbbb-cccc-dddd-0123456789ab",
        16000,
        {"language": "en-GB", "caller-id": "447700900123"},
        id_header=None,
    )
    pcm = bytes(640 * 3)
    messages = list(writer.call(pcm, 640))
    assert messages[0] == CONNECTED
    assert list(json.loads(str(messages[0]))) == ["event", "content-type", "language", "caller-id"]
    assert messages[1:] == [bytes(640)] * 3
    assert writer.dtmf("5") == DTMF_FLAT
    with_id = VonageStreamWriter(
        "aaaaaaaa-bbbb-cccc-dddd-0123456789ab", 8000, {"from": "442079460000", "to": "447700900123"}
    )
    assert with_id.connected() == CONNECTED_8K_WITH_IDS  # the uuid as the application's first NCCO header
