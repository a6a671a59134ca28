"""Plivo Audio Streams (pure): the messages Plivo's stream SDKs and example servers show
(reference: shared/reference/carrier-conformance.md M5 and section 3.3), built by hand here."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from bridge.adapters.base import Audio, CallStarted, CallStopped, Dtmf, Gap, Ignored, StreamState
from bridge.adapters.plivo import PlivoAdapter
from bridge.errors import PhoneProtocolError
from bridge.tools.writers.plivo import PlivoStreamWriter

CALL_ID = "c1d5e0e2-7a4b-4c0e-9c39-8b8f0b0f0c11"
STREAM_ID = "20170ada-f610-433b-8758-c02a2aab3662"
ULAW = bytes(range(160))


def start(custom: Any = None, extra_headers: str = "team=support;lang=en") -> str:
    """Plivo's start: extra_headers beside start, customParameters inside it (Java SDK's StartData)."""
    body: dict[str, Any] = {
        "callId": CALL_ID,
        "streamId": STREAM_ID,
        "accountId": "MA00000000000000000A",
        "tracks": ["inbound"],
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000},
    }
    if custom is not None:
        body["customParameters"] = custom
    return json.dumps({"event": "start", "sequenceNumber": 1, "start": body, "extra_headers": extra_headers})


def media(seq: int, payload: bytes = ULAW) -> str:
    return json.dumps(
        {
            "event": "media",
            "sequenceNumber": seq,
            "streamId": STREAM_ID,
            "media": {
                "track": "inbound",
                "timestamp": "1705312200000",
                "chunk": seq - 1,
                "payload": base64.b64encode(payload).decode(),
            },
            "extra_headers": "team=support;lang=en",
        }
    )


def stop(seq: int, **extra: Any) -> str:
    """Plivo's stop, as its Go example server reads it (stop{callId, streamId, tracks})."""
    return json.dumps(
        {
            "event": "stop",
            "sequenceNumber": seq,
            "streamId": STREAM_ID,
            "stop": {"callId": CALL_ID, "streamId": STREAM_ID, "tracks": ["inbound"]},
            **extra,
        }
    )


def started(custom: Any = None, extra_headers: str = "team=support;lang=en") -> tuple[PlivoAdapter, CallStarted]:
    a = PlivoAdapter()
    (event,) = a.receive(start(custom, extra_headers))
    assert isinstance(event, CallStarted)
    return a, event


def test_custom_parameters_become_stream_parameters_beside_extra_headers() -> None:
    """start.customParameters (stt.* among them) are stream parameters, merged with extra_headers'."""
    _, event = started({"FirstName": "Jane", "stt.language": "fr"})
    assert event.parameters == {"team": "support", "lang": "en", "FirstName": "Jane", "stt.language": "fr"}


def test_custom_parameters_win_over_extra_headers_on_the_same_name() -> None:
    """A name in both keeps the customParameters value (the object is not split on ';' and '=')."""
    _, event = started({"lang": "fr;x=y"}, extra_headers="lang=en;team=support")
    assert event.parameters == {"lang": "fr;x=y", "team": "support"}


def test_custom_parameters_alone_without_extra_headers() -> None:
    """A start without extra_headers still carries its customParameters."""
    _, event = started({"From": "+15550100"}, extra_headers="")
    assert event.parameters == {"From": "+15550100"}


@pytest.mark.parametrize("custom", [["FirstName", "Jane"], "FirstName=Jane", {"nested": {"a": "b"}}])
def test_custom_parameters_that_are_not_an_object_of_strings_are_refused_with_1007(custom: Any) -> None:
    """customParameters must be an object of scalars: anything else is an invalid payload (1007)."""
    with pytest.raises(PhoneProtocolError) as err:
        PlivoAdapter().receive(start(custom))
    assert err.value.close_code == 1007


def test_stop_ends_the_stream() -> None:
    """Plivo's stop event is the end of the stream (CallStopped), not an unknown event."""
    a, _ = started()
    assert a.receive(media(2)) == [Audio(ULAW)]
    assert a.receive(stop(3)) == [CallStopped("stop")]
    assert a.state is StreamState.ENDED and a.counters.ignored == {}


def test_stop_reason_is_taken_when_present() -> None:
    """The Java SDK's StopEvent carries a reason: it becomes the CallStopped reason."""
    a, _ = started()
    assert a.receive(stop(2, reason="call_hangup")) == [CallStopped("call_hangup")]


