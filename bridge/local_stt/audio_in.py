"""Any audio format Gladia accepts -> float32 mono 16 kHz for the recogniser, streaming and pure.

Handles ``wav/ulaw``, ``wav/alaw`` and ``wav/pcm`` at 8/16/24/32 bits (8-bit PCM is unsigned, as in
WAV), 1-8 interleaved channels (mixed down), at 8000/16000/32000/44100/48000 Hz. Chunks may split a
sample or a frame anywhere: the remainder is carried to the next chunk.
"""

from __future__ import annotations

import warnings

import numpy as np

from bridge.audio import RateConverter, Upsampler2x

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

TARGET_RATE = 16000


LinearResampler = RateConverter  # the same streaming converter the bridge uses


class InputDecoder:
    """Bytes in the session's declared format -> float32 samples in [-1, 1] at 16 kHz, mono."""

    def __init__(self, encoding: str, bit_depth: int, sample_rate: int, channels: int) -> None:
        self.encoding = encoding
        self.width = 1 if encoding in ("wav/ulaw", "wav/alaw") else bit_depth // 8
        self.channels = channels
        self.frame_bytes = self.width * channels
        self.sample_rate = sample_rate
        self._rest = b""
        self._up: Upsampler2x | None = None
        self._resampler: LinearResampler | None = None
        if sample_rate == 8000:
            self._up = Upsampler2x()
        elif sample_rate != TARGET_RATE:
            self._resampler = LinearResampler(sample_rate, TARGET_RATE)

    def feed(self, data: bytes) -> np.ndarray:
        data = self._rest + data
        usable = len(data) - len(data) % self.frame_bytes
        self._rest = data[usable:]
        x = self._to_float(data[:usable])
        if self.channels > 1:
            x = x.reshape(-1, self.channels).mean(axis=1)
        if self._up is not None:
            return (self._up.feed_samples(x * 32768.0) / 32768.0).astype(np.float32)
        if self._resampler is not None:
            return self._resampler.feed(x).astype(np.float32)
        return x.astype(np.float32)

    def _to_float(self, raw: bytes) -> np.ndarray:
        if not raw:
            return np.zeros(0)
        if self.encoding == "wav/ulaw":
            return np.frombuffer(audioop.ulaw2lin(raw, 2), dtype=np.int16) / 32768.0
        if self.encoding == "wav/alaw":
            return np.frombuffer(audioop.alaw2lin(raw, 2), dtype=np.int16) / 32768.0
        if self.width == 1:
            return (np.frombuffer(raw, dtype=np.uint8).astype(np.float64) - 128.0) / 128.0
        if self.width == 2:
            return np.frombuffer(raw, dtype="<i2") / 32768.0
        if self.width == 3:
            b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
            v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
            v = np.where(v >= 1 << 23, v - (1 << 24), v)
            return v / float(1 << 23)
        return np.frombuffer(raw, dtype="<i4") / float(1 << 31)
