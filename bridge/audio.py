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
any rate change               decode -> polyphase windowed sinc (:class:`RateConverter`) -> encode
============================  ====================================================

Why not ``audioop.ratecv`` (or any linear interpolation): it has no anti-imaging filter and leaves a
mirror image of the speech band at about -11 dB. Even a filter whose transition band is centred on
the input's Nyquist frequency leaves the images of 3.6-4 kHz speech just above 4 kHz, and that was
enough to change Whisper's words on the sample call. :class:`RateConverter` cuts below it: pass
band flat to 3.4 kHz, no time shift (3.25 ms of look-ahead at 8 kHz), and images and aliases 80 dB
below the signal (the one figure: measured worst 80.8 dB, a 3.4 kHz tone from 8 to 44.1 kHz;
``tests/test_audio.py`` prints it per rate and tone and asserts 70 dB, a margin for other CPUs).
"""

from __future__ import annotations

import functools
import math
import sys
import warnings
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal, Protocol

import numpy as np

with warnings.catch_warnings():
    # stdlib audioop warns on 3.11/3.12 and is gone in 3.13, where the audioop-lts
    # package provides the same module.
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop as audioop  # re-exported: the one import of it (bridge.call.answering uses it)

Encoding = Literal["wav/ulaw", "wav/alaw", "wav/pcm"]
Codec = Literal["ulaw", "alaw", "pcm16"]

_BIG_ENDIAN = sys.byteorder == "big"


@dataclass(frozen=True, slots=True)
class AudioFormat:
    """One audio format: codec, sample rate and channels (interleaved; two only for a call's both
    parties on their way to Gladia, see :mod:`bridge.tracks`; transcoders work on mono)."""

    codec: Codec
    sample_rate: int
    channels: int = 1

    @property
    def sample_width(self) -> int:
        return 2 if self.codec == "pcm16" else 1

    @property
    def frame_bytes(self) -> int:
        """One sample of every channel."""
        return self.sample_width * self.channels

    @property
    def bytes_per_second(self) -> int:
        return self.sample_rate * self.frame_bytes

    def bytes_for_ms(self, ms: float) -> int:
        """Whole frames for ``ms`` milliseconds."""
        return int(self.sample_rate * ms / 1000) * self.frame_bytes

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
                raise ValueError(
                    f"{encoding} needs sample_rate 8000 and bit_depth 8 (got {sample_rate} Hz, {bit_depth}-bit)"
                )
            return cls("ulaw" if encoding == "wav/ulaw" else "alaw", 8000)
        if encoding == "wav/pcm":
            if bit_depth != 16 or sample_rate not in GLADIA_RATES:
                raise ValueError(
                    "wav/pcm is supported at bit_depth 16 and sample_rate "
                    f"{'/'.join(map(str, GLADIA_RATES))} (got {sample_rate} Hz, {bit_depth}-bit)"
                )
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


def _native_le(pcm: bytes) -> bytes:
    """audioop's native-order samples to little-endian, or back (the swap is its own inverse)."""
    return audioop.byteswap(pcm, 2) if _BIG_ENDIAN else pcm


def decode_to_pcm16(data: bytes, codec: Codec) -> bytes:
    """Linear 16-bit little-endian samples from ``data`` in ``codec``."""
    if codec == "ulaw":
        return _native_le(audioop.ulaw2lin(data, 2))
    if codec == "alaw":
        return _native_le(audioop.alaw2lin(data, 2))
    return data


def encode_from_pcm16(pcm: bytes, codec: Codec) -> bytes:
    """``codec`` bytes from linear 16-bit little-endian samples."""
    if codec == "ulaw":
        return audioop.lin2ulaw(_native_le(pcm), 2)
    if codec == "alaw":
        return audioop.lin2alaw(_native_le(pcm), 2)
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


