"""Ogg/Opus recording files encoded by the system's libopus (:mod:`.opus_encoder`) into pages written here
(:mod:`.ogg`): the default Opus :class:`~bridge.recording.formats.RecordingFile` when libopus loads.

It behaves like the libsndfile :class:`~bridge.recording.formats.OpusFile` it replaces, at a fraction
of its CPU (the encoder's complexity is ours to set):

* A page goes to the file (an ``O_APPEND`` descriptor) once it holds a second of audio, and on every
  :meth:`~LibopusFile.flush`: a ``SIGKILL`` loses at most that second, and of what the writer flushed only
  what the encoder still held (its lookahead and a partial frame, under 30 ms).
* A failed write (ENOSPC, EFBIG) cuts the file back to its last whole page before raising.
* Continuing a recording (the call moved, or the writer recovers from a full disk):
  :func:`~bridge.recording.formats.open_recording` repairs the file, and this appends a new logical
  stream with a serial number of its own: a chained Ogg file (RFC 7845 section 3), decoded end to end
  by ffmpeg.
* The last page's granule position trims the silence the encoder was fed to flush its lookahead, so a
  decoder gives back exactly the frames written (the same count :attr:`~LibopusFile.frames` reports and
  :func:`~bridge.recording.formats.repair_opus` reads).
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from pathlib import Path

from bridge.recording import ogg
from bridge.recording.opus_encoder import OpusEncoder, version

OPUS = "opus"  # formats.OPUS (this module sits below formats, which picks it)


def _write_all(fd: int, data: bytes | bytearray) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        if n <= 0:
            raise OSError(errno.EIO, "short write")
        view = view[n:]


class LibopusFile:
    """Ogg/Opus through libopus; a continued file gets one more chained link."""

    format = OPUS

    def __init__(self, fd: int, rate: int, channels: int, start_frames: int, encoder: OpusEncoder, serial: int) -> None:
        self.rate, self.channels = rate, channels
        self._fd = fd
        self._start = start_frames
        self._written = 0
        self._block = 2 * channels
        self._size = os.fstat(fd).st_size
        self._good = self._size  # the file's length at the last page boundary written
        self._encoder = encoder
        self._stream = ogg.OpusStream(serial, channels, encoder.pre_skip, rate, version() or "libopus")
        self._headers = self._stream.headers()  # written with the first page, as libsndfile did

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        rate: int,
        channels: int = 2,
        *,
        start_frames: int = 0,
        bitrate_per_channel: int = 12000,
        complexity: int | None = None,
    ) -> LibopusFile:
        """A new link at the end of ``path``: the whole file when it is new, else one more chained link
        after the ``start_frames`` the file holds, once the caller has repaired it
        (:func:`~bridge.recording.formats.open_recording` does both). OSError when libopus cannot be
        loaded."""
        serials = set()
        if os.path.exists(path) and os.path.getsize(path) > 0:
            serials = {p.serial for p in ogg.pages(Path(path).read_bytes())}
        serial = secrets.randbits(32)
        while serial in serials:  # RFC 3533: every link of a chain has its own serial number
            serial = secrets.randbits(32)
        encoder = OpusEncoder(rate, channels, bitrate=bitrate_per_channel * channels, complexity=complexity)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
        except BaseException:
            encoder.close()
            raise
        try:
            return cls(fd, rate, channels, start_frames, encoder, serial)
        except BaseException:
            encoder.close()
            os.close(fd)
            raise

    @property
    def frames(self) -> int:
        return self._start + self._written

    @property
    def size(self) -> int:
        return self._size

    def write(self, interleaved_int16: bytes | bytearray | memoryview) -> None:
        data = memoryview(interleaved_int16).cast("B")
        data = data[: len(data) - len(data) % self._block]
        out = bytearray()
        for packet in self._encoder.encode(data):
            out += self._stream.add(packet, self._encoder.packet_samples)
        self._written += len(data) // self._block
        self._put(out)

    def _put(self, pages: bytes | bytearray) -> None:
        if self._headers:
            pages, self._headers = self._headers + pages, b""
        if not pages:
            return
        try:
            _write_all(self._fd, pages)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._good)
            raise
        self._size += len(pages)
        self._good = self._size

    def flush(self, *, fsync: bool = False) -> None:
        """Close the page being filled and write it out; ``fsync`` to make it durable, not just readable."""
        self._put(self._stream.flush())
        if fsync:
            os.fsync(self._fd)

    def close(self) -> None:
        """The last packets and the EOS page, then the file is closed."""
        if self._fd < 0:
            return
        try:
            out = bytearray()
            for packet in self._encoder.finish():
                out += self._stream.add(packet, self._encoder.packet_samples)
            end = self._encoder.pre_skip + self._written * ogg.OPUS_RATE // self.rate
            self._put(out + self._stream.close(end))
        finally:
            self._encoder.close()
            os.close(self._fd)
            self._fd = -1

    def abandon(self) -> None:
        """Drop the encoder without writing more (after a failed write): the file ends at its last good
        page, and a later :meth:`open` repairs it (EOS) and continues."""
        self._encoder.close()
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1

    def patch_silence(self, start: int, end: int) -> bool:
        """Opus packets are variable-length: a span already encoded cannot be silenced in place."""
        return False
