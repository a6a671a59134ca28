"""The Telnyx dialect against Telnyx's own documents (pure): messages written out by hand as the media
streaming guide shows them (reference: shared/reference/telephony-media-streams.md section 2.2 and
carrier-conformance.md section 3.2), RTP payload byte order, reordering and its flush, codecs,
custom parameters, both tracks, and the simulator's writer checked against the same literal shapes."""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.adapters.base import Audio, CallStarted, CallStopped, Gap, Ignored, PhoneEvent
from bridge.adapters.telnyx import REORDER_WINDOW, ChunkReorderer, TelnyxAdapter
from bridge.audio import ALAW_8K, ULAW_8K, AudioFormat
from bridge.errors import PhoneProtocolError
from bridge.tools.writers.telnyx import TelnyxStreamWriter

STREAM_ID = "32de0dea-53cb-4b21-89a4-9e6a3eb1d9bb"
CALL_CONTROL_ID = "v3:MdI91X4lWFEs7IgbBEOT9M4AigoY08M0WWZFISt1Yw2axZ_IiE4pqg"
CALL_SESSION_ID = "ff55a038-4f5b-11ee-9e7c-02420a0d4169"
USER_ID = "3e6f995f-85f7-4705-9741-53b116d28237"

CONNECTED = '{"event": "connected", "version": "1.0.0"}'


def start_message(encoding: str = "PCMU", sample_rate: int = 8000, **extra: Any) -> str:
    """The documented ``start``: sequence_number "1", stream_id at the top, the call's ids inside."""
    start = {
        "user_id": USER_ID,
        "call_control_id": CALL_CONTROL_ID,
        "call_session_id": CALL_SESSION_ID,
        "from": "+13122010094",
        "to": "+13122123456",
        "client_state": "aGF2ZSBhIG5pY2UgZGF5ID1d",
        "tags": ["support"],
        "media_format": {"encoding": encoding, "sample_rate": sample_rate, "channels": 1},
    }
    start.update(extra)
    return json.dumps({"event": "start", "sequence_number": "1", "stream_id": STREAM_ID, "start": start})


def media_message(chunk: int, payload: bytes, track: str = "inbound", seq: int | None = None) -> str:
    """The documented ``media``: strings for sequence_number, chunk and timestamp, base64 RTP payload."""
    return json.dumps(
        {
            "event": "media",
            "sequence_number": str(seq if seq is not None else chunk + 1),
            "stream_id": STREAM_ID,
            "media": {
                "track": track,
                "chunk": str(chunk),
                "timestamp": str(20 * chunk),
                "payload": base64.b64encode(payload).decode(),
            },
        }
    )


STOP = json.dumps(
    {
        "event": "stop",
        "sequence_number": "999",
        "stream_id": STREAM_ID,
        "stop": {"user_id": USER_ID, "call_control_id": CALL_CONTROL_ID},
    }
)


def started(encoding: str = "PCMU", sample_rate: int = 8000) -> TelnyxAdapter:
    a = TelnyxAdapter()
    assert a.receive(CONNECTED) == [Ignored("connected")]
    (start,) = a.receive(start_message(encoding, sample_rate))
    assert isinstance(start, CallStarted)
    return a


def audio_of(events: list[PhoneEvent]) -> bytes:
    return b"".join(e.payload for e in events if isinstance(e, Audio))


def gaps_of(events: list[PhoneEvent]) -> list[Gap]:
    return [e for e in events if isinstance(e, Gap)]


def refusal(adapter: TelnyxAdapter, message: str) -> PhoneProtocolError:
    with pytest.raises(PhoneProtocolError) as err:
        adapter.receive(message)
    return err.value


def chunk_payload(n: int) -> bytes:
    return bytes([n % 256]) * 160


# -- H1: L16 is network byte order ----------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["L16", "audio/x-l16", "l16", "AUDIO/X-L16"])
def test_l16_payload_is_swapped_from_network_order(encoding: str) -> None:
    """L16 RTP payloads are big-endian (RFC 3551 4.5.11): the bridge gets the same samples little-endian."""
    samples = [0, 1, -2, 0x1234, -32768, 32767]
    a = started(encoding, 16000)
    assert a.audio_format == AudioFormat("pcm16", 16000)
    (audio,) = a.receive(media_message(1, struct.pack(">6h", *samples)))
    assert audio == Audio(struct.pack("<6h", *samples))
    assert a.counters.audio_bytes == 12


