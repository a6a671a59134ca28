"""Recordings in object storage (fleet mode, ``BRIDGE_RECORDINGS_URL=s3://bucket/prefix``): the part of
:class:`bridge.recording.service.RecordingService` that uploads, indexes, serves and deletes them.

* **Writing.** The writer still writes each recording into the data directory, now a spool: the
  :class:`~bridge.recording.uploader.PartCutter` cuts it into parts as it grows, the
  :class:`~bridge.recording.uploader.PartUploader` stores them, and each stored part gets a row in the
  record's index (:mod:`bridge.recording.index`: the transcript store, shared in PostgreSQL). Once a
  call's last part is stored its spool file is deleted and ``recording.completed`` is sent.
* **Reading.** Any instance reads a call's index from the shared record and joins the parts
  (:mod:`bridge.recording.parts`); ``bridge.http.recording_objects`` serves the bytes with ``Range``.
* **Retention.** The purge deletes a call's index rows with its transcript and its objects here.
* **A killed instance.** Its spool files are not the record: the parts it stored are (so at most the
  part it had not cut is lost). The instance that takes the call over ends it on record
  (``instance_lost``), which completes the recording as far as it was stored. A restarted bridge deletes
  the spool files a killed one left (their stored parts are listed; the rest cannot be told apart).

The index needs the transcript store: recordings in object storage with ``BRIDGE_TRANSCRIPTS=off`` are
refused at start-up (:meth:`bridge.settings.Settings`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from bridge.recording.index import Indexed
from bridge.recording.objects import ObjectStore, ObjectStoreError, parse_s3_url
from bridge.recording.uploader import PartCutter, PartUploader

if TYPE_CHECKING:
    from bridge.recording.settings import RecordingSettings

log = structlog.get_logger("bridge.recording")

FLUSH_TIMEOUT = 5.0  # seconds a call's end waits for its index rows to be committed


class IndexStore(Protocol):
    """What the index needs of the call record (both stores: :mod:`bridge.record_store`)."""

    ERRORS: tuple[type[Exception], ...]

    def recording_part(self, row: tuple[Any, ...]) -> None: ...

    def recording_index(self, call_ids: list[str]) -> dict[str, Indexed]: ...

    def flush(self, timeout: float) -> bool: ...


class RemoteRecordings:
    """See the module docstring. :meth:`attach` gives it the record store once that is open."""

    def __init__(self, settings: RecordingSettings) -> None:
        assert settings.url is not None
        self.location = parse_s3_url(settings.url)
        self.objects = ObjectStore(self.location, endpoint_url=settings.s3_endpoint_url)
        self.store: IndexStore | None = None
        self.unindexed = 0  # parts stored while no record store was attached (never listed)
        self.uploader = PartUploader(self.objects, self._index, threads=settings.upload_threads)
        self.cutter = PartCutter(self.uploader, settings.part_s)

    def attach(self, store: IndexStore | None) -> None:
        self.store = store

    def _index(self, row: tuple[Any, ...]) -> None:
        store = self.store
        if store is None:
            self.unindexed += 1
        else:
            store.recording_part(row)

    # -- lifetime (blocking: a worker thread) ------------------------------------------------------

    def start(self, directory: Path, discard_spool: bool) -> None:
        """Check the bucket (a warning, not a refusal: the uploads retry), start the upload threads and
        (``discard_spool``) delete the spool files a killed bridge left."""
        try:
            self.objects.check()
        except ObjectStoreError as exc:
            log.warning("recording.storage_unavailable", bucket=self.location.bucket, reason=str(exc)[:200])
        self.uploader.start()
        if discard_spool:
            left = [p for p in directory.glob("*") if p.suffix in (".wav", ".opus")]
            for path in left:
                with contextlib.suppress(OSError):
                    path.unlink()
            if left:
                log.info("recording.spool_discarded", files=len(left), detail="left by a bridge that was killed")

    def stop(self, timeout: float) -> None:
        self.uploader.stop(timeout)

    # -- a call's end ---------------------------------------------------------------------------------

    def finished(self, call_id: str, spool: str, done: Callable[[], object]) -> None:
        """Once the call's parts are stored: delete its spool file, then ``done()`` (an upload thread)."""

        def after() -> None:
            with contextlib.suppress(OSError):
                os.unlink(spool)
            store = self.store
            if store is not None:  # its index rows committed first: recording.completed means it can be read
                store.flush(FLUSH_TIMEOUT)
            done()

        self.uploader.finish(call_id, after)

    # -- reads and deletes (blocking: a worker thread) -----------------------------------------------

    def indexed(self, call_ids: list[str]) -> dict[str, Indexed]:
        """These calls' recordings as the shared index lists them (raises the store's errors)."""
        store = self.store
        return store.recording_index(call_ids) if store is not None and call_ids else {}

    def forget(self, call_ids: Iterable[str]) -> int:
        """Delete these calls' objects (retention: their index rows went with their transcripts)."""
        gone = 0
        for call_id in call_ids:
            try:
                gone += self.objects.delete_prefix(self.objects.key(call_id) + "/")
            except ObjectStoreError as exc:
                log.warning("recording.delete_failed", call_id=call_id, reason=str(exc)[:200])
        return gone

    def health(self) -> tuple[str | None, dict[str, Any]]:
        """Why uploads are degraded (None: they work), and their figures."""
        u = self.uploader
        body = {"pending": u.pending, "uploaded": u.uploaded, "dropped": u.dropped, "failures": u.failures}
        return (f"upload: {u.failing}" if u.failing else None), body
