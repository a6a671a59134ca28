"""The start-up resend of the bot WebSocket: events a previous process left in the outbox (socket-only
mode, no ``BOT_WEBHOOK_URL``) go to the bot again, one socket per finished call.

:func:`resend_left_over` dials the bot (``BOT_WS_URL?call_id=``) for each call a previous process left
events of and sends them again, in order, with their sequence numbers, then the ``call.ended``
(``bridge_restarted``) of a call the crash cut short. Each acknowledged event is forgotten in the outbox;
actions on such a socket are refused (the call has ended). The live per-call socket is
:mod:`bridge.reply.bot_socket`'s. A sensitive event (``"sensitive": true``) is never in the outbox, so
never resent here.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterable
from typing import assert_never

import aiohttp
import structlog

from bridge.backoff import Backoff
from bridge.delivery import EventStore, PendingEvent
from bridge.reply.bot_channel import Ack, Refused, Request, Unacknowledged, decode, refused_after_end
from bridge.reply.bot_socket import MAX_MESSAGE_BYTES, bearer
from bridge.settings import BotWsSettings

log = structlog.get_logger("bridge.bot_socket")

RESEND_WAIT = 10.0  # s a start-up resend of one call's events has (dials included) to get them acknowledged
RESEND_SOCKETS = 8  # calls whose events are resent at once at start-up


async def resend_left_over(
    settings: BotWsSettings,
    http: aiohttp.ClientSession,
    events: Iterable[PendingEvent],
    store: EventStore,
    *,
    max_age: float,
    clock: Callable[[], float] = time.time,
    wait: float = RESEND_WAIT,
    sockets: int = RESEND_SOCKETS,
) -> int:
    """Socket-only, at start-up: what a previous process left in the outbox (``events``:
    :meth:`bridge.delivery.Delivery.left_over`, each call's ``call.ended`` with ``bridge_restarted``
    included) goes to the bot again. Per call (at most ``sockets`` calls at once): dial ``BOT_WS_URL?call_id=``,
    send the events in sequence order, wait up to ``wait`` seconds in all (dials included) for the
    acks, forget each acknowledged event in ``store``, close with 1000. Actions on such a socket are
    refused (the call has ended). An event still unacknowledged stays pending (tried again at the
    next start) until it is ``max_age`` (``webhook.max_age``) old, then is kept as dead. Returns how
    many events the bot acknowledged; never raises but for cancellation."""
    by_call: dict[str, list[PendingEvent]] = {}
    for event in sorted(events, key=lambda e: (e.call_id, e.sequence)):
        by_call.setdefault(event.call_id, []).append(event)
    if not by_call:
        return 0
    log.info("bot_socket.recovering", events=sum(map(len, by_call.values())), calls=len(by_call))
    limit = asyncio.Semaphore(sockets)

    async def one(call_id: str, pending: list[PendingEvent]) -> int:
        async with limit:
            resend = _Resend(settings, http, call_id, pending, store)
            with structlog.contextvars.bound_contextvars(call_id=call_id):
                try:
                    await resend.run(wait)
                except Exception:
                    log.exception("bot_socket.recovery_failed")
                resend.give_up_old(clock(), max_age)
            return resend.acked

    return sum(await asyncio.gather(*(one(c, p) for c, p in by_call.items())))


class _Resend:
    """One finished call's left-over events, sent again on a socket of their own (see
    :func:`resend_left_over`)."""

    def __init__(
        self,
        settings: BotWsSettings,
        http: aiohttp.ClientSession,
        call_id: str,
        events: list[PendingEvent],
        store: EventStore,
    ) -> None:
        self.settings = settings
        self.http = http
        self.call_id = call_id
        self.store = store
        self.events = {e.sequence: e for e in events}  # not acknowledged yet
        self.window = Unacknowledged(max(1, len(events)))
        for event in events:
            self.window.add(event.sequence, event.body)
        self.acked = 0

    async def run(self, wait: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        backoff = Backoff(0.2, self.settings.reconnect_max_delay)
        failures = 0
        while len(self.window) and loop.time() < deadline:
            try:
                async with asyncio.timeout(max(0.0, deadline - loop.time())):
                    ws = await self.http.ws_connect(
                        self.settings.url,
                        headers=bearer(self.settings),
                        max_msg_size=MAX_MESSAGE_BYTES,
                        params={"call_id": self.call_id},
                    )
            except aiohttp.WSServerHandshakeError as exc:
                log.warning("bot_socket.connect_failed", status=exc.status, error=str(exc)[:200], recovering=True)
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                log.warning("bot_socket.connect_failed", error=f"{type(exc).__name__}: {exc}"[:200], recovering=True)
            else:
                try:
                    if await self._session(ws, deadline):
                        await ws.close(code=1000, message=b"call ended")
                        return
                except (aiohttp.ClientError, OSError) as exc:
                    log.info("bot_socket.dropped", error=f"{type(exc).__name__}: {exc}"[:200], recovering=True)
                finally:
                    if not ws.closed:
                        await ws.close(code=1000, message=b"call ended")
            failures += 1
            await asyncio.sleep(min(backoff.delay(failures), max(0.0, deadline - loop.time())))

    async def _session(self, ws: aiohttp.ClientWebSocketResponse, deadline: float) -> bool:
        """Send everything unacknowledged, then read acks until none is left or ``deadline``: True
        (close); False when the socket went away first (dial again if there is time)."""
        loop = asyncio.get_running_loop()
        self.window.rewind()
        log.info("bot_socket.connected", resending=len(self.window), recovering=True)
        while (item := self.window.next()) is not None:
            await ws.send_str(item[1])
            self.window.wrote(item[0])
        while len(self.window):
            left = deadline - loop.time()
            if left <= 0:
                log.info("bot_socket.ack_wait_over", unacknowledged=len(self.window), recovering=True)
                return True
            try:
                msg = await ws.receive(timeout=left)
            except TimeoutError:
                continue
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
                return False
            if msg.type is aiohttp.WSMsgType.ERROR:
                log.warning("bot_socket.read_error", error=str(ws.exception())[:200], recovering=True)
                return False
            answer = self._handle(msg)
            if answer is not None:
                await ws.send_str(json.dumps(answer.json(), separators=(",", ":")))
        return True

    def _handle(self, msg: aiohttp.WSMessage) -> Refused | None:
        if msg.type is not aiohttp.WSMsgType.TEXT:
            return Refused("only text messages (JSON) are read on this socket")
        message = decode(msg.data)
        match message:
            case Ack():
                for sequence in self.window.release(message.sequence):
                    self.store.delivered(self.events.pop(sequence).webhook_id)
                    self.acked += 1
                return None
            case Refused():
                return message
            case Request():
                return refused_after_end(message)
            case _:
                assert_never(message)

    def give_up_old(self, now: float, max_age: float) -> None:
        """What the bot did not acknowledge stays pending, unless it is ``max_age`` old: dead then."""
        left = list(self.events.values())
        dead = [e for e in left if now - e.created >= max_age]
        for event in dead:
            self.store.dead(event.webhook_id, "the bot did not acknowledge it on its socket within webhook.max_age")
        if left:
            log.warning(
                "bot_socket.recovery_unacknowledged",
                unacknowledged=len(left),
                dead=len(dead),
                detail="kept in the outbox: sent again at the next start, until webhook.max_age",
            )
