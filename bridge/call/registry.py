"""The calls a running bridge holds, in one place: its open phone streams, the calls they carry, the
calls waiting for a restarted stream, and the ids of calls that ended recently.

One :class:`CallRegistry` per application, under :data:`CALLS`: the phone edge adds and removes streams
and calls, the bot API finds a call by id (live, suspended, or recently ended: 409 rather than 404),
``/healthz``, the metrics and the drain count and close them.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING

from aiohttp import web

from bridge.call.suspended import SuspendedCalls

if TYPE_CHECKING:
    from bridge.call.lifetime import Call
    from bridge.phone_connection import PhoneConnection
    from bridge.phone_stream import PhoneStream

MAX_ENDED_REMEMBERED = 10_000


class CallRegistry:
    """What calls this bridge holds, and whether it takes new ones.

    Attributes:
        streams: the open phone streams (carrier WebSockets), each with its connection; a stream counts
            from its upgrade on, before its ``start`` names a call.
        live: the calls that one of those streams carries, by call id.
        suspended: calls whose stream dropped without ``stop``, waiting for a restarted stream.
        draining: set from the first moment of the drain (SIGTERM) on: new streams are refused.
    """

    def __init__(self, max_suspended: int = 100, max_ended: int = MAX_ENDED_REMEMBERED) -> None:
        self.streams: dict[PhoneStream, PhoneConnection] = {}
        self.live: dict[str, Call] = {}
        self.suspended = SuspendedCalls(max_suspended)
        self.draining = False
        self._max_ended = max_ended
        self._ended: OrderedDict[str, None] = OrderedDict()  # recent ids, oldest first: /v1/ answers 409

    def find(self, call_id: str) -> Call | None:
        """A call this bridge holds, live or suspended (the bot API may act on either)."""
        call = self.live.get(call_id)
        return call if call is not None else self.suspended.find(call_id)

    def call_ended(self, call_id: str) -> None:
        """Remember that ``call_id`` ended (the last :data:`MAX_ENDED_REMEMBERED` are kept)."""
        self._ended[call_id] = None
        while len(self._ended) > self._max_ended:
            self._ended.popitem(last=False)

    def has_ended(self, call_id: str) -> bool:
        """Whether ``call_id`` is among the recently ended calls."""
        return call_id in self._ended


CALLS = web.AppKey("calls", CallRegistry)
