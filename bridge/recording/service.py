"""The application's side of call recordings: one :class:`~bridge.recording.writer.RecordingWriter` (one
thread) for every call of the process, the recordings directory, what ``/healthz`` and the metrics show.

Who calls what:

* ``bridge.http.recordings.recordings`` (a ``cleanup_ctx`` of :mod:`bridge.app`) builds the service when
  ``recording.enabled`` or any ``recording.numbers`` entry is on, starts the writer, repairs what a killed
  bridge left (:meth:`RecordingService.start`; under ``--workers`` only worker 0 does, at start-up, before
  any call: a sibling's open file is never touched) and stops it last, after the calls;
* each call (:mod:`bridge.call.recorder`) opens its recording, appends about once a second and closes
  it at the end: all loop-side calls of the writer, which never block (a full queue drops and counts);
* the transcript store's purge calls :meth:`RecordingService.forget` on its worker thread for the calls
  it deleted: a recording goes with its transcript, at the same retention;
* ``GET /v1/calls/{id}/recording`` and ``GET /v1/calls?since=`` find a call's file with :meth:`path_of`
  and :meth:`describe` (blocking: a stat, 44 bytes of header; both run off the loop).

Files: ``<data_dir>/recordings/<call id>.wav`` (or ``.opus``), one per call. A call that moves to a new
stream on this process keeps its recorder and its open file (the new stream's audio is appended after a
silence as long as the gap); under ``--workers`` a restarted stream is relayed to the worker holding its
call, so the same holds. Fleet mode across machines (a shared store) is not covered: an adopted call
continues the file only when the new owner sees the same data directory (WAV: appended after the old
owner's last frame; Opus: a chained Ogg stream).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web

from bridge.recording.formats import OPUS, WAV
from bridge.recording.settings import RecordingSettings
from bridge.recording.writer import DEGRADED, ClosedInfo, RecordingWriter, WriterStatus

if TYPE_CHECKING:
    from bridge.recording.remote import RemoteRecordings

log = structlog.get_logger("bridge.recording")

SUFFIX = {WAV: ".wav", OPUS: ".opus"}
CONTENT_TYPE = {WAV: "audio/wav", OPUS: "audio/ogg"}
BATCH_S = 0.5  # the writer takes the calls' appends twice a second, not once per append (bridge.recording.writer)
MAX_REMEMBERED = 10_000  # closed recordings whose figures are kept in memory for the listing


class RecordingService:
    """See the module docstring. ``directory`` is ``<data_dir>/recordings``."""

    def __init__(self, settings: RecordingSettings, directory: Path, loop: asyncio.AbstractEventLoop) -> None:
        self.settings = settings
        self.directory = directory
        self.remote: RemoteRecordings | None = None  # fleet mode: parts in object storage
        if settings.url:
            from bridge.recording.remote import RemoteRecordings  # boto3 only when it is used

            self.remote = RemoteRecordings(settings)
        self.writer = RecordingWriter(
            flush_s=settings.flush_s,
            retry_s=settings.retry_s,
            batch_s=BATCH_S,
            max_queued_bytes=int(settings.max_queued_mb * (1 << 20)),
            on_change=self._changed,
            loop=loop,
            parts=self.remote.cutter if self.remote is not None else None,
        )
        self._loop = loop
        self.open_calls: set[str] = set()
        self.completed = 0
        self._closed: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def start(self, recover: bool = True) -> None:
        """Create the directory, start the writer, and (``recover``) repair what a killed bridge left."""
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.remote is not None:  # a killed bridge's spool files are not the record (bridge.recording.remote)
            self.remote.start(self.directory, discard_spool=recover)
        self.writer.start()
        if recover and self.remote is None:
            self.writer.recover(self.directory, _recovered)

    def stop(self, timeout: float = 10.0) -> None:
        """Write what is queued and close every recording (the calls have ended by now); upload the rest."""
        self.writer.stop(timeout)
        if self.remote is not None:
            self.remote.stop(timeout)

    # -- a call's recording (the event loop; never blocks) --------------------------------------

    def wanted(self, called: str | None) -> bool:
        return self.settings.enabled_for(called)

    def path_for(self, call_id: str) -> Path:
        """The call's file; in object storage, a spool of its own per opening (a segment: a call reopened
        here while its last segment's parts are still uploading never shares their file)."""
        if self.remote is not None:
            return self.directory / f"{call_id}~{uuid.uuid4().hex[:8]}{SUFFIX[self.settings.format]}"
        return self.directory / f"{call_id}{SUFFIX[self.settings.format]}"

    def open(self, call_id: str, rate: int, after_end: bool = False) -> None:
        """``after_end``: the call was adopted from another process: its audio goes after the file's end."""
        self.open_calls.add(call_id)
        self.writer.open(call_id, self.path_for(call_id), self.settings.format, rate, after_end=after_end)

    def close(self, call_id: str, on_closed: Callable[[ClosedInfo], object]) -> None:
        """Close ``call_id``'s recording; ``on_closed`` gets the writer's figures, on the loop."""

        def closed(info: ClosedInfo) -> None:
            self.open_calls.discard(call_id)
            self.completed += 1
            self._closed[call_id] = listed(info)
            while len(self._closed) > MAX_REMEMBERED:
                self._closed.popitem(last=False)
            on_closed(info)

        remote = self.remote
        if remote is None:
            self.writer.close(call_id, closed)
            return

        def written(info: ClosedInfo) -> None:  # the loop: the file is closed, its last part queued
            remote.finished(call_id, str(info["path"]), lambda: self._soon(closed, info))

        self.writer.close(call_id, written)

    def _soon(self, fn: Callable[[ClosedInfo], None], info: ClosedInfo) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is listening
            self._loop.call_soon_threadsafe(fn, info)

    def status(self) -> WriterStatus:
        return self.writer.status()

    def health(self) -> tuple[str | None, dict[str, Any]]:
        """What ``/healthz`` shows: the reason it is degraded (None: ok), and the writer's figures."""
        s = self.status()
        body = {
            "state": s.state,
            "format": self.settings.format,
            "open": s.open_recordings,
            "failed": s.failed_recordings,
            "dropped_bytes": s.dropped_bytes,
            "queued_bytes": s.queued_bytes,
        }
        reason = (s.reason or "degraded") if s.state == DEGRADED else None
        if self.remote is not None:
            upload_reason, body["uploads"] = self.remote.health()
            reason = "; ".join(r for r in (reason, upload_reason) if r) or None
        if reason:
            body["reason"] = reason
        return reason, body

    # -- reads and deletes (blocking: a worker thread) -----------------------------------------

    def path_of(self, call_id: str) -> Path | None:
        """The call's recording file, in whichever format it was written (None: there is none)."""
        if not _safe_id(call_id):
            return None
        for suffix in SUFFIX.values():
            path = self.directory / f"{call_id}{suffix}"
            if path.is_file():
                return path
        return None

    def describe(self, call_id: str) -> dict[str, Any] | None:
        """``{format, duration_s, bytes}`` of a closed recording (None: none, or still being written)."""
        if call_id in self.open_calls:
            return None
        known = self._closed.get(call_id)
        if known is not None:
            return known
        path = self.path_of(call_id)
        if path is None:
            return None
        return {"format": path.suffix[1:], "duration_s": _wav_seconds(path), "bytes": _size(path)}

    def describe_many(self, call_ids: list[str]) -> dict[str, dict[str, Any] | None]:
        """:meth:`describe` of each call (object storage: from the shared index, one read for all)."""
        if self.remote is None:
            return {call_id: self.describe(call_id) for call_id in call_ids}
        found = self.remote.indexed(call_ids)
        return {c: (found[c].described() if c in found and found[c].complete else None) for c in call_ids}

    def forget(self, call_ids: Iterable[str]) -> int:
        """Delete these calls' recordings (retention, with their transcripts); returns how many files went."""
        if self.remote is not None:
            ids = list(call_ids)
            for call_id in ids:
                self._closed.pop(call_id, None)
            return self.remote.forget(ids)
        gone = 0
        for call_id in call_ids:
            self._closed.pop(call_id, None)
            if call_id in self.open_calls or not _safe_id(call_id):
                continue
            for suffix in SUFFIX.values():
                with contextlib.suppress(FileNotFoundError):
                    (self.directory / f"{call_id}{suffix}").unlink()
                    gone += 1
        return gone

    # -- state changes (the writer calls this on the loop) --------------------------------------

    def _changed(self, state: str, reason: str) -> None:
        if state == DEGRADED:
            log.warning("recording.degraded", reason=reason)
        else:
            log.info("recording.recovered", detail=reason)


