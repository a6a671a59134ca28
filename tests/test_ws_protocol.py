"""WebSocket framing (bridge.ws_protocol), pure: RFC 6455's own example frames and handshake, frames
written by an independent implementation (the ``websockets`` package's sans-I/O protocols) read here,
ours read by it, every split of the bytes, and each way a peer can break the protocol."""

from __future__ import annotations

import os
import random

import pytest
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

from bridge.ws_protocol import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_TEXT,
    Close,
    Failure,
    FrameReader,
    HandshakeError,
    Ping,
    Pong,
    Skipped,
    WsEvent,
    accept_key,
    client_frame,
    close_payload,
    server_frame,
    server_handshake,
)

# RFC 6455 5.7, byte for byte
HELLO_UNMASKED = bytes.fromhex("810548656c6c6f")
HELLO_MASKED = bytes.fromhex("818537fa213d7f9f4d5158")
HEL_LO_FRAGMENTED = bytes.fromhex("010348656c") + bytes.fromhex("80026c6f")
PING_UNMASKED = bytes.fromhex("890548656c6c6f")
PONG_MASKED = bytes.fromhex("8a8537fa213d7f9f4d5158")


def server_reader(max_message: int = 65536) -> FrameReader:
    return FrameReader(client_frames=True, max_message=max_message)


def client_reader(max_message: int = 65536) -> FrameReader:
    return FrameReader(client_frames=False, max_message=max_message)


def feed_in_pieces(reader: FrameReader, data: bytes, cuts: list[int]) -> list[WsEvent]:
    events: list[WsEvent] = []
    at = 0
    for cut in [*sorted(cuts), len(data)]:
        events.extend(reader.feed(data[at:cut]))
        at = cut
    return events


def test_rfc_6455_example_frames() -> None:
    assert client_reader().feed(HELLO_UNMASKED) == ["Hello"]
    assert server_reader().feed(HELLO_MASKED) == ["Hello"]
    assert client_reader().feed(HEL_LO_FRAGMENTED) == ["Hello"]
    assert client_reader().feed(PING_UNMASKED) == [Ping(b"Hello")]
    assert server_reader().feed(PONG_MASKED) == [Pong(b"Hello")]
    body256 = os.urandom(256)
    assert client_reader().feed(bytes.fromhex("827e0100") + body256) == [body256]
    body64k = os.urandom(65536)
    assert client_reader().feed(bytes.fromhex("827f0000000000010000") + body64k) == [body64k]
    # and the same bytes from our writer, for the unmasked ones
    assert server_frame(OP_TEXT, b"Hello") == HELLO_UNMASKED
    assert server_frame(OP_PING, b"Hello") == PING_UNMASKED
    assert server_frame(OP_BINARY, body256) == bytes.fromhex("827e0100") + body256
    assert server_frame(OP_BINARY, body64k) == bytes.fromhex("827f0000000000010000") + body64k


def test_rfc_6455_handshake_example() -> None:
    """RFC 6455 1.3: the key "dGhlIHNhbXBsZSBub25jZQ==" is answered "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="."""
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    headers = {
        "Upgrade": "websocket",
        "Connection": "keep-alive, Upgrade",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Protocol": "chat, audio.drachtio.org",
    }
    response, chosen = server_handshake(headers, ("audio.drachtio.org",))
    assert chosen == "audio.drachtio.org" and response["Sec-WebSocket-Protocol"] == "audio.drachtio.org"
    assert response["Sec-WebSocket-Accept"] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert server_handshake({**headers, "Sec-WebSocket-Protocol": "chat"}, ("x",))[1] is None
    for broken in (
        {"Upgrade": "h2c"},
        {"Connection": "keep-alive"},
        {"Sec-WebSocket-Version": "8"},
        {"Sec-WebSocket-Key": "c2hvcnQ="},
        {"Sec-WebSocket-Key": "not base64!"},
    ):
        with pytest.raises(HandshakeError):
            server_handshake({**headers, **broken}, ())


def _websockets_client() -> ClientProtocol:
    """A connected client of the websockets package (the handshake answered by its own server)."""
    client = ClientProtocol(parse_uri("ws://bridge.test/twilio/stream"))
    request = client.connect()
    client.send_request(request)
    client.data_to_send()
    server = ServerProtocol()
    server.receive_data(b"".join([request.serialize()]))
    (req,) = server.events_received()
    assert isinstance(req, Request)
    server.send_response(server.accept(req))
    client.receive_data(b"".join(server.data_to_send()))
    client.events_received()
    assert client.state is State.OPEN
    return client


