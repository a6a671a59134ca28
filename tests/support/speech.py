"""Test speech: the sample call shipped with the bridge (espeak-ng sentences, 8 kHz mu-law), its
sentences, re-encoding into every format Gladia accepts, and word error rate."""

from __future__ import annotations

import warnings

import numpy as np

from bridge.audio import resample
from bridge.tools.speech import normalised_words, sample_call, word_error_rate

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

ULAW, SENTENCES = sample_call()
# Where each sentence sits in the sample (seconds), from make_demo_call.sh's layout.
FIRST_SENTENCE = ULAW[: int(8000 * 4.7)]


def speech_spans(ulaw: bytes, min_gap: float = 0.5) -> list[tuple[float, float]]:
    """(start, end) seconds of each stretch of sound in 8 kHz mu-law, split at digital silence
    (0xFF, what the sample's gaps are made of) of at least ``min_gap`` seconds. No recognition."""
    sound = np.frombuffer(ulaw, dtype=np.uint8) != 0xFF
    spans: list[tuple[float, float]] = []
    idx = np.flatnonzero(sound)
    if not len(idx):
        return spans
    breaks = np.flatnonzero(np.diff(idx) > min_gap * 8000)
    starts = np.concatenate(([idx[0]], idx[breaks + 1]))
    ends = np.concatenate((idx[breaks], [idx[-1]]))
    return [(int(a) / 8000, (int(b) + 1) / 8000) for a, b in zip(starts, ends, strict=True)]


SPANS = speech_spans(ULAW)
assert len(SPANS) == len(SENTENCES), "the sample's sentences are separated by silence"


def words(text: str) -> list[str]:
    return normalised_words(text)


def wer(reference: str, hypothesis: str) -> float:
    return word_error_rate(words(reference), words(hypothesis))


def encode_as(ulaw: bytes, encoding: str, bit_depth: int, rate: int, channels: int = 1) -> bytes:
    """Re-encode 8 kHz mu-law into a Gladia input format."""
    x = np.frombuffer(audioop.ulaw2lin(ulaw, 2), dtype=np.int16) / 32768.0
    x = resample(x, 8000, rate)
    pcm16 = np.clip(np.rint(x * 32767), -32768, 32767).astype("<i2")
    if encoding == "wav/ulaw":
        out = np.frombuffer(audioop.lin2ulaw(pcm16.tobytes(), 2), dtype=np.uint8)
    elif encoding == "wav/alaw":
        out = np.frombuffer(audioop.lin2alaw(pcm16.tobytes(), 2), dtype=np.uint8)
    elif bit_depth == 8:
        out = (np.clip(np.rint(x * 127), -128, 127) + 128).astype(np.uint8)
    elif bit_depth == 16:
        out = pcm16
    elif bit_depth == 24:
        v = np.clip(np.rint(x * (2**23 - 1)), -(2**23), 2**23 - 1).astype(np.int32)
        out = np.stack([(v & 0xFF), (v >> 8) & 0xFF, (v >> 16) & 0xFF], axis=1).astype(np.uint8)
    else:
        out = np.clip(np.rint(x * (2**31 - 1)), -(2**31), 2**31 - 1).astype("<i4")
    frames = out.reshape(len(x), -1)
    if channels > 1:
        frames = np.repeat(frames, channels, axis=0).reshape(len(x), -1)
    return frames.tobytes()
