"""What the two call-record stores (:class:`bridge.transcripts.TranscriptStore`, SQLite, and
:class:`bridge.transcripts_pg.PgTranscriptStore`, PostgreSQL) share about their writes: a bounded queue in
front of one group-commit thread (:class:`bridge.group_commit.GroupWriter`), writes dropped and counted
beyond it, and the state changes they report (``transcripts.degraded``, ``recovered``, ``dropping``,
``caught_up``). Each store sets the attributes below in its constructor and writes its own ops."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bridge.group_commit import GroupWriter
from bridge.recording import index as recording_index
from bridge.transcript_schema import CALL_SEEN, Op

Report = Callable[[str, dict[str, Any]], None]


class QueuedWrites:
    """The queue side of a call-record store (see the module docstring)."""

    _writes: GroupWriter[Op]
    max_queue: int
    _refused: int  # writes that were not a call, an utterance, an add-on, an analysis or an end
    _dropping: bool
    _report: Report | None
    _clock: Callable[[], float]

    def recording_part(self, row: tuple[Any, ...]) -> None:
        """Record a recording's part in object storage (:func:`bridge.recording.index.part_row`); any thread."""
        self._queue(((CALL_SEEN, (row[0], self._clock())), (recording_index.PART, row)))

    def _queue(self, op: Op) -> None:
        if not self._writes.put(op):  # counted there
            closing = self._writes.closing
            self._dropped("the store is closed" if closing else f"the write queue is full ({self.max_queue})")

    def _drop(self, reason: str) -> None:
        self._refused += 1
        self._dropped(reason)

    def _dropped(self, reason: str) -> None:
        if not self._dropping:
            self._dropping = True
            self._tell("transcripts.dropping", reason=reason[:200])

    def _tell(self, event: str, **fields: Any) -> None:
        if self._report is not None:
            self._report(event, fields)

    @property
    def queued(self) -> int:
        """Writes not yet committed (queued, or in the batch being written)."""
        return self._writes.queued

    @property
    def degraded(self) -> str | None:
        """Why writes fail (``transcripts.degraded``'s reason), None while they work."""
        return self._writes.degraded

    @property
    def write_failures(self) -> int:
        """Failed commits (and, PostgreSQL, failed connection attempts of the writer)."""
        return self._writes.write_failures

    @property
    def dropped(self) -> int:
        """Writes never to be stored: refused (by the store or the server), beyond the queue's bound,
        after close, left at close."""
        return self._writes.dropped + self._refused

    @property
    def committed(self) -> int:
        """Writes committed."""
        return self._writes.committed

    def flush(self, timeout: float) -> bool:
        """Block until everything queued so far is committed, or ``timeout``; True when it was."""
        return self._writes.flush(timeout)

    # -- the writer thread (GroupWriter calls these) -----------------------------------------------

    def _state_changed(self, reason: str | None) -> None:
        if reason is None:
            self._tell("transcripts.recovered")
        else:
            self._tell("transcripts.degraded", reason=reason)

    def _committed(self, waiting: int) -> None:
        if self._dropping and waiting == 0:
            self._dropping = False
            self._tell("transcripts.caught_up", dropped=self.dropped)
