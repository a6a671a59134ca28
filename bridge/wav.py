"""WAV files in, 8 kHz mu-law out: what a phone call carries (pure).

Reads RIFF/WAVE with PCM (8/16/24/32-bit), IEEE float, A-law or mu-law data at any sample rate and
channel count (the stdlib ``wave`` module reads PCM only), mixes to mono and converts to 8 kHz mu-law.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from bridge.audio import encode_from_pcm16, resample, samples_to_float
from bridge.errors import WavError

_PCM, _FLOAT, _ALAW, _ULAW, _EXTENSIBLE = 1, 3, 6, 7, 0xFFFE


@dataclass(frozen=True, slots=True)
class Wav:
    sample_rate: int
    channels: int
    samples: np.ndarray  # float64 in [-1, 1], mono

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.sample_rate


def read_wav(data: bytes) -> Wav:
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise WavError("not a RIFF/WAVE file")
    pos, fmt, payload = 12, None, None
    while pos + 8 <= len(data):
        cid, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        body = data[pos + 8 : pos + 8 + size]
        if cid == b"fmt ":
            fmt = body
        elif cid == b"data":
            payload = body
        pos += 8 + size + (size & 1)
    if fmt is None or payload is None or len(fmt) < 16:
        raise WavError("missing fmt or data chunk")
    tag, channels, rate, _, block, bits = struct.unpack("<HHIIHH", fmt[:16])
    if tag == _EXTENSIBLE and len(fmt) >= 26:
        tag = struct.unpack("<H", fmt[24:26])[0]
    if channels < 1 or rate < 1000:
        raise WavError(f"unsupported header: {channels} channels at {rate} Hz")
    payload = payload[: len(payload) - len(payload) % block] if block else payload
    try:
        if tag in (_ULAW, _ALAW):
            x = samples_to_float(payload, "ulaw" if tag == _ULAW else "alaw")
        elif tag == _FLOAT and bits in (32, 64):
            x = np.frombuffer(payload, dtype="<f4" if bits == 32 else "<f8").astype(np.float64)
        elif tag == _PCM:
            x = samples_to_float(payload, "pcm", bits)
        else:
            raise ValueError
    except ValueError:
        raise WavError(f"unsupported WAV encoding (format tag {tag}, {bits}-bit)") from None
    if channels > 1:
        x = x[: len(x) - len(x) % channels].reshape(-1, channels).mean(axis=1)
    return Wav(rate, channels, x)


def to_ulaw_8k(wav: Wav) -> bytes:
    """The file's audio as a phone would carry it: 8 kHz G.711 mu-law."""
    x = resample(wav.samples, wav.sample_rate, 8000)
    pcm = np.clip(np.rint(x * 32767), -32768, 32767).astype("<i2").tobytes()
    return encode_from_pcm16(pcm, "ulaw")
