"""Reaching a transferring call from whichever process the carrier's request came to.

After the bot's ``transfer`` the carrier calls back (:mod:`bridge.http.call_control`) and each request
may reach a process that does not hold the call:

* the ``<Connect action>`` fetch needs the ``<Dial>`` the call left on the transfer desk
  (:func:`take_answer`);
* the dial's result (the person answered; nobody did and the bot asked ``on_no_answer: hangup``)
  must reach the call, suspended where its stream was (:func:`send_outcome`).

One process: its own desk and suspended calls. Under ``--workers`` (no Redis): a worker without the
entry or the call asks its siblings over their internal sockets (:mod:`bridge.siblings`: bounded,
never forwarded twice). Fleet mode: the desk is in Redis already and an outcome goes to the call's
owner on its action stream (:mod:`bridge.fleet.transfers`); siblings are not asked then (each worker
is an instance). The returning stream of a transfer nobody answered is a restarted stream like any:
adopted in fleet mode, relayed to its worker under ``--workers`` (:mod:`bridge.sibling_relay`).
"""

from __future__ import annotations

import asyncio
from typing import Protocol

import structlog
from aiohttp import web

from bridge.app_keys import FLEET
from bridge.call.desk import DESK
from bridge.call.registry import CALLS, CallRegistry
from bridge.siblings import SIBLINGS

log = structlog.get_logger("bridge.transfer")

ANSWERED = "answered"  # the person picked up: the caller is theirs, the call ends "transferred"
GAVE_UP = "gave_up"  # nobody answered and the bot asked on_no_answer=hangup: the call ends
NOT_ANSWERED = "not_answered"  # nobody answered, the caller never left the stream (Telnyx): the bot has it


class TransferOutcome(Protocol):
    """What the carrier's report tells a call's transfer (:class:`bridge.call.transfer.CallTransfer`)."""

    def answered(self, action_id: str, to: str) -> None: ...

    def gave_up(self, action_id: str, status: str) -> None: ...

    def not_answered(self, action_id: str, status: str) -> None: ...


def outcome(call_id: str, action_id: str, kind: str, detail: str) -> dict[str, str]:
    """The carrier's word on a call's transfer, as it travels between processes: ``detail`` is the
    person's number or address (answered), or how the dial ended."""
    return {"call": call_id, "act": action_id, "kind": kind, "detail": detail}


def _held(calls: CallRegistry, call_id: str) -> TransferOutcome | None:
    """The transfer of a call this process holds (waiting suspended, or on its stream: Telnyx)."""
    call = calls.suspended.find(call_id) or calls.live.get(call_id)
    return call.transfer if call is not None else None


def apply_outcome(calls: CallRegistry, word: dict[str, str]) -> bool:
    """Apply an outcome to the call when this process holds it; False: not here."""
    transfer = _held(calls, word.get("call", ""))
    kind, action_id, detail = word.get("kind"), word.get("act", ""), word.get("detail", "")
    if transfer is None or kind not in (ANSWERED, GAVE_UP, NOT_ANSWERED):
        return False
    if kind == ANSWERED:
        transfer.answered(action_id, detail)
    elif kind == GAVE_UP:
        transfer.gave_up(action_id, detail)
    else:
        transfer.not_answered(action_id, detail)
    return True


async def send_outcome(app: web.Application, word: dict[str, str]) -> bool:
    """The call's process applies the outcome: this one, else the fleet's owner, else a sibling worker.
    False: no process holds the call (it ended, or came back already)."""
    if apply_outcome(app[CALLS], word):
        return True
    fleet = app[FLEET]
    if fleet is not None:
        return await fleet.transfers.send(word.get("call", ""), word)
    siblings = app.get(SIBLINGS)
    return await siblings.transfer_outcome(word) if siblings is not None else False


_sending: set[asyncio.Task[None]] = set()  # outcomes on their way to another process


class RemoteTransfer:
    """The transfer of a call another worker or instance holds: each outcome is sent there, in a task
    of its own (bounded by the siblings' timeout, or Redis's), so the carrier's answer never waits."""

    def __init__(self, app: web.Application, call_id: str) -> None:
        self.app = app
        self.call_id = call_id

    def answered(self, action_id: str, to: str) -> None:
        self._send(ANSWERED, action_id, to)

    def gave_up(self, action_id: str, status: str) -> None:
        self._send(GAVE_UP, action_id, status)

    def not_answered(self, action_id: str, status: str) -> None:
        self._send(NOT_ANSWERED, action_id, status)

    def _send(self, kind: str, action_id: str, detail: str) -> None:
        task = asyncio.create_task(self._deliver(outcome(self.call_id, action_id, kind, detail)))
        _sending.add(task)
        task.add_done_callback(_sending.discard)

    async def _deliver(self, word: dict[str, str]) -> None:
        try:
            delivered = await send_outcome(self.app, word)
        except Exception:  # a bug must not go unseen: the call ends when its wait runs out
            log.exception("transfer.outcome_not_sent", call_id=self.call_id, kind=word["kind"])
            return
        log.info("transfer.outcome_sent", call_id=self.call_id, kind=word["kind"], delivered=delivered)


async def transfer_of(app: web.Application, call_id: str) -> TransferOutcome | None:
    """The transfer of a call: this process's, else one that sends each outcome to the worker or
    instance holding the call (None: a single process that does not hold it)."""
    held = _held(app[CALLS], call_id)
    if held is not None:
        return held
    if app[FLEET] is not None or SIBLINGS in app:
        return RemoteTransfer(app, call_id)
    return None


async def take_answer(app: web.Application, carrier: str, call_sid: str) -> str | None:
    """The answer a transferring call left for its carrier's next fetch (once): this process's desk
    (Redis in fleet mode), else a sibling worker's."""
    answer = await app[DESK].take(carrier, call_sid)
    if answer is not None or app[FLEET] is not None:
        return answer
    siblings = app.get(SIBLINGS)
    return await siblings.take_answer(carrier, call_sid) if siblings is not None else None