def test_l16_odd_byte_is_kept_for_the_next_payload() -> None:
    """A payload ending mid-sample keeps its odd byte until the next payload completes the sample."""
    a = started("L16", 16000)
    assert a.receive(media_message(1, b"\x12\x34\x56")) == [Audio(b"\x34\x12")]
    assert a.receive(media_message(2, b"\x78\x9a\xbc")) == [Audio(b"\x78\x56\xbc\x9a")]
    assert a.receive(media_message(3, b"\x01")) == []  # half a sample: nothing yet
    assert a.receive(media_message(4, b"\x02")) == [Audio(b"\x02\x01")]


@pytest.mark.parametrize(("encoding", "fmt"), [("PCMU", ULAW_8K), ("PCMA", ALAW_8K)])
def test_g711_payload_passes_through_unchanged(encoding: str, fmt: AudioFormat) -> None:
    """G.711 payloads are bytes per sample: no swapping, the carrier's bytes reach the bridge as sent."""
    a = started(encoding)
    assert a.audio_format == fmt
    assert a.receive(media_message(1, b"\x01\x02\x03")) == [Audio(b"\x01\x02\x03")]


# -- M1: the reorder buffer is flushed at the end -------------------------------------------------


def test_stop_flushes_chunks_held_behind_a_lost_one() -> None:
    """100 chunks, 97 never sent: at stop chunks 98-100 come out in order after a Gap, then CallStopped."""
    a = started()
    events = [e for n in range(1, 101) if n != 97 for e in a.receive(media_message(n, chunk_payload(n)))]
    assert audio_of(events) == b"".join(chunk_payload(n) for n in range(1, 97))  # 98-100 wait for 97
    at_stop = a.receive(STOP)
    assert at_stop == [
        Gap(97, 98),
        Audio(chunk_payload(98)),
        Audio(chunk_payload(99)),
        Audio(chunk_payload(100)),
        CallStopped("stop"),
    ]
    assert a.counters.gaps == 1 and a.counters.audio_bytes == 99 * 160
    assert a.close() == []  # handed over once


def test_close_without_stop_returns_the_held_chunks() -> None:
    """The socket closing without stop: close() returns the held chunks in order, each jump a Gap."""
    a = started()
    for n in (1, 2, 4, 5, 7):  # 3 and 6 never come
        a.receive(media_message(n, chunk_payload(n)))
    assert a.close() == [
        Gap(3, 4),
        Audio(chunk_payload(4)),
        Audio(chunk_payload(5)),
        Gap(6, 7),
        Audio(chunk_payload(7)),
    ]
    assert a.counters.gaps == 2
    assert a.close() == []


def test_flush_keeps_an_l16_stream_in_network_order() -> None:
    """L16 chunks released by the flush are swapped like any other."""
    a = started("L16", 16000)
    a.receive(media_message(2, struct.pack(">2h", 1, 2)))
    a.receive(media_message(3, struct.pack(">2h", 3, 4)))
    assert audio_of(a.receive(STOP)) == struct.pack("<4h", 1, 2, 3, 4)


# -- chunk numbering: from 0 or from 1 -------------------------------------------------------------


@pytest.mark.parametrize("order", [(0, 1, 2, 3), (0, 2, 1, 3), (2, 0, 1, 3), (3, 0, 2, 1)])
def test_numbering_from_zero_keeps_chunk_zero(order: tuple[int, ...]) -> None:
    """A stream numbered from 0 keeps chunk 0, first or overtaken by later chunks held for chunk 1."""
    a = started()
    events = [e for n in order for e in a.receive(media_message(n, chunk_payload(n)))]
    events += a.receive(STOP)
    assert audio_of(events) == b"".join(chunk_payload(n) for n in range(4)) and a.counters.gaps == 0


@pytest.mark.parametrize("order", [(1, 2, 3), (2, 1, 3), (3, 1, 2)])
def test_numbering_from_one_has_no_gap(order: tuple[int, ...]) -> None:
    """A stream numbered from 1 has no gap for a chunk 0 that never exists."""
    a = started()
    events = [e for n in order for e in a.receive(media_message(n, chunk_payload(n)))] + a.receive(STOP)
    assert audio_of(events) == b"".join(chunk_payload(n) for n in (1, 2, 3)) and gaps_of(events) == []


def test_reorderer_reports_the_jump_and_counts_the_missing_numbers() -> None:
    """A jump past the window reports (expected, received) and counts each missing number."""
    r = ChunkReorderer(window=2)
    assert r.push(1, b"a") == [(b"a", None)]
    assert r.push(4, b"d") == [] and r.push(5, b"e") == []
    assert r.push(6, b"f") == [(b"d", (2, 4)), (b"e", None), (b"f", None)]
    assert r.missing == 2 and r.push(2, b"b") == [] and r.late == 1


