"""Opus encoding through the system's libopus (``ctypes``): 16-bit PCM in, Opus packets out (pure: no I/O,
no logging; the Ogg pages are :mod:`.ogg`'s, the file is :mod:`.opus_file`'s).

Why libopus directly: libsndfile (through soundfile) offers no control of the encoder's complexity and
runs it at libopus's default (10), about 9 ms of CPU per call-second of 8 kHz stereo, three times the
rest of the bridge. At complexity 0 the same encoder costs about a sixth of that (figures from
``benchmarks/bench_recording.py`` in ``docs/recordings.md``).

The choices, each measured on the shipped two-party call:

* ``OPUS_APPLICATION_VOIP`` (SILK for narrowband speech), not ``RESTRICTED_LOWDELAY`` (CELT only):
  CELT costs about a third less, but at ~12 kb/s a channel it codes the upper bands as intensity
  stereo, so each party leaks into the other's channel (a silent channel gets the other's audio about
  16 dB down; 80 dB with SILK). Two parties on two channels are the point of the recording.
* Complexity 0: 1 to 3 cost up to 1.7x as much, and the decoded speech's signal-to-error ratio moves
  by less than 0.2 dB (about 9.5 dB at every level: a perceptual codec, not a waveform one).
* 12 kb/s a channel at 8 kHz (16 at 16 kHz), as the recordings had through libsndfile.
* 20 ms frames: 40 and 60 ms save about 3 % of CPU, not worth a longer tail held in the encoder.

libopus takes 8, 12, 16, 24 and 48 kHz input natively (no resampling here); Ogg counts 48 kHz samples
whatever the input rate, so :attr:`OpusEncoder.pre_skip` is the lookahead scaled to 48 kHz.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import weakref

OPUS_APPLICATION_VOIP = 2048
OPUS_APPLICATION_RESTRICTED_LOWDELAY = 2051
COMPLEXITY = 0  # see the module docstring
RATES = (8000, 12000, 16000, 24000, 48000)
FRAME_MS = 20
OPUS_RATE = 48000
_SONAME = "libopus.so.0"  # Debian's libopus0
_SET_BITRATE, _SET_COMPLEXITY, _SET_SIGNAL, _GET_LOOKAHEAD = 4002, 4010, 4024, 4027
_SIGNAL_VOICE = 3001
_MAX_PACKET = 1500  # RFC 6716: at most 1275 bytes a frame; libopus's own tools use 1500


@functools.cache
def library() -> ctypes.CDLL | None:
    """The loaded libopus 1.x with its prototypes set, or None when the system has none (then recordings
    fall back to libsndfile: the caller decides, nothing is logged here)."""
    for name in dict.fromkeys((ctypes.util.find_library("opus"), _SONAME)):
        if name is None:
            continue
        try:
            lib = ctypes.CDLL(name)
            lib.opus_get_version_string.restype = ctypes.c_char_p
            lib.opus_get_version_string.argtypes = []
            if not str(lib.opus_get_version_string(), "ascii", "replace").startswith("libopus 1."):
                continue
            lib.opus_strerror.restype = ctypes.c_char_p
            lib.opus_strerror.argtypes = [ctypes.c_int]
            lib.opus_encoder_create.restype = ctypes.c_void_p
            lib.opus_encoder_create.argtypes = [
                ctypes.c_int32,
                ctypes.c_int,
                ctypes.c_int,
                ctypes.POINTER(ctypes.c_int),
            ]
            lib.opus_encoder_destroy.restype = None
            lib.opus_encoder_destroy.argtypes = [ctypes.c_void_p]
            lib.opus_encode.restype = ctypes.c_int32
            lib.opus_encode.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int32]
            # opus_encoder_ctl is variadic: no argtypes, every call passes explicit ctypes values.
            lib.opus_encoder_ctl.restype = ctypes.c_int
        except (OSError, AttributeError):
            continue
        return lib
    return None


def version() -> str | None:
    """libopus's version string (``"libopus 1.3.1"``), or None when it cannot be loaded."""
    lib = library()
    return None if lib is None else str(lib.opus_get_version_string(), "ascii", "replace")


