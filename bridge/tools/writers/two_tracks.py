"""Both parties of a call on one carrier stream, as the writers send them: checks and stereo framing (pure)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def check_outbound(tracks: Sequence[str], inbound: bytes, outbound: bytes | None) -> None:
    """Raise ``ValueError`` unless ``outbound`` is absent, or announced in ``tracks`` and as long as ``inbound``.

    Call before writing a whole two-track call: the writers send the two tracks frame by frame, side by side.
    """
    if outbound is None:
        return
    if "outbound" not in tracks:
        raise ValueError("outbound audio on a stream that announces no outbound track")
    if len(outbound) != len(inbound):
        raise ValueError(f"the two tracks differ in length: {len(inbound)} and {len(outbound)} bytes")


def interleave_pcm16(left: bytes, right: bytes) -> bytes:
    """Two mono 16-bit little-endian tracks of equal length as one stereo stream (L R L R ...)."""
    if len(left) != len(right) or len(left) % 2:
        raise ValueError(f"two whole 16-bit tracks of one length are needed, got {len(left)} and {len(right)} bytes")
    samples = np.empty(len(left), dtype="<i2")  # len(left) // 2 samples per side
    samples[0::2] = np.frombuffer(left, dtype="<i2")
    samples[1::2] = np.frombuffer(right, dtype="<i2")
    return samples.tobytes()
