"""Asterisk chan_websocket adapter (pure), from the literal messages chan_websocket.c builds (the
``_create_event_*`` functions) and the WebSocket channel driver page: MEDIA_START in both styles, DTMF_END,
MEDIA_MARK_PROCESSED with its positional plain-text id, ERROR as a carrier error, ignored notifications."""

from __future__ import annotations

import pytest

from bridge.adapters.asterisk import AsteriskAdapter
from bridge.adapters.base import Audio, CallStarted, CarrierError, Dtmf, FlowControl, Ignored, MarkReached
from bridge.audio import ULAW_8K, AudioFormat
from bridge.tools.writers.asterisk import AsteriskStreamWriter

# _create_event_MEDIA_START, plain: "%s %s:%s %s:%s %s:%s %s:%s %s:%d %s:%d"
PLAIN_START = (
    "MEDIA_START connection_id:conn-1 channel:WebSocket/conn-1/0x7f3a5c0012a0 channel_id:1761245643.1 "
    "format:ulaw optimal_frame_size:160 ptime:20"
)
# The driver page's example (older form: no channel_id, no ptime).
DOC_START = (
    "MEDIA_START connection_id:e226e283-c90a-4ea9-9e37-389000b9ef47 channel:WebSocket/connectionid "
    "format:ulaw optimal_frame_size:160"
)
# _create_event_MEDIA_START, JSON (AST_JSON_COMPACT), channel_variables = the channel's variables.
JSON_START = (
    '{"event":"MEDIA_START","connection_id":"conn-1","channel":"WebSocket/conn-1/0x7f3a5c0012a0",'
    '"channel_id":"1761245643.1","format":"slin16","optimal_frame_size":640,"ptime":20,'
    '"channel_variables":{"MEDIA_WEBSOCKET_CONNECTION_ID":"conn-1",'
    '"MEDIA_WEBSOCKET_OPTIMAL_FRAME_SIZE":"640","FROM":"+15550100","TO":"+15550199"}}'
)


def plain() -> AsteriskAdapter:
    adapter = AsteriskAdapter()
    adapter.receive(PLAIN_START)
    return adapter


def json_style() -> AsteriskAdapter:
    adapter = AsteriskAdapter()
    adapter.receive(JSON_START)
    return adapter


def test_plain_media_start_as_chan_websocket_builds_it() -> None:
    """Plain MEDIA_START: call id = channel_id, stream id = connection_id, ulaw 8 kHz, frame size read."""
    adapter = AsteriskAdapter()
    (start,) = adapter.receive(PLAIN_START)
    assert isinstance(start, CallStarted)
    assert (start.call_sid, start.stream_sid, start.audio_format) == ("1761245643.1", "conn-1", ULAW_8K)
    assert start.parameters == {"channel": "WebSocket/conn-1/0x7f3a5c0012a0"}
    assert adapter.optimal_frame_size == 160
    assert adapter.receive(b"\xff" * 160) == [Audio(b"\xff" * 160)]


def test_the_driver_pages_media_start_example_is_accepted() -> None:
    """The documentation's MEDIA_START (no channel_id) starts the call, named by its channel."""
    (start,) = AsteriskAdapter().receive(DOC_START)
    assert isinstance(start, CallStarted)
    assert start.call_sid == "WebSocket/connectionid"
    assert start.stream_sid == "e226e283-c90a-4ea9-9e37-389000b9ef47"


def test_json_media_start_with_channel_variables() -> None:
    """JSON MEDIA_START: slin16 is 16 kHz PCM and channel_variables become the call's parameters."""
    adapter = AsteriskAdapter()
    (start,) = adapter.receive(JSON_START)
    assert isinstance(start, CallStarted)
    assert start.audio_format == AudioFormat("pcm16", 16000) and start.call_sid == "1761245643.1"
    assert start.parameters["MEDIA_WEBSOCKET_OPTIMAL_FRAME_SIZE"] == "640"
    assert (start.parameters["FROM"], start.parameters["TO"]) == ("+15550100", "+15550199")
    assert adapter.receive(b"\x01\x00" * 320) == [Audio(b"\x01\x00" * 320)]


def test_dtmf_end_in_both_styles() -> None:
    """DTMF_END digit:n channel_id:<id> (plain) and {"event":"DTMF_END",...,"digit"} (JSON) give the digit."""
    assert plain().receive("DTMF_END digit:5 channel_id:1761245643.1") == [Dtmf("5")]
    assert json_style().receive('{"event":"DTMF_END","channel_id":"1761245643.1","digit":"#"}') == [Dtmf("#")]


@pytest.mark.parametrize(
    ("message", "name"),
    [
        ("MEDIA_MARK_PROCESSED m1", "m1"),
        ("MEDIA_MARK_PROCESSED reply 3", "reply 3"),
        ("MEDIA_MARK_PROCESSED reply-3: after the greeting", "reply-3: after the greeting"),
        ("MEDIA_MARK_PROCESSED correlation_id:m1", "m1"),
        ("MEDIA_MARK_PROCESSED correlation_id:reply 3", "reply 3"),
    ],
)
def test_plain_mark_processed_id_is_the_rest_of_the_line(message: str, name: str) -> None:
    """Plain MEDIA_MARK_PROCESSED <id>: the id is everything after the name (spaces, colons), or after
    correlation_id: as some versions echo it."""
    assert plain().receive(message) == [MarkReached(name)]


