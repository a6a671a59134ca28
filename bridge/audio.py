"""Audio: turn the phone's native audio into the encoding declared for the call's Gladia session.

Sans-I/O and stateful per call: a :class:`Transcoder` takes bytes with ``feed()`` and returns bytes,
carrying filter state across frames, so feeding a call frame by frame gives exactly the bytes a
one-shot conversion gives. Never consults a clock.

The phone side is G.711 mu-law or A-law at 8 kHz, or 16-bit linear PCM (L16, little-endian) at the
carrier's rate. By default the call's Gladia encoding is the native one whenever Gladia accepts it
(:func:`native_gladia_format`), and bytes pass through untouched. Otherwise, for example for Twilio's
mu-law into a profile that declares ``wav/pcm`` 16 kHz:

============================  ====================================================
Gladia side                   what happens
============================  ====================================================
same as the phone             passthrough, no copy (the default for every carrier)
same rate, other codec        G.711 decode / encode (e.g. mu-law -> A-law or PCM)
x2 the rate (8 -> 16 kHz)     decode -> x2 polyphase FIR interpolator
any other rate change         decode -> anti-alias FIR + interpolation (:class:`RateConverter`)
============================  ====================================================

Why not ``audioop.ratecv`` for 8 -> 16 kHz: it is linear interpolation with no anti-imaging filter
and leaves a mirror image of the speech band at about -11 dB. :class:`Upsampler2x` is a 95-tap
Kaiser-windowed sinc (linear phase) that rejects images by more than 60 dB, with a group delay of
47 output samples (2.9 ms).
"""

from __future__ import annotations

import math
import sys
import warnings
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

with warnings.catch_warnings():
    # stdlib audioop warns on 3.11/3.12 and is gone in 3.13, where the audioop-lts
    # package provides the same module.
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

Encoding = Literal["wav/ulaw", "wav/alaw", "wav/pcm"]
Codec = Literal["ulaw", "alaw", "pcm16"]

_BIG_ENDIAN = sys.byteorder == "big"


@dataclass(frozen=True, slots=True)
class AudioFormat:
    """One mono audio format: codec and sample rate."""

    codec: Codec
    sample_rate: int

    @property
    def sample_width(self) -> int:
        return 2 if self.codec == "pcm16" else 1

    @property
    def bytes_per_second(self) -> int:
        return self.sample_rate * self.sample_width

    def bytes_for_ms(self, ms: float) -> int:
        """Whole samples for ``ms`` milliseconds."""
        return int(self.sample_rate * ms / 1000) * self.sample_width

    @property
    def encoding(self) -> Encoding:
        return {"ulaw": "wav/ulaw", "alaw": "wav/alaw", "pcm16": "wav/pcm"}[self.codec]  # type: ignore[return-value]

    @property
    def bit_depth(self) -> int:
        return 8 * self.sample_width

    @classmethod
    def gladia(cls, encoding: str, sample_rate: int, bit_depth: int) -> AudioFormat:
        """The format for a Gladia ``StreamingRequest``'s audio fields, if the bridge can produce it.

        Raises:
            ValueError: an unsupported combination; the message says which are supported.
        """
        if encoding in ("wav/ulaw", "wav/alaw"):
            if sample_rate != 8000 or bit_depth != 8:
                raise ValueError(f"{encoding} needs sample_rate 8000 and bit_depth 8 "
                                 f"(got {sample_rate} Hz, {bit_depth}-bit)")
            return cls("ulaw" if encoding == "wav/ulaw" else "alaw", 8000)
        if encoding == "wav/pcm":
            if bit_depth != 16 or sample_rate not in GLADIA_RATES:
                raise ValueError("wav/pcm is supported at bit_depth 16 and sample_rate "
                                 f"{'/'.join(map(str, GLADIA_RATES))} (got {sample_rate} Hz, {bit_depth}-bit)")
            return cls("pcm16", sample_rate)
        raise ValueError(f"encoding must be native, wav/ulaw, wav/alaw or wav/pcm (got {encoding!r})")


GLADIA_RATES = (8000, 16000, 32000, 44100, 48000)


def native_gladia_format(native: AudioFormat) -> AudioFormat:
    """What Gladia gets by default: the carrier's own format when Gladia accepts it (mu-law ->
    ``wav/ulaw``, A-law -> ``wav/alaw``, L16 -> ``wav/pcm`` at the native rate), else 16 kHz PCM."""
    if native.codec != "pcm16" or native.sample_rate in GLADIA_RATES:
        return native
    return AudioFormat("pcm16", 16000)


ULAW_8K = AudioFormat("ulaw", 8000)
ALAW_8K = AudioFormat("alaw", 8000)
PCM16_8K = AudioFormat("pcm16", 8000)
PCM16_16K = AudioFormat("pcm16", 16000)


class Transcoder(Protocol):
    """Streaming converter: ``feed`` each frame in order, ``flush`` once at the end."""

    source: AudioFormat
    target: AudioFormat

    def feed(self, data: bytes) -> bytes: ...

    def flush(self) -> bytes: ...


