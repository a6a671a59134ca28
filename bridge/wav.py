"""WAV files in, 8 kHz mu-law out: what a phone call carries (pure).

Reads RIFF/WAVE with PCM (8/16/24/32-bit), IEEE float, A-law or mu-law data at any sample rate a
telephone prompt can have (:data:`MIN_WAV_RATE` to :data:`MAX_WAV_RATE`) and any channel count (the
stdlib ``wave`` module reads PCM only), mixes to mono and converts to 8 kHz mu-law.

What a header declares is checked before anything is decoded: a rate outside that range (a bot's
84-byte WAV "at 300,007 Hz" once cost every call seconds of stall and a gigabyte of filter table), and,
with ``max_seconds``, a duration over the caller's bound (a WAV is never converted only to be refused).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from bridge.audio import encode_from_pcm16, resample, samples_to_float
from bridge.errors import WavError

_PCM, _FLOAT, _ALAW, _ULAW, _EXTENSIBLE = 1, 3, 6, 7, 0xFFFE
MIN_WAV_RATE = 8000  # Hz: narrowband telephony, the lowest rate a prompt is recorded at
MAX_WAV_RATE = 48000  # Hz: studio audio; anything above is no telephone prompt


@dataclass(frozen=True, slots=True)
class Wav:
    sample_rate: int
    channels: int
    samples: np.ndarray  # float64 in [-1, 1], mono

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.sample_rate


def read_wav(data: bytes, *, max_seconds: float | None = None) -> Wav:
    """The WAV's audio, mixed to mono.

    Raises:
        WavError: not a WAV this reads, a rate outside ``MIN_WAV_RATE``-``MAX_WAV_RATE``, or (checked
            from the header, before decoding) longer than ``max_seconds``.
    """
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
    if channels < 1:
        raise WavError(f"unsupported header: {channels} channels")
    if not MIN_WAV_RATE <= rate <= MAX_WAV_RATE:
        raise WavError(f"unsupported sample rate {rate} Hz: a WAV must be {MIN_WAV_RATE} to {MAX_WAV_RATE} Hz")
    payload = payload[: len(payload) - len(payload) % block] if block else payload
    sample_bytes = 1 if tag in (_ULAW, _ALAW) else bits // 8
    if max_seconds is not None and sample_bytes > 0:
        seconds = len(payload) // (sample_bytes * channels) / rate
        if seconds > max_seconds:
            raise WavError(f"a WAV of {seconds:.1f} s: longer than the {max_seconds:.0f} s allowed here")
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


def pcm16_wav(pcm: bytes, sample_rate: int) -> bytes:
    """A RIFF/WAVE file of 16-bit little-endian mono PCM."""
    header = struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF", 36 + len(pcm), b"WAVE", b"fmt ", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16, b"data", len(pcm),
    )  # fmt: skip
    return header + pcm
