"""Any audio format Gladia accepts -> float32 mono 16 kHz for the recogniser, streaming and pure.

Handles ``wav/ulaw``, ``wav/alaw`` and ``wav/pcm`` at 8/16/24/32 bits (8-bit PCM is unsigned, as in
WAV), 1-8 interleaved channels (mixed down), at 8000/16000/32000/44100/48000 Hz. Chunks may split a
sample or a frame anywhere: the remainder is carried to the next chunk.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from bridge.audio import Upsampler2x, kaiser_lowpass

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

TARGET_RATE = 16000


class LinearResampler:
    """Streaming resampler for ratios other than x2: anti-alias FIR (when going down), then linear
    interpolation at the output instants, with all state carried between calls."""

    TAPS = 63

    def __init__(self, in_rate: int, out_rate: int) -> None:
        self.step = in_rate / out_rate
        self._fir = kaiser_lowpass(self.TAPS, 0.45 * out_rate / in_rate, 8.0) if out_rate < in_rate else None
        self._hist = np.zeros(self.TAPS - 1)
        self._buf = np.zeros(0)
        self._buf_start = 0  # input index of _buf[0]
        self._next = 0.0  # input position of the next output sample

    def feed(self, x: np.ndarray) -> np.ndarray:
        if self._fir is not None:
            xx = np.concatenate((self._hist, x))
            y = np.convolve(xx, self._fir, mode="valid")
            self._hist = xx[len(xx) - (self.TAPS - 1):]
        else:
            y = x
        self._buf = np.concatenate((self._buf, y))
        end = self._buf_start + len(self._buf)
        if end - 1 <= self._next:
            return np.zeros(0)
        n_out = math.ceil((end - 1 - self._next) / self.step)
        positions = self._next + self.step * np.arange(n_out)
        base = np.floor(positions)
        idx = base.astype(np.int64) - self._buf_start
        frac = positions - base
        out = self._buf[idx] * (1 - frac) + self._buf[idx + 1] * frac
        self._next += self.step * n_out
        drop = min(math.floor(self._next) - self._buf_start, len(self._buf))
        if drop > 0:
            self._buf = self._buf[drop:]
            self._buf_start += drop
        result: np.ndarray = out
        return result


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
