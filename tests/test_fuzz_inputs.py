"""Generated bad input: the Twilio adapter and the Gladia parser only ever answer with their own
typed errors (never a crash), whatever arrives."""

from __future__ import annotations

import contextlib
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.adapters.twilio import TwilioAdapter, TwilioStreamWriter
from bridge.errors import PhoneProtocolError
from bridge.stt.protocol import SttProtocolError, parse_server_message

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
twilio_like = st.fixed_dictionaries(
    {"event": st.sampled_from(["connected", "start", "media", "dtmf", "mark", "stop", "other"])},
    optional={"sequenceNumber": json_values, "streamSid": json_values, "start": json_values,
              "media": json_values, "dtmf": json_values, "mark": json_values, "stop": json_values},
)


def feed(adapter: TwilioAdapter, message: str | bytes) -> None:
    try:
        adapter.receive(message)
    except PhoneProtocolError as exc:
        assert exc.close_code in (1003, 1007, 1008)


@settings(max_examples=1500, deadline=None)
@given(st.lists(st.one_of(st.text(max_size=200), st.binary(max_size=50),
                          twilio_like.map(json.dumps)), max_size=6))
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
    {"type": st.sampled_from(["transcript", "audio_chunk", "stop_recording", "speech_start", "speech_end",
                              "end_session", "post_transcript", "error", "translation", "x"])},
    optional={"data": json_values, "error": json_values, "acknowledged": json_values, "session_id": json_values},
)


@settings(max_examples=2000, deadline=None)
@given(st.one_of(st.text(max_size=200), gladia_like.map(json.dumps)))
def test_gladia_parser_never_crashes(message: str) -> None:
    with contextlib.suppress(SttProtocolError):
        parse_server_message(message)