class OpusEncoder:
    """One Opus stream's encoder: :meth:`encode` takes interleaved 16-bit PCM in any amounts and returns
    the packets of the whole 20 ms frames so far; :meth:`finish` pads the rest with silence (as far as
    the lookahead, so the last audio comes out) and returns the last packets.

    Every packet holds :attr:`packet_samples` samples at 48 kHz (what an Ogg granule position counts).
    """

    def __init__(
        self,
        rate: int,
        channels: int,
        *,
        bitrate: int,
        complexity: int | None = None,
        application: int = OPUS_APPLICATION_VOIP,
    ) -> None:
        """``complexity`` None: :data:`COMPLEXITY`, read now (the benchmark sets it to compare levels).
        Raises OSError when libopus cannot be loaded or allocate, ValueError for what it refuses."""
        lib = library()
        if lib is None:
            raise OSError(f"libopus not found ({_SONAME}, Debian's libopus0)")
        if rate not in RATES or channels not in (1, 2):
            raise ValueError(f"Opus encodes {RATES} Hz, one or two channels, not {rate} Hz x{channels}")
        self._lib = lib
        self.rate, self.channels = rate, channels
        self.frame = rate * FRAME_MS // 1000  # samples a channel in one packet
        self.packet_samples = OPUS_RATE * FRAME_MS // 1000
        self._step = 2 * channels * self.frame  # bytes of PCM in one packet
        err = ctypes.c_int()
        handle = lib.opus_encoder_create(rate, channels, application, ctypes.byref(err))
        if not handle or err.value != 0:
            raise OSError(f"opus_encoder_create: {self._error(err.value)}")
        self._handle: int | None = handle
        self._finalizer = weakref.finalize(self, lib.opus_encoder_destroy, handle)
        lookahead = ctypes.c_int32()
        for request, arg in (
            (_SET_COMPLEXITY, ctypes.c_int(COMPLEXITY if complexity is None else complexity)),
            (_SET_BITRATE, ctypes.c_int(bitrate)),
            (_SET_SIGNAL, ctypes.c_int(_SIGNAL_VOICE)),
            (_GET_LOOKAHEAD, ctypes.pointer(lookahead)),
        ):
            code = lib.opus_encoder_ctl(ctypes.c_void_p(handle), ctypes.c_int(request), arg)
            if code != 0:
                self.close()
                raise ValueError(f"opus_encoder_ctl({request}): {self._error(code)}")
        self.lookahead = lookahead.value  # samples a channel at ``rate`` the encoder holds back
        self.pre_skip = self.lookahead * OPUS_RATE // rate  # what a decoder drops at the start (48 kHz)
        self._out = ctypes.create_string_buffer(_MAX_PACKET)
        self._pending = b""

    def _error(self, code: int) -> str:
        return str(self._lib.opus_strerror(code), "ascii", "replace")

    def encode(self, interleaved_int16: bytes | bytearray | memoryview) -> list[bytes]:
        """The packets of every whole frame buffered so far; the remainder waits for more."""
        if self._handle is None:
            raise ValueError("the Opus encoder is closed")
        data = self._pending + bytes(memoryview(interleaved_int16).cast("B"))
        whole = len(data) - len(data) % self._step
        self._pending = data[whole:]
        return [self._encode_frame(data[i : i + self._step]) for i in range(0, whole, self._step)]

    def _encode_frame(self, pcm: bytes) -> bytes:
        n = self._lib.opus_encode(self._handle, pcm, self.frame, self._out, _MAX_PACKET)
        if n < 0:
            raise ValueError(f"opus_encode: {self._error(n)}")
        return self._out.raw[:n]

    def finish(self) -> list[bytes]:
        """The last packets: what is buffered plus the lookahead, padded with silence to whole frames.
        The encoder is closed afterwards."""
        frame_bytes = 2 * self.channels
        need = len(self._pending) + self.lookahead * frame_bytes
        padded = need + (-need) % self._step
        packets = self.encode(bytes(padded - len(self._pending)))
        self.close()
        return packets

    def close(self) -> None:
        """Free the encoder (also done when it is garbage-collected)."""
        self._handle = None
        self._finalizer()
