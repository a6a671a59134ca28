"""One WebSocket connection to a Gladia session URL, driven by callbacks: no task per frame.

The WebSocket protocol itself (handshake, framing, masking, ping/pong, closing handshake) is
``websockets``' sans-I/O :class:`~websockets.client.ClientProtocol`; this module is the thin asyncio
shell around it. Why not ``aiohttp``'s ``ws_connect`` like the rest of the bridge's client traffic:
a call sends a frame to Gladia every 20 ms and gets an acknowledgment back for each, and with
aiohttp each of those costs a task wake-up and a queue hand-off. Here a frame is written from the
caller's stack (``transport.write`` never blocks) and each received message is handed to
``on_message`` straight from ``data_received``, which is most of the bridge's CPU per call.

Backpressure: ``writable`` turns false when the kernel and transport buffers pass the high-water
mark; the session then keeps audio in its (bounded) replay buffer and ``on_writable`` tells it
when to go on.
"""

from __future__ import annotations

import asyncio
import functools
import os
import ssl
import struct
from collections.abc import Callable
from typing import cast

import structlog
from websockets.client import ClientProtocol
from websockets.exceptions import InvalidStatus, InvalidURI
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.uri import parse_uri

from bridge.errors import ConnectFailed, HandshakeRefused

try:
    from websockets.speedups import apply_mask
except ImportError:  # websockets built without its C extension (as websockets itself falls back)
    from websockets.utils import apply_mask

log = structlog.get_logger("bridge.stt")

MAX_MESSAGE = 1024 * 1024  # largest Gladia message accepted (a final of a 28 s utterance is tens of kB)

USER_AGENT = "telephony-gladia-bridge"
WRITE_HIGH_WATER = 256 * 1024


class _MaskKeys:
    """Client frame masks from the OS's CSPRNG, drawn 1,024 at a time instead of one system call per frame."""

    def __init__(self) -> None:
        self._pool = b""
        self._at = 0

    def next(self) -> bytes:
        if self._at >= len(self._pool):
            self._pool, self._at = os.urandom(4096), 0
        key = self._pool[self._at : self._at + 4]
        self._at += 4
        return key


_MASKS = _MaskKeys()


def _masked_binary_frame(data: bytes) -> bytes:
    """A complete (FIN), masked binary frame as a client sends it."""
    n = len(data)
    if n < 126:
        head = bytes((0x82, 0x80 | n))
    elif n < 65536:
        head = struct.pack("!BBH", 0x82, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x82, 0x80 | 127, n)
    key = _MASKS.next()
    return b"".join((head, key, apply_mask(data, key)))