def _to_le(pcm: bytes) -> bytes:
    return audioop.byteswap(pcm, 2) if _BIG_ENDIAN else pcm


def _from_le(pcm: bytes) -> bytes:
    return audioop.byteswap(pcm, 2) if _BIG_ENDIAN else pcm


def decode_to_pcm16(data: bytes, codec: Codec) -> bytes:
    """Linear 16-bit little-endian samples from ``data`` in ``codec``."""
    if codec == "ulaw":
        return _to_le(audioop.ulaw2lin(data, 2))
    if codec == "alaw":
        return _to_le(audioop.alaw2lin(data, 2))
    return data


def encode_from_pcm16(pcm: bytes, codec: Codec) -> bytes:
    """``codec`` bytes from linear 16-bit little-endian samples."""
    if codec == "ulaw":
        return audioop.lin2ulaw(_from_le(pcm), 2)
    if codec == "alaw":
        return audioop.lin2alaw(_from_le(pcm), 2)
    return pcm


class Passthrough:
    """Source and target are the same: bytes pass unchanged."""

    def __init__(self, fmt: AudioFormat) -> None:
        self.source = self.target = fmt

    def feed(self, data: bytes) -> bytes:
        return data

    def flush(self) -> bytes:
        return b""


class G711Transcoder:
    """Sample-by-sample codec change at the same rate (no state needed)."""

    def __init__(self, source: AudioFormat, target: AudioFormat) -> None:
        if source.sample_rate != target.sample_rate:
            raise ValueError("G711Transcoder does not resample")
        self.source, self.target = source, target

    def feed(self, data: bytes) -> bytes:
        return encode_from_pcm16(decode_to_pcm16(data, self.source.codec), self.target.codec)

    def flush(self) -> bytes:
        return b""


def kaiser_lowpass(taps: int, cutoff: float, beta: float) -> np.ndarray:
    """Linear-phase windowed-sinc low-pass; ``cutoff`` as a fraction of the sample rate."""
    n = np.arange(taps) - (taps - 1) / 2
    h = 2 * cutoff * np.sinc(2 * cutoff * n) * np.kaiser(taps, beta)
    result: np.ndarray = h / h.sum()
    return result


class Upsampler2x:
    """Stateful x2 interpolator for 16-bit mono PCM (e.g. 8 kHz -> 16 kHz).

    Polyphase form of zero-stuffing followed by a low-pass at a quarter of the output rate: the
    even and odd output samples are each one short FIR over the input, so the cost per input
    sample is ``taps`` multiply-adds. The last ``taps // 2`` input samples are carried between
    calls, which makes the output independent of how the input was split. The output is causal:
    ``delay_samples`` output samples of group delay, and ``feed`` returns exactly twice the input
    length; ``flush`` returns nothing (the tail still inside the filter is under 3 ms).
    """

    TAPS = 95
    BETA = 8.0  # Kaiser beta for about 80 dB of stop-band attenuation

    def __init__(self, taps: int = TAPS, beta: float = BETA) -> None:
        if taps % 2 == 0:
            raise ValueError("taps must be odd (linear phase, integer delay)")
        # Pass band to ~3.4 kHz, stop band from ~4.6 kHz at 16 kHz output: centre the transition on
        # the input Nyquist frequency (a quarter of the output rate).
        h = kaiser_lowpass(taps, 0.25, beta) * 2.0  # x2: zero-stuffing halves the level
        self._even = h[0::2].astype(np.float64)  # phase producing output samples 2n
        self._odd = h[1::2].astype(np.float64)  # phase producing output samples 2n+1
        self._history = np.zeros(len(self._even) - 1, dtype=np.float64)
        self.delay_samples = (taps - 1) // 2

    def feed_samples(self, x: np.ndarray) -> np.ndarray:
        """Upsample float samples; returns ``2 * len(x)`` float samples."""
        if len(x) == 0:
            return np.zeros(0, dtype=np.float64)
        xx = np.concatenate((self._history, x))
        even = np.convolve(xx, self._even, mode="valid")
        odd = np.convolve(xx[1:], self._odd, mode="valid") if len(self._odd) else np.zeros(0)
        # Zero-stuffed sequence u[2m] = x[m]; y[k] = sum_j h[j] u[k - j].
        #   y[2n]   = sum_i h[2i]   x[n - i]       -> even phase over the last len(even) inputs
        #   y[2n+1] = sum_i h[2i+1] x[n - i]       -> odd phase over the last len(odd) inputs
        keep = len(self._even) - 1
        self._history = xx[len(xx) - keep:] if keep else np.zeros(0)
        out = np.empty(2 * len(x), dtype=np.float64)
        out[0::2] = even
        out[1::2] = odd[len(odd) - len(x):]
        return out

    def feed(self, pcm: bytes) -> bytes:
        x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
        y = self.feed_samples(x)
        out: bytes = np.clip(np.rint(y), -32768, 32767).astype("<i2").tobytes()
        return out


