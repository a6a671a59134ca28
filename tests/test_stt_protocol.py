"""Gladia live v2 messages (pure): every server message type, tolerated oddities, init body."""

from __future__ import annotations

import json

import pytest

from bridge.errors import SttProtocolError
from bridge.stt.addons import PostResults
from bridge.stt.protocol import (
    Ack,
    Lifecycle,
    OtherMessage,
    PostProcessing,
    ServerError,
    SpeechEnd,
    SpeechStart,
    StopAck,
    Transcript,
    init_request,
    parse_server_message,
)

BASE = {"session_id": "s-1", "created_at": "2026-01-01T00:00:00.000Z"}


def msg(**fields: object) -> str:
    return json.dumps({**BASE, **fields})


def test_final_transcript() -> None:
    """A final transcript's utterance, words and language are parsed."""
    event = parse_server_message(
        msg(
            type="transcript",
            data={
                "id": "00_00000003",
                "is_final": True,
                "utterance": {
                    "start": 0.19,
                    "end": 1.28,
                    "confidence": 0.97,
                    "channel": 0,
                    "text": " Hello world",
                    "language": "en",
                    "words": [{"word": " Hello", "start": 0.19, "end": 0.73, "confidence": 0.98}],
                },
            },
        )
    )
    assert isinstance(event, Transcript)
    assert event.is_final and event.id == "00_00000003"
    assert event.utterance.text == " Hello world" and event.utterance.language == "en"
    assert event.utterance.words[0].word == " Hello" and event.utterance.end == 1.28


def test_acknowledgment() -> None:
    event = parse_server_message(
        msg(
            type="audio_chunk",
            acknowledged=True,
            error=None,
            data={"byte_range": [32000, 35200], "time_range": [1.0, 1.1]},
        )
    )
    assert event == Ack(32000, 35200, 1.0, 1.1)


@pytest.mark.parametrize(
    "message",
    [
        msg(type="audio_chunk", acknowledged=False, error={"message": "quota exceeded"}, data=None),
        msg(type="error", data={"code": 1, "message": "boom"}),
        msg(type="error", error={"message": "boom"}),
        msg(type="audio_chunk", acknowledged=True, error=None, data={"byte_range": "oops"}),
        msg(type="transcript", data=None),
    ],
)
def test_errors_and_null_data_become_server_errors(message: str) -> None:
    """data: null with an error, standalone errors and broken payloads never crash the parser."""
    assert isinstance(parse_server_message(message), ServerError)


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (msg(type="speech_start", data={"time": 1.5, "channel": 0}), SpeechStart(1.5, 0)),
        (msg(type="speech_end", data={"time": 2.5, "channel": 0}), SpeechEnd(2.5, 0)),
        (
            msg(
                type="stop_recording",
                acknowledged=True,
                error=None,
                data={"recording_duration": 3.0, "recording_left_to_process": 0.5},
            ),
            StopAck(3.0, 0.5),
        ),
        (msg(type="end_session"), Lifecycle("end_session")),
        (msg(type="start_recording"), Lifecycle("start_recording")),
        (
            msg(type="post_summarization", error=None, data={"results": "x"}),
            PostResults("post_summarization", summary="x"),
        ),
        (msg(type="post_something_new", data={"a": 1}), PostProcessing("post_something_new", {"a": 1})),
        (msg(type="something_new", data={}), OtherMessage("something_new")),
    ],
)
def test_other_message_types(message: str, expected: object) -> None:
    assert parse_server_message(message) == expected


@pytest.mark.parametrize("text", ["", "nope", "[]", "{}", '{"type": 3}'])
def test_unparseable_messages_raise_protocol_errors(text: str) -> None:
    with pytest.raises(SttProtocolError):
        parse_server_message(text)


def test_init_request_asks_for_addon_messages_only_when_an_addon_is_on() -> None:
    """A realtime add-on turns realtime messages on (even if the profile turned them off); a post-processing
    add-on turns post-processing messages on; without one they stay off."""
    body = init_request(
        {
            "realtime_processing": {"sentiment_analysis": True},
            "post_processing": {"summarization": True},
            "messages_config": {"receive_realtime_processing_events": False},
        },
        {},
    )
    assert body["messages_config"]["receive_realtime_processing_events"] is True
    assert body["messages_config"]["receive_post_processing_events"] is True
    plain = init_request({"realtime_processing": {"translation": False}}, {})
    assert plain["messages_config"]["receive_post_processing_events"] is False
    assert "receive_realtime_processing_events" not in plain["messages_config"]


def test_init_request_forces_acks_and_merges_metadata() -> None:
    """The profile passes through; call ids go in custom_metadata; acknowledgments are on, post-processing
    messages (the whole call's transcript again at the end) off."""
    body = init_request(
        {
            "encoding": "wav/ulaw",
            "custom_metadata": {"team": "a"},
            "messages_config": {"receive_acknowledgments": False, "receive_partial_transcripts": True},
        },
        {"call_sid": "CA1"},
    )
    assert body["custom_metadata"] == {"team": "a", "call_sid": "CA1"}
    assert body["messages_config"] == {
        "receive_acknowledgments": True,
        "receive_partial_transcripts": True,
        "receive_final_transcripts": True,
        "receive_post_processing_events": False,
    }
    assert body["encoding"] == "wav/ulaw"