def test_frames_a_real_client_writes_are_read_here_however_the_bytes_are_split() -> None:
    """Masked frames from websockets' client: text, binary, a text message in three fragments with a
    ping between them, non-ASCII text, a close; fed whole, byte by byte and at random cuts."""
    client = _websockets_client()
    media = '{"event":"media","media":{"payload":"/////w=="}}'
    client.send_text(media.encode())
    client.send_binary(b"\x00\x01" * 100)
    client.send_text("Grüß ".encode(), fin=False)
    client.send_continuation(b"Gott, ", fin=False)
    client.send_ping(b"are you there")
    client.send_continuation("☎".encode(), fin=True)
    client.send_close(1000, "done")
    wire = b"".join(client.data_to_send())
    expected: list[WsEvent] = [media, b"\x00\x01" * 100, Ping(b"are you there"), "Grüß Gott, ☎", Close(1000, "done")]
    assert server_reader().feed(wire) == expected
    assert feed_in_pieces(server_reader(), wire, list(range(1, len(wire)))) == expected
    rng = random.Random(6455)
    for _ in range(200):
        cuts = rng.sample(range(1, len(wire)), rng.randint(1, 12))
        assert feed_in_pieces(server_reader(), wire, cuts) == expected


def test_frames_written_here_are_read_by_a_real_client_and_server() -> None:
    """Our server frames read by websockets' client; our masked client frames by its server."""
    client = _websockets_client()
    client.receive_data(
        server_frame(OP_TEXT, "☎ hello".encode())
        + server_frame(OP_BINARY, b"\xff" * 70000)
        + server_frame(OP_CLOSE, close_payload(1008, "no audio for 30 s"))
    )
    frames = [e for e in client.events_received() if isinstance(e, Frame)]
    assert [(f.opcode, bytes(f.data)) for f in frames[:2]] == [
        (Opcode.TEXT, "☎ hello".encode()),
        (Opcode.BINARY, b"\xff" * 70000),
    ]
    assert client.close_rcvd is not None
    assert (client.close_rcvd.code, client.close_rcvd.reason) == (1008, "no audio for 30 s")

    server = ServerProtocol()
    request = _websockets_client().connect()
    server.receive_data(request.serialize())
    (req,) = server.events_received()
    assert isinstance(req, Request)
    server.send_response(server.accept(req))
    server.data_to_send()
    server.receive_data(client_frame(OP_BINARY, b"\x01\x02\x03" * 50) + client_frame(OP_TEXT, b"{}"))
    got = [(f.opcode, bytes(f.data)) for f in server.events_received() if isinstance(f, Frame)]
    assert got == [(Opcode.BINARY, b"\x01\x02\x03" * 50), (Opcode.TEXT, b"{}")]


def test_a_close_reason_is_cut_to_whole_characters() -> None:
    payload = close_payload(1011, "é" * 100)
    assert len(payload) <= 125 and payload[2:].decode() == "é" * 61
    assert close_payload(1005) == b""


def _masked(first: int, payload: bytes, length_byte: int | None = None) -> bytes:
    key = b"\x01\x02\x03\x04"
    body = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    n = len(payload) if length_byte is None else length_byte
    return bytes((first, 0x80 | n)) + key + body


CLOSE_1000 = _masked(0x88, b"\x03\xe8")


@pytest.mark.parametrize(
    ("wire", "code", "reason"),
    [
        (HELLO_UNMASKED, 1002, "unmasked frame from a client"),
        (_masked(0xC1, b"x"), 1002, "reserved bit"),
        (_masked(0x83, b"x"), 1002, "unknown opcode"),
        (_masked(0x80, b"x"), 1002, "continuation frame with no message"),
        (_masked(0x01, b"a") + _masked(0x81, b"b"), 1002, "new message inside a fragmented one"),
        (_masked(0x09, b"x"), 1002, "control frame"),
        (_masked(0x89, b"x" * 126, 126)[:2] + b"\x00\x7e" + b"\x00" * 130, 1002, "control frame"),
        (_masked(0x88, b"\x03"), 1002, "one-byte payload"),
        (_masked(0x88, b"\x03\xed"), 1002, "close code 1005 may not be sent"),
        (_masked(0x88, b"\x03\xe8\xff"), 1007, "close reason"),
        (bytes((0x82, 0xFF)) + b"\x80" + b"\x00" * 7 + b"\x00" * 4, 1002, "most significant bit"),
    ],
)
def test_each_protocol_violation_is_a_failure_with_its_close_code(wire: bytes, code: int, reason: str) -> None:
    reader = server_reader()
    events = reader.feed(_masked(0x81, b"first") + wire + CLOSE_1000)
    assert events[0] == "first"
    (failure,) = [e for e in events if isinstance(e, Failure)]
    assert failure.code == code and reason in failure.reason
    assert reader.done  # the frames cannot be followed any further: the close after it is not seen
    assert reader.feed(CLOSE_1000) == []


def test_a_server_frame_that_is_masked_is_refused_by_the_client_side() -> None:
    (failure,) = client_reader().feed(HELLO_MASKED)
    assert isinstance(failure, Failure) and failure.code == 1002