def test_nothing_is_accepted_after_stop() -> None:
    """A message after stop breaks the dialect's order: policy violation (1008)."""
    a, _ = started()
    a.receive(stop(2))
    with pytest.raises(PhoneProtocolError) as err:
        a.receive(media(3))
    assert err.value.close_code == 1008


def test_stop_for_another_stream_is_refused_with_1008() -> None:
    """A stop naming another streamId is refused like any other stream event."""
    a, _ = started()
    with pytest.raises(PhoneProtocolError) as err:
        a.receive(stop(2).replace(f'"streamId": "{STREAM_ID}", "stop"', '"streamId": "other", "stop"'))
    assert err.value.close_code == 1008


def test_documented_call_in_order_has_no_gap() -> None:
    """start, media, dtmf, media, stop with consecutive sequence numbers: audio, digit, stop, no gap."""
    a, _ = started({"FirstName": "Jane"})
    dtmf = json.dumps(
        {
            "event": "dtmf",
            "sequenceNumber": 3,
            "streamId": STREAM_ID,
            "dtmf": {"track": "inbound", "digit": "5", "timestamp": "1705312200020"},
        }
    )
    events = [e for m in (media(2), dtmf, media(4), stop(5)) for e in a.receive(m)]
    assert events == [Audio(ULAW), Dtmf("5"), Audio(ULAW), CallStopped("stop")]
    assert not any(isinstance(e, (Gap, Ignored)) for e in events) and a.counters.gaps == 0


def test_writer_sends_plivos_documented_messages() -> None:
    """PlivoStreamWriter's start (customParameters, extra_headers), media, dtmf and final stop are
    Plivo's messages field by field; media timestamps advance by each frame's duration."""
    w = PlivoStreamWriter(
        CALL_ID,
        STREAM_ID,
        parameters={"team": "support", "lang": "en"},
        custom_parameters={"FirstName": "Jane"},
        send_stop=True,
        account_id="MA00000000000000000A",
    )
    messages = [json.loads(m) for m in w.call(ULAW * 2, 160)]
    assert messages[0] == {
        "event": "start",
        "sequenceNumber": 1,
        "start": {
            "callId": CALL_ID,
            "streamId": STREAM_ID,
            "accountId": "MA00000000000000000A",
            "tracks": ["inbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000},
            "customParameters": {"FirstName": "Jane"},
        },
        "extra_headers": "team=support;lang=en",
    }
    payload = base64.b64encode(ULAW).decode()
    assert messages[1:3] == [
        {
            "event": "media",
            "sequenceNumber": 2,
            "streamId": STREAM_ID,
            "extra_headers": "team=support;lang=en",
            "media": {"track": "inbound", "timestamp": "1700000000000", "chunk": 1, "payload": payload},
        },
        {
            "event": "media",
            "sequenceNumber": 3,
            "streamId": STREAM_ID,
            "extra_headers": "team=support;lang=en",
            "media": {"track": "inbound", "timestamp": "1700000000020", "chunk": 2, "payload": payload},
        },
    ]
    assert messages[3] == {
        "event": "stop",
        "sequenceNumber": 4,
        "streamId": STREAM_ID,
        "stop": {"callId": CALL_ID, "streamId": STREAM_ID, "tracks": ["inbound"]},
    }
    assert len(messages) == 4
    assert json.loads(w.dtmf("7")) == {
        "event": "dtmf",
        "sequenceNumber": 5,
        "streamId": STREAM_ID,
        "dtmf": {"track": "inbound", "digit": "7", "timestamp": "1700000000040"},
    }
    assert json.loads(w.stop("call_hangup"))["reason"] == "call_hangup"


def test_audio_track_both_is_both_parties_each_track_with_its_epoch_timestamp() -> None:
    """audioTrack="both": start.tracks lists inbound and outbound; each media message is one party's
    track (outbound: the other party, track 1) with media.timestamp, Plivo's epoch milliseconds."""
    a = PlivoAdapter()
    body = json.loads(start())
    body["start"]["tracks"] = ["inbound", "outbound"]
    (event,) = a.receive(json.dumps(body))
    assert isinstance(event, CallStarted) and event.channels == 2
    out_msg = json.loads(media(2, b"\x01" * 160))
    out_msg["media"].update(track="outbound", timestamp="1705312200020")
    assert a.receive(json.dumps(out_msg)) == [Audio(b"\x01" * 160, 1, 1705312200020.0)]
    assert a.receive(media(3)) == [Audio(ULAW, 0, 1705312200000.0)]
