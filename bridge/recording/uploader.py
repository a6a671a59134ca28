"""Recordings into object storage while the call runs (fleet mode, ``BRIDGE_RECORDINGS_URL``): the writer's
spool files cut into parts (:class:`PartCutter`, on the writer thread) and the parts uploaded
(:class:`PartUploader`, threads of its own), each then listed in the shared record's index.

Why cut the spool file rather than stream to a multipart upload: an S3 multipart part is at least 5 MiB
(minutes of audio), and an unfinished multipart upload is invisible: a dead instance would lose all of
it. A part here is ``recording.part_s`` of audio (10 s by default) in an object of its own, listed once it
is stored; a dead instance loses at most the part it had not cut (see :mod:`bridge.recording.parts` for
how the parts are joined on read).

The audio path never waits on object storage: the writer thread only queues a cut (a file range, a few
numbers), and the bytes are read back from the spool file by the upload thread that sends them. A
failed upload is retried with a growing pause, holding back the later parts of the calls behind it (a
part's index row is written only once it is stored, so the index never names a missing object); the
service reports the uploads degraded meanwhile. Cuts waiting are bounded (``max_pending``); beyond,
they are dropped and counted (the recording misses that part). A WAV span silenced after its part went
(a late redaction) is uploaded again, under the same key.

Uploads are spread over ``threads`` threads by call, so one call's parts go in order, and a call's
:meth:`PartUploader.finish` (its spool file deleted, ``recording.completed`` sent) runs after its last part.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
import zlib
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from bridge.recording import index
from bridge.recording.objects import ObjectStore, ObjectStoreError
from bridge.recording.parts import WAV, WAV_HEADER

MAX_RETRY_S = 5.0  # the longest pause between two attempts (4 threads: about one request a second while down)


@dataclass(frozen=True, slots=True)
class Cut:
    """A part to upload: ``length`` bytes of the spool file ``path`` from ``offset``."""

    call_id: str
    segment: str
    seq: int
    path: str
    offset: int
    length: int
    frames: int
    header: int
    fmt: str
    rate: int
    closed: bool


@dataclass(slots=True)
class _Segment:
    name: str
    path: str
    fmt: str
    rate: int
    seq: int = 0
    cut_bytes: int = 0  # the spool file's bytes already cut
    cut_frames: int = 0
    cuts: list[Cut] = field(default_factory=list)  # WAV: every part sent (a late patch sends some again)
    last: Cut | None = None


def segment_name() -> str:
    """A new segment's name: sorts by the time it was opened (then at random among instances)."""
    return f"{time.time_ns() // 1_000_000:013d}-{uuid.uuid4().hex[:8]}"


class PartCutter:
    """Cuts each open recording's spool file into parts (the writer thread only; see the module docstring).
    :class:`bridge.recording.writer.RecordingWriter` calls :meth:`offer` after each batch it wrote,
    :meth:`closed` after closing a file and :meth:`patched` after a span was silenced in place."""

    def __init__(self, uploader: PartUploader, part_s: float) -> None:
        self.uploader = uploader
        self.part_s = part_s
        self._segments: dict[str, _Segment] = {}

    def offer(self, recs: Iterable[Any]) -> None:
        """After each batch the writer wrote (its open recordings): cut those with a part's worth of new audio
        (on the file: WAV goes to the kernel as written, Opus in whole pages)."""
        for rec in recs:
            if rec.file is not None:
                self.written(rec.call_id, rec.path, rec.fmt, rec.rate, rec.file.size, rec.file.frames)

    def written(self, call_id: str, path: str, fmt: str, rate: int, size: int, frames: int) -> None:
        """The file holds ``size`` bytes, ``frames`` frames, all flushed: cut if a part's worth is new."""
        seg = self._segment(call_id, path, fmt, rate)
        if frames - seg.cut_frames >= self.part_s * rate:
            self._cut(call_id, seg, size, frames, closed=False)

    def closed(self, call_id: str, path: str, fmt: str, rate: int, size: int, frames: int) -> None:
        """The file is closed: the rest is the segment's last part."""
        seg = self._segments.pop(call_id, None) or _Segment(segment_name(), path, fmt, rate)
        self._cut(call_id, seg, size, frames, closed=True)

    def patched(self, call_id: str, start_frame: int, end_frame: int) -> None:
        """Frames [start, end) were silenced in place (WAV): upload again the parts already sent that hold them."""
        seg = self._segments.get(call_id)
        if seg is None or seg.fmt != WAV:
            return
        lo, hi = WAV_HEADER + 4 * start_frame, WAV_HEADER + 4 * end_frame
        for cut in seg.cuts:
            if cut.offset < hi and lo < cut.offset + cut.length:
                self.uploader.put(cut)

    def _segment(self, call_id: str, path: str, fmt: str, rate: int) -> _Segment:
        seg = self._segments.get(call_id)
        if seg is None or seg.path != path:
            seg = self._segments[call_id] = _Segment(segment_name(), path, fmt, rate)
        return seg

    def _cut(self, call_id: str, seg: _Segment, size: int, frames: int, closed: bool) -> None:
        length = max(0, size - seg.cut_bytes)
        if length == 0 and seg.last is not None and closed:
            # nothing new: the last part again, now saying the segment is closed
            self.uploader.put(Cut(**{**_fields(seg.last), "closed": True}))
            return
        header = min(WAV_HEADER, length) if seg.fmt == WAV and seg.cut_bytes == 0 else 0
        cut = Cut(
            call_id,
            seg.name,
            seg.seq,
            seg.path,
            seg.cut_bytes,
            length,
            max(0, frames - seg.cut_frames),
            header,
            seg.fmt,
            seg.rate,
            closed,
        )
        seg.seq += 1
        seg.cut_bytes += length
        seg.cut_frames = max(seg.cut_frames, frames)
        seg.last = cut
        if seg.fmt == WAV:
            seg.cuts.append(cut)  # kept for a late patch; Opus is never patched
        self.uploader.put(cut)


