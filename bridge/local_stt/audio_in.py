"""Any audio format Gladia accepts -> float32 mono 16 kHz for the recogniser, streaming and pure.

Handles ``wav/ulaw``, ``wav/alaw`` and ``wav/pcm`` at 8/16/24/32 bits (8-bit PCM is unsigned, as in
WAV), 1-8 interleaved channels (mixed down), at 8000/16000/32000/44100/48000 Hz. Chunks may split a
sample or a frame anywhere: the remainder is carried to the next chunk.
"""

from __future__ import annotations

import numpy as np

from bridge.audio import RateConverter, samples_to_float

TARGET_RATE = 16000


class InputDecoder:
    """Bytes in the session's declared format -> float32 samples in [-1, 1] at 16 kHz, mono."""

    def __init__(self, encoding: str, bit_depth: int, sample_rate: int, channels: int) -> None:
        self.encoding = encoding
        self.width = 1 if encoding in ("wav/ulaw", "wav/alaw") else bit_depth // 8
        self.channels = channels
        self.frame_bytes = self.width * channels
        self.sample_rate = sample_rate
        self._rest = b""
        self._resampler = RateConverter(sample_rate, TARGET_RATE) if sample_rate != TARGET_RATE else None

    def feed(self, data: bytes) -> np.ndarray:
        data = self._rest + data
        usable = len(data) - len(data) % self.frame_bytes
        self._rest = data[usable:]
        x = self._to_float(data[:usable])
        if self.channels > 1:
            x = x.reshape(-1, self.channels).mean(axis=1)
        if self._resampler is not None:
            return self._resampler.feed(x).astype(np.float32)
        return x.astype(np.float32)

    def flush(self) -> np.ndarray:
        """End of audio: the resampler's last few milliseconds (silence assumed after the end)."""
        if self._resampler is None:
            return np.zeros(0, dtype=np.float32)
        return self._resampler.flush().astype(np.float32)

    def _to_float(self, raw: bytes) -> np.ndarray:
        if not raw:
            return np.zeros(0)
        if self.encoding in ("wav/ulaw", "wav/alaw"):
            return samples_to_float(raw, "ulaw" if self.encoding == "wav/ulaw" else "alaw")
        return samples_to_float(raw, "pcm", 8 * self.width)
