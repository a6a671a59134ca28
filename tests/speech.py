"""Test speech: the sample call shipped with the bridge (espeak-ng sentences, 8 kHz mu-law), its
sentences, re-encoding into every format Gladia accepts, and word error rate."""

from __future__ import annotations

import re
import warnings

import numpy as np

from bridge.audio import RateConverter
from bridge.demo import sample_call, word_error_rate

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

ULAW, SENTENCES = sample_call()
# Where each sentence sits in the sample (seconds), from make_demo_call.sh's layout.
FIRST_SENTENCE = ULAW[: int(8000 * 4.7)]


def words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split()


def wer(reference: str, hypothesis: str) -> float:
    return word_error_rate(words(reference), words(hypothesis))


def encode_as(ulaw: bytes, encoding: str, bit_depth: int, rate: int, channels: int = 1) -> bytes:
    """Re-encode 8 kHz mu-law into a Gladia input format."""
    x = np.frombuffer(audioop.ulaw2lin(ulaw, 2), dtype=np.int16) / 32768.0
    if rate != 8000:
        x = RateConverter(8000, rate).feed(x)
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