class RateConverter:
    """Streaming sample-rate converter for any ratio (float samples in, float samples out).

    Going down, an anti-alias FIR (cut at 0.45 of the output rate) runs first; output samples are then
    interpolated linearly at the output instants. All state is carried between calls, so the output
    does not depend on how the input was split.
    """

    TAPS = 63

    def __init__(self, in_rate: int, out_rate: int) -> None:
        self.step = in_rate / out_rate
        self._fir = kaiser_lowpass(self.TAPS, 0.45 * out_rate / in_rate, 8.0) if out_rate < in_rate else None
        self._hist = np.zeros(self.TAPS - 1)
        self._buf = np.zeros(0)
        self._buf_start = 0  # input index of _buf[0]
        self._next = 0.0  # input position of the next output sample

    def feed(self, x: np.ndarray) -> np.ndarray:
        if self._fir is not None:
            xx = np.concatenate((self._hist, x))
            y = np.convolve(xx, self._fir, mode="valid")
            self._hist = xx[len(xx) - (self.TAPS - 1):]
        else:
            y = x
        self._buf = np.concatenate((self._buf, y))
        end = self._buf_start + len(self._buf)
        if end - 1 <= self._next:
            return np.zeros(0)
        n_out = math.ceil((end - 1 - self._next) / self.step)
        positions = self._next + self.step * np.arange(n_out)
        base = np.floor(positions)
        idx = base.astype(np.int64) - self._buf_start
        frac = positions - base
        out: np.ndarray = self._buf[idx] * (1 - frac) + self._buf[idx + 1] * frac
        self._next += self.step * n_out
        drop = min(math.floor(self._next) - self._buf_start, len(self._buf))
        if drop > 0:
            self._buf = self._buf[drop:]
            self._buf_start += drop
        return out


class Resampling:
    """Codec and rate change: decode to 16-bit PCM, resample (x2 FIR, or :class:`RateConverter`), encode."""

    def __init__(self, source: AudioFormat, target: AudioFormat) -> None:
        self.source, self.target = source, target
        self._up = Upsampler2x() if target.sample_rate == 2 * source.sample_rate else None
        self._conv = None if self._up else RateConverter(source.sample_rate, target.sample_rate)

    def feed(self, data: bytes) -> bytes:
        pcm = decode_to_pcm16(data, self.source.codec)
        if self._up is not None:
            out = self._up.feed(pcm)
        else:
            assert self._conv is not None
            x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
            out = np.clip(np.rint(self._conv.feed(x)), -32768, 32767).astype("<i2").tobytes()
        return encode_from_pcm16(out, self.target.codec)

    def flush(self) -> bytes:
        return b""


def make_transcoder(source: AudioFormat, target: AudioFormat) -> Transcoder:
    """The converter from the phone's native format to the call's Gladia format."""
    if source == target:
        return Passthrough(source)
    if source.sample_rate == target.sample_rate:
        return G711Transcoder(source, target)
    return Resampling(source, target)


def samples_to_float(raw: bytes, codec: Literal["ulaw", "alaw", "pcm"], bits: int = 16) -> np.ndarray:
    """Interleaved samples -> float64 in [-1, 1): G.711, or little-endian PCM at 8 (unsigned, as in
    WAV), 16, 24 or 32 bits. ``raw`` must hold whole samples."""
    if codec in ("ulaw", "alaw"):
        return np.frombuffer(decode_to_pcm16(raw, codec), dtype="<i2") / 32768.0
    if bits == 8:
        return (np.frombuffer(raw, dtype=np.uint8).astype(np.float64) - 128.0) / 128.0
    if bits == 16:
        return np.frombuffer(raw, dtype="<i2") / 32768.0
    if bits == 24:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        result: np.ndarray = np.where(v >= 1 << 23, v - (1 << 24), v) / float(1 << 23)
        return result
    if bits == 32:
        return np.frombuffer(raw, dtype="<i4") / float(1 << 31)
    raise ValueError(f"no {bits}-bit PCM")


def silence(fmt: AudioFormat, ms: float) -> bytes:
    """Digital silence in ``fmt`` (mu-law 0xFF, A-law 0xD5, PCM zeros)."""
    n = fmt.bytes_for_ms(ms)
    fill = {"ulaw": b"\xff", "alaw": b"\xd5", "pcm16": b"\x00"}[fmt.codec]
    return fill * n


def tone_level_db(samples: np.ndarray, rate: int, freq: float) -> float:
    """Level of one frequency in dB relative to a full-amplitude sine (single-bin DFT, Hann window)."""
    n = len(samples)
    window = np.hanning(n)
    t = np.arange(n) / rate
    bin_value = np.abs(np.sum(samples * window * np.exp(-2j * math.pi * freq * t)))
    amplitude = 2 * bin_value / window.sum()
    return 20 * math.log10(max(amplitude, 1e-12) / 32768)
