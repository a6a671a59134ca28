"""The stereo sample as a two-track Twilio call, recorded: each party on its channel, the call's length,
and the transcript's utterance times found in the recording within 50 ms. Read back by ffmpeg and sox
(Debian's, not the writer's library); the speech-to-text is the fake, whose finals cover known spans of
the audio it was sent, so "the transcript's utterance times" have an exact oracle."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bridge.audio import decode_to_pcm16
from bridge.tools.player import play_call, read_two_tracks
from tests.support.calls import BridgeFactory, wait_for
from tests.support.fakes import FakeGladia, FakeWebhook
from tests.support.recording_oracle import decode, similarity

pytestmark = pytest.mark.timeout(120)

RATE = 8000
TIMES_WITHIN = 400  # samples: 50 ms


def pcm(ulaw: bytes) -> np.ndarray:
    return np.frombuffer(decode_to_pcm16(ulaw, "ulaw"), dtype="<i2")


def found_at(piece: np.ndarray, recording: np.ndarray, start: int, max_lag: int) -> tuple[float, int]:
    """Where ``piece`` (one channel) best matches ``recording`` near ``start``: (score, lag in samples)."""
    best = (-1.0, 0)
    a = piece.astype(np.float64)
    for lag in range(-max_lag, max_lag + 1):
        lo = start + lag
        if lo < 0 or lo + len(a) > len(recording):
            continue
        b = recording[lo : lo + len(a)].astype(np.float64)
        denom = np.sqrt(np.dot(a, a) * np.dot(b, b))
        if denom:
            best = max(best, (float(np.dot(a, b) / denom), lag))
    return best


@pytest.mark.parametrize(("fmt", "tool"), [("wav", "sox"), ("wav", "ffmpeg"), ("opus", "ffmpeg")])
async def test_each_party_on_its_channel_in_time_with_the_transcript(
    make_bridge: BridgeFactory,
    fake_gladia: FakeGladia,
    webhook: tuple[FakeWebhook, str],
    tmp_path: Path,
    fmt: str,
    tool: str,
) -> None:
    hook, _ = webhook
    left, right = read_two_tracks(resources.files("bridge.samples").joinpath("two_party_call.wav").read_bytes())
    left, right = left[: 12 * RATE], right[: 12 * RATE]  # 12 s: both speakers have turns
    fake_gladia.segment_seconds = 1.5
    server: Any = await make_bridge(
        {"BRIDGE_RECORDINGS": "on", "BRIDGE_RECORDING_FORMAT": fmt}, server__max_audio_speed=0
    )
    report = await play_call(
        str(server.make_url("/twilio/stream")), left, outbound=right, realtime=False, carrier="twilio"
    )
    assert report.close_code == 1000
    await wait_for(lambda: bool(hook.events("recording.completed")), timeout=30)
    (completed,) = hook.events("recording.completed")
    assert completed["format"] == fmt and completed["channels"] == 2 and completed["sample_rate"] == RATE
    path = tmp_path / "data" / "recordings" / f"{completed['call']['id']}.{fmt}"
    audio = decode(path, RATE, tool)
    sent = np.stack([pcm(left), pcm(right)], axis=1)

    # its length is the call's (Opus: the decoder's pre-skip and padding round it to a few ms)
    assert len(audio) == pytest.approx(len(sent), abs=160 if fmt == "opus" else 0)
    assert completed["duration_s"] == pytest.approx(len(sent) / RATE, abs=0.02)
    # each party on its own channel, within a few ms (Opus is lossy: a lower bar on the shape)
    scores = similarity(sent, audio, max_lag=40)
    for score, lag in scores:
        assert score > (0.8 if fmt == "opus" else 0.999) and abs(lag) <= 40, scores
    cross = similarity(sent[:, ::-1].copy(), audio, max_lag=40)
    assert all(score < 0.5 for score, _ in cross), cross  # not the other way round

    # the transcript's utterance times: each final's audio (what speech-to-text got) sits there
    finals = [e["utterance"] for e in hook.events("utterance.final")]
    assert len(finals) >= 6
    for u in finals:
        ch = u["channel"]
        lo, hi = round(u["start"] * RATE), round(u["end"] * RATE)
        piece = sent[lo:hi, ch]
        if not np.abs(piece).max() > 500:  # a span where this party is quiet says nothing about time
            continue
        score, lag = found_at(piece, audio[:, ch], lo, TIMES_WITHIN + 80)
        assert score > (0.8 if fmt == "opus" else 0.999) and abs(lag) <= TIMES_WITHIN, (u, score, lag)
