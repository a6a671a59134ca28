"""Audio transcoding: reference values, streaming equivalence, resampler image rejection and delay."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from bridge.audio import (
    ALAW_8K,
    PCM16_8K,
    PCM16_16K,
    ULAW_8K,
    AudioFormat,
    RateConverter,
    make_transcoder,
    silence,
    tone_level_db,
)


# An independent G.711 reference (the classic public-domain Sun g711.c algorithm), written out
# here so the bridge's output is checked against the standard rather than against itself.
def ref_ulaw_to_linear(u: int) -> int:
    u = ~u & 0xFF
    t = ((u & 0x0F) << 3) + 0x84
    t <<= (u & 0x70) >> 4
    return (0x84 - t) if (u & 0x80) else (t - 0x84)


def ref_linear_to_alaw(pcm: int) -> int:
    pcm >>= 3
    if pcm >= 0:
        mask = 0xD5
    else:
        mask = 0x55
        pcm = -pcm - 1
    for seg, end in enumerate((0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF)):
        if pcm <= end:
            aval = seg << 4
            aval |= ((pcm >> 1) if seg < 2 else (pcm >> seg)) & 0x0F
            return aval ^ mask
    return 0x7F ^ mask


ALL_ULAW = bytes(range(256))


def samples(pcm: bytes) -> list[int]:
    return [int(v) for v in np.frombuffer(pcm, dtype="<i2")]


def test_ulaw_to_pcm16_8k_matches_g711_reference() -> None:
    """Every mu-law code decodes to the G.711 reference value, little-endian 16-bit."""
    out = make_transcoder(ULAW_8K, PCM16_8K).feed(ALL_ULAW)
    assert samples(out) == [ref_ulaw_to_linear(u) for u in ALL_ULAW]
    assert samples(out)[0x00] == -32124 and samples(out)[0x80] == 32124
    assert samples(out)[0xFF] == 0 and samples(out)[0x7F] == 0


def test_ulaw_to_alaw_matches_g711_reference() -> None:
    """Every mu-law code maps to the A-law code the reference encoder gives for its value."""
    out = make_transcoder(ULAW_8K, ALAW_8K).feed(ALL_ULAW)
    assert list(out) == [ref_linear_to_alaw(ref_ulaw_to_linear(u)) for u in ALL_ULAW]
    assert out[0xFF] == 0xD5  # mu-law silence becomes A-law silence


def test_passthrough_is_the_identity() -> None:
    """The default path (wav/ulaw 8 kHz) hands bytes through unchanged."""
    data = random.Random(3).randbytes(1000)
    assert make_transcoder(ULAW_8K, ULAW_8K).feed(data) == data


@pytest.mark.parametrize("target", [ULAW_8K, ALAW_8K, PCM16_8K, PCM16_16K])
def test_frame_by_frame_equals_one_shot(target: AudioFormat) -> None:
    """State is carried across frames: 20 ms frames give exactly the one-shot bytes."""
    data = random.Random(5).randbytes(8000)
    one = make_transcoder(ULAW_8K, target)
    many = make_transcoder(ULAW_8K, target)
    whole = one.feed(data) + one.flush()
    framed = b"".join(many.feed(data[i : i + 160]) for i in range(0, len(data), 160)) + many.flush()
    assert whole == framed
    assert len(whole) == len(data) * target.bytes_per_second // 8000


def _converted_tone(freq: float, in_rate: int, out_rate: int, level: float = 0.5) -> np.ndarray:
    """One second of a tone through :class:`RateConverter`, fed in 20 ms pieces, ends trimmed."""
    x = level * 32768 * np.sin(2 * math.pi * freq * np.arange(in_rate) / in_rate)  # 16-bit scale
    conv = RateConverter(in_rate, out_rate)
    step = in_rate // 50
    y = np.concatenate([conv.feed(x[i : i + step]) for i in range(0, len(x), step)] + [conv.flush()])
    assert len(y) == out_rate
    return y[out_rate // 10 : -out_rate // 10]


@pytest.mark.parametrize(("in_rate", "out_rate"), [(8000, 16000), (8000, 44100), (8000, 48000)])
@pytest.mark.parametrize("freq", [300.0, 1000.0, 3000.0, 3400.0])
def test_upsampling_rejects_images_by_at_least_70_db(freq: float, in_rate: int, out_rate: int) -> None:
    """8 kHz up: the mirror images at k*8000 +- f are at least 70 dB below the tone (the printed
    figures are the ones ``bridge.audio`` quotes), and the pass band is flat to 3.4 kHz."""
    y = _converted_tone(freq, in_rate, out_rate)
    tone = tone_level_db(y, out_rate, freq)
    images = [k * in_rate + s * freq for k in range(1, out_rate // in_rate + 1) for s in (-1, 1)]
    worst = max(tone_level_db(y, out_rate, f) for f in images if f < out_rate / 2)
    print(f"{in_rate}->{out_rate} {freq:.0f} Hz: tone {tone:.2f} dBFS, worst image {worst:.1f} dBFS")
    assert tone - worst >= 70.0
    assert tone == pytest.approx(20 * math.log10(0.5), abs=0.1)


@pytest.mark.parametrize(("in_rate", "out_rate"), [(16000, 8000), (48000, 16000), (44100, 16000), (32000, 16000)])
def test_downsampling_rejects_aliases_by_at_least_70_db(in_rate: int, out_rate: int) -> None:
    """A tone above the output's Nyquist frequency is removed (its alias at least 70 dB down); a tone
    below 0.45 of the output rate passes unchanged."""
    above = 0.5 * out_rate + 0.1 * out_rate
    y = _converted_tone(above, in_rate, out_rate)
    alias = tone_level_db(y, out_rate, out_rate - above)
    assert alias - 20 * math.log10(0.5) <= -70.0, alias
    kept = 0.4 * out_rate
    y = _converted_tone(kept, in_rate, out_rate)
    assert tone_level_db(y, out_rate, kept) == pytest.approx(20 * math.log10(0.5), abs=0.1)


@pytest.mark.parametrize(("in_rate", "out_rate"), [(8000, 16000), (16000, 8000), (8000, 44100), (48000, 16000)])
def test_resampling_shifts_nothing_in_time_and_looks_ahead_at_most_5_ms(in_rate: int, out_rate: int) -> None:
    """An impulse at input time t comes out centred at output time t (timestamps stay exact), and
    the converter holds back at most 5 ms of input until it has the samples after it."""
    x = np.zeros(in_rate // 10)
    x[in_rate // 20] = 1.0  # at 50 ms
    conv = RateConverter(in_rate, out_rate)
    held = len(x) * out_rate // in_rate - len(conv.feed(x))
    y = np.concatenate((np.zeros(0), conv.flush()))
    print(f"{in_rate}->{out_rate}: look-ahead {conv.half_width / in_rate * 1000:.2f} ms")
    assert conv.half_width / in_rate <= 0.005
    assert held <= math.ceil(0.005 * out_rate) + 1
    conv = RateConverter(in_rate, out_rate)
    y = np.concatenate((conv.feed(x), conv.flush()))
    peak = int(np.argmax(y))
    assert abs(peak / out_rate - 0.05) <= 0.5 / min(in_rate, out_rate)


def test_resampling_is_independent_of_how_the_input_is_split() -> None:
    """Random piece sizes give the same samples as one call (state carried exactly)."""
    x = np.random.default_rng(7).standard_normal(48000)
    for in_rate, out_rate in [(44100, 16000), (8000, 16000), (48000, 16000), (16000, 24000)]:
        whole = RateConverter(in_rate, out_rate)
        a = np.concatenate((whole.feed(x[:in_rate]), whole.flush()))
        split = RateConverter(in_rate, out_rate)
        rng = random.Random(in_rate)
        pieces, i = [], 0
        while i < in_rate:
            n = min(rng.randint(0, 700), in_rate - i)
            pieces.append(split.feed(x[i : i + n]))
            i += n
        b = np.concatenate([*pieces, split.flush()])
        assert len(a) == len(b) == out_rate
        np.testing.assert_allclose(a, b, atol=1e-12)


def test_silence_bytes_per_codec() -> None:
    """Silence is mu-law 0xFF, A-law 0xD5 and PCM zeros, sized by duration."""
    assert silence(ULAW_8K, 20) == b"\xff" * 160
    assert silence(ALAW_8K, 20) == b"\xd5" * 160
    assert silence(PCM16_16K, 20) == b"\x00" * 640


@pytest.mark.parametrize(
    ("encoding", "rate", "depth"),
    [
        ("wav/ulaw", 16000, 8),
        ("wav/alaw", 8000, 16),
        ("wav/pcm", 22050, 16),
        ("wav/pcm", 8000, 24),
        ("mp3", 8000, 8),
    ],
)
def test_unsupported_gladia_formats_are_refused(encoding: str, rate: int, depth: int) -> None:
    """Formats the bridge cannot produce are refused with a message naming what is supported."""
    with pytest.raises(ValueError, match=r"wav/|encoding"):
        AudioFormat.gladia(encoding, rate, depth)
