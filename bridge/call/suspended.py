"""The calls a bridge holds between streams: those whose stream dropped without ``stop`` wait here
(bounded in number and in time) for a new stream that proves it belongs to them."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import structlog

from bridge.adapters.base import CallStarted
from bridge.call.lifetime import Call
from bridge.stats import EndReason

log = structlog.get_logger("bridge.call")


@dataclass(eq=False, slots=True)
class _Suspended:
    call: Call
    key: tuple[str, str]
    since: float
    timer: asyncio.TimerHandle | None = None
    expired: EndReason = "stream_lost"  # "transferred": the caller is ringing a person, not lost


class SuspendedCalls:
    """Calls whose stream dropped without ``stop``, each waiting (bounded) for a new stream.

    Several calls may wait under one carrier call id (Twilio allows several ``<Stream>``s on a call,
    and each can drop). Every entry leaves exactly one way: taken by a new stream that proves it is
    the same call, or ended (its grace ran out, it was shed to make room, or the bridge stopped).
    """

    def __init__(self, limit: int = 100) -> None:
        self.limit = limit
        self._by_key: dict[tuple[str, str], list[_Suspended]] = {}
        self._entries: dict[_Suspended, None] = {}  # oldest first
        self._ending: set[asyncio.Task[None]] = set()
        self.closed = False  # set when the bridge stops: calls then end instead of waiting
        self.shed = 0

    def __len__(self) -> int:
        return len(self._entries)

    def find(self, call_id: str) -> Call | None:
        """A waiting call by its bridge call id (the bot API may still act on it)."""
        return next((e.call for e in self._entries if e.call.id == call_id), None)

    def suspend(self, call: Call, key: tuple[str, str], grace: float, expired: EndReason = "stream_lost") -> None:
        """Keep ``call`` for a new stream under ``key`` for ``grace`` seconds; then it ends (``expired``:
        a transfer's call that did not come back went to the person)."""
        loop = asyncio.get_running_loop()
        entry = _Suspended(call, key, loop.time(), expired=expired)
        entry.timer = loop.call_later(grace, self._end, entry, expired)
        self._by_key.setdefault(key, []).append(entry)
        self._entries[entry] = None
        call.end_suspended_now = lambda reason: self._end(entry, reason)  # e.g. the bot hangs up meanwhile
        call.leave_suspension = lambda: self._leave(entry)  # fleet mode: it carries on on another instance
        # Only calls whose stream dropped are shed: a transfer ringing a person is a call in progress
        # (bounded by server.max_calls with the rest, and by its ring timeout).
        while sum(e.expired == "stream_lost" for e in self._entries) > self.limit:
            self.shed_oldest("too many suspended calls")

    def _leave(self, entry: _Suspended) -> None:
        """Take a waiting call out without ending it (fleet mode: it carries on on another instance)."""
        if entry.timer is not None:
            entry.timer.cancel()
        self._remove(entry)

    def track(self, task: asyncio.Task[None]) -> None:
        """A call's end-of-call work, which shutdown must wait for."""
        self._ending.add(task)
        task.add_done_callback(self._ending.discard)

    def waiting(self, key: tuple[str, str]) -> int:
        return len(self._by_key.get(key, ()))

    def take(self, key: tuple[str, str], started: CallStarted) -> Call | None:
        """The oldest call suspended under ``key`` that ``started`` proves to be, taken off the list."""
        for entry in self._by_key.get(key, ()):
            if entry.call.accepts_restart(started):
                self._leave(entry)
                return entry.call
        return None

    def shed_oldest(self, why: str) -> bool:
        """End the longest-waiting call whose stream dropped (never a transfer ringing a person) to make
        room; False when there is none."""
        entry = next((e for e in self._entries if e.expired == "stream_lost"), None)
        if entry is None:
            return False
        self.shed += 1
        log.warning("call.shed", call_id=entry.call.id, reason=why, suspended=len(self._entries))
        self._end(entry, "shed")
        return True

    def _remove(self, entry: _Suspended) -> None:
        entry.call.end_suspended_now = entry.call.leave_suspension = None
        self._entries.pop(entry, None)
        siblings = self._by_key.get(entry.key, [])
        if entry in siblings:
            siblings.remove(entry)
        if not siblings:
            self._by_key.pop(entry.key, None)

    def _end(self, entry: _Suspended, reason: EndReason) -> None:
        if entry not in self._entries:
            return
        self._remove(entry)
        if entry.timer is not None:
            entry.timer.cancel()
        self.track(asyncio.create_task(entry.call.end_suspended(reason), name=f"call-end-{entry.call.id}"))

    async def end_all(self) -> None:
        """Shutdown: end every suspended call now, and wait for calls already ending."""
        self.closed = True
        for entry in list(self._entries):
            self._end(entry, "stream_lost")
        await asyncio.gather(*self._ending, return_exceptions=True)
