"""In-band DTMF: each key is the ITU-T Q.23 pair of tones (low group 697/770/852/941 Hz, high group
1209/1336/1477/1633 Hz), found in the generated audio by a Goertzel filter bank, with pauses between."""

from __future__ import annotations

import numpy as np
import pytest

from bridge.reply.dtmf import dtmf_pcm16

# Q.23's keypad, written out here rather than taken from the module under test
Q23 = {
    "1": (697, 1209),
    "2": (697, 1336),
    "3": (697, 1477),
    "A": (697, 1633),
    "4": (770, 1209),
    "5": (770, 1336),
    "6": (770, 1477),
    "B": (770, 1633),
    "7": (852, 1209),
    "8": (852, 1336),
    "9": (852, 1477),
    "C": (852, 1633),
    "*": (941, 1209),
    "0": (941, 1336),
    "#": (941, 1477),
    "D": (941, 1633),
}
FREQS = sorted({f for pair in Q23.values() for f in pair})


def goertzel(x: np.ndarray, freq: float, rate: int = 8000) -> float:
    coeff = 2 * np.cos(2 * np.pi * freq / rate)
    s1 = s2 = 0.0
    for v in x:
        s1, s2 = v + coeff * s1 - s2, s1
    return float(s1 * s1 + s2 * s2 - coeff * s1 * s2)


def keys_in(pcm: bytes) -> str:
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float64) / 32768
    out = []
    for start in range(0, len(x) - 400, 800):  # 100 ms tone, 100 ms gap: look at each tone's middle
        block = x[start + 200 : start + 600]
        if np.sqrt(np.mean(block**2)) < 0.01:
            continue
        energy = {f: goertzel(block, f) for f in FREQS}
        low = max((f for f in FREQS if f < 1000), key=energy.__getitem__)
        high = max((f for f in FREQS if f > 1000), key=energy.__getitem__)
        out.append(next(k for k, pair in Q23.items() if pair == (low, high)))
    return "".join(out)


@pytest.mark.parametrize("digits", ["0123456789", "*#ABCD", "159#"])
def test_every_key_is_its_q23_pair_of_tones(digits: str) -> None:
    pcm = dtmf_pcm16(digits)
    assert len(pcm) == len(digits) * 1600 * 2  # 100 ms of tone + 100 ms of silence per key, 16-bit
    assert keys_in(pcm) == digits


def test_w_is_a_half_second_pause() -> None:
    assert len(dtmf_pcm16("1w2")) == (1600 + 4000 + 1600) * 2
    assert keys_in(dtmf_pcm16("1w2")) == "12"