# -- M8: codecs -----------------------------------------------------------------------------------


@pytest.mark.parametrize("codec", ["G722", "OPUS", "AMR-WB"])
def test_other_telnyx_codecs_are_refused_with_the_setting_that_avoids_them(codec: str) -> None:
    """G722, OPUS and AMR-WB (e.g. a 'default' stream on an HD leg) close with 1003 naming the fix."""
    err = refusal(TelnyxAdapter(), start_message(codec, 16000))
    assert err.close_code == 1003
    assert err.reason == (
        f"Telnyx codec {codec} is not supported: set stream_codec, or TeXML <Stream codec>, to PCMU, PCMA or L16"
    )
    assert len(err.reason.encode()) <= 120  # it is the close reason the carrier gets


@pytest.mark.parametrize(
    ("encoding", "rate", "fmt"),
    [
        ("pcmu", 8000, ULAW_8K),
        ("Pcma", 8000, ALAW_8K),
        ("audio/x-mulaw", 8000, ULAW_8K),
        ("AUDIO/X-MULAW", 8000, ULAW_8K),
        ("audio/x-alaw", 8000, ALAW_8K),
        ("audio/x-l16", 16000, AudioFormat("pcm16", 16000)),
        ("L16", 16000, AudioFormat("pcm16", 16000)),
    ],
)
def test_encodings_are_accepted_in_any_case_and_spelling(encoding: str, rate: int, fmt: AudioFormat) -> None:
    """PCMU, PCMA and L16 are accepted in any case and as audio/x-mulaw, audio/x-alaw and audio/x-l16."""
    (start,) = TelnyxAdapter().receive(start_message(encoding, rate))
    assert isinstance(start, CallStarted) and start.audio_format == fmt


def test_g711_at_another_rate_is_refused() -> None:
    """G.711 is 8 kHz only: another rate is unsupported data (1003)."""
    assert refusal(TelnyxAdapter(), start_message("PCMU", 16000)).close_code == 1003


# -- L3: custom parameters --------------------------------------------------------------------------


def test_custom_parameters_as_call_control_list() -> None:
    """Call Control's custom_parameters list of {name, value} becomes a name -> value mapping."""
    msg = start_message(custom_parameters=[{"name": "stt.language", "value": "fr"}, {"name": "ticket", "value": 42}])
    (start,) = TelnyxAdapter().receive(msg)
    assert isinstance(start, CallStarted) and start.parameters == {"stt.language": "fr", "ticket": "42"}


def test_custom_parameters_as_object() -> None:
    """An object of parameters (TeXML <Parameter> children) is still accepted."""
    (start,) = TelnyxAdapter().receive(start_message(custom_parameters={"FirstName": "Ada", "n": 1}))
    assert isinstance(start, CallStarted) and start.parameters == {"FirstName": "Ada", "n": "1"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("name=value", {}),
        (5, {}),
        (None, {}),
        ([1, "x", {"value": "no name"}, {"name": 3, "value": "v"}], {}),
        ([{"name": "ok", "value": "v"}, {"name": "nested", "value": {"a": 1}}], {"ok": "v"}),
        ({"ok": "v", "nested": {"a": 1}, "list": [1]}, {"ok": "v"}),
    ],
)
def test_malformed_custom_parameters_are_dropped_not_refused(value: Any, expected: dict[str, str]) -> None:
    """Malformed custom_parameters (or entries of them) are dropped; the stream itself is accepted."""
    (start,) = TelnyxAdapter().receive(start_message(custom_parameters=value))
    assert isinstance(start, CallStarted) and start.parameters == expected


# -- L4: both tracks ----------------------------------------------------------------------------------


def test_both_tracks_with_one_shared_chunk_counter() -> None:
    """both_tracks numbered by one counter (inbound odd, outbound even): exactly the inbound audio and
    no gap; once the first wait shows the counter is shared, each inbound chunk comes out at once."""
    a = started()
    events: list[PhoneEvent] = []
    for n in range(1, 201):
        track = "inbound" if n % 2 else "outbound"
        got = a.receive(media_message(n, chunk_payload(n), track))
        if track == "inbound" and n > 2 * REORDER_WINDOW + 3:  # 1, then 3-13 at once, then each
            assert audio_of(got) == chunk_payload(n)  # no more waiting for the window
        events += got
    events += a.receive(STOP)
    assert audio_of(events) == b"".join(chunk_payload(n) for n in range(1, 201, 2))
    assert gaps_of(events) == [] and a.counters.gaps == 0
    assert a.counters.ignored == {"outbound_media": 100}


