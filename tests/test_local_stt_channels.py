"""The local Gladia-compatible server with ``channels`` > 1: each channel decoded, segmented and
recognised on its own, every message about it carrying its index.

Three layers: the input decoder (pure, no event loop), one live session driven by hand with the real
Silero VAD (no recogniser, no event loop), and the real server on 127.0.0.1 with the real recogniser.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import random
import warnings
from typing import Any

import aiohttp
import numpy as np
import pytest

from bridge.audio import tone_level_db
from bridge.local_stt.audio_in import InputDecoder
from bridge.local_stt.engine import SileroVad
from bridge.local_stt.live import LiveSession
from bridge.local_stt.request import StreamingRequest
from bridge.local_stt.segmenter import UtteranceAudio
from tests.support.speech import SENTENCES, SPANS, ULAW, encode_as, speech_spans, words

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

MARGIN = 0.35  # seconds: VAD pre-roll, endpointing frames and word-timing slack around a sentence's sound

# -- building multi-channel input ----------------------------------------------------------------


def only(ulaw: bytes, span: tuple[float, float], length: int) -> bytes:
    """The first ``length`` bytes of 8 kHz mu-law with everything outside ``span`` digital silence."""
    a, b = int(span[0] * 8000), min(int(span[1] * 8000), length)
    out = bytearray(b"\xff" * length)
    out[a:b] = ulaw[a:b]
    return bytes(out)


def interleave(channels: list[bytes], width: int) -> bytes:
    """Per-channel byte streams (``width`` bytes a sample) -> interleaved frames."""
    arrays = [np.frombuffer(c, dtype=np.uint8).reshape(-1, width) for c in channels]
    return np.stack(arrays, axis=1).tobytes()


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    edges = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


def chunkings(data: bytes) -> dict[str, list[bytes]]:
    """The same bytes cut in ways that split samples and frames anywhere."""
    rng = random.Random(7)
    cuts = sorted(rng.sample(range(1, len(data)), 200))
    return {
        "whole": [data],
        "1 byte": [data[i : i + 1] for i in range(0, len(data), 1)],
        "3 bytes": [data[i : i + 3] for i in range(0, len(data), 3)],
        "333 bytes": [data[i : i + 333] for i in range(0, len(data), 333)],
        "random": split_at(data, cuts),
    }


def tone_ulaw(freq: float, level: float, seconds: float) -> bytes:
    t = np.arange(int(8000 * seconds)) / 8000
    pcm = np.rint(level * 32767 * np.sin(2 * math.pi * freq * t)).astype("<i2")
    return audioop.lin2ulaw(pcm.tobytes(), 2)


# -- 1. the decoder splits interleaved input into channels (pure) -------------------------------------


@pytest.mark.parametrize(
    ("encoding", "depth", "rate"),
    [("wav/ulaw", 8, 8000), ("wav/pcm", 16, 8000), ("wav/pcm", 16, 16000), ("wav/pcm", 16, 44100)],
)
def test_decoder_splits_two_channels_whatever_the_chunking(encoding: str, depth: int, rate: int) -> None:
    """2-channel interleaved input comes out as two 16 kHz arrays of the same length: each is what a
    mono decoder makes of that channel alone (a 1 kHz tone on 0, a quieter 440 Hz tone on 1, never
    mixed), however the bytes are cut into chunks, frames and samples split included."""
    width = 1 if encoding == "wav/ulaw" else depth // 8
    left = encode_as(tone_ulaw(1000, 0.5, 0.5), encoding, depth, rate)
    right = encode_as(tone_ulaw(440, 0.125, 0.5), encoding, depth, rate)
    data = interleave([left, right], width)
    references = []
    for mono in (left, right):
        dec = InputDecoder(encoding, depth, rate, 1)
        references.append(np.concatenate([dec.feed(mono), dec.flush()]))
    assert abs(len(references[0]) - 8000) <= 1

    for name, chunks in chunkings(data).items():
        dec = InputDecoder(encoding, depth, rate, 2)
        parts = [dec.feed_channels(chunk) for chunk in chunks] + [dec.flush_channels()]
        assert all(len(p) == 2 and len(p[0]) == len(p[1]) for p in parts), name
        assert all(x.dtype == np.float32 for p in parts for x in p)
        got = [np.concatenate([p[c] for p in parts]) for c in range(2)]
        for c in range(2):
            np.testing.assert_allclose(got[c], references[c], atol=1e-6, err_msg=f"{name}, channel {c}")

    y0, y1 = (x[400:].astype(np.float64) * 32768 for x in references)
    assert tone_level_db(y0, 16000, 1000) == pytest.approx(-6.0, abs=1.0)
    assert tone_level_db(y1, 16000, 440) == pytest.approx(-18.0, abs=1.0)
    assert tone_level_db(y0, 16000, 1000) - tone_level_db(y0, 16000, 440) > 30
    assert tone_level_db(y1, 16000, 440) - tone_level_db(y1, 16000, 1000) > 30


def test_decoder_holds_back_a_split_frame() -> None:
    """A chunk ending inside a frame gives nothing for that frame until the rest arrives, on every channel."""
    dec = InputDecoder("wav/pcm", 16, 16000, 2)
    first = dec.feed_channels(b"\x00\x40\x00\xc0\x00\x20")  # one frame and half of the next
    assert [x.tolist() for x in first] == [[0.5], [-0.5]]
    second = dec.feed_channels(b"\x00\xe0")
    assert [x.tolist() for x in second] == [[0.25], [-0.25]]
    assert [len(x) for x in dec.flush_channels()] == [0, 0]


# -- 2. one session, by hand: speech events per channel (real VAD, no recogniser) ---------------------

# Channel 0 speaks the sample's first sentence, channel 1 its second sentence (later); silence elsewhere.
LENGTH = int(8000 * (SPANS[1][1] + 1.0))
CHANNEL_AUDIO = [only(ULAW, SPANS[0], LENGTH), only(ULAW, SPANS[1], LENGTH)]
STEREO_ULAW = interleave(CHANNEL_AUDIO, 1)
STEREO_REQUEST = {"encoding": "wav/ulaw", "sample_rate": 8000, "bit_depth": 8, "channels": 2, "endpointing": 0.3}


@pytest.fixture(scope="module")
def vad() -> SileroVad:
    return SileroVad()


def channel_spans() -> list[tuple[float, float]]:
    """Where each channel has sound, from digital silence alone (no recognition)."""
    spans = [speech_spans(audio) for audio in CHANNEL_AUDIO]
    assert spans == [[SPANS[0]], [SPANS[1]]] and SPANS[0][1] < SPANS[1][0]
    return [s[0] for s in spans]


def run_by_hand(vad: SileroVad, chunks: list[bytes]) -> tuple[LiveSession, list[dict[str, Any]]]:
    live = LiveSession("s", "t", StreamingRequest.model_validate(STEREO_REQUEST), vad.stream)
    out = live.connected()
    for chunk in chunks:
        out += live.receive_audio(chunk)
    out += live.stop()
    return live, out


def without_clock(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in m.items() if k != "created_at"} for m in messages]


def test_speech_events_and_utterances_per_channel(vad: SileroVad) -> None:
    """Each channel's speech is found on that channel only, at its own time: speech_start/speech_end
    carry the channel, each channel's one utterance is queued with it (channel 0's first, it ends
    first), and acknowledgments count the interleaved bytes."""
    spans = channel_spans()
    live, messages = run_by_hand(vad, [STEREO_ULAW[i : i + 3200] for i in range(0, len(STEREO_ULAW), 3200)])
    events = [m["data"] for m in messages if m["type"] in ("speech_start", "speech_end")]
    for channel, (start, end) in enumerate(spans):
        mine = [m for m in messages if m["type"] in ("speech_start", "speech_end") and m["data"]["channel"] == channel]
        assert [m["type"] for m in mine] == ["speech_start", "speech_end"], mine
        assert start - MARGIN <= mine[0]["data"]["time"] < mine[1]["data"]["time"] <= end + MARGIN
    assert {e["channel"] for e in events} == {0, 1} and len(events) == 4
    queued = list(live.to_decode)
    assert [(u.channel, u.index) for u in queued] == [(0, 0), (1, 0)]
    for utt, (start, end) in zip(queued, spans, strict=True):
        assert isinstance(utt, UtteranceAudio)
        assert start - MARGIN <= utt.start < utt.end <= end + MARGIN
        # the utterance's audio is its own channel's: the other channel is silent over this span
        assert np.abs(utt.audio).max() > 0.1
    acks = [m["data"] for m in messages if m["type"] == "audio_chunk"]
    n = len(STEREO_ULAW)
    assert [a["byte_range"] for a in acks] == [[i, min(i + 3200, n)] for i in range(0, n, 3200)]
    assert acks[-1]["time_range"][1] == pytest.approx(len(STEREO_ULAW) / 16000, abs=0.001)
    stop = next(m for m in messages if m["type"] == "stop_recording")["data"]
    assert stop["recording_duration"] == pytest.approx(LENGTH / 8000, abs=0.001)


def test_messages_do_not_depend_on_the_chunking(vad: SileroVad) -> None:
    """The same stereo audio cut three ways gives the same speech events and utterances (the channels
    are scanned in lockstep, frame by frame, so the order across channels is the audio's, not the
    chunks')."""
    runs = []
    for size in (160, 3200, 17999):  # 17999: chunks that end in the middle of a frame
        live, messages = run_by_hand(vad, [STEREO_ULAW[i : i + size] for i in range(0, len(STEREO_ULAW), size)])
        speech = without_clock([m for m in messages if m["type"] in ("speech_start", "speech_end")])
        runs.append((speech, [(u.channel, u.index, u.start, u.end, len(u.audio)) for u in live.to_decode]))
    assert runs[0] == runs[1] == runs[2]


def test_utterances_open_at_stop_close_in_the_order_they_end(vad: SileroVad) -> None:
    """stop_recording while both channels speak: each channel's utterance is closed with its own
    channel, in the order of their ends."""
    length = int(8000 * 2.5)
    # channel 0: the first sentence from 0.6 s; channel 1: the second sentence from 1.1 s; cut at 2.5 s
    left = only(ULAW, SPANS[0], length)
    delay = int(8000 * (SPANS[0][0] + 0.5))
    second = int(8000 * SPANS[1][0])
    right = b"\xff" * delay + ULAW[second : second + length - delay]
    live = LiveSession("s", "t", StreamingRequest.model_validate(STEREO_REQUEST), vad.stream)
    live.receive_audio(interleave([left, right], 1))
    assert all(ch.segmenter.in_speech for ch in live.channels)
    messages = live.stop()
    ends = [m["data"] for m in messages if m["type"] == "speech_end"]
    assert sorted(e["channel"] for e in ends) == [0, 1]
    assert [e["time"] for e in ends] == sorted(e["time"] for e in ends)
    queued = list(live.to_decode)
    assert [u.channel for u in queued] == [e["channel"] for e in ends]
    assert [u.end for u in queued] == [e["time"] for e in ends]


# -- 3. the real server: finals per channel -------------------------------------------------------------


async def create(http: aiohttp.ClientSession, server: Any, body: dict[str, Any]) -> dict[str, Any]:
    async with http.post(server.make_url("/v2/live"), json=body) as resp:
        assert resp.status == 201, await resp.text()
        data: dict[str, Any] = await resp.json()
        return data


async def collect(ws: aiohttp.ClientWebSocketResponse) -> list[dict[str, Any]]:
    out = []
    async for msg in ws:
        if msg.type is aiohttp.WSMsgType.TEXT:
            out.append(json.loads(msg.data))
    return out


def share_of_words_heard(reference: str, text: str) -> float:
    heard = set(words(text))
    expected = words(reference)
    return sum(w in heard for w in expected) / len(expected)


@pytest.mark.recognition
@pytest.mark.parametrize(("encoding", "depth", "rate"), [("wav/ulaw", 8, 8000), ("wav/pcm", 16, 16000)])
async def test_two_channel_session_has_finals_per_channel(
    make_stt_server: Any, encoding: str, depth: int, rate: int
) -> None:
    """A 2-channel session, one sentence on channel 0 and another, later, on channel 1: finals (and
    partials, speech events) come back with their channel, on that channel's time span, with that
    channel's words; acknowledgments count the interleaved bytes; the post-session transcription and
    the GET result list both channels' utterances by end time."""
    spans = channel_spans()
    width = 1 if encoding == "wav/ulaw" else depth // 8
    audio = interleave([encode_as(a, encoding, depth, rate) for a in CHANNEL_AUDIO], width)
    bytes_per_second = rate * width * 2
    chunk = bytes_per_second // 5  # 200 ms
    body = {
        **STEREO_REQUEST,
        "encoding": encoding,
        "bit_depth": depth,
        "sample_rate": rate,
        "messages_config": {"receive_partial_transcripts": True},
    }
    _, server = await make_stt_server()
    async with aiohttp.ClientSession() as http:
        session = await create(http, server, body)
        async with http.ws_connect(session["url"]) as ws:
            for i in range(0, len(audio), chunk):
                await ws.send_bytes(audio[i : i + chunk])
                await asyncio.sleep(0.1)  # twice real time: partials get decoded while speech goes on
            await ws.send_str(json.dumps({"type": "stop_recording"}))
            messages = await asyncio.wait_for(collect(ws), timeout=40)
            assert ws.close_code == 1000
        async with http.get(server.make_url(f"/v2/live/{session['id']}")) as resp:
            result = await resp.json()

    acks = [m["data"] for m in messages if m["type"] == "audio_chunk"]
    assert all(a["byte_range"][0] == b["byte_range"][1] for b, a in itertools.pairwise(acks))
    assert acks[-1]["byte_range"][1] == len(audio)
    assert acks[-1]["time_range"][1] == pytest.approx(len(audio) / bytes_per_second, abs=0.001)

    transcripts = [m["data"] for m in messages if m["type"] == "transcript"]
    assert all(t["id"][:3] == f"{t['utterance']['channel']:02d}_" for t in transcripts)
    finals = [t["utterance"] for t in transcripts if t["is_final"]]
    partials = [t["utterance"] for t in transcripts if not t["is_final"]]
    assert {f["channel"] for f in finals} == {0, 1}
    for channel, (start, end) in enumerate(spans):
        mine = [f for f in finals if f["channel"] == channel]
        text = " ".join(f["text"] for f in mine)
        assert words(text), mine
        for utt in mine:
            assert start - MARGIN <= utt["start"] < utt["end"] <= end + MARGIN, (channel, utt, (start, end))
            for w in utt["words"]:
                assert start - MARGIN <= w["start"] <= w["end"] <= end + MARGIN, (channel, w)
        for utt in partials:  # audio in progress: it may reach an endpointing past the sound
            if utt["channel"] == channel:
                assert start - MARGIN <= utt["start"] <= utt["end"] <= end + 2 * MARGIN, (channel, utt)
        covered = sum(f["end"] - f["start"] for f in mine)
        assert covered >= 0.5 * (end - start)
        # loose: most of the channel's own sentence is heard on it (passes on GENERIC and AVX2 builds)
        assert share_of_words_heard(SENTENCES[channel], text) >= 0.5, (channel, text)
        speech = [m for m in messages if m["type"] in ("speech_start", "speech_end")]
        times = [m["data"]["time"] for m in speech if m["data"]["channel"] == channel]
        assert times and all(start - MARGIN <= t <= end + MARGIN for t in times)
    assert {m["data"]["channel"] for m in messages if m["type"] in ("speech_start", "speech_end")} == {0, 1}
    # channel 0's sentence ends first, so its final comes first
    assert [f["channel"] for f in finals] == sorted(f["channel"] for f in finals)

    post = next(m for m in messages if m["type"] == "post_final_transcript")["data"]
    utterances = post["transcription"]["utterances"]
    assert utterances == finals
    assert post["metadata"]["number_of_distinct_channels"] == 2
    assert post["metadata"]["audio_duration"] == pytest.approx(LENGTH / 8000, abs=0.001)
    assert post["metadata"]["billing_time"] == pytest.approx(2 * LENGTH / 8000, abs=0.002)
    assert result["status"] == "done" and result["file"]["number_of_channels"] == 2
    assert result["result"]["transcription"]["utterances"] == finals
