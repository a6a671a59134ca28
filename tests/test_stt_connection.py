"""The Gladia session WebSocket shell (bridge.stt.connection) against real aiohttp servers on 127.0.0.1:
handshake outcomes, messages in order straight from the socket, pings, close codes, backpressure."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bridge.errors import ConnectFailed, HandshakeRefused
from bridge.stt.connection import SessionConnection, connect
from tests.support.process import free_port


async def _serve(aiohttp_server: Any, handler: Any) -> str:
    app = web.Application()
    app.router.add_get("/v2/live", handler)
    server = await aiohttp_server(app, host="127.0.0.1")
    return f"ws://127.0.0.1:{server.port}/v2/live?token=t"


async def _open(url: str, got: list[bytes] | None = None, writable: asyncio.Event | None = None) -> SessionConnection:
    async with asyncio.timeout(5):
        return await connect(
            url,
            on_message=lambda data: (got if got is not None else []).append(
                data.encode() if isinstance(data, str) else data
            ),
            on_writable=writable.set if writable else (lambda: None),
            close_timeout=1.0,
        )


async def test_handshake_refused_carries_the_http_status(aiohttp_server: Any) -> None:
    async def refuse(request: web.Request) -> web.Response:
        return web.Response(status=403, text="session expired")

    url = await _serve(aiohttp_server, refuse)
    with pytest.raises(HandshakeRefused) as info:
        await _open(url)
    assert info.value.status == 403


async def test_a_message_in_the_same_bytes_as_the_101_is_not_lost() -> None:
    """A server that writes its first message in the same segment as the handshake's answer (the
    client reads both at once): the message is delivered, then a ping is answered."""
    got: list[bytes] = []
    pong = asyncio.get_running_loop().create_future()

    async def server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        key = next(
            line.split(b":", 1)[1].strip().decode()
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        accept = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
        first = b'{"type":"start_session"}'
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n" + bytes((0x81, len(first))) + first + b"\x89\x02hi"
        )
        frame = await reader.readexactly(8)  # the masked pong: 2 bytes of header, the mask, 2 of payload
        mask, body = frame[2:6], frame[6:8]
        pong.set_result((frame[0], bytes(b ^ mask[i] for i, b in enumerate(body))))
        writer.close()

    srv = await asyncio.start_server(server, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    async with srv:
        conn = await _open(f"ws://127.0.0.1:{port}/v2/live", got)
        async with asyncio.timeout(5):
            assert await pong == (0x8A, b"hi")
            await conn.closed
    assert got == [b'{"type":"start_session"}']
    assert conn.close_code == 1006  # the connection ended without a close frame


async def test_nobody_listening_and_bad_urls_are_connect_failures() -> None:
    with pytest.raises(ConnectFailed):
        await _open(f"ws://127.0.0.1:{free_port()}/v2/live")
    with pytest.raises(ConnectFailed):
        await _open("http://127.0.0.1:1/not-a-websocket-url")


async def test_messages_arrive_in_order_pings_are_answered_and_the_close_code_is_kept(aiohttp_server: Any) -> None:
    seen: list[Any] = []

    async def session(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=False)
        await ws.prepare(request)
        await ws.ping(b"are you there")
        seen.append(await ws.receive(timeout=5))  # the client's pong
        for i in range(100):
            await ws.send_str(f'{{"type":"audio_chunk","n":{i}}}')
        await ws.send_bytes(b"\x00\x01")
        msg = await ws.receive(timeout=5)
        seen.append(msg.data)
        await ws.close(code=4403, message=b"session gone")
        return ws

    url = await _serve(aiohttp_server, session)
    got: list[bytes] = []
    conn = await _open(url, got)
    assert conn.open and conn.close_code is None
    while not got:
        await asyncio.sleep(0.01)
    conn.send_binary(b"audio")
    async with asyncio.timeout(5):
        await conn.closed
    assert seen[0].type is aiohttp.WSMsgType.PONG and seen[0].data == b"are you there"
    assert seen[1] == b"audio"
    assert got[:100] == [f'{{"type":"audio_chunk","n":{i}}}'.encode() for i in range(100)]
    assert got[100] == b"\x00\x01"
    assert conn.close_code == 4403
    assert conn.messages == 101
    conn.send_binary(b"after close")  # ignored, not an error


async def test_a_cut_connection_reports_1006(aiohttp_server: Any) -> None:
    async def session(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.receive(timeout=5)
        assert request.transport is not None
        request.transport.abort()  # no close frame
        return ws

    url = await _serve(aiohttp_server, session)
    conn = await _open(url)
    conn.send_binary(b"x" * 160)
    async with asyncio.timeout(5):
        await conn.closed
    assert conn.close_code == 1006


async def test_our_close_completes_the_closing_handshake(aiohttp_server: Any) -> None:
    closed_with: list[int | None] = []

    async def session(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for _ in ws:
            pass
        closed_with.append(ws.close_code)
        return ws

    url = await _serve(aiohttp_server, session)
    conn = await _open(url)
    conn.close(1000)
    async with asyncio.timeout(5):
        await conn.closed
    assert conn.close_code == 1000
    assert closed_with == [1000]


@pytest.mark.timeout(30)
async def test_a_server_that_stops_reading_pauses_writes_until_it_reads_again(aiohttp_server: Any) -> None:
    """Backpressure: the connection says it is not writable (the session then keeps audio in its
    bounded replay buffer) and calls back once the server reads again; nothing is lost on the way."""
    reading = asyncio.Event()
    received = bytearray()

    async def session(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        assert request.transport is not None
        request.transport.pause_reading()
        await reading.wait()
        request.transport.resume_reading()
        async for msg in ws:
            received.extend(msg.data)
        return ws

    url = await _serve(aiohttp_server, session)
    writable = asyncio.Event()
    conn = await _open(url, writable=writable)
    chunk = bytes(range(256)) * 256  # 64 KiB
    sent = 0
    while conn.writable and sent < 256 * 2**20:
        conn.send_binary(chunk)
        sent += len(chunk)
        await asyncio.sleep(0)
    assert not conn.writable, "the transport never reported backpressure"
    reading.set()
    async with asyncio.timeout(20):
        await writable.wait()
    assert conn.writable
    conn.close(1000)
    async with asyncio.timeout(20):
        await conn.closed
        while len(received) < sent:
            await asyncio.sleep(0.01)
    assert received == chunk * (sent // len(chunk))


@pytest.mark.parametrize("size", [0, 1, 125, 126, 160, 65535, 65536, 500 * 1024])
def test_audio_frames_parse_as_masked_binary_frames_of_every_length_class(size: int) -> None:
    """The audio framing (done here, not by websockets) as an RFC 6455 server reads it: FIN, binary,
    masked, every payload length encoding; two frames never share a mask."""
    from websockets.frames import Frame, Opcode
    from websockets.streams import StreamReader

    from bridge.ws_protocol import OP_BINARY, client_frame

    data = bytes(i % 251 for i in range(size))
    first, second = client_frame(OP_BINARY, data), client_frame(OP_BINARY, data)
    for wire in (first, second):
        reader = StreamReader()
        reader.feed_data(wire)
        parser = Frame.parse(reader.read_exact, mask=True, max_size=None)
        with pytest.raises(StopIteration) as done:
            next(parser)
        frame = done.value.value
        assert frame.opcode is Opcode.BINARY and frame.fin and frame.data == data
        assert not reader.buffer  # exactly one frame, nothing left over
    header = 2 + (0 if size < 126 else 2 if size < 65536 else 8)
    assert first[header : header + 4] != second[header : header + 4]


async def test_wss_checks_the_certificate_and_then_carries_the_session(tmp_path: Any, monkeypatch: Any) -> None:
    """Gladia's session URLs are wss://: the certificate is checked against the trust store (an unknown CA
    is a connect failure, never an unchecked connection), and a trusted one carries the session."""
    import ssl

    import trustme

    from bridge.stt import connection

    ca = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_tls)
    got_audio: list[bytes] = []

    async def session(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        msg = await ws.receive(timeout=5)
        got_audio.append(msg.data)
        await ws.send_str('{"type":"end_session"}')
        await ws.close()
        return ws

    app = web.Application()
    app.router.add_get("/v2/live", session)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=server_tls).start()
    url = f"wss://127.0.0.1:{port}/v2/live?token=t"
    try:
        other = tmp_path / "other-ca.pem"
        trustme.CA().cert_pem.write_to_path(str(other))
        monkeypatch.setenv("SSL_CERT_FILE", str(other))
        connection._tls_context.cache_clear()
        with pytest.raises(ConnectFailed, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
            await _open(url)

        ours = tmp_path / "our-ca.pem"
        ca.cert_pem.write_to_path(str(ours))
        monkeypatch.setenv("SSL_CERT_FILE", str(ours))
        connection._tls_context.cache_clear()
        got: list[bytes] = []
        conn = await _open(url, got)
        conn.send_binary(b"\xff" * 160)
        async with asyncio.timeout(5):
            await conn.closed
        assert got_audio == [b"\xff" * 160]
        assert got == [b'{"type":"end_session"}'] and conn.close_code == 1000
    finally:
        connection._tls_context.cache_clear()
        await runner.cleanup()


async def test_messages_in_the_same_packet_as_the_handshake_answer_are_not_lost(aiohttp_server: Any) -> None:
    """A server may put messages (here end_session and its close) in the very packet that answers the
    upgrade, before connect() has returned: the session must still see them. Here it must take the
    session as ended by the server, not open a new one."""
    from websockets.utils import accept_key

    from bridge.audio import ULAW_8K
    from bridge.settings import GladiaSettings
    from bridge.stt.stream import SttStream

    class OnePacketServer(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            self.transport, self.buffer, self.upgraded = transport, b"", False

        def data_received(self, data: bytes) -> None:
            if self.upgraded:  # the client's answer to our close frame: end the TCP connection
                self.transport.close()
                return
            self.buffer += data
            if b"\r\n\r\n" not in self.buffer:
                return
            key = next(
                line.split(b":", 1)[1].strip().decode()
                for line in self.buffer.split(b"\r\n")
                if line.lower().startswith(b"sec-websocket-key:")
            )
            end = b'{"type":"end_session","session_id":"s1"}'
            self.transport.write(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Accept: "
                + accept_key(key).encode()
                + b"\r\n\r\n"
                + bytes((0x81, len(end)))
                + end
                + bytes((0x88, 2))
                + (1000).to_bytes(2, "big")
            )
            self.upgraded = True

    loop = asyncio.get_running_loop()
    ws_server = await loop.create_server(OnePacketServer, "127.0.0.1", 0)
    ws_port = ws_server.sockets[0].getsockname()[1]
    posts: list[int] = []

    async def create(request: web.Request) -> web.Response:
        posts.append(1)
        return web.json_response({"id": f"s{len(posts)}", "url": f"ws://127.0.0.1:{ws_port}/v2/live"}, status=201)

    app = web.Application()
    app.router.add_post("/v2/live", create)
    api = await aiohttp_server(app, host="127.0.0.1")
    try:
        async with aiohttp.ClientSession() as http:
            session = SttStream(
                http=http,
                settings=GladiaSettings(api_url=f"http://127.0.0.1:{api.port}"),
                request_body={},
                audio_format=ULAW_8K,
                on_notice=lambda notice: None,
            )
            session.start()
            session.send_audio(b"\xff" * 160)
            assert session._task is not None
            async with asyncio.timeout(5):
                await asyncio.shield(session._task)
        assert session.ended_normally and posts == [1] and session.counters.connections == 1
    finally:
        ws_server.close()
