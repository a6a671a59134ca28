"""Recording files: 16-bit PCM WAV (written here) and Ogg/Opus (encoded by the system's libopus,
:mod:`.opus_file`, else by libsndfile through soundfile, here), one interface (:class:`RecordingFile`),
called from the writer thread only. :data:`OPUS_ENCODER` says which one encodes Opus.

Both keep a file readable after a ``SIGKILL`` and let a later owner continue it:

* WAV: audio goes to the OS with each :meth:`~RecordingFile.write` (an unbuffered descriptor), so a
  killed process loses nothing the kernel accepted; only the RIFF and data sizes in the 44-byte header
  are stale, and :meth:`~RecordingFile.flush` rewrites them (plus ``fsync`` when asked). :func:`repair`
  sets them from the file's length, cut to a whole frame. Continuing: append after the last frame.
  Silencing an emitted span overwrites it in place (exact).
* Ogg/Opus: libsndfile writes a page once a page holds about one second of packets (its default page
  latency), into a memory sink that is written out after every :meth:`~RecordingFile.write`; so a
  killed process loses at most that second (plus one 20 ms packet), below the writer's flush interval.
  :func:`repair` cuts torn pages and sets the end-of-stream flag (:mod:`.ogg`). Continuing appends a new
  logical stream (a chained Ogg file, RFC 7845 section 3), which ffmpeg decodes end to end. Opus cannot
  be silenced in place (packets are variable-length): :meth:`~RecordingFile.patch_silence` says False.

Why soundfile for Opus, as the fallback when the system has no libopus (Debian's ``libopus0``): it is
maintained (python-soundfile, BSD; libsndfile LGPL), its manylinux wheel bundles libsndfile 1.2 built with
Opus and Ogg (no system library), it encodes 8 and 16 kHz directly (no upsampling before the encoder; the
decoder's 48 kHz output is a reader's choice), and its pages come out on their own. Its cost: libsndfile
gives no control over Opus complexity (about 9 ms of CPU per call-second, against about 1.4 ms through
libopus at complexity 0; ``benchmarks/bench_recording.py``).

A failed write (ENOSPC, EFBIG past ``ulimit -f``: CPython ignores SIGXFSZ, so the write raises) cuts the
file back to its last whole frame or page before raising: what is on disk stays readable, and the
writer opens the file again, continuing it, when the disk recovers.
"""

from __future__ import annotations

import contextlib
import errno
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import soundfile  # type: ignore[import-untyped]  # no stubs, no py.typed (0.14)

from bridge.recording import ogg, opus_encoder
from bridge.recording.opus_file import LibopusFile

WAV = "wav"
OPUS = "opus"
FORMATS = (WAV, OPUS)
# Which encoder writes Ogg/Opus recordings: the system's libopus ("libopus 1.3.1") when it loads.
OPUS_ENCODER = opus_encoder.version() or "libsndfile"
_WAV_HEADER = 44
_WAV_MAX_DATA = 0xFFFFFFFF - 36  # RIFF sizes are 32-bit: about 37 hours of 8 kHz stereo


class RecordingFile(Protocol):
    format: str
    rate: int
    channels: int

    @property
    def frames(self) -> int:
        """Frames (one sample per channel) in the file, including what an earlier owner wrote."""

    @property
    def size(self) -> int:
        """Bytes in the file."""

    def write(self, interleaved_int16: bytes | bytearray | memoryview) -> None: ...

    def flush(self, *, fsync: bool = False) -> None: ...

    def close(self) -> None: ...

    def patch_silence(self, start: int, end: int) -> bool: ...

    def abandon(self) -> None:
        """Close after a failed write, raising nothing: the file keeps what was good on disk."""


@dataclass(frozen=True, slots=True)
class Repaired:
    frames: int  # audio frames the file holds after the repair (at its own rate)
    rate: int
    channels: int
    cut_bytes: int  # torn data removed from the end
    was_clean: bool  # already properly closed: nothing changed