class RateConverter:
    """Streaming band-limited sample-rate converter for any ratio of integer rates (float samples).

    Polyphase windowed sinc: for a conversion by ``up / down`` (the rates divided by their greatest
    common divisor), output sample ``n`` sits exactly at input position ``n * down / up``, computed in
    integers so that nothing drifts over a long call, and is a Kaiser-windowed sinc over the input
    samples around it. The kernel is cut at 0.47 of the lower of the two rates (3.76 kHz for 8 kHz), so
    the same filter rejects the images of an upsampling (which Whisper heard as another voice) and the
    aliases of a downsampling. 24 zero crossings each side with Kaiser beta 8: pass band flat within
    0.05 dB to 3.4 kHz at 8 kHz, images and aliases as the module says. Each phase is normalised to
    unity DC gain.

    The kernel is centred (no time shift), so output lags input by ``half_width`` input samples:
    :meth:`feed` returns the outputs whose kernel is complete, and :meth:`flush` the rest (the end of
    the input taken as silence). All state is carried between calls, so the output does not depend on
    how the input was split.

    Cost: the table holds ``up`` phases. A rate coprime with the other (47,999 Hz into 8 kHz has 8000
    phases, 300,007 Hz a table of 122 MB) would make it grow with the rate, so a ratio that needs more
    than ``MAX_PHASES`` phases is replaced by the nearest one that needs at most that many (the audio
    then plays faster or slower by at most 0.05 % for any rate from 8 to 48 kHz into a carrier's
    rate, which no one hears), and rates more than ``MAX_RATIO`` apart are refused. Every
    ratio of the usual rates (8, 11.025, 16, 22.05, 24, 32, 44.1, 48 kHz) is exact: its output is
    unchanged. Tables are shared between converters of the same ratio.
    """

    ZERO_CROSSINGS = 24
    CUTOFF = 0.47  # cycles per sample of the lower rate
    BETA = 8.0
    BLOCK = 4096  # outputs gathered per vectorised step (bounds the temporary matrix)
    PHASE_LOOP_MAX = 16  # up to this many phases, one correlation per phase
    MAX_PHASES = 1024  # at most this many phases (up): 11.025 -> 48 kHz needs 640
    MAX_RATIO = 64  # neither rate more than this many times the other (the kernel's width grows with it)

    def __init__(self, in_rate: int, out_rate: int) -> None:
        if in_rate <= 0 or out_rate <= 0:
            raise ValueError("sample rates must be positive")
        if max(in_rate, out_rate) > self.MAX_RATIO * min(in_rate, out_rate):
            raise ValueError(f"{in_rate} Hz -> {out_rate} Hz: a ratio over {self.MAX_RATIO} is not converted")
        ratio = Fraction(in_rate, out_rate)  # down / up, in lowest terms
        if ratio.denominator > self.MAX_PHASES:
            ratio = ratio.limit_denominator(self.MAX_PHASES)
        self.up, self.down = ratio.denominator, ratio.numerator
        self._table, self.half_width = _kernel(self.up, self.down)
        w = self.half_width
        self._buf = np.zeros(w - 1)  # input samples from index _buf_start on (silence before the start)
        self._buf_start = -(w - 1)
        self._n = 0  # next output sample
        self._received = 0  # input samples fed so far

    def feed(self, x: np.ndarray) -> np.ndarray:
        self._buf = np.concatenate((self._buf, np.asarray(x, dtype=np.float64)))
        self._received += len(x)
        return self._produce(self._received - 1)

    def flush(self) -> np.ndarray:
        """The outputs still inside the kernel's reach, up to the end of the input fed so far."""
        end = self._received  # outputs at input positions < end
        pad = self.half_width + 1
        self._buf = np.concatenate((self._buf, np.zeros(pad)))
        last_needed = self._received - 1 + pad
        out = self._produce(last_needed, limit=-(-end * self.up // self.down))
        self._buf = self._buf[: len(self._buf) - pad]  # the padding is not input
        return out

    def _produce(self, last: int, limit: int | None = None) -> np.ndarray:
        """Outputs whose taps reach no further than input index ``last`` (and below ``limit``)."""
        w, up, down = self.half_width, self.up, self.down
        # output n needs input (n * down) // up + w  <=  last
        stop = ((last - w + 1) * up - 1) // down + 1 if last - w + 1 > 0 else 0
        if limit is not None:
            stop = min(stop, limit)
        first = self._n
        if stop <= first:
            return np.zeros(0)
        out = self._by_phase(first, stop) if up <= self.PHASE_LOOP_MAX else self._gathered(first, stop)
        self._n = stop
        keep_from = (stop * down) // up - w + 1  # first input the next output needs
        drop = keep_from - self._buf_start
        if drop > 0:
            self._buf = self._buf[drop:]
            self._buf_start = keep_from
        return out

    def _by_phase(self, first: int, stop: int) -> np.ndarray:
        """Few phases (8 -> 16 kHz has two, 48 -> 16 kHz one): outputs ``n = r + k * up`` share a phase
        and step ``down`` inputs apart, so each residue ``r`` is one strided correlation (C speed)."""
        w, up, down = self.half_width, self.up, self.down
        out = np.empty(stop - first)
        for r in range(up):
            n0 = first + (r - first) % up  # first output of residue r in [first, stop)
            if n0 >= stop:
                continue
            count = (stop - 1 - n0) // up + 1
            s = (n0 * down) // up - w + 1 - self._buf_start
            seg = self._buf[s : s + (count - 1) * down + 2 * w]
            out[n0 - first :: up] = np.correlate(seg, self._table[(n0 * down) % up], "valid")[::down]
        return out

    def _gathered(self, first: int, stop: int) -> np.ndarray:
        """Many phases (44.1 <-> 16 kHz has 160): gather each output's window and its phase's taps."""
        w, up, down = self.half_width, self.up, self.down
        taps = np.arange(2 * w)
        pieces = []
        for block in range(first, stop, self.BLOCK):
            n = np.arange(block, min(stop, block + self.BLOCK), dtype=np.int64)
            pos = n * down
            idx = (pos // up - w + 1 - self._buf_start)[:, None] + taps[None, :]
            pieces.append(np.einsum("ij,ij->i", self._buf[idx], self._table[pos % up]))
        return np.concatenate(pieces)


@functools.lru_cache(maxsize=32)
def _kernel(up: int, down: int) -> tuple[np.ndarray, int]:
    """:class:`RateConverter`'s polyphase table for ``up / down`` and its half width (read-only: it is
    shared by every converter of that ratio, so a prompt played on many calls builds it once)."""
    cutoff = RateConverter.CUTOFF * min(1.0, up / down)  # cycles per input sample
    w = math.ceil(RateConverter.ZERO_CROSSINGS / (2 * cutoff))
    # table[p, j]: weight of input sample (base - w + 1 + j) for an output at base + p / up.
    offsets = np.arange(up)[:, None] / up + (w - 1) - np.arange(2 * w)[None, :]
    window = _kaiser_at(offsets / (w + 1), RateConverter.BETA)
    h = np.sinc(2 * cutoff * offsets) * window
    table = h / h.sum(axis=1, keepdims=True)
    table.flags.writeable = False
    return table, w


def _kaiser_at(t: np.ndarray, beta: float) -> np.ndarray:
    """The Kaiser window evaluated at ``t`` in [-1, 1] (0 outside)."""
    inside = np.clip(1.0 - t * t, 0.0, None)
    return np.i0(beta * np.sqrt(inside)) / np.i0(beta)


class Resampling:
    """Codec and rate change: decode to 16-bit PCM, :class:`RateConverter`, encode."""

    def __init__(self, source: AudioFormat, target: AudioFormat) -> None:
        self.source, self.target = source, target
        self._conv = RateConverter(source.sample_rate, target.sample_rate)

    def feed(self, data: bytes) -> bytes:
        x = np.frombuffer(decode_to_pcm16(data, self.source.codec), dtype="<i2").astype(np.float64)
        return encode_from_pcm16(_to_pcm16(self._conv.feed(x)), self.target.codec)

    def flush(self) -> bytes:
        return encode_from_pcm16(_to_pcm16(self._conv.flush()), self.target.codec)


def _to_pcm16(x: np.ndarray) -> bytes:
    out: bytes = np.clip(np.rint(x), -32768, 32767).astype("<i2").tobytes()
    return out


def resample(x: np.ndarray, in_rate: int, out_rate: int) -> np.ndarray:
    """One-shot :class:`RateConverter`: all of ``x`` at ``out_rate``."""
    if in_rate == out_rate:
        return np.asarray(x, dtype=np.float64)
    conv = RateConverter(in_rate, out_rate)
    return np.concatenate((conv.feed(x), conv.flush()))


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


def hushed(audio: bytes, fmt: AudioFormat) -> bytes:
    """``audio`` replaced by digital silence of the same length in ``fmt``."""
    return {"ulaw": b"\xff", "alaw": b"\xd5", "pcm16": b"\x00"}[fmt.codec] * len(audio)


def tone_level_db(samples: np.ndarray, rate: int, freq: float) -> float:
    """Level of one frequency in dB relative to a full-amplitude sine (single-bin DFT, Hann window)."""
    n = len(samples)
    window = np.hanning(n)
    t = np.arange(n) / rate
    bin_value = np.abs(np.sum(samples * window * np.exp(-2j * math.pi * freq * t)))
    amplitude = 2 * bin_value / window.sum()
    return 20 * math.log10(max(amplitude, 1e-12) / 32768)
