"""One WebSocket connection to a Gladia session URL, driven by callbacks: no task per frame.

The opening handshake is ``websockets``' sans-I/O :class:`~websockets.client.ClientProtocol` (URL,
key, status, headers, TLS through the transport); after it the frames are
:class:`bridge.ws_protocol.FrameReader`'s (read) and :func:`~bridge.ws_protocol.client_frame`'s
(written), and this module runs the pings and the closing handshake. Why not ``aiohttp``'s
``ws_connect`` like the rest of the bridge's client traffic: a call sends a frame to Gladia every
20 ms and gets an acknowledgment back for each, and with aiohttp each of those costs a task wake-up
and a queue hand-off. Here a frame is written from the caller's stack (``transport.write`` never
blocks) and each received message is handed to ``on_message`` straight from ``data_received``, which
is most of the bridge's CPU per call.

Backpressure: ``writable`` turns false when the kernel and transport buffers pass the high-water
mark; the session then keeps audio in its (bounded) replay buffer and ``on_writable`` tells it
when to go on.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
from collections.abc import Callable
from typing import cast

import structlog
from websockets.client import ClientProtocol
from websockets.exceptions import InvalidStatus, InvalidURI
from websockets.http11 import Response
from websockets.uri import parse_uri

from bridge.errors import ConnectFailed, HandshakeRefused
from bridge.ws_protocol import (
    OP_BINARY,
    OP_CLOSE,
    OP_PONG,
    OP_TEXT,
    Close,
    Failure,
    FrameReader,
    Ping,
    Pong,
    Skipped,
    client_frame,
    close_payload,
)

log = structlog.get_logger("bridge.stt")

MAX_MESSAGE = 1024 * 1024  # largest Gladia message accepted (a final of a 28 s utterance is tens of kB)

MAX_HANDSHAKE = 64 * 1024  # the longest handshake answer head read before it is taken as a failure
USER_AGENT = "telephony-gladia-bridge"
WRITE_HIGH_WATER = 256 * 1024


class SessionConnection(asyncio.Protocol):
    """See the module docstring. Made by :func:`connect`."""

    def __init__(
        self,
        ws: ClientProtocol,
        on_message: Callable[[str | bytes], None],
        on_writable: Callable[[], None],
        close_timeout: float,
    ) -> None:
        self._ws = ws  # the opening handshake; then unused
        self._frames: FrameReader | None = None  # once the handshake has succeeded
        self._head = b""  # the handshake answer's head, until whole
        self._refused = False  # the answer is not a 101: all of it goes to websockets
        self._on_message = on_message
        self._on_writable = on_writable
        self._close_timeout = close_timeout
        self._transport: asyncio.Transport | None = None
        self._abort_timer: asyncio.TimerHandle | None = None
        loop = asyncio.get_running_loop()
        self.handshake: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self._close_sent = False
        self._close_received: int | None = None  # the server's close code
        self._lost = False
        self._failed = False  # this side failed the connection (RFC 6455 7.1.7)
        self.writable = True
        self.messages = 0
        self.skipped = 0  # messages over MAX_MESSAGE, skipped unread

    # -- what the session uses ---------------------------------------------------------------

    @property
    def open(self) -> bool:
        return (
            self._frames is not None
            and not self._close_sent
            and self._close_received is None
            and self._transport is not None
            and not self._transport.is_closing()
        )

    @property
    def close_code(self) -> int | None:
        """The close code the server sent; 1006 if the connection ended without one, or after this side
        failed it (a message over the limit, a bad frame: the session is reconnected, whatever the server
        answers to our close); None while open."""
        if self._failed:
            return 1006
        if self._close_received is not None:
            return self._close_received
        return 1006 if self._lost or self._close_sent else None

    def send_binary(self, data: bytes) -> None:
        """One binary message (audio): :attr:`open`'s test, spelt out (it runs for every frame)."""
        transport = self._transport
        if (
            self._frames is not None
            and not self._close_sent
            and self._close_received is None
            and transport is not None
            and not transport.is_closing()
        ):
            transport.write(client_frame(OP_BINARY, data))

    def send_text(self, text: str) -> None:
        if self.open:
            assert self._transport is not None
            self._transport.write(client_frame(OP_TEXT, text.encode()))

    def close(self, code: int = 1000) -> None:
        """Start the closing handshake; the TCP connection is cut if it is not done in time."""
        if self.open:
            assert self._transport is not None
            self._transport.write(client_frame(OP_CLOSE, close_payload(code)))
            self._close_sent = True
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
        self._flush_handshake()

    def data_received(self, data: bytes) -> None:
        frames = self._frames
        if frames is None:
            self._handshake_data(data)
            return
        for event in frames.feed(data):
            if type(event) is str or type(event) is bytes:
                self.messages += 1
                try:
                    self._on_message(event)
                except Exception:  # a bug in handling one message must not cut the session
                    log.exception("stt.message_handler_failed")
            elif isinstance(event, Ping):
                if self.open:
                    assert self._transport is not None
                    self._transport.write(client_frame(OP_PONG, event.payload))
            elif isinstance(event, Close):
                self._close_received = event.code
                if not self._close_sent and self._transport is not None and not self._transport.is_closing():
                    self._transport.write(client_frame(OP_CLOSE, close_payload(event.code)))  # the echo
                    self._close_sent = True
                self._expect_close()  # the server closes the TCP connection first (RFC 6455 7.1.1)
            elif isinstance(event, Failure):
                log.warning("stt.websocket_error", error=event.reason, close_code=event.code)
                self._failed = True
                self.close(event.code)
            elif isinstance(event, Skipped):
                self.skipped += 1
                log.warning("stt.message_skipped", frame_bytes=event.length, bound=MAX_MESSAGE)
            elif isinstance(event, Pong):
                pass

    def eof_received(self) -> bool:
        if self._frames is None:
            self._ws.receive_eof()
            self._handshake_events()
        return False  # the WebSocket closing handshake is done or failed: close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        if self._frames is None:
            self._ws.receive_eof()  # idempotent
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

    # -- the opening handshake ------------------------------------------------------------------

    def _handshake_data(self, data: bytes) -> None:
        """Until the answer's head is whole, gather it; a 101's head goes to ``websockets`` alone and
        what follows it (the first frames, maybe in the same read) to the frame reader. Any other
        answer goes to ``websockets`` whole, body and all."""
        if self._refused:
            self._ws.receive_data(data)
            self._handshake_events()
            return
        self._head += data
        end = self._head.find(b"\r\n\r\n")
        if end < 0 and len(self._head) <= MAX_HANDSHAKE:
            return
        head, rest = self._head[: end + 4], self._head[end + 4 :]
        if end < 0 or not head.startswith((b"HTTP/1.1 101 ", b"HTTP/1.0 101 ")):
            self._refused = True
            head, rest = self._head, b""
        self._head = b""
        self._ws.receive_data(head)
        self._handshake_events()
        if rest and self._frames is not None:
            self.data_received(rest)

    def _handshake_events(self) -> None:
        for event in self._ws.events_received():
            if isinstance(event, Response):
                self._handshake_done(event)
                return
        self._flush_handshake()
        if self._ws.handshake_exc is not None and not self.handshake.done():  # not even an HTTP answer
            self.handshake.set_exception(ConnectFailed(f"handshake failed: {self._ws.handshake_exc}"))

    def _handshake_done(self, response: Response) -> None:
        if self.handshake.done():
            return
        failure = self._ws.handshake_exc
        if failure is None:
            # frames from here on; a message over the bound is skipped (see connect())
            self._frames = FrameReader(client_frames=False, max_message=MAX_MESSAGE, skip_oversized=True)
            self.handshake.set_result(None)
        elif isinstance(failure, InvalidStatus):
            self.handshake.set_exception(HandshakeRefused(response.status_code))
        else:
            self.handshake.set_exception(ConnectFailed(f"handshake failed: {failure}"))

    def _flush_handshake(self) -> None:
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
    on_message: Callable[[str | bytes], None],
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
    # Bounded: a message over MAX_MESSAGE is skipped unread, never buffered, and the session goes on. The
    # one Gladia sends in normal use is post_transcript (the whole call's transcript, when post-processing
    # messages are on for a summary); what the bridge needs from such a message it reads back with
    # GET /v2/live/{id} (bridge.stt.analysis).
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
