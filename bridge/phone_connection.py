"""The carrier's upgraded WebSocket, driven over the raw connection (thin shell on :mod:`bridge.ws_protocol`).

aiohttp serves the HTTP request and sends the ``101`` answer; from then on the bytes of each
``data_received`` go to :class:`~bridge.ws_protocol.FrameReader` and every message goes to the call
on the same stack: no reader task, no queue, no message object per 20 ms frame. This is how the
Gladia side already works (:mod:`bridge.stt.connection`) and why the bridge costs less CPU per call
than a forwarder that reads both sockets through aiohttp's WebSocket classes.

Two ways to read, one after the other:

* **pulled** (``async for message in connection``), while the stream waits for the carrier's
  ``start``: the messages wait in a short queue (reading pauses past ``_PULL_QUEUE`` of them);
* **pushed** (:meth:`PhoneConnection.deliver`), once the call has it: each message is handed to the
  call's handler in the handler task's logging context; ``deliver`` returns when the stream ends.

Pings are answered; a ping goes out after ``heartbeat`` seconds of silence from the carrier, and the
connection is dropped if nothing comes back within half of that (as aiohttp's ``heartbeat`` does).
Closing: :meth:`close` sends a close frame and waits (bounded) for the carrier's; a carrier's close
frame is answered with its own code. The handler's return then lets aiohttp close the TCP connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections import deque
from collections.abc import Callable
from typing import Any, cast

import structlog
from aiohttp import web

from bridge.errors import PhoneProtocolError
from bridge.ws_protocol import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    Close,
    Failure,
    FrameReader,
    HandshakeError,
    Ping,
    close_payload,
    server_frame,
    server_handshake,
)

log = structlog.get_logger("bridge.phone")

_PULL_QUEUE = 32  # messages read ahead of a pulling reader before reading pauses
CLOSE_TIMEOUT = 5.0  # seconds to wait for the carrier's close frame after ours

Handler = Callable[[str | bytes], bool]  # one message; True: the stream has ended (the carrier's stop)


class PhoneConnection(web.StreamResponse):
    """One carrier WebSocket. :meth:`accept` upgrades the request; then read (pull or push), ``send``
    and ``close``. ``closed``: a close frame went either way, or the connection is gone."""

    _length_check = False  # a 101 answer has no body: no chunked encoding (as aiohttp's WebSocketResponse)

    def __init__(self, *, protocols: tuple[str, ...] = (), max_message: int = 65536, heartbeat: float = 0) -> None:
        super().__init__(status=101)
        self._protocols = protocols
        self._reader = FrameReader(client_frames=True, max_message=max_message)
        self._heartbeat = heartbeat
        self.ws_protocol: str | None = None
        self.close_code: int | None = None  # the carrier's, from its close frame
        self.closed = False
        self._transport: asyncio.Transport | None = None
        self._writer: Any = None
        self._queue: deque[str | bytes] = deque()
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None  # a pulling reader waiting for a message
        self._handler: Handler | None = None
        self._run: Callable[..., bool] | None = None  # the handler task's context's run()
        self._ended: asyncio.Future[bool] | None = None  # push mode: True when the handler saw the stop
        self._error: PhoneProtocolError | BaseException | None = None
        self._eof = False
        self._close_reply: asyncio.Future[None] | None = None
        self._received = 0  # data_received calls: the heartbeat's sign of life
        self._heartbeat_handle: asyncio.TimerHandle | None = None
        self._heartbeat_seen = -1
        self._ping_sent = False

    # -- the upgrade ---------------------------------------------------------------------------

    async def accept(self, request: web.Request) -> None:
        """Answer the opening handshake (HTTP 400 for a bad one) and take the connection over."""
        try:
            headers, self.ws_protocol = server_handshake(request.headers, self._protocols)
        except HandshakeError as exc:
            raise web.HTTPBadRequest(text=f"{exc}\n") from None
        self.headers.update(headers)
        self.force_close()  # no HTTP keep-alive after the socket
        transport = request.transport
        if transport is None:
            raise ConnectionResetError("connection lost before the upgrade")
        self._writer = await self.prepare(request)
        self._transport = transport
        # From now on aiohttp's connection hands every byte received to feed_data (and feed_eof at
        # the end): this object is the connection's payload parser, as aiohttp's WebSocketReader is.
        handler = request.protocol
        handler.set_parser(cast(Any, self))  # (which feeds us any bytes read past the request)
        handler.keep_alive(False)
        # And the bytes go straight to feed_data: aiohttp's connection object stays the one told
        # about writing pauses and the end of the connection (its bookkeeping, and feed_eof).
        transport.set_protocol(_Straight(self, handler))
        if self._heartbeat:
            self._heartbeat_handle = asyncio.get_running_loop().call_later(self._heartbeat, self._beat)

    async def write_eof(self, data: bytes = b"") -> None:
        """aiohttp's end of the response: the socket's end is :meth:`close` (and nothing is written)."""
        self._stop_heartbeat()

    # -- aiohttp's parser interface (called from the connection's data_received) ----------------

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self._received += 1
        for event in self._reader.feed(data):
            if type(event) is str or type(event) is bytes:
                if self._handler is not None:
                    self._push(event)
                elif not self.closed:
                    self._queue.append(event)
                    if len(self._queue) >= _PULL_QUEUE and not self._paused and self._transport is not None:
                        self._paused = True
                        self._transport.pause_reading()
                    self._wake()
            elif isinstance(event, Ping):
                self._write(OP_PONG, event.payload)
            elif isinstance(event, Close):
                self._peer_closed(event)
            elif isinstance(event, Failure):
                self._fail(PhoneProtocolError(f"WebSocket: {event.reason}"[:120], event.code), event.code)
            # a Pong: any data counts as a sign of life
        return False, b""

    def feed_eof(self) -> None:
        """The connection is gone (with or without a closing handshake)."""
        self._eof = True
        self.closed = True
        self._stop_heartbeat()
        if self._close_reply is not None and not self._close_reply.done():
            self._close_reply.set_result(None)
        self._finish(False)
        self._wake()

    # -- reading --------------------------------------------------------------------------------

    def __aiter__(self) -> PhoneConnection:
        return self

    async def __anext__(self) -> str | bytes:
        """The next message (pull mode); ends when the socket closes; raises :class:`PhoneProtocolError`
        for a WebSocket protocol error (the socket is already closed with its code)."""
        while not self._queue:
            if isinstance(self._error, PhoneProtocolError):
                raise self._error
            if self.closed or self._eof:
                raise StopAsyncIteration
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        message = self._queue.popleft()
        if self._paused and len(self._queue) < _PULL_QUEUE // 2 and self._transport is not None:
            self._paused = False
            self._transport.resume_reading()
        return message

    async def deliver(self, handler: Handler) -> bool:
        """Hand every message to ``handler`` as it arrives, the queued ones first, until the stream
        ends; True when ``handler`` said it has (the carrier's stop), False when the socket closed.

        Raises:
            PhoneProtocolError: a WebSocket protocol error, or one the handler raised.
            Exception: whatever else the handler raised (a bug: it ends this call only).
        """
        loop = asyncio.get_running_loop()
        self._ended = loop.create_future()
        self._run = contextvars.copy_context().run  # the call's log context, bound in this task
        self._handler = handler
        while self._queue and self._handler is not None:
            self._push(self._queue.popleft())
        if self._paused and self._transport is not None:
            self._paused = False
            self._transport.resume_reading()
        if self._error is not None or self.closed or self._eof:
            self._finish(False)  # it ended while the queued messages were handed over
        try:
            return await self._ended
        finally:
            self._handler = None

    def _push(self, message: str | bytes) -> None:
        """One message to the handler (set only while ``deliver`` waits: it is cleared as it returns)."""
        handler, run, ended = self._handler, self._run, self._ended
        if handler is None or run is None or ended is None or ended.done():
            return
        try:
            if run(handler, message):
                self._handler = None
                ended.set_result(True)
        except Exception as exc:  # handed to the task that awaits deliver()
            self._handler = None
            ended.set_exception(exc)

    def _finish(self, stopped: bool) -> None:
        self._handler = None
        if self._ended is not None and not self._ended.done():
            if self._error is not None:
                self._ended.set_exception(self._error)
            else:
                self._ended.set_result(stopped)

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # -- writing and closing --------------------------------------------------------------------

    async def send(self, message: str | bytes) -> None:
        """One message to the carrier; waits while the connection's write buffer is full. Nothing
        is sent once the socket is closing."""
        if self.closed:
            return
        if isinstance(message, str):
            self._write(OP_TEXT, message.encode())
        else:
            self._write(OP_BINARY, message)
        writer = self._writer
        if writer is not None and self._transport is not None and not self._transport.is_closing():
            with contextlib.suppress(ConnectionError):
                await writer.drain()

    def _write(self, opcode: int, payload: bytes) -> None:
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(server_frame(opcode, payload))

    async def close(self, *, code: int = 1000, message: bytes = b"") -> bool:
        """Send a close frame with ``code`` unless one went already, then wait up to
        :data:`CLOSE_TIMEOUT` for the carrier's (reading and dropping what comes before it, so the
        connection is not reset under our close frame). True when this call sent the close frame."""
        sent = not self.closed
        if sent:
            self._begin_close(code, message.decode(errors="replace"))
        reply = self._close_reply
        if reply is not None and not reply.done():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await asyncio.shield(reply)
        return sent

    def _begin_close(self, code: int, reason: str) -> None:
        self.closed = True
        self._write(OP_CLOSE, close_payload(code, reason))
        self._stop_heartbeat()
        if self._close_reply is None and not self._eof:
            self._close_reply = asyncio.get_running_loop().create_future()
        self._finish(False)
        self._wake()

    def _peer_closed(self, event: Close) -> None:
        self.close_code = event.code
        if self._close_reply is not None:  # the answer to ours: the handshake is done
            if not self._close_reply.done():
                self._close_reply.set_result(None)
            return
        self._begin_close(event.code, "")  # echo the carrier's code (RFC 6455 5.5.1)
        if self._close_reply is not None and not self._close_reply.done():
            self._close_reply.set_result(None)

    def _fail(self, error: PhoneProtocolError, code: int) -> None:
        """A WebSocket protocol error: close with its code; the reader raises it."""
        log.info("phone.websocket_error", error=error.reason, close_code=code)
        self._error = error
        if not self.closed:
            self._begin_close(code, error.reason[:100])
        self._finish(False)
        self._wake()

    # -- heartbeat -------------------------------------------------------------------------------

    def _beat(self) -> None:
        """Every ``heartbeat`` seconds: a ping after a quiet period; the connection is dropped when
        nothing at all came back within half the period after the ping."""
        if self.closed or self._transport is None:
            return
        loop = asyncio.get_running_loop()
        if self._received != self._heartbeat_seen:
            self._heartbeat_seen, self._ping_sent = self._received, False
            self._heartbeat_handle = loop.call_later(self._heartbeat, self._beat)
        elif not self._ping_sent:
            self._write(OP_PING, b"")
            self._ping_sent = True
            self._heartbeat_handle = loop.call_later(self._heartbeat / 2, self._beat)
        else:
            log.info("phone.heartbeat_timeout", heartbeat=self._heartbeat)
            self._transport.abort()

    def _stop_heartbeat(self) -> None:
        if self._heartbeat_handle is not None:
            self._heartbeat_handle.cancel()
            self._heartbeat_handle = None


class _Straight(asyncio.Protocol):
    """The upgraded connection's protocol: received bytes to the :class:`PhoneConnection`, the rest to
    aiohttp's own connection object (write pauses for ``drain``, the end of the connection)."""

    def __init__(self, connection: PhoneConnection, handler: asyncio.BaseProtocol) -> None:
        self._connection = connection
        self._handler = handler

    def data_received(self, data: bytes) -> None:
        self._connection.feed_data(data)

    def eof_received(self) -> bool | None:
        return None  # close the transport: the peer is gone (connection_lost follows)

    def pause_writing(self) -> None:
        self._handler.pause_writing()

    def resume_writing(self) -> None:
        self._handler.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._handler.connection_lost(exc)
