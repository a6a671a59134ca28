"""The bot WebSocket: with ``BOT_WS_URL`` set, the bridge dials the bot once per call.

The bot needs no route to the bridge (as with ConversationRelay and Media Streams). The socket carries
(the wire rules are :mod:`bridge.reply.bot_channel`'s; docs/bot-api.md documents every message):

- bridge -> bot: every bot event of the call, in the same envelope as the webhook (``type``,
  ``sequence``, ``timestamp``, ``call``...), plus real-time events not worth a durable webhook:
  ``speech.started`` and, when the STT profile asks for partials, ``utterance.partial`` (these have
  no ``sequence`` and are never resent). After each action request, ``{"type": "actions.accepted",
  "request_id", "actions": [{"id", "status"}]}``; a bad request gets ``{"type": "actions.refused",
  "request_id", "error", "action_ids"}``.
- bot -> bridge: ``{"actions": [...]}`` in the one vocabulary, including what only this channel
  streams (``say`` with ``stream_id`` / ``last``, ``audio``), and ``{"type": "ack", "sequence": N}``.

At least once: a durable event stays in a bounded window (:data:`MAX_UNACKED`) until the bot
acknowledges it (cumulatively); after a redial every event still in it is sent again, in order, with
its sequence number (a bot drops duplicates by ``sequence``). A bot that never acks gets them again
after each redial. ``Authorization: Bearer <BOT_WS_TOKEN>`` when set; a 401/403 on the handshake is
logged ``bot_socket.unauthorized``. The backoff between dials grows until a connection proved
healthy (the bot sent a valid message, or it stayed up :data:`HEALTHY_AFTER` seconds). After
``call.ended`` the bridge waits (bounded) for the bot to acknowledge the last event, then closes
with 1000. Nothing a bot sends ends the reader: a bad message is answered ``actions.refused``.

Durable across a restart when the socket is the only channel (no ``BOT_WEBHOOK_URL``): the outbox
keeps each event until the bot acknowledges it (``on_acked`` reports every released sequence; a bot
that never acked on the call releases everything once the call is over and all was written), and at
start-up :func:`bridge.reply.bot_resend.resend_left_over` sends a previous process's left-overs again.

A sensitive event (``send_event(..., sensitive=True)``: a private gather's ``dtmf.gathered``) is sent and
resent like the others while the call's socket lives, but no store has it: one the bot has not
acknowledged when the socket closes is gone, and ``bot_socket.sensitive_dropped`` says so (type and
sequence, never the body).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, assert_never

import aiohttp
import structlog

from bridge.backoff import Backoff
from bridge.reply.actions import Action
from bridge.reply.bot_channel import Ack, Refused, Request, Unacknowledged, decode
from bridge.reply.call_reply import ActionResult
from bridge.settings import BotWsSettings

log = structlog.get_logger("bridge.bot_socket")

MAX_UNACKED = 1000  # durable events kept until the bot acknowledges them (older ones are counted and dropped)
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
HEALTHY_AFTER = 5.0  # s a connection must stay up (without a valid message) before the backoff starts over
ACK_WAIT = 2.0  # s the close after call.ended waits for the bot to acknowledge the last event


class BotSocket:
    """One call's connection to the bot (see the module docstring)."""

    def __init__(
        self,
        settings: BotWsSettings,
        http: aiohttp.ClientSession,
        call_id: str,
        apply: Callable[[list[Action], str | None], list[ActionResult]],
        on_acked: Callable[[int], None] | None = None,
    ) -> None:
        """``on_acked(sequence)``: the bot acknowledged that event (called once per event, in order);
        a durable store may forget it."""
        self.settings = settings
        self.http = http
        self.call_id = call_id
        self.apply = apply
        self.on_acked = on_acked
        self._window = Unacknowledged(MAX_UNACKED)
        self._realtime: deque[str] = deque(maxlen=100)  # only while connected; never resent
        self._wake = asyncio.Event()
        self._ended = False
        self._acks_seen = False  # the bot acknowledges: worth waiting for its last ack
        self._proved = False  # the current connection carried a valid message from the bot
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._sensitive: dict[int, str] = {}  # sequence -> type of the sensitive events not acknowledged
        self.connections = 0
        self._drop_log_at = 1
        self._task = asyncio.create_task(self._run(), name=f"bot-socket-{call_id}")

    @property
    def dropped_events(self) -> int:
        return self._window.dropped

    @property
    def unacknowledged(self) -> int:
        return len(self._window)

    def send_event(
        self, body: str, durable: bool = True, sequence: int | None = None, *, sensitive: bool = False
    ) -> None:
        """An event for the bot (never awaits). A durable event (``sequence`` given, else read from
        the body) is kept until the bot acknowledges it; a real-time one goes only to an open socket.
        ``sensitive``: in no store (:attr:`bridge.delivery.PendingEvent.sensitive`): if the bot has not
        acknowledged it by the close, its loss is logged (without the body)."""
        if durable:
            if sequence is None:
                sequence = int(json.loads(body)["sequence"])
            if sensitive:
                self._sensitive[sequence] = str(json.loads(body).get("type", ""))
            dropped = self._window.add(sequence, body)
            # a bot that never acks has every event written once dropped from the bound: expected, quiet
            if (
                dropped
                and (self._acks_seen or self._window.dropped_unsent)
                and self._window.dropped >= self._drop_log_at
            ):
                self._drop_log_at = self._window.dropped * 10  # logged at the first drop, then at 10x as many
                log.warning(
                    "bot_socket.events_dropped",
                    dropped=self._window.dropped,
                    never_sent=self._window.dropped_unsent,
                    bound=MAX_UNACKED,
                    detail="more unacknowledged events than the bound: the oldest are not resent",
                )
            self._wake.set()
        elif self._ws is not None and not self._ws.closed:
            self._realtime.append(body)
            self._wake.set()

    def realtime(self, type_: str, payload: dict[str, Any]) -> None:
        """A real-time event (``speech.started``, ``utterance.partial``): ``type``, ``timestamp`` and the
        payload, no ``sequence``; sent only to an open socket, never kept or resent."""
        self.send_event(realtime_body(type_, payload), durable=False)

    async def close(self, timeout: float = 5.0) -> None:
        """After ``call.ended``: send what is left, wait (bounded) for the last ack, close with 1000."""
        self._ended = True
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for sequence, type_ in sorted(self._sensitive.items()):  # never stored: nothing can send them again
            log.warning(
                "bot_socket.sensitive_dropped",
                call_id=self.call_id,
                type=type_,
                sequence=sequence,
                detail="a sensitive event the bot did not acknowledge on its socket: never stored, not resent",
            )
        self._sensitive.clear()
        if self._window.dropped or (self._acks_seen and len(self._window)):  # a bot that never acks: expected
            log.info(
                "bot_socket.closed_with_unacknowledged",
                unacknowledged=len(self._window),
                acked_through=self._window.acked_through,
                dropped=self._window.dropped,
            )

    def _finished(self) -> bool:
        return self._ended and self._window.all_written and (not self._acks_seen or not len(self._window))

    async def _run(self) -> None:
        """Dial, write, read; on any failure dial again with backoff. Never dies of an exception:
        the call's end must not inherit one from its bot's socket."""
        backoff = Backoff(0.2, self.settings.reconnect_max_delay)
        failures = 0
        while True:
            connected_at: float | None = None
            self._proved = False
            try:
                async with self.http.ws_connect(
                    self.settings.url,
                    headers=self._headers(),
                    heartbeat=20.0,
                    max_msg_size=MAX_MESSAGE_BYTES,
                    params={"call_id": self.call_id},
                ) as ws:
                    connected_at = time.monotonic()
                    self._ws = ws
                    self.connections += 1
                    log.info("bot_socket.connected", connections=self.connections, resending=len(self._window))
                    if await self._session(ws):
                        await ws.close(code=1000, message=b"call ended")
                        return
                    log.info("bot_socket.closed", code=ws.close_code, connections=self.connections)
            except aiohttp.WSServerHandshakeError as exc:
                if exc.status in (401, 403):
                    log.warning("bot_socket.unauthorized", status=exc.status, detail="check BOT_WS_TOKEN")
                else:
                    log.warning("bot_socket.connect_failed", status=exc.status, error=str(exc)[:200])
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                error = f"{type(exc).__name__}: {exc}"[:200]
                if connected_at is None:
                    log.warning("bot_socket.connect_failed", error=error)
                else:
                    log.info("bot_socket.dropped", error=error, connections=self.connections)
            except Exception:
                log.exception("bot_socket.failed", detail="dialing again")
            finally:
                self._ws = None
                self._realtime.clear()
            if connected_at is not None and (self._proved or time.monotonic() - connected_at >= HEALTHY_AFTER):
                failures = 0  # a healthy connection: the backoff starts over
            if self._ended and self.connections == 0 and failures >= 2:
                return  # never reached the bot and the call is over: nothing more to do
            failures += 1
            await asyncio.sleep(backoff.delay(failures))

    def _headers(self) -> dict[str, str]:
        return bearer(self.settings)

    async def _session(self, ws: aiohttp.ClientWebSocketResponse) -> bool:
        """One connection: True when the call is over and everything was written (and acknowledged,
        or the wait for it ran out): the socket may be closed with 1000."""
        reader = asyncio.create_task(self._read(ws), name=f"bot-socket-read-{self.call_id}")
        try:
            return await self._write(ws, reader)
        finally:
            reader.cancel()
            try:
                await reader
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # this task is being cancelled (close() timed out), not just the reader
            except Exception as exc:  # a write to a socket that was closing: it is gone either way
                log.info("bot_socket.reader_stopped", error=f"{type(exc).__name__}: {exc}"[:200])

    async def _write(self, ws: aiohttp.ClientWebSocketResponse, reader: asyncio.Task[None]) -> bool:
        """Send every unacknowledged durable event, in order, then each new one as it comes."""
        self._window.rewind()
        ack_deadline: float | None = None
        while not ws.closed and not reader.done():
            while self._realtime and not ws.closed:
                await ws.send_str(self._realtime.popleft())
            while (item := self._window.next()) is not None and not ws.closed:
                await ws.send_str(item[1])
                self._window.wrote(item[0])
            if ws.closed:
                break
            timeout: float | None = None
            if self._ended and self._window.all_written:
                if self._finished():
                    if not self._acks_seen:  # a bot that never acks had every event once: nothing to keep
                        self._released(self._window.release(self._window.last_sequence))
                    return True
                now = time.monotonic()
                ack_deadline = ack_deadline if ack_deadline is not None else now + ACK_WAIT
                if now >= ack_deadline:
                    log.info("bot_socket.ack_wait_over", unacknowledged=len(self._window))
                    return True
                timeout = ack_deadline - now
            self._wake.clear()
            waiter = asyncio.create_task(self._wake.wait())
            await asyncio.wait({waiter, reader}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
        return False

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """The bot's messages, one at a time. Nothing a bot sends ends this loop: a bad message is
        refused, an unexpected error with one is logged (with its traceback) and refused too."""
        async for msg in ws:
            if msg.type is aiohttp.WSMsgType.ERROR:
                log.warning("bot_socket.read_error", error=str(ws.exception())[:200])
                return
            try:
                answer = self._handle(msg)
            except Exception as exc:
                log.exception("bot_socket.message_failed")
                answer = Refused(f"the bridge could not handle this message ({type(exc).__name__})").json()
            if answer is not None:
                await ws.send_str(json.dumps(answer, separators=(",", ":")))
            self._wake.set()

    def _handle(self, msg: aiohttp.WSMessage) -> dict[str, Any] | None:
        """One message of the bot: the answer to send, if any."""
        if msg.type is not aiohttp.WSMsgType.TEXT:
            return Refused("only text messages (JSON) are read on this socket").json()
        message = decode(msg.data)
        match message:
            case Ack():
                self._acks_seen = self._proved = True
                self._released(self._window.release(message.sequence))
                return None
            case Refused():
                return message.json()
            case Request():
                key = f"ws:{message.idempotency_key}" if message.idempotency_key is not None else None
                results = self.apply(message.actions, key)
                self._proved = True
                return {
                    "type": "actions.accepted",
                    "request_id": message.request_id,
                    "actions": [r.json() for r in results],
                }
            case _:
                assert_never(message)

    def _released(self, sequences: list[int]) -> None:
        if self._sensitive:
            for sequence in sequences:
                self._sensitive.pop(sequence, None)
        if self.on_acked is not None:
            for sequence in sequences:
                self.on_acked(sequence)


def bearer(settings: BotWsSettings) -> dict[str, str]:
    """``Authorization: Bearer <BOT_WS_TOKEN>`` when a token is set."""
    token = settings.token
    return {"Authorization": f"Bearer {token.get_secret_value()}"} if token else {}


def realtime_body(type_: str, payload: dict[str, Any]) -> str:
    """A real-time event's JSON body (:meth:`BotSocket.realtime`; the live event streams get the same)."""
    body = {"type": type_, "timestamp": datetime.now(tz=UTC).isoformat(), **payload}
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)