def test_both_tracks_shared_counter_reordered_and_one_chunk_lost() -> None:
    """Shared counter, messages reordered across tracks: inbound comes out in order; a lost inbound
    chunk is one gap, the outbound numbers around it are not."""
    a = started()
    order = [1, 3, 2, 5, 4, 6, 8, 7, 10, 12, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21]  # 9 (inbound) is lost
    events = [
        e for n in order for e in a.receive(media_message(n, chunk_payload(n), "outbound" if n % 2 == 0 else "inbound"))
    ]
    events += a.receive(STOP)
    assert audio_of(events) == b"".join(chunk_payload(n) for n in range(1, 22, 2) if n != 9)
    assert gaps_of(events) == [Gap(9, 11)] and a.counters.gaps == 1


@pytest.mark.parametrize("outbound_lead", [0, 1, 3, -2])
def test_both_tracks_with_a_counter_each(outbound_lead: int) -> None:
    """both_tracks with one counter per track (the numbers overlap), outbound ahead or behind: all the
    inbound audio in order, no gap."""
    a = started()
    events: list[PhoneEvent] = []
    for n in range(1, 101):
        events += a.receive(media_message(n, chunk_payload(n)))
        if n + outbound_lead >= 1:
            events += a.receive(media_message(n + outbound_lead, b"\xff" * 160, "outbound"))
    events += a.receive(STOP)
    assert audio_of(events) == b"".join(chunk_payload(n) for n in range(1, 101))
    assert gaps_of(events) == []


def test_both_tracks_with_a_counter_each_and_reordered_inbound() -> None:
    """Separate counters and inbound chunks swapped in transit: still every inbound chunk, in order."""
    a = started()
    events: list[PhoneEvent] = []
    for n in (1, 2, 4, 3, 5, 7, 6, 8):
        events += a.receive(media_message(n, b"\xff" * 160, "outbound"))
        events += a.receive(media_message(n, chunk_payload(n)))
    events += a.receive(STOP)
    assert audio_of(events) == b"".join(chunk_payload(n) for n in range(1, 9)) and gaps_of(events) == []


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 40)), max_size=60))
def test_reorderer_never_reorders_or_repeats(ops: list[tuple[bool, int]]) -> None:
    """Whatever arrives on either track, our chunks come out once each, in increasing order, each gap
    ending at the chunk after it."""
    r = ChunkReorderer()
    out = []
    for ours, n in ops:
        out += r.push(n, n.to_bytes(1, "big")) if ours else r.other(n)
    out += r.flush()
    numbers = [p[0] for p, _ in out]
    assert numbers == sorted(set(numbers)) and set(numbers) <= {n for ours, n in ops if ours}
    assert all(gap[0] < gap[1] == p[0] for p, gap in out if gap is not None)


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 60),
    st.integers(0, 1),
    st.booleans(),
    st.integers(-3, 3),
    st.lists(st.floats(0, 2.5), min_size=240, max_size=240),
)
def test_reorderer_keeps_every_chunk_displaced_less_than_the_window(
    n: int, base: int, shared: bool, lead: int, jitter: list[float]
) -> None:
    """Both tracks, each message displaced by under the window, one counter or one each, numbered
    from 0 or 1 (chunk 0 not overtaken by chunk 1, which would come out at once): every inbound chunk
    comes out, in order, without a gap."""
    jitter[0] = 0.0
    if shared:
        arrivals = [(i + jitter[i], i % 2 == base, i) for i in range(base, base + 2 * n)]
    else:
        arrivals = [(i + jitter[i], True, i) for i in range(base, base + n)]
        arrivals += [(i + jitter[120 + i] - lead, False, i) for i in range(base, base + n)]
    r = ChunkReorderer()
    out = []
    for _, ours, c in sorted(arrivals):
        out += r.push(c, bytes([c])) if ours else r.other(c)
    out += r.flush()
    assert [p[0] for p, _ in out] == sorted(c for _, ours, c in arrivals if ours)
    assert [gap for _, gap in out if gap is not None] == [] and r.late == 0


# -- the simulator's writer against the documented messages ---------------------------------------