def _write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        if n <= 0:
            raise OSError(errno.EIO, "short write")
        view = view[n:]


def _wav_header(rate: int, channels: int, data_bytes: int) -> bytes:
    block = 2 * channels
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        *(b"RIFF", 36 + data_bytes, b"WAVE", b"fmt ", 16, 1, channels, rate, rate * block, block, 16),
        *(b"data", data_bytes),
    )


def _read_wav_header(fd: int) -> tuple[int, int]:
    """(rate, channels) of a WAV this module wrote: the 44-byte layout, 16-bit PCM."""
    head = os.pread(fd, _WAV_HEADER, 0)
    fields = struct.unpack("<4sI4s4sIHHIIHH4sI", head) if len(head) == _WAV_HEADER else None
    if fields is None or fields[0] != b"RIFF" or fields[2:4] != (b"WAVE", b"fmt ") or fields[11] != b"data":
        raise ValueError("not a WAV recording written by this bridge (44-byte PCM header expected)")
    if fields[4] != 16 or fields[5] != 1 or fields[10] != 16:
        raise ValueError("WAV recording is not 16-bit PCM")
    return int(fields[7]), int(fields[6])


class WavFile:
    """16-bit PCM WAV, header first, sizes kept right by :meth:`flush` and :meth:`close`."""

    format = WAV

    def __init__(self, fd: int, rate: int, channels: int, data_bytes: int) -> None:
        self.rate, self.channels = rate, channels
        self._fd = fd
        self._block = 2 * channels
        self._data = data_bytes
        self._header_stale = False

    @classmethod
    def open(cls, path: str | os.PathLike[str], rate: int, channels: int = 2) -> WavFile:
        """A new file, or the existing recording at ``path`` repaired and continued (same rate and
        channels, else ValueError)."""
        if os.path.exists(path) and os.path.getsize(path) > 0:
            found = repair_wav(path)
            if found.frames and (found.rate, found.channels) != (rate, channels):
                raise ValueError(f"{path}: {found.rate} Hz x{found.channels}, not {rate} Hz x{channels}")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        try:
            length = os.fstat(fd).st_size
            if length < _WAV_HEADER:
                os.ftruncate(fd, 0)
                os.pwrite(fd, _wav_header(rate, channels, 0), 0)
                length = _WAV_HEADER
            os.lseek(fd, length, os.SEEK_SET)
        except BaseException:
            os.close(fd)
            raise
        return cls(fd, rate, channels, length - _WAV_HEADER)

    @property
    def frames(self) -> int:
        return self._data // self._block

    @property
    def size(self) -> int:
        return _WAV_HEADER + self._data

    def write(self, interleaved_int16: bytes | bytearray | memoryview) -> None:
        data = memoryview(interleaved_int16).cast("B")
        data = data[: len(data) - len(data) % self._block]
        if self._data + len(data) > _WAV_MAX_DATA:
            raise OSError(errno.EFBIG, "WAV recording reached the 4 GiB RIFF limit")
        try:
            _write_all(self._fd, data)
        except OSError:
            # Keep whole frames only: what the kernel took of this write goes, the file stays readable.
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, _WAV_HEADER + self._data)
                os.lseek(self._fd, _WAV_HEADER + self._data, os.SEEK_SET)
            raise
        self._data += len(data)
        self._header_stale = True

    def flush(self, *, fsync: bool = False) -> None:
        if self._header_stale:
            os.pwrite(self._fd, _wav_header(self.rate, self.channels, self._data), 0)
            self._header_stale = False
        if fsync:
            os.fsync(self._fd)

    def close(self) -> None:
        if self._fd < 0:
            return
        try:
            self.flush()
        finally:
            os.close(self._fd)
            self._fd = -1

    def abandon(self) -> None:
        with contextlib.suppress(OSError):
            self.close()
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1

    def patch_silence(self, start: int, end: int) -> bool:
        """Zero frames ``[start, end)`` in place (clipped to what the file holds)."""
        start, end = max(0, start), min(end, self.frames)
        if start < end:
            os.pwrite(self._fd, bytes((end - start) * self._block), _WAV_HEADER + start * self._block)
        return True

    @staticmethod
    def repair(path: str | os.PathLike[str]) -> Repaired:
        return repair_wav(path)