def test_an_oversized_message_is_refused_from_its_header_and_its_bytes_are_skipped() -> None:
    """1009 as soon as the header says too long, nothing of it buffered; the rest of the frame is
    skipped unread, later data is ignored, and the peer's close frame is still seen."""
    reader = server_reader(max_message=1000)
    big = _masked(0x81, b"x" * 5000, 126)[:2] + b"\x13\x88" + b"\x01\x02\x03\x04" + b"y" * 5000
    events = reader.feed(_masked(0x81, b"ok") + big[:300])
    assert events == ["ok", Failure(1009, "message over 1000 bytes")]
    assert reader.buffered == 0  # nothing of the refused frame is held
    rest = big[300:] + _masked(0x81, b"ignored after the failure") + CLOSE_1000
    assert feed_in_pieces(reader, rest, [1000, 4000, 4710]) == [Close(1000, "")]
    # fragments count towards the bound too
    frags = server_reader(max_message=10)
    assert frags.feed(_masked(0x01, b"123456") + _masked(0x80, b"789012")) == [Failure(1009, "message over 10 bytes")]


def test_invalid_utf8_is_1007_and_the_closing_handshake_still_completes() -> None:
    reader = server_reader()
    events = reader.feed(_masked(0x81, b'{"event": "\xff\xfe"}') + _masked(0x81, b"later") + CLOSE_1000)
    assert events == [Failure(1007, "text message is not valid UTF-8"), Close(1000, "")]
    split = server_reader()  # a character split over two fragments is fine
    assert split.feed(_masked(0x01, "é".encode()[:1]) + _masked(0x80, "é".encode()[1:])) == ["é"]


def test_an_empty_close_is_1005_and_nothing_is_read_after_a_close() -> None:
    reader = server_reader()
    assert reader.feed(_masked(0x88, b"")) == [Close(1005, "")]
    assert reader.feed(_masked(0x81, b"late")) == []


def test_the_one_frame_shortcut_and_the_general_reader_agree() -> None:
    """Whole single frames take a shortcut; the same bytes split in two take the general path: the
    events must be the same, for every length class and for the errors the shortcut can meet."""
    cases = [
        _masked(0x81, b"x" * n)
        if n < 126
        else _masked(0x81, b"x" * n, 126)[:2] + n.to_bytes(2, "big") + b"\x00" * 4 + b"x" * n
        for n in (0, 1, 125, 126, 1000)
    ]
    cases += [_masked(0x82, b"\x00\xff" * 30), _masked(0x81, b"\xff\xfe"), HELLO_UNMASKED, _masked(0x89, b"ping")]
    for wire in cases:
        whole = server_reader(max_message=500).feed(wire)
        split = feed_in_pieces(server_reader(max_message=500), wire, [1])
        assert whole == split, wire[:8]


def _websockets_server() -> ServerProtocol:
    """A connected server of the websockets package: what it sends is what Gladia's server would."""
    server = ServerProtocol()
    server.receive_data(_websockets_client().connect().serialize())
    (req,) = server.events_received()
    assert isinstance(req, Request)
    server.send_response(server.accept(req))
    server.data_to_send()
    return server


def test_a_client_that_skips_oversized_messages_reads_on_past_them() -> None:
    """skip_oversized (the Gladia session socket): a message over the bound, whole or in fragments with a
    ping between them, is skipped unread and reported once; the messages around it are read, however
    the bytes are split, and no more than the bound is ever buffered."""
    server = _websockets_server()
    server.send_text(b'{"type":"transcript"}')
    server.send_text(b"x" * 5000)  # over the bound, in one frame
    server.send_text(b'{"type":"speech_start"}')
    server.send_text(b"y" * 600, fin=False)  # a message that goes over the bound at its third fragment
    server.send_continuation(b"y" * 300, fin=False)
    server.send_ping(b"still here")
    server.send_continuation(b"y" * 600, fin=False)
    server.send_continuation(b"y" * 600, fin=True)
    server.send_text(b'{"type":"end_session"}')
    server.send_close(1000, "")
    wire = b"".join(server.data_to_send())
    expected: list[WsEvent] = [
        '{"type":"transcript"}',
        Skipped(5000),
        '{"type":"speech_start"}',
        Ping(b"still here"),
        Skipped(600),
        '{"type":"end_session"}',
        Close(1000, ""),
    ]

    def reader() -> FrameReader:
        return FrameReader(client_frames=False, max_message=1024, skip_oversized=True)

    assert reader().feed(wire) == expected
    rng = random.Random(29)
    for _ in range(200):
        r = reader()
        cuts = sorted(rng.sample(range(1, len(wire)), rng.randint(1, 30)))
        events: list[WsEvent] = []
        at = 0
        for cut in [*cuts, len(wire)]:
            events.extend(r.feed(wire[at:cut]))
            assert r.buffered <= 1024 + 14
            at = cut
        assert events == expected
    # without the switch the same bytes fail the connection with 1009, as before
    strict = client_reader(max_message=1024).feed(wire)
    assert strict[:2] == ['{"type":"transcript"}', Failure(1009, "message over 1024 bytes")]
