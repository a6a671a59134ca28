"""Generated bad input: every carrier adapter and the Gladia parser only ever answer with their own
typed errors (never a crash), whatever arrives."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.adapters import CARRIERS, make_adapter
from bridge.adapters.twilio import TwilioAdapter
from bridge.errors import PhoneProtocolError, SttProtocolError, UnsupportedOperation
from bridge.stt.protocol import parse_server_message
from bridge.tools.writers.twilio import TwilioStreamWriter

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
twilio_like = st.fixed_dictionaries(
    {"event": st.sampled_from(["connected", "start", "media", "dtmf", "mark", "stop", "other"])},
    optional={
        "sequenceNumber": json_values,
        "streamSid": json_values,
        "start": json_values,
        "media": json_values,
        "dtmf": json_values,
        "mark": json_values,
        "stop": json_values,
    },
)


def feed(adapter: TwilioAdapter, message: str | bytes) -> None:
    try:
        adapter.receive(message)
    except PhoneProtocolError as exc:
        assert exc.close_code in (1003, 1007, 1008)


@settings(max_examples=1500, deadline=None)
@given(st.lists(st.one_of(st.text(max_size=200), st.binary(max_size=50), twilio_like.map(json.dumps)), max_size=6))
def test_twilio_adapter_never_crashes(messages: list[Any]) -> None:
    adapter = TwilioAdapter()
    for m in messages:
        feed(adapter, m)


@settings(max_examples=1000, deadline=None)
@given(twilio_like.map(json.dumps))
def test_twilio_adapter_after_start_never_crashes(message: str) -> None:
    writer = TwilioStreamWriter("CA1", "MZ1")
    adapter = TwilioAdapter()
    adapter.receive(writer.connected())
    adapter.receive(writer.start())
    feed(adapter, message)


gladia_like = st.fixed_dictionaries(
    {
        "type": st.sampled_from(
            [
                "transcript",
                "audio_chunk",
                "stop_recording",
                "speech_start",
                "speech_end",
                "end_session",
                "post_transcript",
                "error",
                "translation",
                "x",
            ]
        )
    },
    optional={"data": json_values, "error": json_values, "acknowledged": json_values, "session_id": json_values},
)


@settings(max_examples=2000, deadline=None)
@given(st.one_of(st.text(max_size=200), gladia_like.map(json.dumps)))
def test_gladia_parser_never_crashes(message: str) -> None:
    with contextlib.suppress(SttProtocolError):
        parse_server_message(message)


# Field names of every dialect, so generated messages reach each adapter's deeper branches.
_EVENTS = [
    "connected",
    "start",
    "media",
    "dtmf",
    "mark",
    "stop",
    "error",
    "playedStream",
    "clearedAudio",
    "websocket:connected",
    "websocket:dtmf",
    "websocket:notify",
    "MEDIA_START",
    "DTMF_END",
    "MEDIA_MARK_PROCESSED",
    "other",
]
_KEYS = [
    "sequenceNumber",
    "sequence_number",
    "streamSid",
    "stream_sid",
    "stream_id",
    "streamId",
    "start",
    "media",
    "dtmf",
    "mark",
    "stop",
    "name",
    "digit",
    "content-type",
    "callSid",
    "sampleRate",
    "mixType",
    "format",
    "channel_id",
    "connection_id",
    "extra_headers",
    "rawEvent",
    "payload",
]
any_dialect = st.fixed_dictionaries({"event": st.sampled_from(_EVENTS)}, optional={k: json_values for k in _KEYS})
asterisk_text = st.builds(
    lambda n, kv: n + " " + " ".join(f"{k}:{v}" for k, v in kv.items()),
    st.sampled_from(["MEDIA_START", "DTMF_END", "MEDIA_XOFF", "STATUS", "X"]),
    st.dictionaries(
        st.sampled_from(["format", "digit", "channel_id", "connection_id"]),
        st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", max_size=8),
        max_size=3,
    ),
)


@pytest.mark.parametrize("carrier", sorted(CARRIERS))
@settings(max_examples=400, deadline=None)
@given(
    messages=st.lists(
        st.one_of(any_dialect.map(json.dumps), st.binary(max_size=700), st.text(max_size=80), asterisk_text), max_size=8
    )
)
def test_every_adapter_answers_bad_input_with_a_close_code(carrier: str, messages: list[str | bytes]) -> None:
    adapter = make_adapter(carrier)
    assert adapter is not None
    for m in messages:
        try:
            events = adapter.receive(m)
        except PhoneProtocolError as exc:
            assert exc.close_code in (1003, 1007, 1008)
            return
        assert isinstance(events, list)
    for build in (
        lambda: [*adapter.audio_messages(b"\x00" * 700), *adapter.flush_audio()],
        lambda: [adapter.mark_message("m")],
        lambda: [adapter.clear_message()],
        adapter.close,
    ):
        try:
            out = build()
        except UnsupportedOperation:
            continue
        assert isinstance(out, list)