def repair_wav(path: str | os.PathLike[str]) -> Repaired:
    """Sizes from the file's length, the data cut to whole frames; a file shorter than its header is
    emptied (it never held audio)."""
    with open(path, "r+b") as f:
        length = os.fstat(f.fileno()).st_size
        if length < _WAV_HEADER:
            if not b"RIFF".startswith(f.read(4)):
                raise ValueError(f"{path}: not a WAV recording; left alone")
            f.truncate(0)  # a header cut short: the file never held audio
            return Repaired(0, 0, 0, length, length == 0)
        rate, channels = _read_wav_header(f.fileno())
        block = 2 * channels
        data = min((length - _WAV_HEADER) // block * block, _WAV_MAX_DATA // block * block)
        header = _wav_header(rate, channels, data)
        clean = length == _WAV_HEADER + data and os.pread(f.fileno(), _WAV_HEADER, 0) == header
        if not clean:
            f.truncate(_WAV_HEADER + data)
            os.pwrite(f.fileno(), header, 0)
        return Repaired(data // block, rate, channels, length - _WAV_HEADER - data, clean)


class _Sink:
    """What libsndfile writes to (soundfile's virtual I/O): pages collect here and
    :meth:`OpusFile.write` puts them in the file itself, so a failed write is caught and undone here,
    in Python, at a page boundary. It only ever appends; libsndfile's probing seeks stay in place."""

    def __init__(self) -> None:
        self.pending = bytearray()
        self.position = 0

    def write(self, data: bytes) -> int:
        self.pending += data
        self.position += len(data)
        return len(data)

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        target = {os.SEEK_SET: offset, os.SEEK_CUR: self.position + offset, os.SEEK_END: self.position + offset}
        if target[whence] != self.position:
            raise OSError(errno.ESPIPE, "the Opus sink only appends")
        return self.position

    def read(self, size: int = -1) -> bytes:
        return b""


def _opus_compression(bitrate_per_channel: int) -> float:
    """libsndfile's compression level for a target bitrate: it maps level q to (1-q)*250 kb/s + 6 kb/s
    per channel (src/ogg_opus.c)."""
    return min(1.0, max(0.0, 1.0 - (bitrate_per_channel - 6000) / 250000))


class OpusFile:
    """Ogg/Opus through soundfile; a continued file gets one more chained link."""

    format = OPUS

    def __init__(self, fd: int, rate: int, channels: int, start_frames: int, bitrate_per_channel: int) -> None:
        self.rate, self.channels = rate, channels
        self._fd = fd
        self._start = start_frames
        self._written = 0
        self._size = os.fstat(fd).st_size
        self._good = self._size  # the file's length at the last page boundary written
        self._sink = _Sink()
        self._sf = soundfile.SoundFile(
            self._sink,
            "w",
            samplerate=rate,
            channels=channels,
            format="OGG",
            subtype="OPUS",
            compression_level=_opus_compression(bitrate_per_channel),
        )

    @classmethod
    def open(
        cls, path: str | os.PathLike[str], rate: int, channels: int = 2, *, bitrate_per_channel: int = 12000
    ) -> OpusFile:
        """A new file, or the recording at ``path`` repaired and continued as a new chained link."""
        start = opus_continues_at(path, rate, channels)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
        try:
            return cls(fd, rate, channels, start, bitrate_per_channel)
        except BaseException:
            os.close(fd)
            raise

    @property
    def frames(self) -> int:
        return self._start + self._written

    @property
    def size(self) -> int:
        return self._size

    def write(self, interleaved_int16: bytes | bytearray | memoryview) -> None:
        samples = np.frombuffer(interleaved_int16, dtype="<i2")
        frames = len(samples) // self.channels
        self._sf.write(samples[: frames * self.channels].reshape(frames, self.channels))
        self._written += frames
        self._drain()

    def _drain(self) -> None:
        pending = self._sink.pending
        if not pending:
            return
        self._sink.pending = bytearray()  # a failed write's traceback may hold views of the old one
        try:
            _write_all(self._fd, pending)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._good)
            raise
        self._size += len(pending)
        self._good = self._size

    def flush(self, *, fsync: bool = False) -> None:
        """Write out every complete page (libsndfile closes a page each second of audio); ``fsync``
        to make it durable, not just readable."""
        self._drain()
        if fsync:
            os.fsync(self._fd)

    def close(self) -> None:
        if self._fd < 0:
            return
        try:
            self._sf.close()  # the last packets and the EOS page, into the sink
            self._drain()
        finally:
            os.close(self._fd)
            self._fd = -1

    def abandon(self) -> None:
        """Drop the encoder without writing more (after a failed write): the file ends at its last good
        page, and a later :meth:`open` repairs it (EOS) and continues."""
        with contextlib.suppress(Exception):
            self._sf.close()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def patch_silence(self, start: int, end: int) -> bool:
        return False

    @staticmethod
    def repair(path: str | os.PathLike[str]) -> Repaired:
        return repair_opus(path)


def repair_opus(path: str | os.PathLike[str]) -> Repaired:
    """Cut torn pages, set EOS on the last page (see :func:`bridge.recording.ogg.plan_repair`)."""
    data = Path(path).read_bytes()
    if not ogg.CAPTURE.startswith(data[:4]):
        raise ValueError(f"{path}: not an Ogg file; left alone")
    plan = ogg.plan_repair(data)
    if not plan.clean:
        with open(path, "r+b") as f:
            f.truncate(plan.keep)
            if plan.last_page is not None:
                os.pwrite(f.fileno(), plan.last_page, plan.last_offset)
    if not plan.links:
        return Repaired(0, 0, 0, len(data), plan.clean)
    rate = plan.links[0].input_rate
    frames = sum(link.samples(rate) for link in plan.links)
    return Repaired(frames, rate, plan.links[0].channels, len(data) - plan.keep, plan.clean)


def opus_continues_at(path: str | os.PathLike[str], rate: int, channels: int) -> int:
    """Frames the Ogg/Opus recording at ``path`` holds once repaired (0 for a new file): where the next
    link starts. ValueError when it is not an Ogg file or was recorded at another rate or channel count."""
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return 0
    found = repair_opus(path)
    if found.frames and (found.rate, found.channels) != (rate, channels):
        raise ValueError(f"{path}: {found.rate} Hz x{found.channels}, not {rate} Hz x{channels}")
    return found.frames


def open_recording(path: str | os.PathLike[str], fmt: str, rate: int, channels: int = 2) -> RecordingFile:
    """The format's file at ``path``: new, or an existing recording repaired and continued."""
    if fmt == WAV:
        return WavFile.open(path, rate, channels)
    if fmt == OPUS:
        bitrate = 12000 if rate <= 8000 else 16000
        if OPUS_ENCODER == "libsndfile":
            return OpusFile.open(path, rate, channels, bitrate_per_channel=bitrate)
        start = opus_continues_at(path, rate, channels)
        return LibopusFile.open(path, rate, channels, start_frames=start, bitrate_per_channel=bitrate)
    raise ValueError(f"recording format must be one of {FORMATS}, not {fmt!r}")


def repair(path: str | os.PathLike[str]) -> Repaired:
    """Repair a recording by its content (RIFF or Ogg), whatever its name."""
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic == ogg.CAPTURE:
        return repair_opus(path)
    return repair_wav(path)
