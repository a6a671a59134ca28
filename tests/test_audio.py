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
    Upsampler2x,
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
    return np.frombuffer(pcm, dtype="<i2").tolist()


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
    framed = b"".join(many.feed(data[i:i + 160]) for i in range(0, len(data), 160)) + many.flush()
    assert whole == framed
    assert len(whole) == len(data) * target.bytes_per_second // 8000


def _upsample_tone(freq: float, seconds: float = 1.0, level: float = 0.5) -> np.ndarray:
    t = np.arange(int(8000 * seconds)) / 8000
    x = np.rint(level * 32767 * np.sin(2 * math.pi * freq * t)).astype("<i2").tobytes()
    up = Upsampler2x()
    out = b"".join(up.feed(x[i:i + 320]) for i in range(0, len(x), 320))
    return np.frombuffer(out, dtype="<i2").astype(np.float64)[400:]  # skip the filter's start-up


@pytest.mark.parametrize("freq", [300.0, 1000.0, 3000.0, 3400.0])
def test_upsampler_rejects_images_by_at_least_50_db(freq: float) -> None:
    """8 -> 16 kHz: the mirror image at 8000 - f is at least 50 dB below the tone (ratecv: ~11 dB)."""
    y = _upsample_tone(freq)
    tone = tone_level_db(y, 16000, freq)
    image = tone_level_db(y, 16000, 8000 - freq)
    print(f"{freq:.0f} Hz: tone {tone:.2f} dBFS, image {image:.1f} dBFS, rejection {tone - image:.1f} dB")
    assert tone - image >= 50.0
    assert tone == pytest.approx(20 * math.log10(0.5), abs=0.5)  # pass band kept (no ratecv droop)


def test_upsampler_adds_at_most_5_ms_of_delay() -> None:
    """An impulse comes out (peak of the response) at most 5 ms later than its input position."""
    x = np.zeros(800, dtype="<i2")
    x[100] = 16000
    up = Upsampler2x()
    y = np.frombuffer(up.feed(x.tobytes()), dtype="<i2")
    delay_samples = int(np.argmax(np.abs(y))) - 2 * 100
    delay_ms = delay_samples / 16.0
    print(f"upsampler delay: {delay_samples} samples at 16 kHz = {delay_ms:.2f} ms")
    assert 0 <= delay_ms <= 5.0
    assert delay_samples == up.delay_samples


def test_silence_bytes_per_codec() -> None:
    """Silence is mu-law 0xFF, A-law 0xD5 and PCM zeros, sized by duration."""
    assert silence(ULAW_8K, 20) == b"\xff" * 160
    assert silence(ALAW_8K, 20) == b"\xd5" * 160
    assert silence(PCM16_16K, 20) == b"\x00" * 640


@pytest.mark.parametrize(("encoding", "rate", "depth"), [
    ("wav/ulaw", 16000, 8), ("wav/alaw", 8000, 16), ("wav/pcm", 22050, 16), ("wav/pcm", 8000, 24), ("mp3", 8000, 8),
])
def test_unsupported_gladia_formats_are_refused(encoding: str, rate: int, depth: int) -> None:
    """Formats the bridge cannot produce are refused with a message naming what is supported."""
    with pytest.raises(ValueError, match=r"wav/|encoding"):
        AudioFormat.gladia(encoding, rate, depth)