def listed(info: ClosedInfo) -> dict[str, Any]:
    """The listing's ``recording`` object from the writer's figures."""
    return {"format": info["format"], "duration_s": round(float(info["duration_s"]), 3), "bytes": info["bytes"]}


def _recovered(paths: list[str]) -> None:
    if paths:
        log.info("recording.repaired", files=len(paths), detail="left open by a bridge that was killed")


def _safe_id(call_id: str) -> bool:
    return (
        bool(call_id) and len(call_id) <= 128 and all(c.isalnum() or c in "-_." for c in call_id) and call_id[0] != "."
    )


def _size(path: Path) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _wav_seconds(path: Path) -> float | None:
    """A WAV file's length from its size and header rate (None: not a WAV, or unreadable)."""
    if path.suffix != ".wav":
        return None
    try:
        with path.open("rb") as f:
            header = f.read(44)
            size = os.fstat(f.fileno()).st_size
    except OSError:
        return None
    if len(header) < 44 or header[:4] != b"RIFF":
        return None
    channels, rate = struct.unpack_from("<HI", header, 22)
    return round(float(size - 44) / (2 * max(1, int(channels)) * max(1, int(rate))), 3)


RECORDINGS: web.AppKey[RecordingService | None] = web.AppKey("recordings")  # None: recordings off