def _fields(cut: Cut) -> dict[str, Any]:
    return {name: getattr(cut, name) for name in Cut.__slots__}


class PartUploader:
    """Upload threads (see the module docstring). ``record(row)`` writes an index row (the store's
    :meth:`recording_part`; thread-safe); ``on_change(state, reason)`` is told of degraded/ok, on ``loop``."""

    def __init__(
        self,
        objects: ObjectStore,
        record: Callable[[tuple[Any, ...]], None],
        *,
        threads: int = 4,
        max_pending: int = 20_000,
        retry_s: float = 0.5,
    ) -> None:
        self.objects, self.record = objects, record
        self.max_pending, self.retry_s = max_pending, retry_s
        self._streak = 0  # failed attempts in a row (the pause before the next grows with it)
        self._cond = threading.Condition()
        self._queues: list[deque[Cut | tuple[str, Callable[[], object]]]] = [deque() for _ in range(threads)]
        self._pending = 0
        self._threads: list[threading.Thread] = []
        self._stopping = False
        self.uploaded = 0
        self.uploaded_bytes = 0
        self.dropped = 0  # cuts never uploaded: beyond max_pending, or left at stop
        self.failures = 0  # failed attempts (each retried)
        self.failing = ""  # the last failure's reason while uploads fail ("" when they work)

    def start(self) -> None:
        for n, _ in enumerate(self._queues):
            thread = threading.Thread(target=self._run, args=(n,), name=f"recording-upload-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float) -> None:
        """Upload what is queued within ``timeout``; what is left is dropped (its spool file stays)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending and time.monotonic() < deadline and not self.failing:
                self._cond.wait(min(0.1, max(0.0, deadline - time.monotonic())))
            self._stopping = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()) + 1.0)

    def put(self, cut: Cut) -> None:
        """Queue a part (any thread; never blocks)."""
        with self._cond:
            if self._pending >= self.max_pending or self._stopping:
                self.dropped += 1
                return
            self._pending += 1
            self._queues[self._shard(cut.call_id)].append(cut)
            self._cond.notify_all()

    def finish(self, call_id: str, done: Callable[[], object]) -> None:
        """``done()`` once the call's parts queued so far are uploaded (on an upload thread: blocking is
        fine there, the caller hands what concerns its loop to it)."""
        with self._cond:
            self._queues[self._shard(call_id)].append((call_id, done))
            self._cond.notify_all()

    @property
    def pending(self) -> int:
        return self._pending

    def _shard(self, call_id: str) -> int:
        return zlib.crc32(call_id.encode()) % len(self._queues)

    def _run(self, n: int) -> None:
        queue = self._queues[n]
        while True:
            with self._cond:
                while not queue and not self._stopping:
                    self._cond.wait()
                if not queue:
                    return
                item = queue[0]
            if isinstance(item, Cut):
                if not self._upload(item):
                    with self._cond:
                        if self._stopping:
                            self.dropped += len([c for c in queue if isinstance(c, Cut)])
                            self._pending -= len([c for c in queue if isinstance(c, Cut)])
                            queue.clear()
                            return
                    continue
            else:
                with contextlib.suppress(Exception):  # the caller's: it must not end the thread
                    item[1]()
            with self._cond:
                queue.popleft()
                if isinstance(item, Cut):
                    self._pending -= 1
                self._cond.notify_all()

    def _upload(self, cut: Cut) -> bool:
        """One attempt at most per ``retry_s`` growing pause; False: it failed (the caller tries again)."""
        try:
            with open(cut.path, "rb") as f:
                f.seek(cut.offset)
                data = f.read(cut.length)
        except OSError as exc:  # the spool file is gone: nothing to retry
            self._count_lost(f"spool: {exc.strerror or exc}")
            return True
        key = self.objects.key(cut.call_id, cut.segment, f"{cut.seq:06d}")
        try:
            self.objects.put(key, data)
        except ObjectStoreError as exc:
            with self._cond:
                self.failures += 1
                self._streak += 1
                self.failing = str(exc)[:200]
                wait = min(MAX_RETRY_S, self.retry_s * (2 ** min(self._streak - 1, 5)))
                self._cond.wait_for(lambda: self._stopping, timeout=wait)
            return False
        with self._cond:
            self.uploaded += 1
            self.uploaded_bytes += len(data)
            self.failing, self._streak = "", 0
        self.record(
            index.part_row(
                cut.call_id,
                cut.segment,
                cut.seq,
                key,
                len(data),
                cut.frames,
                cut.header,
                cut.fmt,
                cut.rate,
                cut.closed,
            )
        )
        return True

    def _count_lost(self, reason: str) -> None:
        with self._cond:
            self.dropped += 1
            self.failing = self.failing or reason
