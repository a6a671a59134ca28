"""The webhook's keep-alive POST pool (bridge.delivery.http_post) against raw asyncio servers on 127.0.0.1:
one connection for many POSTs, the server's idle close and the one retry, chunked and close-delimited
answers, ``Connection: close``, the body bound, the time bound, answers that are not HTTP, the limit, TLS."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from bridge.delivery.http_post import HttpPool, post_request
from bridge.delivery.webhook import Delivered, Failed, WebhookClient, WebhookEvent
from bridge.errors import PostFailed

Handler = Callable[["Peer"], Awaitable[None]]

OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


class Peer:
    """One accepted connection, as the handler sees it."""

    def __init__(self, server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.server, self.reader, self.writer = server, reader, writer

    async def request(self) -> bool:
        """Read one whole request (head and Content-Length body) and record it; False at EOF."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return False
        lines = head.decode("latin-1").split("\r\n")[1:-2]
        headers = [tuple(line.split(": ", 1)) for line in lines]
        length = next((int(v) for k, v in headers if k.lower() == "content-length"), 0)
        body = await self.reader.readexactly(length)
        self.server.requests.append((lines, body))
        return True

    async def answer(self, *parts: bytes, pause: float = 0.0) -> None:
        for i, part in enumerate(parts):
            if i and pause:
                await asyncio.sleep(pause)
            self.writer.write(part)
            await self.writer.drain()