def test_json_mark_processed_reads_correlation_id() -> None:
    """JSON MEDIA_MARK_PROCESSED reports the mark named by correlation_id."""
    adapter = json_style()
    assert adapter.receive('{"event":"MEDIA_MARK_PROCESSED","correlation_id":"m1"}') == [MarkReached("m1")]
    message = '{"event":"MEDIA_MARK_PROCESSED","channel_id":"1761245643.1","correlation_id":"a b:c"}'
    assert adapter.receive(message) == [MarkReached("a b:c")]


def test_a_mark_the_bridge_sends_comes_back_with_its_whole_name() -> None:
    """MARK_MEDIA <id> echoed as MEDIA_MARK_PROCESSED <id> (Asterisk: id = rest of the command) round-trips."""
    adapter = plain()
    command = adapter.mark_message("reply 7: bye")
    assert command == "MARK_MEDIA reply 7: bye"
    echoed = "MEDIA_MARK_PROCESSED " + command.split(" ", 1)[1]
    assert adapter.receive(echoed) == [MarkReached("reply 7: bye")]


@pytest.mark.parametrize(
    ("message", "detail"),
    [
        (
            "ERROR channel_id:1761245643.1 error_text:FLUSH_MEDIA not supported in passthrough mode",
            "FLUSH_MEDIA not supported in passthrough mode",
        ),
        ("ERROR channel_id:1761245643.1 error_text:Unable to parse JSON command", "Unable to parse JSON command"),
        ("ERROR Unable to parse JSON command", "Unable to parse JSON command"),
    ],
)
def test_plain_error_is_a_carrier_error(message: str, detail: str) -> None:
    """Plain ERROR (as _create_event_ERROR builds it, or ERROR <text>) is a CarrierError with its text."""
    assert plain().receive(message) == [CarrierError(detail)]


def test_json_error_is_a_carrier_error() -> None:
    """{"event":"ERROR","channel_id":...,"error_text":...} is a CarrierError with error_text, not unknown."""
    message = (
        '{"event":"ERROR","channel_id":"1761245643.1","error_text":"MARK_MEDIA not supported in passthrough mode"}'
    )
    assert json_style().receive(message) == [CarrierError("MARK_MEDIA not supported in passthrough mode")]


def test_error_without_text_is_still_a_carrier_error() -> None:
    """A bare ERROR (either style) is a CarrierError with a placeholder detail."""
    (plain_event,) = plain().receive("ERROR")
    (json_event,) = json_style().receive('{"event":"ERROR","channel_id":"1761245643.1"}')
    assert isinstance(plain_event, CarrierError) and plain_event.detail
    assert isinstance(json_event, CarrierError) and json_event.detail


def test_flow_control_says_when_the_frame_queue_is_full_and_has_room_again() -> None:
    """MEDIA_XOFF (the queue near its high-water mark) and MEDIA_XON (back below the low one): the
    bridge stops sending audio between them."""
    assert plain().receive("MEDIA_XOFF") == [FlowControl(paused=True)]
    assert plain().receive("MEDIA_XON") == [FlowControl(paused=False)]
    assert json_style().receive('{"event":"MEDIA_XOFF","channel_id":"1761245643.1"}') == [FlowControl(paused=True)]


@pytest.mark.parametrize(
    "message",
    [
        "QUEUE_DRAINED",
        "MEDIA_BUFFERING_COMPLETED",
        "MEDIA_BUFFERING_COMPLETED buf 1",
        "STATUS channel_id:1761245643.1 queue_length:43 xon_level:800 xoff_level:900 queue_full:false "
        "bulk_media:true media_paused:false",
    ],
)
def test_flow_control_and_status_notifications_are_known_and_ignored(message: str) -> None:
    """QUEUE_DRAINED, MEDIA_BUFFERING_COMPLETED and STATUS are ignored as known events."""
    (event,) = plain().receive(message)
    assert isinstance(event, Ignored) and not event.unknown


def test_writer_sends_the_messages_chan_websocket_builds() -> None:
    """AsteriskStreamWriter's MEDIA_START and DTMF_END, plain and JSON, are the literal forms above."""
    plain_writer = AsteriskStreamWriter("1761245643.1", "ulaw")
    messages = list(plain_writer.call(b"\xff" * 320, 160))
    assert messages == [PLAIN_START, b"\xff" * 160, b"\xff" * 160]
    assert plain_writer.dtmf("5") == "DTMF_END digit:5 channel_id:1761245643.1"
    json_writer = AsteriskStreamWriter("1761245643.1", "slin16", json_style=True)
    assert next(iter(json_writer.call(b"", 640))) == JSON_START
    assert json_writer.dtmf("#") == '{"event":"DTMF_END","channel_id":"1761245643.1","digit":"#"}'
