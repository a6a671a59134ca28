"""The bot WebSocket's wire rules (pure): what a bot's message means, and which durable events it
has not acknowledged yet. The I/O shell is :mod:`bridge.reply.bot_socket`.

Bot -> bridge, one JSON object per text message:

- ``{"type": "ack", "sequence": N}``: the bot has every durable event up to ``N`` (cumulative). It
  may send one right after connecting to say what it already has.
- ``{"actions": [...], "request_id": "...", "idempotency_key": "..."}``: actions in the one
  vocabulary (:func:`~bridge.reply.actions.parse_actions`); ``request_id`` (optional, at most 128
  characters) is echoed in the answer; ``idempotency_key`` makes a repeat apply nothing.

Anything else (not JSON, nested deeper than :data:`bridge.untrusted.MAX_JSON_DEPTH`, not an
object, a bad ack, a bad action) is a :class:`Refused` naming what was wrong. One bad action
refuses the whole message: the request is validated as a whole before any of it is applied.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from bridge.errors import ActionError
from bridge.reply.actions import Action, parse_actions
from bridge.untrusted import loads

MAX_REQUEST_ID_CHARS = 128


@dataclass(frozen=True, slots=True)
class Ack:
    sequence: int


@dataclass(frozen=True, slots=True)
class Request:
    actions: list[Action]
    request_id: str | None
    idempotency_key: str | None
    action_ids: tuple[str | None, ...] = ()  # the ids the message gave its actions (None where none)


@dataclass(frozen=True, slots=True)
class Refused:
    error: str
    request_id: str | None = None
    action_ids: tuple[str | None, ...] = ()

    def json(self) -> dict[str, Any]:
        return {
            "type": "actions.refused",
            "request_id": self.request_id,
            "error": self.error[:500],
            "action_ids": list(self.action_ids),
        }


BotMessage = Ack | Request | Refused


def decode(text: str) -> BotMessage:
    """One text message from the bot. Never raises for anything a bot can send."""
    try:
        data = loads(text)  # nested deeper than MAX_JSON_DEPTH: refused before parsing
    except ValueError as exc:
        return Refused(f"message is not JSON: {exc}")
    if not isinstance(data, dict):
        return Refused('a message is a JSON object: {"actions": [...]} or {"type": "ack", "sequence": N}')
    request_id = data.pop("request_id", None)
    if request_id is not None and not (isinstance(request_id, str) and len(request_id) <= MAX_REQUEST_ID_CHARS):
        return Refused(f"request_id: a string of at most {MAX_REQUEST_ID_CHARS} characters")
    if data.get("type") == "ack":
        sequence = data.get("sequence")
        if set(data) != {"type", "sequence"} or not isinstance(sequence, int) or isinstance(sequence, bool):
            return Refused('an ack is {"type": "ack", "sequence": N} (N an integer)', request_id)
        return Ack(sequence)
    key = data.pop("idempotency_key", None)
    ids = _action_ids(data.get("actions"))
    if key is not None and not (isinstance(key, str) and 0 < len(key) <= 256):
        return Refused("idempotency_key: a string of 1-256 characters", request_id, ids)
    try:
        actions = parse_actions(data)
    except ActionError as exc:
        return Refused(str(exc), request_id, ids)
    return Request(actions, request_id, key, ids)


CALL_ENDED = "the call has ended"


def refused_after_end(message: Request) -> Refused:
    """The answer to actions on a socket of a call that is over (the resend after a bridge restart)."""
    return Refused(CALL_ENDED, message.request_id, message.action_ids)


def _action_ids(items: Any) -> tuple[str | None, ...]:
    """The ids a refused message gave its actions (a streamed one's is its ``stream_id``)."""
    if not isinstance(items, list):
        return ()
    ids: list[str | None] = []
    for item in items[:64]:
        found = item.get("id", item.get("stream_id")) if isinstance(item, dict) else None
        ids.append(found[:64] if isinstance(found, str) else None)
    return tuple(ids)


class Unacknowledged:
    """Durable events the bot has not acknowledged, in sequence order, at most ``limit`` (older ones
    are dropped and counted). Each connection writes them from the first (:meth:`rewind`), so what a
    socket took with it is sent again after a redial, with the same sequence numbers."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._events: deque[tuple[int, str]] = deque()
        self._written = 0  # entries from the left written on the current connection
        self._sent_through = 0  # the highest sequence ever written (an ack cannot go past it)
        self.acked_through = 0
        self.dropped = 0  # dropped for the bound
        self.dropped_unsent = 0  # of which never written at all

    def __len__(self) -> int:
        return len(self._events)

    @property
    def last_sequence(self) -> int:
        return self._events[-1][0] if self._events else self.acked_through

    def add(self, sequence: int, body: str) -> bool:
        """Keep an event; True when the bound dropped the oldest one to make room."""
        dropped = False
        if len(self._events) >= self.limit:
            self._events.popleft()
            self.dropped += 1
            if self._written:
                self._written -= 1
            else:
                self.dropped_unsent += 1
            dropped = True
        self._events.append((sequence, body))
        return dropped

    def ack(self, sequence: int) -> int:
        """The bot has everything up to ``sequence``; returns how many events that released."""
        return len(self.release(sequence))

    def release(self, sequence: int) -> list[int]:
        """The bot has everything up to ``sequence`` (at most what was written); returns the sequence
        numbers that released, in order (what a durable store may now forget)."""
        sequence = min(sequence, self._sent_through)
        released: list[int] = []
        while self._events and self._events[0][0] <= sequence:
            released.append(self._events.popleft()[0])
        self._written = max(0, self._written - len(released))
        self.acked_through = max(self.acked_through, sequence)
        return released

    def rewind(self) -> None:
        """A new connection: everything not acknowledged goes again."""
        self._written = 0

    def next(self) -> tuple[int, str] | None:
        return self._events[self._written] if self._written < len(self._events) else None

    def wrote(self, sequence: int) -> None:
        """``sequence`` (the one :meth:`next` gave) is written on the current connection."""
        if self._written < len(self._events) and self._events[self._written][0] == sequence:
            self._written += 1
        self._sent_through = max(self._sent_through, sequence)

    @property
    def all_written(self) -> bool:
        return self._written >= len(self._events)
