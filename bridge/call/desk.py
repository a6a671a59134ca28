"""Where a call being transferred leaves the markup its carrier fetches next (the transfer desk).

A markup carrier (Twilio ``<Connect action>``) asks the bridge what to do once the stream has closed:
``POST /twilio/after-stream`` with the carrier's call id. The call that handed itself over left the
answer here a moment before (a ``<Dial>``), keyed by carrier and carrier call id; the route takes it.
Entries are few (one per call being handed over), short-lived (the carrier fetches within a second or
two) and bounded: the oldest are forgotten first.

:class:`TransferDesk` is what a desk does; there are two. One process holds its own
(:class:`LocalDesk`): under ``--workers`` the fetch may reach another worker, which asks its siblings
(:mod:`bridge.transfer_reach`, :mod:`bridge.siblings`). In fleet mode the entries live in Redis
(:class:`bridge.fleet.desk.FleetDesk`), so any instance answers.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Protocol

from aiohttp import web

MAX_ENTRIES = 10_000
DESK_TTL = 120.0  # s an answer waits for its fetch


class TransferDesk(Protocol):
    """Answers left for a carrier's next fetch, by (carrier, carrier call id); each taken once."""

    async def put(self, carrier: str, call_sid: str, answer: str) -> None:
        """Leave ``answer`` for the carrier's next fetch for this call (replacing one left before).

        Raises:
            ControlError: it could not be left (the carrier would not find it).
        """
        ...

    async def take(self, carrier: str, call_sid: str) -> str | None:
        """The answer left for this call (once), None when there is none or it expired."""
        ...


class LocalDesk:
    """This process's desk: answers in memory, bounded in number and in time."""

    def __init__(self, limit: int = MAX_ENTRIES, ttl: float = DESK_TTL) -> None:
        self.limit = limit
        self.ttl = ttl
        self._answers: OrderedDict[tuple[str, str], tuple[float, str]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._answers)

    async def put(self, carrier: str, call_sid: str, answer: str) -> None:
        key = (carrier, call_sid)
        self._answers.pop(key, None)
        self._answers[key] = (time.monotonic() + self.ttl, answer)
        while len(self._answers) > self.limit:
            self._answers.popitem(last=False)

    async def take(self, carrier: str, call_sid: str) -> str | None:
        """The answer left for this call (once), None when there is none or it expired."""
        entry = self._answers.pop((carrier, call_sid), None)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]


DESK: web.AppKey[TransferDesk] = web.AppKey("transfer_desk")
