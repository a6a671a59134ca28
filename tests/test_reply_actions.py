"""The action vocabulary as the issue names it: each type, its defaults, and errors that name the field."""

from __future__ import annotations

import base64
import json

import pytest

from bridge.errors import ActionError
from bridge.reply.actions import (
    MAX_ACTIONS,
    AudioChunk,
    Configure,
    Hangup,
    Mark,
    Play,
    Say,
    SendDtmf,
    Stop,
    parse_actions,
)


def test_every_action_type_parses_with_its_defaults() -> None:
    wav = base64.b64encode(b"RIFF....WAVE").decode()
    pcm = base64.b64encode(b"\x00\x01" * 80).decode()
    actions = parse_actions(
        json.dumps(
            {
                "actions": [
                    {"type": "say", "text": "Hello there."},
                    {
                        "type": "say",
                        "id": "a2",
                        "text": "Sorry?",
                        "interrupt": "none",
                        "queue": "replace",
                        "in_reply_to": "u1",
                    },
                    {"type": "play", "audio": wav},
                    {"type": "play", "url": "https://prompts.example.com/hold.wav", "interrupt": "dtmf"},
                    {"type": "audio", "stream_id": "s1", "audio": pcm, "sample_rate": 24000},
                    {"type": "stop"},
                    {"type": "mark", "name": "menu-1"},
                    {"type": "dtmf", "digits": "1w2#"},
                    {"type": "hangup"},
                    {"type": "hangup", "after": "now"},
                    {
                        "type": "configure",
                        "barge_in": {"min_words": 3, "false_interruption_timeout": 1.5},
                        "voice": "joe",
                    },
                ]
            }
        )
    )
    say, say2, play, play_url, audio, stop, mark, dtmf, hangup, hangup_now, configure = actions
    assert isinstance(say, Say) and say.interrupt == "speech" and say.queue == "append" and say.in_reply_to is None
    assert say.id.startswith("act_") and say.id != say2.id
    assert isinstance(say2, Say) and (say2.id, say2.interrupt, say2.queue, say2.in_reply_to) == (
        "a2",
        "none",
        "replace",
        "u1",
    )
    assert isinstance(play, Play) and play.audio == b"RIFF....WAVE" and play.url is None
    assert isinstance(play_url, Play) and play_url.interrupt == "dtmf"
    assert isinstance(audio, AudioChunk) and audio.audio == b"\x00\x01" * 80 and not audio.last
    assert isinstance(stop, Stop) and isinstance(mark, Mark) and mark.name == "menu-1"
    assert isinstance(dtmf, SendDtmf) and dtmf.digits == "1w2#"
    assert isinstance(hangup, Hangup) and hangup.after == "playback"
    assert isinstance(hangup_now, Hangup) and hangup_now.after == "now"
    assert isinstance(configure, Configure) and configure.barge_in is not None
    assert configure.barge_in.min_words == 3 and configure.barge_in.enabled is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not json", "body is not JSON"),
        (b'{"acts": []}', "unknown key"),
        (b'{"actions": {"type": "say"}}', '{"actions": [...]}'),
        (b'{"actions": [{"type": "sing", "text": "la"}]}', "actions[0].type: 'sing' is not one of"),
        (b'{"actions": [{"type": "stop"}, {"type": "say"}]}', "actions[1].text"),
        (b'{"actions": [{"type": "say", "text": "   "}]}', "actions[0]: say needs a non-empty 'text'"),
        (b'{"actions": [{"type": "say", "text": "hi", "interrupt": "never"}]}', "actions[0].interrupt"),
        (b'{"actions": [{"type": "say", "text": "hi", "colour": "blue"}]}', "actions[0].colour"),
        (b'{"actions": [{"type": "play"}]}', "exactly one of 'audio'"),
        (b'{"actions": [{"type": "play", "url": "http://x/a.wav"}]}', "must be https://"),
        (b'{"actions": [{"type": "play", "audio": "***"}]}', "actions[0].audio: 'audio' is not base64"),
        (
            b'{"actions": [{"type": "audio", "stream_id": "s", "audio": "AAE=", "sample_rate": 11025}]}',
            "actions[0].sample_rate",
        ),
        (b'{"actions": [{"type": "audio", "stream_id": "s", "audio": "AAEC", "sample_rate": 8000}]}', "whole 16-bit"),
        (b'{"actions": [{"type": "mark", "name": "a b"}]}', "actions[0].name"),
        (b'{"actions": [{"type": "dtmf", "digits": "12x"}]}', "actions[0].digits"),
        (b'{"actions": [{"type": "hangup", "after": "later"}]}', "actions[0].after"),
        (b'{"actions": [{"type": "configure", "barge_in": {"min_words": 0}}]}', "actions[0].barge_in.min_words"),
    ],
)
def test_a_bad_request_names_the_field(body: bytes, message: str) -> None:
    with pytest.raises(ActionError) as err:
        parse_actions(body)
    assert message in str(err.value) and not err.value.too_large


def test_size_bounds_say_too_large() -> None:
    with pytest.raises(ActionError) as err:
        parse_actions({"actions": [{"type": "stop"}] * (MAX_ACTIONS + 1)})
    assert err.value.too_large
    with pytest.raises(ActionError) as err:
        parse_actions(b'{"actions": [{"type": "say", "text": "' + b"a" * (9 * 1024 * 1024) + b'"}]}')
    assert err.value.too_large
