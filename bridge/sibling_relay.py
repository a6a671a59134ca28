"""Under ``--workers``: a restarted stream that reached a worker whose sibling holds its call is relayed
there, both ways, over the sibling's internal socket.

A call whose stream dropped (or that handed the caller to a person: a transfer nobody answered comes
back as a new ``<Connect><Stream>``) waits, suspended, in the worker that carried it. SO_REUSEPORT
gives the new stream to any worker, and a worker cannot take another's call (its Gladia session, its
reply, its delivery live in that process). So the worker the stream reached, once its ``start``
proves it is a restart (``bridge.resume``, :func:`bridge.call.resume.restart_proven`) and no call of
its own waits for it, asks its siblings which one holds a suspended call of that carrier call id
(:meth:`bridge.siblings.Siblings.holder`) and becomes a pipe: it opens the carrier's stream path on
that sibling's internal app (``/{carrier}/stream`` over its unix socket), replays the messages it
already read (``connected``, ``start``), then carries every message each way until either side
closes. The sibling sees an ordinary restarted stream: the same call, ``call.stream_restarted`` (and
``transfer.failed`` for a transfer's return).

Bounds: the siblings answer within their forwarding timeout, the sibling's socket opens within it
too; messages from the sibling are bounded like the carrier's (``server.max_message_bytes``), both
sides are pinged (``server.ws_heartbeat``); what was read before ``start`` is kept only up to
:data:`MAX_REPLAY` messages. A sibling that closes its stream closes the carrier's with the same
code; a sibling gone mid-relay (its socket broke, it died) closes the carrier's with 1011. A carrier
that closes closes the sibling's with its code. With no sibling holding the call the stream starts a
call of its own here, as it always did. An outbound call's first stream is relayed the same way to the
worker placing the call (:meth:`SiblingRelay.relay_outbound`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING

import aiohttp
import structlog

from bridge.phone_stream import CallResult
from bridge.siblings import socket_path

if TYPE_CHECKING:
    from bridge.adapters.base import CallStarted
    from bridge.phone_connection import PhoneConnection
    from bridge.setting_sections import ServerSettings
    from bridge.siblings import Siblings

log = structlog.get_logger("bridge.siblings")

MAX_REPLAY = 64  # messages read before ``start`` kept for a replay (beyond: no relay, a call of its own)
RELAYED_HEADERS = ("Host", "X-Forwarded-Proto", "X-Forwarded-For", "X-Forwarded-Host", "User-Agent")
GONE = CallResult("internal_error", 1011, "the call's worker is gone")


class SiblingRelay:
    """One carrier stream's way to a sibling worker (see the module docstring). :meth:`record` wraps the
    messages read until ``start``; :meth:`relay` carries the stream to the sibling holding its call."""

    def __init__(
        self,
        siblings: Siblings,
        carrier_socket: PhoneConnection,
        path_qs: str,
        headers: Mapping[str, str],
        settings: ServerSettings,
        on_relay: Callable[[], None] | None = None,
    ) -> None:
        self.siblings = siblings
        self.carrier = carrier_socket
        self.path_qs = path_qs
        self.headers = {h: headers[h] for h in RELAYED_HEADERS if h in headers}
        self.settings = settings
        self.on_relay = on_relay  # the stream is relayed: e.g. no media watchdog here (the sibling has one)
        self.read: list[str | bytes] = []
        self.overflow = False

    def record(self, messages: AsyncIterator[str | bytes]) -> AsyncIterator[str | bytes]:
        """``messages``, each kept (up to :data:`MAX_REPLAY`) to be replayed to the sibling."""
        return _Recorded(self, messages)

    async def relay(self, started: CallStarted) -> CallResult | None:
        """Carry the stream to the sibling where its call waits, until either side ends; how the
        carrier's stream should end. None: no sibling holds the call (or what was read cannot be
        replayed): the stream carries on here."""
        if self.overflow:
            return None
        holder = await self.siblings.holder(started.carrier, started.call_sid)
        if holder is None:
            return None
        log.info("siblings.stream_relayed", to=holder, call_sid=started.call_sid)
        return await self._relay_to(holder)

    async def relay_outbound(self, call_id: str) -> CallResult | None:
        """The stream of an outbound call a sibling placed (its ``POST /v1/calls`` reached that worker):
        carried there, as :meth:`relay`. None: no sibling is placing it."""
        if self.overflow:
            return None
        holder = await self.siblings.outbound_holder(call_id)
        if holder is None:
            return None
        log.info("siblings.stream_relayed", to=holder, call_id=call_id, direction="outbound")
        return await self._relay_to(holder)

    async def _relay_to(self, holder: int) -> CallResult:
        if self.on_relay is not None:
            self.on_relay()
        path = str(socket_path(self.siblings.run_dir, holder))
        heartbeat = self.settings.ws_heartbeat or None
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.siblings.timeout)
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=path), timeout=timeout) as http:
            try:
                async with asyncio.timeout(self.siblings.timeout):
                    sibling = await http.ws_connect(
                        "http://worker" + self.path_qs,
                        headers=self.headers,
                        max_msg_size=self.settings.max_message_bytes,
                        heartbeat=heartbeat,
                        protocols=(self.carrier.ws_protocol,) if self.carrier.ws_protocol else (),
                    )
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                log.warning("siblings.relay_refused", to=holder, error=f"{type(exc).__name__}: {exc}"[:200])
                return GONE
            async with sibling:
                return await self._pipe(sibling)

    async def _pipe(self, sibling: aiohttp.ClientWebSocketResponse) -> CallResult:
        try:
            for message in self.read:
                await _send(sibling, message)
        except (aiohttp.ClientError, ConnectionError):
            return GONE
        self.read = []
        up = asyncio.create_task(self._up(sibling), name="relay-up")
        down = asyncio.create_task(self._down(sibling), name="relay-down")
        try:
            done, _ = await asyncio.wait((up, down), return_when=asyncio.FIRST_COMPLETED)
            if down in done:  # the sibling ended the stream (or vanished): the carrier's ends too
                up.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await up
                return down.result()
            # the carrier closed: the sibling hears the same, and ends its side (bounded)
            code = self.carrier.close_code or 1000
            with contextlib.suppress(aiohttp.ClientError, ConnectionError, TimeoutError):
                async with asyncio.timeout(self.siblings.timeout):
                    await sibling.close(code=code)
            down.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await down
            return CallResult("socket_closed", code, "")
        finally:
            for task in (up, down):
                task.cancel()
            await asyncio.gather(up, down, return_exceptions=True)

    async def _up(self, sibling: aiohttp.ClientWebSocketResponse) -> None:
        """The carrier's messages to the sibling, until the carrier closes."""
        with contextlib.suppress(Exception):  # a protocol error closed the carrier's socket already
            async for message in self.carrier:
                if sibling.closed:
                    return
                await _send(sibling, message)

    async def _down(self, sibling: aiohttp.ClientWebSocketResponse) -> CallResult:
        """The sibling's messages to the carrier; how the sibling ended the stream."""
        async for msg in sibling:
            if msg.type == aiohttp.WSMsgType.TEXT or msg.type == aiohttp.WSMsgType.BINARY:
                await self.carrier.send(msg.data)
            else:
                break
        code = sibling.close_code
        if code is None or code in (1006, 1011) or sibling.exception() is not None:
            log.warning("siblings.relay_lost", close_code=code)
            return GONE
        return CallResult("socket_closed", code, "")


async def _send(sibling: aiohttp.ClientWebSocketResponse, message: str | bytes) -> None:
    if isinstance(message, str):
        await sibling.send_str(message)
    else:
        await sibling.send_bytes(message)


class _Recorded:
    """The carrier's messages as read until ``start``, each kept for the replay (bounded)."""

    def __init__(self, relay: SiblingRelay, messages: AsyncIterator[str | bytes]) -> None:
        self.relay = relay
        self.messages = messages

    def __aiter__(self) -> _Recorded:
        return self

    async def __anext__(self) -> str | bytes:
        message = await self.messages.__anext__()
        if len(self.relay.read) < MAX_REPLAY:
            self.relay.read.append(message)
        else:
            self.relay.overflow = True
        return message