class RawServer:
    """A TCP server whose every connection runs ``handler``; counts the connections it accepted."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.accepted = 0
        self.ended = 0  # connections whose client closed them (EOF seen by a handler that waits for it)
        self.requests: list[tuple[list[str], bytes]] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.writers: set[asyncio.StreamWriter] = set()
        self.server: asyncio.Server | None = None
        self.stopped = asyncio.Event()  # what a handler that never answers waits for

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> str:
        self.server = await asyncio.start_server(self._connection, "127.0.0.1", 0, ssl=ssl_context)
        port = self.server.sockets[0].getsockname()[1]
        return f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}/hook?x=1"

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        self.writers.add(writer)
        try:
            await self.handler(Peer(self, reader, writer))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            self.tasks.discard(task)

    async def close(self) -> None:
        self.stopped.set()
        for writer in self.writers:
            writer.close()
        if self.tasks:
            await asyncio.wait(self.tasks, timeout=5)
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        await asyncio.sleep(0)


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[tuple[RawServer, str]]]]:
    servers: list[RawServer] = []

    async def start(handler: Handler) -> tuple[RawServer, str]:
        server = RawServer(handler)
        servers.append(server)
        return server, await server.start()

    yield start
    for server in servers:
        await server.close()


Serve = Callable[[Handler], Awaitable[tuple[RawServer, str]]]


async def keep_alive(peer: Peer) -> None:
    """Answers every request 200 ``{}`` on the same connection, until the client closes it."""
    while await peer.request():
        await peer.answer(OK)
    peer.server.ended += 1


async def post(pool: HttpPool, body: bytes = b"{}", timeout: float = 5.0, max_body: int = 1000) -> tuple[int, bytes]:
    status, _, answer, _ = await pool.post("/hook?x=1", [("content-type", "application/json")], body, timeout, max_body)
    return status, answer


async def test_many_posts_share_one_connection(serve: Serve) -> None:
    """Sequential POSTs go over one kept-alive TCP connection; aclose closes it (the server sees EOF)."""
    server, url = await serve(keep_alive)
    async with HttpPool(url) as pool:
        for i in range(20):
            assert await post(pool, b'{"n":%d}' % i) == (200, b"{}")
        assert server.accepted == 1 and pool.opened == 1
    assert [body for _, body in server.requests] == [b'{"n":%d}' % i for i in range(20)]
    assert server.requests[0][0][0] == "Host: 127.0.0.1:" + url.split(":")[2].split("/")[0]
    await until(lambda: server.ended == 1)


async def test_a_connection_the_server_closed_while_idle_is_replaced(serve: Serve) -> None:
    """The server closes each connection after one answer, without saying so: the next POST goes on a
    new connection (the close was seen while idle)."""

    async def one_answer(peer: Peer) -> None:
        if await peer.request():
            await peer.answer(OK)

    server, url = await serve(one_answer)
    async with HttpPool(url) as pool:
        assert await post(pool) == (200, b"{}")
        await asyncio.sleep(0.05)  # the server's close arrives
        assert await post(pool) == (200, b"{}")
    assert server.accepted == 2 and len(server.requests) == 2


async def test_a_reused_connection_closed_before_any_answer_is_retried_once(serve: Serve) -> None:
    """The server reads the second request of a connection and closes it without a byte (its idle
    close racing the POST): the POST is sent again on a new connection, once, and answered."""

    async def close_on_second(peer: Peer) -> None:
        if await peer.request():
            await peer.answer(OK)
        if await peer.request():
            peer.writer.transport.abort()  # a reset, no answer

    server, url = await serve(close_on_second)
    async with HttpPool(url) as pool:
        assert await post(pool, b"1") == (200, b"{}")
        assert await post(pool, b"2") == (200, b"{}")
    assert server.accepted == 2
    assert [body for _, body in server.requests] == [b"1", b"2", b"2"]  # the second one sent twice


async def test_a_new_connection_closed_before_any_answer_is_not_retried(serve: Serve) -> None:
    """A fresh connection that ends without an answer is a failure (no retry: nothing says it was stale)."""

    async def no_answer(peer: Peer) -> None:
        await peer.request()

    server, url = await serve(no_answer)
    async with HttpPool(url) as pool:
        with pytest.raises(PostFailed, match="closed before the answer"):
            await post(pool)
    assert server.accepted == 1


async def test_a_chunked_answer_in_several_writes_is_read_whole_and_the_connection_kept(serve: Serve) -> None:
    async def chunked(peer: Peer) -> None:
        while await peer.request():
            await peer.answer(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n",
                b'5\r\n{"a":\r\n',
                b"3\r\n 1}\r\n",
                b"0\r\n\r\n",
                pause=0.02,
            )

    server, url = await serve(chunked)
    async with HttpPool(url) as pool:
        for _ in range(3):
            status, headers, body, truncated = await pool.post("/hook", [], b"", 5, 100)
            assert (status, body, truncated) == (200, b'{"a": 1}', False)
            assert headers["content-type"] == "application/json"
    assert server.accepted == 1


async def test_connection_close_and_http_1_0_answers_are_honoured(serve: Serve) -> None:
    """An answer with ``Connection: close``, or an HTTP/1.0 one whose body ends with the connection, is
    read whole and its connection never used again."""
    answers = [
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 5\r\n\r\nfirst",
        b"HTTP/1.0 201 Created\r\n\r\nsecond, to the end",
    ]

    async def then_close(peer: Peer) -> None:
        await peer.request()
        await peer.answer(answers.pop(0))
        peer.writer.close()

    server, url = await serve(then_close)
    async with HttpPool(url) as pool:
        assert await post(pool) == (200, b"first")
        assert await post(pool) == (201, b"second, to the end")
    assert server.accepted == 2


async def test_an_answer_over_the_bound_is_cut_and_its_connection_closed(serve: Serve) -> None:
    async def big(peer: Peer) -> None:
        while await peer.request():
            await peer.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n", b"x" * 2000, b"y" * 3000, pause=0.02)

    server, url = await serve(big)
    async with HttpPool(url) as pool:
        for _ in range(2):
            status, _, body, truncated = await pool.post("/", [], b"", 5, 1000)
            assert (status, body, truncated) == (200, b"x" * 1000, True)
        ok = await pool.post("/", [], b"", 5, 5000)
        assert ok.body == b"x" * 2000 + b"y" * 3000 and not ok.truncated
    assert server.accepted == 3  # the cut answers' connections were not used again


async def test_an_informational_answer_before_the_answer_is_skipped(serve: Serve) -> None:
    """A ``100 Continue`` (or any 1xx) before the answer, in the same write or its own: the answer is the
    one after it, and the connection is used again."""

    async def continue_first(peer: Peer) -> None:
        while await peer.request():
            await peer.answer(b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 102 Processing\r\nX: y\r\n\r\n" + OK)

    server, url = await serve(continue_first)
    async with HttpPool(url) as pool:
        for _ in range(2):
            status, headers, body, _ = await pool.post("/", [], b"", 5, 100)
            assert (status, body) == (200, b"{}") and "x" not in headers
    assert server.accepted == 1


async def test_more_than_the_answer_on_the_connection_is_not_trusted_again(serve: Serve) -> None:
    """Bytes after the answer (a second answer nobody asked for, or part of one): the answer stands, and
    its connection is not used again (the bytes would be read as the next POST's answer)."""
    extras = [OK, b"HTTP/1.1 200 OK\r\nContent-Le", b"garbage"]

    async def too_much(peer: Peer) -> None:
        while await peer.request():
            await peer.answer(OK + extras.pop(0))

    server, url = await serve(too_much)
    async with HttpPool(url) as pool:
        for _ in range(3):
            assert await post(pool) == (200, b"{}")
    assert server.accepted == 3


async def test_an_answer_cut_short_of_its_length_is_a_failure(serve: Serve) -> None:
    """The connection closed before the ``Content-Length`` (or the last chunk) was read: a retryable failure,
    not a short body taken for the answer."""
    answers = [
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    ]

    async def cut(peer: Peer) -> None:
        await peer.request()
        await peer.answer(answers.pop(0))
        peer.writer.close()

    _, url = await serve(cut)
    async with HttpPool(url) as pool:
        for _ in range(2):
            with pytest.raises(PostFailed, match="connection closed before the answer ended"):
                await post(pool)


async def test_a_head_that_never_ends_is_refused_at_the_bound(serve: Serve) -> None:
    """Headers sent forever (never the blank line): refused once the head is over its bound, long before
    the time bound, and the connection closed."""

    async def endless(peer: Peer) -> None:
        await peer.request()
        peer.writer.write(b"HTTP/1.1 200 OK\r\n")
        for i in range(100_000):
            peer.writer.write(b"X-%d: %s\r\n" % (i, b"v" * 100))
            await peer.writer.drain()
            if peer.writer.is_closing():
                return

    _, url = await serve(endless)
    async with HttpPool(url) as pool:
        started = time.monotonic()
        with pytest.raises(PostFailed, match="head is over"):
            await post(pool, timeout=10.0)
        assert time.monotonic() - started < 5.0


async def test_a_switch_of_protocols_is_not_an_answer(serve: Serve) -> None:
    async def upgrade(peer: Peer) -> None:
        await peer.request()
        await peer.answer(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
        await peer.server.stopped.wait()

    _, url = await serve(upgrade)
    async with HttpPool(url) as pool:
        with pytest.raises(PostFailed, match="not an HTTP answer"):
            await post(pool)


async def test_a_server_that_never_answers_fails_at_the_time_bound(serve: Serve) -> None:
    async def silent(peer: Peer) -> None:
        await peer.request()
        await peer.server.stopped.wait()

    _, url = await serve(silent)
    async with HttpPool(url) as pool:
        started = time.monotonic()
        with pytest.raises(PostFailed, match="TimeoutError"):
            await post(pool, timeout=0.3)
        assert 0.25 < time.monotonic() - started < 2.0


@pytest.mark.parametrize(
    "garbage",
    [b"HELLO\r\n\r\n", b"HTTP/1.1 abc OK\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", b"\x00" * 100],
)
async def test_an_answer_that_is_not_http_is_a_retryable_failure(serve: Serve, garbage: bytes) -> None:
    async def nonsense(peer: Peer) -> None:
        await peer.request()
        await peer.answer(garbage)
        await peer.server.stopped.wait()

    _, url = await serve(nonsense)
    async with WebhookClient(url, secret=None, timeout=5.0) as client:
        outcome = await client.post(WebhookEvent("msg_c1_1", "{}"))
    assert isinstance(outcome, Failed) and outcome.retryable and outcome.status is None
    assert "not an HTTP answer" in outcome.error


async def test_no_more_connections_than_the_limit_and_waiting_counts_against_the_timeout(serve: Serve) -> None:
    async def slow(peer: Peer) -> None:
        while await peer.request():
            await asyncio.sleep(0.2)
            await peer.answer(OK)

    server, url = await serve(slow)
    async with HttpPool(url, limit=2) as pool:
        results = await asyncio.gather(*(post(pool) for _ in range(6)))
        assert results == [(200, b"{}")] * 6 and server.accepted == 2
        first = asyncio.create_task(post(pool))
        second = asyncio.create_task(post(pool))
        await asyncio.sleep(0.05)
        with pytest.raises(PostFailed, match="TimeoutError"):
            await post(pool, timeout=0.1)  # both connections busy for 0.15 s more
        assert await first == await second == (200, b"{}")


async def test_idle_connections_are_closed_after_the_idle_timeout(serve: Serve) -> None:
    server, url = await serve(keep_alive)
    async with HttpPool(url, idle_timeout=0.2) as pool:
        assert await post(pool) == (200, b"{}")
        await asyncio.sleep(0.1)
        assert await post(pool) == (200, b"{}")  # still the same connection
        assert server.accepted == 1
        await until(lambda: server.ended == 1)
        assert await post(pool) == (200, b"{}")  # a new one
        assert server.accepted == 2


async def test_the_webhook_client_sends_its_headers_and_host_and_length(serve: Serve) -> None:
    """The request on the wire: POST to the URL's path and query, Host with the port, the event's
    headers as they were, Content-Length, the body; user:password in the URL is Basic authentication."""
    server, url = await serve(keep_alive)
    url = url.replace("http://", "http://bot:s%20cret@")
    async with WebhookClient(url, secret=None, timeout=5.0) as client:
        event = WebhookEvent("msg_c1_1", '{"type":"call.started","text":"é"}')
        outcome = await client.post(event)
    assert isinstance(outcome, Delivered) and outcome.response.content_type == "application/json"
    lines, body = server.requests[0]
    assert body == event.body.encode()
    port = url.rsplit(":", 1)[1].split("/")[0]
    stamp = lines[4].removeprefix("webhook-timestamp: ")
    assert stamp.isdigit() and abs(int(stamp) - time.time()) < 5
    assert lines == [
        f"Host: 127.0.0.1:{port}",
        "content-type: application/json",
        "user-agent: telephony-gladia-bridge",
        "webhook-id: msg_c1_1",
        f"webhook-timestamp: {stamp}",
        "Authorization: Basic Ym90OnMgY3JldA==",
        f"Content-Length: {len(body)}",
    ]


async def test_https_checks_the_certificate(tmp_path: Path) -> None:
    """https: the server's certificate is checked (an unknown CA is a failure, never an unchecked
    connection); a trusted one carries the POSTs."""
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_tls)
    server = RawServer(keep_alive)
    url = await server.start(server_tls)
    try:
        trusting = ssl.create_default_context()
        ca.configure_trust(trusting)
        async with HttpPool(url, ssl_context=trusting) as pool:
            assert await post(pool) == (200, b"{}")
            assert await post(pool) == (200, b"{}")
        async with HttpPool(url, ssl_context=ssl.create_default_context()) as pool:
            with pytest.raises(PostFailed, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
                await post(pool)
        assert server.accepted == 1  # (the refused handshake never reached the server's handler)
    finally:
        await server.close()


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


def test_the_request_is_written_as_given_and_nothing_else() -> None:
    """post_request: request line, headers in order, Content-Length, body; byte for byte."""
    request = post_request("/hook?x=1", [("Host", "bot:8080"), ("webhook-id", "msg_c1_1")], b"{}")
    assert (
        request == b"POST /hook?x=1 HTTP/1.1\r\nHost: bot:8080\r\nwebhook-id: msg_c1_1\r\nContent-Length: 2\r\n\r\n{}"
    )


@pytest.mark.parametrize(
    ("target", "headers"),
    [
        ("/hook", [("webhook-id", "msg_1\r\nX-Injected: yes")]),
        ("/hook", [("webhook-id", "msg_1\n")]),
        ("/hook", [("webhook-id", "msg_\x00")]),
        ("/hook", [("webhook-id", "msg_é")]),
        ("/hook HTTP/1.1\r\nX: y", []),
        ("/ho ok", []),
        ("hook", []),
    ],
)
def test_a_header_or_target_that_would_break_the_request_is_refused(
    target: str, headers: list[tuple[str, str]]
) -> None:
    """A CR, LF or other control character, a non-ASCII character, or a target that is not a path: never
    written."""
    with pytest.raises(PostFailed, match=r"^bad request: "):
        post_request(target, headers, b"")