def _shape(value: Any) -> Any:
    """Keys and value types of a message, recursively (to compare with the documented literal)."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    return type(value).__name__


def test_writer_messages_are_the_documented_ones() -> None:
    """TelnyxStreamWriter writes connected, start, media and stop as Telnyx documents them, L16 in
    network byte order, and can number both tracks with one counter."""
    documented_start = {
        "event": "start",
        "sequence_number": "1",
        "stream_id": "uuid",
        "start": {
            "user_id": "uuid",
            "call_control_id": "v3:…",
            "call_session_id": "uuid",
            "from": "+1…",
            "to": "+1…",
            "client_state": "base64",
            "tags": ["…"],
            "media_format": {"encoding": "PCMU", "sample_rate": 8000, "channels": 1},
        },
    }
    documented_media = {
        "event": "media",
        "sequence_number": "4",
        "stream_id": "uuid",
        "media": {"track": "inbound", "chunk": "2", "timestamp": "5", "payload": "<base64>"},
    }
    documented_stop = {
        "event": "stop",
        "sequence_number": "5",
        "stream_id": "uuid",
        "stop": {"user_id": "uuid", "call_control_id": "v3:…"},
    }

    w = TelnyxStreamWriter(
        CALL_CONTROL_ID,
        STREAM_ID,
        "+13122010094",
        "+13122123456",
        "L16",
        16000,
        call_session_id=CALL_SESSION_ID,
        client_state="aGF2ZQ==",
        tags=["support"],
    )
    samples = [1, -2, 0x1234, 300]
    messages = [json.loads(m) for m in w.call(struct.pack("<4h", *samples), 4)]
    connected, start, first, second, stop = messages
    assert connected == {"event": "connected", "version": "1.0.0"}
    assert _shape(start) == _shape(documented_start) and start["sequence_number"] == "1"
    assert start["stream_id"] == STREAM_ID and start["start"]["call_control_id"] == CALL_CONTROL_ID
    assert start["start"]["call_session_id"] == CALL_SESSION_ID
    assert start["start"]["media_format"] == {"encoding": "L16", "sample_rate": 16000, "channels": 1}
    assert _shape(first) == _shape(documented_media) == _shape(second)
    assert [m["media"]["chunk"] for m in (first, second)] == ["1", "2"]
    assert [m["sequence_number"] for m in (first, second, stop)] == ["2", "3", "4"]
    payload = b"".join(base64.b64decode(m["media"]["payload"]) for m in (first, second))
    assert payload == struct.pack(">4h", *samples)  # network byte order on the wire
    assert _shape(stop) == _shape(documented_stop)
    assert stop["stop"] == {"user_id": start["start"]["user_id"], "call_control_id": CALL_CONTROL_ID}

    shared = TelnyxStreamWriter("c", "s", both_tracks=True, shared_chunk_counter=True)
    media = [json.loads(m)["media"] for m in list(shared.call(b"\x01" * 480, 160))[2:-1]]
    assert [(m["track"], m["chunk"]) for m in media] == [
        ("inbound", "1"),
        ("outbound", "2"),
        ("inbound", "3"),
        ("outbound", "4"),
        ("inbound", "5"),
        ("outbound", "6"),
    ]
    apart = TelnyxStreamWriter("c", "s", both_tracks=True)
    media = [json.loads(m)["media"] for m in list(apart.call(b"\x01" * 320, 160))[2:-1]]
    assert [(m["track"], m["chunk"]) for m in media] == [
        ("inbound", "1"),
        ("outbound", "1"),
        ("inbound", "2"),
        ("outbound", "2"),
    ]


def test_both_tracks_named_on_the_route_are_both_parties_put_in_order_by_the_interleaver() -> None:
    """stream_track=both_tracks with ?tracks=both on the stream URL (Telnyx's start lists no tracks):
    each documented media message is one party's track with its timestamp, passed on as it comes (the
    interleaver orders by timestamp), L16 swapped from network order per track."""
    from bridge.adapters import make_adapter

    a = make_adapter("telnyx", query={"tracks": "both"})
    assert isinstance(a, TelnyxAdapter)
    (start,) = a.receive(start_message("L16", 16000))
    assert isinstance(start, CallStarted) and start.channels == 2 and start.tracks == ("inbound", "outbound")
    out = a.receive(media_message(3, b"\x00\x01\x00\x02", "outbound")) + a.receive(media_message(2, b"\x01\x00"))
    assert out == [Audio(b"\x01\x00\x02\x00", 1, 60.0), Audio(b"\x00\x01", 0, 40.0)]
    with pytest.raises(ValueError, match="inbound or both"):
        make_adapter("telnyx", query={"tracks": "three"})
    # without the route's word, outbound media is still not the caller's and is not transcribed
    plain = started()
    assert plain.receive(media_message(1, b"\x7f" * 160, "outbound")) == [Ignored("outbound_media")]
