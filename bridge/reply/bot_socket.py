"""The bot WebSocket: with ``BOT_WS_URL`` set, the bridge dials the bot once per call.

The bot needs no route to the bridge (as with ConversationRelay and Media Streams). The socket carries:

- bridge -> bot: every bot event of the call, in the same envelope as the webhook (``type``,
  ``sequence``, ``timestamp``, ``call``...), plus real-time events not worth a durable webhook:
  ``speech.started`` and, when the STT profile asks for partials, ``utterance.partial`` (these have
  no ``sequence``). After each action request, ``{"type": "actions.accepted", "actions": [{"id",
  "status"}]}``; a bad request gets ``{"type": "actions.refused", "error": "..."}``.
- bot -> bridge: ``{"actions": [...]}`` in the one vocabulary, including what only this channel
  streams: ``say`` with ``stream_id`` / ``last`` (spoken from the first complete sentence) and
  ``audio`` (the bot's own TTS, PCM16). An optional ``idempotency_key`` makes a repeat apply nothing.

``Authorization: Bearer <BOT_WS_TOKEN>`` when set. If the socket drops, the bridge dials again with
backoff and resends the durable events the bot has not seen since (bounded; real-time ones are not
resent). The socket is closed with 1000 after ``call.ended``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import Callable
from typing import Any

import aiohttp
import structlog

from bridge.backoff import Backoff
from bridge.errors import ActionError
from bridge.reply.actions import Action, parse_actions
from bridge.reply.call_reply import ActionResult
from bridge.settings import BotWsSettings

log = structlog.get_logger("bridge.bot_socket")

MAX_UNSENT = 1000  # durable events kept for a socket that is down (older ones are counted and dropped)
MAX_MESSAGE_BYTES = 8 * 1024 * 1024


class BotSocket:
    """One call's connection to the bot (see the module docstring)."""

    def __init__(
        self,
        settings: BotWsSettings,
        http: aiohttp.ClientSession,
        call_id: str,
        apply: Callable[[list[Action], str | None], list[ActionResult]],
    ) -> None:
        self.settings = settings
        self.http = http
        self.call_id = call_id
        self.apply = apply
        self._unsent: deque[str] = deque()
        self._realtime: deque[str] = deque(maxlen=100)  # only while connected; never resent
        self._wake = asyncio.Event()
        self._ended = False
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self.connections = 0
        self.dropped_events = 0
        self._task = asyncio.create_task(self._run(), name=f"bot-socket-{call_id}")

    def send_event(self, body: str, durable: bool = True) -> None:
        """An event for the bot (never awaits). Durable events wait for a socket that is down."""
        if durable:
            if len(self._unsent) >= MAX_UNSENT:
                self._unsent.popleft()
                self.dropped_events += 1
            self._unsent.append(body)
            self._wake.set()
        elif self._ws is not None and not self._ws.closed:
            self._realtime.append(body)
            self._wake.set()

    def realtime(self, type_: str, payload: dict[str, Any]) -> None:
        self.send_event(json.dumps({"type": type_, **payload}, separators=(",", ":")), durable=False)

    async def close(self, timeout: float = 5.0) -> None:
        """After ``call.ended``: send what is left, then close with 1000 (bounded)."""
        self._ended = True
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        backoff = Backoff(0.2, self.settings.reconnect_max_delay)
        failures = 0
        headers = {"Authorization": f"Bearer {self.settings.token.get_secret_value()}"} if self.settings.token else {}
        while not (self._ended and not self._unsent and self.connections):
            try:
                async with self.http.ws_connect(
                    self.settings.url,
                    headers=headers,
                    heartbeat=20.0,
                    max_msg_size=MAX_MESSAGE_BYTES,
                    params={"call_id": self.call_id},
                ) as ws:
                    self._ws = ws
                    self.connections += 1
                    failures = 0
                    log.info("bot_socket.connected", connections=self.connections)
                    reader = asyncio.create_task(self._read(ws))
                    try:
                        await self._write(ws, reader)
                    finally:
                        reader.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await reader
                    if self._ended and not self._unsent:
                        await ws.close(code=1000, message=b"call ended")
                        return
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                log.warning("bot_socket.connect_failed", error=f"{type(exc).__name__}: {exc}"[:200])
            finally:
                self._ws = None
                self._realtime.clear()
            if self._ended and self.connections == 0 and failures >= 2:
                return  # never reached the bot and the call is over: nothing more to do
            failures += 1
            await asyncio.sleep(backoff.delay(failures))

    async def _write(self, ws: aiohttp.ClientWebSocketResponse, reader: asyncio.Task[None]) -> None:
        """Send durable events in order; an event leaves the queue once written."""
        while not ws.closed and not reader.done():
            while self._realtime and not ws.closed:
                await ws.send_str(self._realtime.popleft())
            while self._unsent and not ws.closed:
                await ws.send_str(self._unsent[0])
                self._unsent.popleft()
            if self._ended and not self._unsent:
                return
            self._wake.clear()
            waiter = asyncio.create_task(self._wake.wait())
            await asyncio.wait({waiter, reader}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                continue
            try:
                data = json.loads(msg.data)
                key = data.pop("idempotency_key", None) if isinstance(data, dict) else None
                actions = parse_actions(data)
            except (ValueError, ActionError) as exc:
                await ws.send_str(json.dumps({"type": "actions.refused", "error": str(exc)[:500]}))
                continue
            results = self.apply(actions, f"ws:{key}" if isinstance(key, str) else None)
            await ws.send_str(json.dumps({"type": "actions.accepted", "actions": [r.json() for r in results]}))
