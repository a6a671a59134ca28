"""Any audio format Gladia accepts -> float32 16 kHz per channel for the recogniser, streaming and pure.

Handles ``wav/ulaw``, ``wav/alaw`` and ``wav/pcm`` at 8/16/24/32 bits (8-bit PCM is unsigned, as in
WAV), 1-8 interleaved channels, at 8000/16000/32000/44100/48000 Hz. Chunks may split a sample or a
frame anywhere: the remainder is carried to the next chunk.

Each channel is de-interleaved and resampled on its own (one rate converter per channel), so every
call returns the same number of samples for every channel: the channels stay aligned in time.
:meth:`InputDecoder.feed_channels` gives them apart (what the live session recognises, channel by
channel, as Gladia does); :meth:`InputDecoder.feed` mixes them down to one stream.
"""

from __future__ import annotations

import numpy as np

from bridge.audio import RateConverter, samples_to_float

TARGET_RATE = 16000


class InputDecoder:
    """Bytes in the session's declared format -> float32 samples in [-1, 1] at 16 kHz, per channel."""

    def __init__(self, encoding: str, bit_depth: int, sample_rate: int, channels: int) -> None:
        self.encoding = encoding
        self.width = 1 if encoding in ("wav/ulaw", "wav/alaw") else bit_depth // 8
        self.channels = channels
        self.frame_bytes = self.width * channels
        self.sample_rate = sample_rate
        self._rest = b""
        self._resamplers = (
            [RateConverter(sample_rate, TARGET_RATE) for _ in range(channels)] if sample_rate != TARGET_RATE else None
        )

    def feed_channels(self, data: bytes) -> list[np.ndarray]:
        """The next chunk of interleaved bytes -> one float32 array per channel, all the same length."""
        data = self._rest + data
        usable = len(data) - len(data) % self.frame_bytes
        self._rest = data[usable:]
        x = self._to_float(data[:usable]).reshape(-1, self.channels)
        if self._resamplers is None:
            return [x[:, c].astype(np.float32) for c in range(self.channels)]
        return [r.feed(x[:, c]).astype(np.float32) for c, r in enumerate(self._resamplers)]

    def flush_channels(self) -> list[np.ndarray]:
        """End of audio: each channel's last few resampled milliseconds (silence assumed after the end).

        An incomplete frame left over (the client sent part of one) is dropped."""
        if self._resamplers is None:
            return [np.zeros(0, dtype=np.float32) for _ in range(self.channels)]
        return [r.flush().astype(np.float32) for r in self._resamplers]

    def feed(self, data: bytes) -> np.ndarray:
        """Like :meth:`feed_channels`, with the channels mixed down to one (their mean)."""
        return _mix(self.feed_channels(data))

    def flush(self) -> np.ndarray:
        """Like :meth:`flush_channels`, mixed down."""
        return _mix(self.flush_channels())

    def _to_float(self, raw: bytes) -> np.ndarray:
        if not raw:
            return np.zeros(0)
        if self.encoding in ("wav/ulaw", "wav/alaw"):
            return samples_to_float(raw, "ulaw" if self.encoding == "wav/ulaw" else "alaw")
        return samples_to_float(raw, "pcm", 8 * self.width)


def _mix(channels: list[np.ndarray]) -> np.ndarray:
    if len(channels) == 1:
        return channels[0]
    mixed: np.ndarray = np.stack(channels).astype(np.float64).mean(axis=0)
    return mixed.astype(np.float32)
