"""In-band DTMF (pure): the tone pairs of ITU-T Q.23, as 16-bit PCM, for carriers whose dialect has
no message that sends a key press. 100 ms of tone and 100 ms of silence per digit; ``w`` is a 500 ms
pause. Q.24 asks for at least 40 ms of tone and 40 ms of pause; 100/100 is what phones send."""

from __future__ import annotations

import numpy as np

ROWS = (697.0, 770.0, 852.0, 941.0)
COLUMNS = (1209.0, 1336.0, 1477.0, 1633.0)
KEYPAD = ("123A", "456B", "789C", "*0#D")
TONE_MS = 100
GAP_MS = 100
PAUSE_MS = 500
LEVEL = 0.25  # each of the two tones, of full scale (about -12 dBFS, -9 dBFS together)


def frequencies(digit: str) -> tuple[float, float]:
    for r, row in enumerate(KEYPAD):
        c = row.find(digit)
        if c >= 0:
            return ROWS[r], COLUMNS[c]
    raise ValueError(f"{digit!r} is not a DTMF key")


def dtmf_pcm16(digits: str, sample_rate: int = 8000) -> bytes:
    """The tones for ``digits`` (0-9 * # A-D, ``w`` a pause) as 16-bit little-endian mono PCM."""
    parts: list[np.ndarray] = []
    for digit in digits:
        if digit == "w":
            parts.append(np.zeros(sample_rate * PAUSE_MS // 1000))
            continue
        low, high = frequencies(digit)
        t = np.arange(sample_rate * TONE_MS // 1000) / sample_rate
        ramp = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.005)  # 5 ms ramps: no clicks
        parts.append(LEVEL * ramp * (np.sin(2 * np.pi * low * t) + np.sin(2 * np.pi * high * t)))
        parts.append(np.zeros(sample_rate * GAP_MS // 1000))
    x = np.concatenate(parts) if parts else np.zeros(0)
    return (np.clip(x, -1.0, 1.0) * 32767).astype("<i2").tobytes()
