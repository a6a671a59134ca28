"""Local STT server's pure parts: request validation, input decoding of every format, endpointing."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from bridge.audio import tone_level_db
from bridge.local_stt.audio_in import InputDecoder
from bridge.local_stt.request import StreamingRequest, parse_request
from bridge.local_stt.segmenter import FRAME, Segmenter, SpeechEnded, SpeechStarted, UtteranceAudio
from tests.support.speech import encode_as


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        (b"not json", 400, "JSON"),
        (b"[1]", 400, "object"),
        (json.dumps({"encodig": "wav/pcm"}).encode(), 400, "property encodig should not exist"),
        (json.dumps({"channels": "two"}).encode(), 400, "channels"),
        (json.dumps({"encoding": "mp3"}).encode(), 422, "encoding"),
        (json.dumps({"sample_rate": 22050}).encode(), 422, "sample_rate"),
        (json.dumps({"bit_depth": 12}).encode(), 422, "bit_depth"),
        (json.dumps({"endpointing": 0}).encode(), 422, "endpointing"),
        (json.dumps({"maximum_duration_without_endpointing": 90}).encode(), 422, "maximum_duration"),
        (json.dumps({"channels": 9}).encode(), 422, "channels"),
        (json.dumps({"language_config": {"languages": ["xx"]}}).encode(), 422, "xx"),
        (json.dumps({"pre_processing": {"speech_threshold": 2}}).encode(), 422, "speech_threshold"),
    ],
)
def test_invalid_requests_get_gladia_error_bodies(body: bytes, status: int, needle: str) -> None:
    """Malformed bodies get 400, unacceptable values 422, each with Gladia's error body and a reason."""
    result = parse_request(body)
    assert isinstance(result, tuple)
    got_status, err = result
    assert got_status == status
    assert {"timestamp", "path", "request_id", "statusCode", "message", "validation_errors"} <= set(err)
    assert err["statusCode"] == status and err["path"] == "/v2/live"
    assert any(needle in e for e in err["validation_errors"]) or needle in err["message"]


def test_valid_request_defaults() -> None:
    """An empty body is valid: Gladia's defaults (16 kHz 16-bit PCM, final transcripts, acknowledgments)."""
    req = parse_request(b"{}")
    assert isinstance(req, StreamingRequest)
    assert (req.encoding, req.sample_rate, req.bit_depth, req.channels) == ("wav/pcm", 16000, 16, 1)
    assert req.messages.receive_final_transcripts and req.messages.receive_acknowledgments
    assert not req.messages.receive_partial_transcripts and not req.messages.receive_lifecycle_events


FORMATS = [
    ("wav/ulaw", 8, 8000, 1),
    ("wav/alaw", 8, 8000, 1),
    ("wav/pcm", 8, 16000, 1),
    ("wav/pcm", 16, 8000, 1),
    ("wav/pcm", 16, 16000, 1),
    ("wav/pcm", 16, 44100, 1),
    ("wav/pcm", 24, 48000, 1),
    ("wav/pcm", 32, 32000, 2),
    ("wav/pcm", 16, 16000, 8),
]


@pytest.mark.parametrize(("encoding", "depth", "rate", "channels"), FORMATS)
def test_every_input_format_decodes_to_16k_mono(encoding: str, depth: int, rate: int, channels: int) -> None:
    """A 1 kHz tone in any Gladia format comes out as the same tone at 16 kHz, whatever the chunking."""
    t = np.arange(8000) / 8000
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioop
    tone = audioop.lin2ulaw(np.rint(0.5 * 32767 * np.sin(2 * math.pi * 1000 * t)).astype("<i2").tobytes(), 2)
    data = encode_as(tone, encoding, depth, rate, channels)
    dec = InputDecoder(encoding, depth, rate, channels)
    out = np.concatenate([dec.feed(data[i : i + 333]) for i in range(0, len(data), 333)] + [dec.flush()])
    assert abs(len(out) - 16000) <= 1
    y = out[400:].astype(np.float64) * 32768
    assert tone_level_db(y, 16000, 1000) == pytest.approx(-6.0, abs=1.0)
    assert tone_level_db(y, 16000, 1000) - tone_level_db(y, 16000, 3000) > 30


def frames(n: int) -> list[np.ndarray]:
    return [np.zeros(FRAME, dtype=np.float32) for _ in range(n)]


def test_segmenter_endpointing_and_events() -> None:
    """Speech starts on the first voiced frame, ends after `endpointing` of silence, with its audio."""
    seg = Segmenter(threshold=0.5, endpointing=0.3, max_duration=15)
    probs = [0.0] * 10 + [0.9] * 30 + [0.0] * 12
    events = [e for f, p in zip(frames(len(probs)), probs, strict=True) for e in seg.push(f, p)]
    kinds = [type(e) for e in events]
    assert kinds == [SpeechStarted, SpeechEnded, UtteranceAudio]
    start, end, utt = events
    assert isinstance(start, SpeechStarted) and isinstance(end, SpeechEnded)
    assert start.time == pytest.approx(10 * 0.032)
    assert end.time == pytest.approx(40 * 0.032)
    assert isinstance(utt, UtteranceAudio) and utt.start == start.time and utt.end == end.time
    assert utt.audio_start < utt.start  # pre-roll context


def test_segmenter_forces_a_final_at_maximum_duration() -> None:
    """Speech that never pauses is cut at maximum_duration_without_endpointing: with nothing quieter to
    cut at, as late as the overlap after the cut allows (tests/test_segmenter.py has the quietest point)."""
    seg = Segmenter(threshold=0.5, endpointing=0.3, max_duration=5)
    events = [e for f in frames(400) for e in seg.push(f, 0.9)]
    utts = [e for e in events if isinstance(e, UtteranceAudio)]
    assert len(utts) == 2 and all(4.7 <= u.end - u.start <= 5.0 for u in utts)
    tail = seg.flush()
    assert isinstance(tail[-1], UtteranceAudio)
