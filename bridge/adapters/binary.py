"""Shared shape of the binary-audio dialects: one text preamble, then raw audio frames (pure)."""

from __future__ import annotations

import numpy as np

from bridge.adapters.base import Audio, StreamCounters


class L16Frames:
    """Raw little-endian 16-bit PCM frames -> mono Audio events, keeping sample alignment; stereo
    (both call legs) is mixed down."""

    def __init__(self, counters: StreamCounters, channels: int = 1) -> None:
        self.counters = counters
        self.channels = channels
        self._rest = b""

    def feed(self, data: bytes) -> Audio | None:
        data = self._rest + data
        frame = 2 * self.channels
        usable = len(data) - len(data) % frame
        self._rest = data[usable:]
        if not usable:
            return None
        pcm = data[:usable]
        if self.channels > 1:
            x = np.frombuffer(pcm, dtype="<i2").reshape(-1, self.channels).astype(np.int32)
            pcm = (x.sum(axis=1) // self.channels).astype("<i2").tobytes()
        self.counters.audio_frames += 1
        self.counters.audio_bytes += len(pcm)
        return Audio(pcm)
