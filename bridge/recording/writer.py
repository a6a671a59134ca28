"""The recording writer: one background thread owning every open recording (the I/O shell around
:mod:`.formats`).

Why one thread and a bounded queue: disk writes and Opus encoding must never run on the event loop, and
a slow or full disk must degrade the recordings, never the call. The loop side only appends to a deque
under a lock (no I/O, no waiting); audio waiting in it is bounded in bytes (``max_queued_bytes``), like
the outbox, and an append that would go past the bound is dropped and counted against its recording.
Commands that are not audio (open, silence, close) are always queued: they are few and small, and
dropping a close would leak a file. They wake the thread at once; given ``batch_s``, appends do not (it
picks them up within ``batch_s``, or when a quarter of the bound is waiting): 200 calls appending once a
second each would otherwise wake it 200 times a second, and the GIL hand-overs cost more than the writes.

Every append carries its place (a frame offset in the recording, tracked on the loop side even for the
appends dropped), so a drop, a disk outage or a hand-over leaves silence of the right length and what
follows stays in time: the thread pads a gap with zeros and skips an overlap.

Disk errors (ENOSPC; EFBIG past ``ulimit -f``, which CPython reports as an OSError since it ignores
SIGXFSZ) fail the recording that hit them, not the others (EFBIG is per file; a full disk fails each
recording at its next write anyway): its file is cut back to its last whole frame or page, and audio for
it is counted as lost. Every ``retry_s`` the thread opens each failed recording again (repair, continue)
and writes the silence owed as the probe; if that works, the recording is back.

State changes (``ok``/``degraded`` and why) go to ``on_change(state, reason)``, called on the writer
thread; given a ``loop``, it is called on that loop instead (``call_soon_threadsafe``), as are the
``on_closed`` callbacks. A queue-full degradation is noticed by the thread, so a thread stuck in a slow
write reports it when the write returns; :meth:`RecordingWriter.status` is always current.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bridge.recording import formats

if TYPE_CHECKING:
    from bridge.recording.uploader import PartCutter

OK, DEGRADED = "ok", "degraded"
QUEUE_HOLD_S = 1.0  # a queue-full degradation lasts at least this long after the last drop
FRAME = 4  # bytes per frame: two channels of int16
ClosedInfo = dict[str, Any]


@dataclass(frozen=True, slots=True)
class WriterStatus:
    state: str  # "ok" or "degraded"
    reason: str  # why degraded ("" when ok)
    dropped_bytes: int  # audio that never reached a file: queue full, disk errors (since start)
    open_recordings: int
    failed_recordings: int
    queue_depth: int  # commands waiting
    queued_bytes: int  # audio waiting
    unpatched_silence_spans: int  # late silence that could not be written (Opus), since start


@dataclass
class _Feed:
    """Loop-side view of one recording: where its next append goes (counting the ones refused)."""

    next_at: int = 0


@dataclass
class _Rec:
    call_id: str
    path: str
    fmt: str
    rate: int
    file: formats.RecordingFile | None = None
    next_frame: int = 0  # where audio is owed up to (written, or lost while failed)
    failure: str = ""
    retry: bool = True  # False when the file is unusable (not ours, other rate): no disk recovery helps
    dropped_bytes: int = 0
    skipped_frames: int = 0  # overlap with what the file already held (a moved call re-sent audio)
    unpatched: list[tuple[int, int]] = field(default_factory=list)
    base: int = 0  # added to every place (open's after_end: the frames the file held)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"disk: {errno.errorcode.get(exc.errno, exc.errno)} ({exc.strerror})"
    return f"file: {exc}"


class RecordingWriter:
    """Owns every open recording on one thread. Call :meth:`start` first, :meth:`stop` at shutdown."""

    def __init__(
        self,
        *,
        flush_s: float = 5.0,
        retry_s: float = 10.0,
        max_queued_bytes: int = 32 << 20,
        max_gap_s: float = 3600.0,
        fsync: bool = False,
        batch_s: float = 0.0,
        on_change: Callable[[str, str], object] | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        parts: PartCutter | None = None,
    ) -> None:
        self.parts = parts  # fleet mode: the files are cut into parts for object storage (bridge.recording.uploader)
        self.flush_s, self.retry_s, self.fsync, self.batch_s = flush_s, retry_s, fsync, batch_s
        self.max_queued_bytes, self.max_gap_s = max_queued_bytes, max_gap_s
        self._on_change, self._loop = on_change, loop
        self._cond = threading.Condition()
        self._queue: deque[tuple[Any, ...]] = deque()
        self._queued_bytes = 0
        self._feeds: dict[str, _Feed] = {}
        self._queue_drops = 0  # bytes refused by the queue (loop side, under the lock)
        self._disk_drops = 0  # bytes lost to failed recordings (writer thread)
        self._unpatched = 0
        self._recs: dict[str, _Rec] = {}
        self._state, self._reason = OK, ""
        self._queue_full_until = 0.0
        self._seen_queue_drops = 0
        self._thread: threading.Thread | None = None
        self._counts = (0, 0)  # open, failed: set by the writer thread, read by status()
        self._bug, self._bug_until = "", 0.0

    # -- the loop side: never blocks, never raises for audio ------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="recording-writer", daemon=True)
        self._thread.start()

    def open(
        self, call_id: str, path: str | os.PathLike[str], fmt: str, rate: int, *, at: int = 0, after_end: bool = False
    ) -> None:
        """Open (or continue, if the file exists) ``call_id``'s recording; ``at`` is where the first
        append goes when appends come without a place. ``after_end``: places count from the end of what
        the file already holds (a call adopted from another process, whose frame count it does not know)."""
        if fmt not in formats.FORMATS:
            raise ValueError(f"recording format must be one of {formats.FORMATS}, not {fmt!r}")
        with self._cond:
            self._feeds[call_id] = _Feed(next_at=at)
            self._put(("open", call_id, os.fspath(path), fmt, rate, after_end))

    def append(self, call_id: str, pcm: bytes, at: int | None = None) -> bool:
        """Queue interleaved stereo int16 for ``call_id`` at frame ``at`` (default: right after the
        previous append). False if it was dropped (queue full, or no such recording)."""
        if not pcm:
            return True
        with self._cond:
            feed = self._feeds.get(call_id)
            if feed is None:
                return False
            start = feed.next_at if at is None else at
            feed.next_at = start + len(pcm) // FRAME
            if self._queued_bytes + len(pcm) > self.max_queued_bytes:
                self._queue_drops += len(pcm)
                self._cond.notify()
                return False
            self._queued_bytes += len(pcm)
            self._put(
                ("append", call_id, start, pcm),
                wake=not self.batch_s or self._queued_bytes > self.max_queued_bytes // 4,
            )
            return True

    def silence(self, call_id: str, start: int, end: int) -> None:
        """Silence frames ``[start, end)`` already handed over (a timeline's late span)."""
        with self._cond:
            if call_id in self._feeds:
                self._put(("silence", call_id, start, end))

    def close(self, call_id: str, on_closed: Callable[[ClosedInfo], object] | None = None) -> None:
        """Close ``call_id``'s recording once what was queued before is written; ``on_closed`` gets
        ``{duration_s, bytes, format, channels, rate, path, dropped_bytes, degraded, unpatched_spans}``."""
        with self._cond:
            feed = self._feeds.pop(call_id, None)
            if feed is not None:
                self._put(("close", call_id, on_closed, feed.next_at))

    def recover(self, directory: str | os.PathLike[str], on_done: Callable[[list[str]], object] | None = None) -> None:
        """Repair every recording in ``directory`` not open here (left by a killed bridge), on the
        writer thread; ``on_done`` gets the paths that needed it."""
        with self._cond:
            self._put(("recover", os.fspath(directory), on_done))

    def stop(self, timeout: float = 10.0) -> None:
        """Write what is queued, close every recording, end the thread."""
        with self._cond:
            self._put(("stop",))
        if self._thread is not None:
            self._thread.join(timeout)

    def status(self) -> WriterStatus:
        with self._cond:
            queue_full = self._queue_drops > self._seen_queue_drops or time.monotonic() < self._queue_full_until
            state, reason = self._state, self._reason
            if queue_full and state == OK:
                state, reason = DEGRADED, "queue full"
            return WriterStatus(
                state,
                reason,
                self._queue_drops + self._disk_drops,
                *self._counts,
                len(self._queue),
                self._queued_bytes,
                self._unpatched,
            )

    def _put(self, command: tuple[Any, ...], wake: bool = True) -> None:
        self._queue.append(command)
        if wake:
            self._cond.notify()

    # -- the writer thread ------------------------------------------------------------------------

    def _run(self) -> None:
        next_flush = time.monotonic() + self.flush_s
        next_retry = time.monotonic() + self.retry_s
        running = True
        while running:
            with self._cond:
                if not self._queue:
                    deadline = min(next_flush, next_retry)
                    if self.batch_s:
                        deadline = min(deadline, time.monotonic() + self.batch_s)
                    if self._queue_full_until > time.monotonic():
                        deadline = min(deadline, self._queue_full_until)
                    self._cond.wait(max(0.0, deadline - time.monotonic()))
                batch = list(self._queue)
                self._queue.clear()
                self._queued_bytes -= sum(len(c[3]) for c in batch if c[0] == "append")
            for command in batch:
                if command[0] == "stop":
                    running = False
                    continue
                try:
                    self._handle(command)
                except Exception as exc:  # a bug here must not kill the thread that owns every file
                    self._bug = f"writer: {type(exc).__name__}: {exc}"
                    self._bug_until = time.monotonic() + self.retry_s
            if self.parts is not None:  # a part's worth of new audio goes to object storage now, not at a flush
                self.parts.offer(self._recs.values())
            now = time.monotonic()
            if now >= next_flush or not running:
                self._flush_all()
                next_flush = now + self.flush_s
            if now >= next_retry:
                self._retry_failed()
                next_retry = now + self.retry_s
            self._update_state(now)
        for call_id in list(self._recs):
            self._close(call_id, None, 0)
        self._update_state(time.monotonic())

    def _handle(self, command: tuple[Any, ...]) -> None:
        kind = command[0]
        if kind == "append":
            self._append(command[1], command[2], command[3])
        elif kind == "open":
            _, call_id, path, fmt, rate, after_end = command
            if call_id in self._recs:
                self._close(call_id, None, 0)
            rec = _Rec(call_id, path, fmt, rate)
            self._recs[call_id] = rec
            if self._reopen(rec) and after_end:
                rec.base = rec.next_frame
        elif kind == "silence":
            self._silence(command[1], command[2], command[3])
        elif kind == "close":
            self._close(command[1], command[2], command[3])
        elif kind == "recover":
            self._recover(command[1], command[2])

    def _reopen(self, rec: _Rec) -> bool:
        try:
            rec.file = formats.open_recording(rec.path, rec.fmt, rec.rate)
            rec.next_frame = max(rec.next_frame, rec.file.frames)
            self._pad(rec, rec.next_frame)
        except OSError as exc:
            self._fail(rec, exc)
            return False
        except ValueError as exc:
            self._fail(rec, exc)
            rec.retry = False
            return False
        rec.failure = ""
        return True

    def _pad(self, rec: _Rec, upto: int) -> None:
        """Zeros from the file's end to ``upto``, a second at a time (bounded memory)."""
        assert rec.file is not None
        second = bytes(rec.rate * 4)
        while rec.file.frames < upto:
            rec.file.write(second[: 4 * min(rec.rate, upto - rec.file.frames)])

    def _append(self, call_id: str, at: int, pcm: bytes) -> None:
        rec = self._recs.get(call_id)
        if rec is None:
            return
        at += rec.base
        frames = len(pcm) // 4
        rec.next_frame = max(rec.next_frame, at + frames)
        if rec.file is None:
            rec.dropped_bytes += len(pcm)
            self._disk_drops += len(pcm)
            return
        try:
            have = rec.file.frames
            if at > have + self.max_gap_s * rec.rate:
                raise ValueError(f"append {at - have} frames past the end (max_gap_s)")
            self._pad(rec, at)
            skip = max(0, have - at)
            rec.skipped_frames += min(skip, frames)
            if skip < frames:
                rec.file.write(memoryview(pcm)[4 * skip :])
        except OSError as exc:
            rec.dropped_bytes += len(pcm)
            self._disk_drops += len(pcm)
            self._fail(rec, exc)
        except ValueError:
            rec.dropped_bytes += len(pcm)
            self._disk_drops += len(pcm)

    def _silence(self, call_id: str, start: int, end: int) -> None:
        rec = self._recs.get(call_id)
        if rec is None or end <= start:
            return
        start, end = start + rec.base, end + rec.base
        if rec.file is not None:
            try:
                if rec.file.patch_silence(start, end):
                    if self.parts is not None:
                        self.parts.patched(call_id, start, end)
                    return
            except OSError as exc:
                self._fail(rec, exc)
        # Opus (or a failed file): the span stays in the file; it is counted and reported at close.
        rec.unpatched.append((start, end))
        self._unpatched += 1

    def _fail(self, rec: _Rec, exc: BaseException) -> None:
        rec.failure = _reason(exc)
        if rec.file is not None:
            rec.file.abandon()
            rec.file = None

    def _flush_all(self) -> None:
        for rec in self._recs.values():
            if rec.file is None:
                continue
            try:
                rec.file.flush(fsync=self.fsync)
            except OSError as exc:
                self._fail(rec, exc)

    def _retry_failed(self) -> None:
        for rec in self._recs.values():
            if rec.failure and rec.retry:
                self._reopen(rec)

    def _close(self, call_id: str, on_closed: Callable[[ClosedInfo], object] | None, owed: int) -> None:
        """Close, padding to ``owed`` (the loop side's end: appends the queue refused count too)."""
        rec = self._recs.pop(call_id)
        owed += rec.base
        if rec.file is not None:
            try:
                self._pad(rec, min(max(rec.next_frame, owed), rec.file.frames + int(self.max_gap_s * rec.rate)))
                rec.file.close()
            except OSError as exc:
                self._fail(rec, exc)
        frames = rec.file.frames if rec.file is not None else _frames_on_disk(rec.path)
        if self.parts is not None:
            self.parts.closed(call_id, rec.path, rec.fmt, rec.rate, _size(rec.path), frames)
        info: ClosedInfo = {
            "path": rec.path,
            "format": rec.fmt,
            "channels": 2,
            "rate": rec.rate,
            "duration_s": frames / rec.rate,
            "bytes": _size(rec.path),
            "dropped_bytes": rec.dropped_bytes,
            "skipped_frames": rec.skipped_frames,
            "degraded": bool(rec.failure or rec.dropped_bytes),
            "unpatched_spans": list(rec.unpatched),
        }
        if on_closed is not None:
            self._call(on_closed, info)

    def _recover(self, directory: str, on_done: Callable[[list[str]], object] | None) -> None:
        open_paths = {os.path.abspath(r.path) for r in self._recs.values()}
        repaired: list[str] = []
        for path in sorted(Path(directory).glob("*")):
            if path.suffix not in (".wav", ".opus", ".ogg") or os.path.abspath(path) in open_paths:
                continue
            with contextlib.suppress(OSError, ValueError):
                if not formats.repair(path).was_clean:
                    repaired.append(str(path))
        if on_done is not None:
            self._call(on_done, repaired)

    def _update_state(self, now: float) -> None:
        with self._cond:
            if self._queue_drops > self._seen_queue_drops:
                self._seen_queue_drops = self._queue_drops
                self._queue_full_until = now + QUEUE_HOLD_S
        failed = [r.failure for r in self._recs.values() if r.failure]
        failures = sorted(set(failed))
        with self._cond:
            self._counts = (len(self._recs), len(failed))
        reasons = (["queue full"] if now < self._queue_full_until else []) + failures
        if now < self._bug_until:
            reasons.append(self._bug)
        self._change_soon(DEGRADED if reasons else OK, "; ".join(reasons))

    def _change_soon(self, state: str, reason: str) -> None:
        with self._cond:
            if (state, reason) == (self._state, self._reason):
                return
            was_ok = self._state == OK
            self._state, self._reason = state, reason
        if self._on_change is not None:
            self._call(self._on_change, state, reason if state == DEGRADED or was_ok else "recovered")

    def _call(self, fn: Callable[..., object], *args: Any) -> None:
        if self._loop is None:
            with contextlib.suppress(Exception):
                fn(*args)
        else:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is listening
                self._loop.call_soon_threadsafe(fn, *args)


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _frames_on_disk(path: str) -> int:
    """A failed recording's length, read back from the file (repairing it: it is closed for good)."""
    try:
        return formats.repair(path).frames
    except (OSError, ValueError):
        return 0
