"""A keep-alive HTTP/1.1 POST client for one origin: pooled connections driven by callbacks, the answers
read by llhttp (the C parser of Node.js, through ``httptools``).

Why not aiohttp's ``ClientSession`` (the rest of the bridge's client traffic): every bot event is one
POST, and aiohttp's client machinery (its request and response objects, a stream reader, header and
cookie handling) costs CPU on each. Here a POST is one ``transport.write`` from the caller's stack and
one future, resolved from ``data_received`` when the answer is whole (or cut at the bound); no task per
connection or per read. ``benchmarks/bench_webhook_client.py`` compares the two: on a 2-core Xeon, a
signed event costs the client about 2.2 times less CPU than through aiohttp under uvloop (147 against
325 µs). What is left is mostly the socket calls and the per-POST timer of ``asyncio.timeout``. The
request itself is written by :func:`post_request`.

:class:`HttpPool` keeps up to ``limit`` connections to the origin of one URL (scheme, host, port), TLS
for https (one context, the system's trust store, the URL's host checked). A connection is used again
only when its answer was read whole and llhttp says the server keeps it open (no ``Connection: close``,
not HTTP/1.0 without ``keep-alive``), and nothing came after the answer; one left unused for
``idle_timeout`` seconds is closed, and :meth:`HttpPool.aclose` closes all of them. 1xx answers before
the answer are skipped; a body without a length (neither ``Content-Length`` nor chunked) ends with the
connection; one with a length that the connection cuts short is a failure.

A connection the server closed while it was idle (its keep-alive timeout) is found out only by the
next POST on it: the connection ends before any byte of the answer. That POST is sent once more on a
new connection: nothing was answered, and the event's ``webhook-id`` makes a repeat harmless anyway.
Redirects are not followed (the status comes back as is). Every failure is one exception,
:class:`~bridge.errors.PostFailed`, whose message starts with what failed.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from itertools import chain
from typing import NamedTuple, cast

import httptools
from yarl import URL

from bridge.errors import PostFailed

IDLE_TIMEOUT = 15.0  # below the usual server keep-alive timeouts (nginx 75 s, Node 5 s is the exception)
LIMIT = 100  # connections at most, that is POSTs in flight; more wait for one (within their timeout)
MAX_HEAD = 64 * 1024  # the longest answer head (status line and headers) read

Headers = list[tuple[str, str]]


class Answer(NamedTuple):
    """What the server answered: status, headers (lower-case names; repeated ones joined with ", "), the
    body up to the bound, and whether there was more (``truncated``: the rest was not read)."""

    status: int
    headers: dict[str, str]
    body: bytes
    truncated: bool


def post_request(target: str, headers: Headers, body: bytes) -> bytes:
    """A POST's bytes: request line, ``headers`` and ``Content-Length``, body.

    What a header could break is checked in one pass: no control character (a CR or LF would end the
    header, or the head, early; the target has no space either) and nothing outside ASCII. The names
    are the caller's constants.

    Raises:
        PostFailed: a header that cannot be sent as it is.
    """
    probe = "\t".join([target, *chain.from_iterable(headers)])  # (a tab is allowed in a header value)
    if _CONTROL.search(probe) is not None or not target.startswith("/") or " " in target:
        raise PostFailed("bad request: a header or the target holds a character HTTP does not allow")
    fields = "".join([f"{name}: {value}\r\n" for name, value in headers])
    try:
        head = f"POST {target} HTTP/1.1\r\n{fields}Content-Length: {len(body)}\r\n\r\n".encode("ascii")
    except UnicodeEncodeError:
        raise PostFailed("bad request: a header or the target is not ASCII") from None
    return head + body


_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


class _Stale(PostFailed):
    """A connection used before ended before any byte of the answer: the server had closed it idle."""


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection and the parser of its answers; one exchange at a time, made by
    :class:`HttpPool`. The parser (httptools, llhttp's C code) calls the ``on_*`` methods back."""

    def __init__(self, pool: HttpPool) -> None:
        self._pool = pool
        self._parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.exchanges = 0  # answers read whole on this connection
        self.idle_since = 0.0
        # the exchange under way
        self._answer: asyncio.Future[Answer] | None = None
        self._max_body = 0
        self._head = 0  # bytes read before the head ended (bounded by MAX_HEAD)
        self._headers: dict[str, str] = {}
        self._body = bytearray()
        self._heard = False  # a byte of the answer arrived
        self._in_head = True  # the answer's head is being read
        self._whole = False  # the answer was read whole
        self._keep_alive = False  # and the server keeps the connection open after it
        self._cut = False  # not to be used again: the answer was over the bound, or more came than asked

    def request(self, request: bytes, max_body: int) -> asyncio.Future[Answer]:
        """Send one POST (:func:`post_request`'s bytes); the future is the answer (or :class:`PostFailed`)."""
        transport = self.transport
        if transport is None or transport.is_closing():
            raise _Stale("connection closed while idle")
        self._answer = answer = asyncio.get_running_loop().create_future()
        self._max_body = max_body
        self._head = 0
        self._headers = {}
        self._body = bytearray()
        self._heard = False
        self._in_head = True
        self._whole = self._keep_alive = False
        transport.write(request)
        return answer

    def reusable(self) -> bool:
        """After an answer read whole: ready for the next exchange (True), or to be closed."""
        if (
            self._cut
            or not self._whole
            or self.transport is None
            or self.transport.is_closing()
            or not self._keep_alive
        ):
            return False
        self.exchanges += 1
        return True

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (uvloop's transports are not asyncio.Transport subclasses)
        self.transport = cast(asyncio.Transport, transport)
        self._pool._connections.add(self)

    def data_received(self, data: bytes) -> None:
        answer = self._answer
        if answer is None or answer.done():  # bytes nobody asked for (an idle connection): not HTTP we can use
            self._cut = True
            self.close()
            return
        self._heard = True
        if self._in_head:
            self._head += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(answer, "not an HTTP answer: the server switched protocols")
        except httptools.HttpParserError as exc:
            self._fail(answer, f"not an HTTP answer: {exc}")
        if answer.done():
            if self._cut:
                self.close()
        elif self._in_head and self._head > MAX_HEAD:
            self._fail(answer, f"not an HTTP answer: its head is over {MAX_HEAD} bytes")

    def eof_received(self) -> bool:
        answer = self._answer
        framed = "content-length" in self._headers or "transfer-encoding" in self._headers
        if answer is not None and not answer.done() and not self._in_head and not framed:
            # an answer whose body has no length (HTTP/1.0, or ``Connection: close``) ends here
            answer.set_result(Answer(self._parser.get_status_code(), self._headers, bytes(self._body), False))
            self._cut = True
        return False  # close the transport (connection_lost fails an answer cut short)

    def connection_lost(self, exc: Exception | None) -> None:
        answer = self._answer
        if answer is not None and not answer.done():
            self._fail(answer, f"connection closed before the answer ended ({exc or 'EOF'})")
        self._pool._forget(self)
        if not self.lost.done():
            self.lost.set_result(None)

    # -- the parser's callbacks ------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._whole:
            self._cut = True  # more than the answer asked for: the connection is not used again

    def on_header(self, name: bytes, value: bytes) -> None:
        headers = self._headers
        key, text = name.decode("latin-1").lower(), value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text

    def on_headers_complete(self) -> None:
        if self._parser.get_status_code() < 200:  # a 1xx before the answer: nothing to keep
            self._headers = {}
            return
        self._in_head = False

    def on_body(self, body: bytes) -> None:
        if self._cut:
            return
        self._body += body
        answer = self._answer
        if len(self._body) > self._max_body and answer is not None and not answer.done():
            self._cut = True  # the rest is not read: the connection is closed once this read is done
            answer.set_result(
                Answer(self._parser.get_status_code(), self._headers, bytes(self._body[: self._max_body]), True)
            )

    def on_message_complete(self) -> None:
        answer = self._answer
        if self._in_head:  # the end of a 1xx: the answer comes next
            self._head = 0
            return
        if answer is None or answer.done():
            if not self._cut:
                self._cut = True  # a second answer nobody asked for
            return
        self._whole = True
        self._keep_alive = self._parser.should_keep_alive()  # (read now: the parser resets for the next)
        answer.set_result(Answer(self._parser.get_status_code(), self._headers, bytes(self._body), False))

    def _fail(self, answer: asyncio.Future[Answer], reason: str) -> None:
        self._cut = True
        if answer.done():
            return
        stale = self.exchanges > 0 and not self._heard
        answer.set_exception(_Stale(reason) if stale else PostFailed(reason))
        self.close()


class HttpPool:
    """POSTs to one origin over keep-alive connections; see the module docstring. Close with :meth:`aclose`
    (it may be used again afterwards: a new connection is opened, which the next ``aclose`` closes)."""

    def __init__(
        self,
        url: str | URL,
        *,
        limit: int = LIMIT,
        idle_timeout: float = IDLE_TIMEOUT,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        url = URL(url)
        if url.scheme not in ("http", "https") or not url.raw_host:
            raise ValueError(f"not an http(s) URL: {url}")
        self.host: str = url.raw_host
        self.port: int = url.port or (443 if url.scheme == "https" else 80)
        self.authority: str = url.host_port_subcomponent or self.host  # the Host header: the port if not the default
        self._tls = (ssl_context or _tls_context()) if url.scheme == "https" else None
        self.idle_timeout = idle_timeout
        self._slots = asyncio.Semaphore(limit)
        self._idle: list[_Connection] = []  # oldest first; the newest is used first
        self._connections: set[_Connection] = set()  # every open one, idle or busy
        self._sweeper: asyncio.TimerHandle | None = None
        self.opened = 0  # connections opened so far

    async def post(self, target: str, headers: Headers, body: bytes, timeout: float, max_body: int) -> Answer:
        """POST ``body`` to ``target`` (the path and query) with ``headers`` as given, after ``Host`` and
        before ``Content-Length`` (the pool writes those two); the answer's body is read up to ``max_body``
        bytes. Everything (waiting for a free connection, connecting, the answer) within ``timeout``.

        Raises:
            PostFailed: no whole answer (see the module docstring), or a header that cannot be sent; the
                message says why.
        """
        request = post_request(target, [("Host", self.authority), *headers], body)
        try:
            async with asyncio.timeout(timeout):
                async with self._slots:
                    conn = self._take_idle()
                    if conn is not None:
                        try:
                            return await self._exchange(conn, request, max_body)
                        except _Stale:
                            pass  # the server closed it while idle: once more, on a new connection
                    conn = await self._connect()
                    return await self._exchange(conn, request, max_body)
        except TimeoutError:
            raise PostFailed(f"TimeoutError: no whole answer within {timeout:g} s") from None

    async def aclose(self) -> None:
        """Close every connection (one in use too: its POST fails), waiting a moment for them to go."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        self._idle.clear()
        connections = list(self._connections)
        for conn in connections:
            conn.close()
        if connections:
            await asyncio.wait([c.lost for c in connections], timeout=1.0)
            for conn in connections:
                if not conn.lost.done():
                    conn.abort()  # a TLS peer that does not finish the close

    async def __aenter__(self) -> HttpPool:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    # -- connections -----------------------------------------------------------------------------

    async def _exchange(self, conn: _Connection, request: bytes, max_body: int) -> Answer:
        try:
            answer = await conn.request(request, max_body)
        except BaseException:  # failed, or cancelled (the time bound) mid-exchange: the connection is done
            conn.abort()
            raise
        if conn.reusable():
            conn.idle_since = asyncio.get_running_loop().time()
            self._idle.append(conn)
            if self._sweeper is None:
                self._sweeper = asyncio.get_running_loop().call_later(self.idle_timeout, self._sweep)
        else:
            conn.close()
        return answer

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await loop.create_connection(
                lambda: _Connection(self),
                self.host,
                self.port,
                ssl=self._tls,
                server_hostname=self.host if self._tls is not None else None,
            )
        except OSError as exc:  # refused, unreachable, name not found, certificate refused (ssl.SSLError)
            raise PostFailed(f"{type(exc).__name__}: {exc}") from None
        self.opened += 1
        return conn

    def _take_idle(self) -> _Connection | None:
        idle = self._idle
        if not idle:
            return None
        oldest = asyncio.get_running_loop().time() - self.idle_timeout
        while idle:
            conn = idle.pop()
            if conn.idle_since > oldest and conn.transport is not None and not conn.transport.is_closing():
                return conn
            conn.close()
        return None

    def _sweep(self) -> None:
        """Close the connections idle for ``idle_timeout``; come back when the next one will be."""
        self._sweeper = None
        loop = asyncio.get_running_loop()
        oldest = loop.time() - self.idle_timeout
        idle = self._idle
        while idle and idle[0].idle_since <= oldest:
            idle.pop(0).close()
        if idle:
            self._sweeper = loop.call_later(idle[0].idle_since - oldest, self._sweep)

    def _forget(self, conn: _Connection) -> None:
        """A connection ended (either side closed it)."""
        self._connections.discard(conn)
        if conn in self._idle:
            self._idle.remove(conn)


def _tls_context() -> ssl.SSLContext:
    """The system's trust store, the host name checked; HTTP/1.1 said in ALPN (as aiohttp does)."""
    context = ssl.create_default_context()
    context.set_alpn_protocols(["http/1.1"])
    return context