class SessionConnection(asyncio.Protocol):
    """See the module docstring. Made by :func:`connect`."""

    def __init__(
        self,
        ws: ClientProtocol,
        on_message: Callable[[bytes | bytearray | memoryview], None],
        on_writable: Callable[[], None],
        close_timeout: float,
    ) -> None:
        self._ws = ws
        self._on_message = on_message
        self._on_writable = on_writable
        self._close_timeout = close_timeout
        self._transport: asyncio.Transport | None = None
        self._abort_timer: asyncio.TimerHandle | None = None
        loop = asyncio.get_running_loop()
        self.handshake: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.writable = True
        self.messages = 0

    # -- what the session uses ---------------------------------------------------------------

    @property
    def open(self) -> bool:
        return self._ws.state is State.OPEN and self._transport is not None and not self._transport.is_closing()

    @property
    def close_code(self) -> int | None:
        """The close code the server sent; 1006 if the connection ended without one; None while open."""
        return self._ws.close_code

    def send_binary(self, data: bytes) -> None:
        """One binary message (audio). Framed here rather than by ``websockets``, which draws each
        frame's mask from the OS with a system call; same bytes on the wire (RFC 6455 5.2, 5.3)."""
        if self.open:
            assert self._transport is not None
            self._transport.write(_masked_binary_frame(data))

    def send_text(self, text: str) -> None:
        if self.open:
            self._ws.send_text(text.encode())
            self._flush()

    def close(self, code: int = 1000) -> None:
        """Start the closing handshake; the TCP connection is cut if it is not done in time."""
        if self._ws.state is State.OPEN:
            self._ws.send_close(code)
            self._flush()
        self._expect_close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (uvloop's transports are not asyncio.Transport subclasses; asyncio and uvloop both set TCP_NODELAY)
        self._transport = transport = cast(asyncio.Transport, transport)
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        request = self._ws.connect()
        request.headers["User-Agent"] = USER_AGENT
        self._ws.send_request(request)
        self._flush()

    def data_received(self, data: bytes) -> None:
        self._ws.receive_data(data)
        self._events()

    def eof_received(self) -> bool:
        self._ws.receive_eof()
        self._events()
        return False  # the WebSocket closing handshake is done or failed: close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._ws.receive_eof()  # idempotent: the protocol is now CLOSED
        if self._abort_timer is not None:
            self._abort_timer.cancel()
        if not self.handshake.done():
            self.handshake.set_exception(ConnectFailed(f"connection closed during the handshake: {exc}"))
        if not self.closed.done():
            self.closed.set_result(None)

    def pause_writing(self) -> None:
        self.writable = False

    def resume_writing(self) -> None:
        self.writable = True
        self._on_writable()

    # -- internals ------------------------------------------------------------------------------

    def _events(self) -> None:
        events = self._ws.events_received()
        self._flush()  # pongs, the answer to a close frame, a half-close
        if self._ws.close_expected():
            self._expect_close()
        for event in events:
            if isinstance(event, Frame):
                if event.opcode is Opcode.TEXT or event.opcode is Opcode.BINARY:
                    self.messages += 1
                    try:
                        self._on_message(event.data)
                    except Exception:  # a bug in handling one message must not cut the session
                        log.exception("stt.message_handler_failed")
            elif isinstance(event, Response):
                self._handshake_done(event)
        if self._ws.handshake_exc is not None and not self.handshake.done():  # not even an HTTP answer
            self.handshake.set_exception(ConnectFailed(f"handshake failed: {self._ws.handshake_exc}"))

    def _handshake_done(self, response: Response) -> None:
        if self.handshake.done():
            return
        failure = self._ws.handshake_exc
        if failure is None:
            self.handshake.set_result(None)
        elif isinstance(failure, InvalidStatus):
            self.handshake.set_exception(HandshakeRefused(response.status_code))
        else:
            self.handshake.set_exception(ConnectFailed(f"handshake failed: {failure}"))

    def _flush(self) -> None:
        transport = self._transport
        if transport is None:
            return
        for data in self._ws.data_to_send():
            if data:
                transport.write(data)
            elif transport.can_write_eof():
                transport.write_eof()

    def _expect_close(self) -> None:
        if self._abort_timer is None and self._transport is not None and not self.closed.done():
            self._abort_timer = asyncio.get_running_loop().call_later(self._close_timeout, self.abort)


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One TLS context for every session (building one loads the CA store: too slow per reconnect)."""
    return ssl.create_default_context()


async def connect(
    url: str,
    *,
    on_message: Callable[[bytes | bytearray | memoryview], None],
    on_writable: Callable[[], None],
    close_timeout: float = 5.0,
) -> SessionConnection:
    """Open the WebSocket at ``url`` (``ws://`` or ``wss://``); bound it with ``asyncio.timeout``.

    Raises:
        HandshakeRefused: the server answered the upgrade with another HTTP status.
        ConnectFailed: the URL is not a WebSocket URL, or the connection or handshake failed.
    """
    try:
        uri = parse_uri(url)
    except InvalidURI as exc:
        raise ConnectFailed(f"not a WebSocket URL: {exc}") from None
    # Bounded like the phone side: a message over MAX_MESSAGE fails the connection with 1009 (and the
    # session reconnects). The bridge turns post-processing messages off (they carry a whole call).
    ws = ClientProtocol(uri, max_size=MAX_MESSAGE)
    loop = asyncio.get_running_loop()
    context = _tls_context() if uri.secure else None
    try:
        _, conn = await loop.create_connection(
            lambda: SessionConnection(ws, on_message, on_writable, close_timeout),
            uri.host,
            uri.port,
            ssl=context,
            server_hostname=uri.host if context else None,
        )
    except OSError as exc:
        raise ConnectFailed(f"{type(exc).__name__}: {exc}") from None
    try:
        await conn.handshake
    except BaseException:
        conn.abort()
        raise
    return conn
