"""WebSocket framing (RFC 6455), sans-I/O: bytes in, whole messages and control events out (pure).

The phone side's upgraded socket (:mod:`bridge.phone_connection`) and the Gladia session socket
(:mod:`bridge.stt.connection`) both carry a small message every 20 ms per call, in each direction.
Going through a general WebSocket library costs a task wake-up, a queue hand-off and a message object
per frame; this reader turns the bytes of one ``data_received`` into messages on the caller's stack,
and the writers build a frame in one ``join``. What it implements and what it refuses:

* data frames, fragmented or not, text decoded as strict UTF-8 (1007 otherwise), a message over
  ``max_message`` bytes refused from its first header (1009), before any of it is buffered;
* control frames (ping, pong, close) between fragments, at most 125 bytes and never fragmented;
* the masking rule of each side: a client's frames must be masked, a server's must not (1002);
* no extension is ever negotiated, so a set RSV bit, an unknown opcode, a continuation with nothing
  to continue or a new message inside a fragmented one is a protocol error (1002);
* close frames: the code and the UTF-8 reason are checked (RFC 6455 7.4); an empty close is 1005.

After an error (a :class:`Failure` event) the reader hands out nothing but the peer's close frame, so
the shell can finish the closing handshake; after a close frame it reads nothing more.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass

from bridge.errors import BridgeError

try:
    from websockets.speedups import apply_mask
except ImportError:  # websockets built without its C extension (as websockets itself falls back)
    from websockets.utils import apply_mask

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 1.3
_U16 = struct.Struct("!H")
_U64 = struct.Struct("!Q")


@dataclass(frozen=True, slots=True)
class Ping:
    payload: bytes


@dataclass(frozen=True, slots=True)
class Pong:
    payload: bytes


@dataclass(frozen=True, slots=True)
class Close:
    """The peer's close frame: ``code`` 1005 when it had no payload (RFC 6455 7.1.5)."""

    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class Failure:
    """The peer broke RFC 6455: close the connection with ``code`` (1002, 1007 or 1009). What came
    before it in the same bytes is delivered first; after it the reader only looks for a close frame
    (so the closing handshake can finish), or, after a framing error it cannot read past, nothing."""

    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class Skipped:
    """A message over ``max_message`` bytes, skipped unread (a reader made with ``skip_oversized``):
    ``length`` is the length of the frame that went over the bound."""

    length: int


WsEvent = str | bytes | Ping | Pong | Close | Failure | Skipped  # a message, a control frame, an error


class WsProtocolError(BridgeError):
    """Raised inside the reader; the caller sees it as a :class:`Failure` event."""

    def __init__(self, reason: str, code: int = 1002) -> None:
        super().__init__(reason)
        self.reason, self.code = reason, code


class HandshakeError(BridgeError):
    """An upgrade request that is not a valid WebSocket opening handshake (answer HTTP 400)."""


def close_code_valid(code: int) -> bool:
    """A code a peer may send in a close frame (RFC 6455 7.4.1 and the IANA registry): 1000-1003,
    1007-1014, or 3000-4999. 1004, 1005, 1006 and 1015 are reserved, never sent."""
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


class FrameReader:
    """Frames in, events out; ``client_frames``: this side is the server (every frame is masked).

    :meth:`feed` returns the events of the bytes given, in order, and keeps a partial frame for the
    next call. The buffered part of an unfinished message is bounded by ``max_message`` (plus one
    frame header): a longer frame is refused from its header and its bytes are skipped unread.
    ``skip_oversized``: such a message (all its fragments) is skipped and reported as :class:`Skipped`,
    and reading goes on, instead of failing the connection with 1009 (a client reading a server that
    may send a message it does not need, e.g. Gladia's whole-call ``post_transcript``).
    """

    def __init__(self, *, client_frames: bool, max_message: int, skip_oversized: bool = False) -> None:
        self.client_frames = client_frames
        self.max_message = max_message
        self.skip_oversized = skip_oversized
        self._discarding = False  # the rest of a skipped fragmented message is skipped too
        self.failed = False  # after a Failure only a close frame is looked for
        self.done = False  # a close frame came, or bytes that cannot be framed: nothing more is read
        self._buf = b""
        self._skip = 0  # bytes of a refused frame still to come
        self._fragments: list[bytes] = []
        self._fragment_opcode = 0
        self._fragment_bytes = 0

    @property
    def buffered(self) -> int:
        """Bytes of an unfinished frame held for the next :meth:`feed`."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[WsEvent]:
        if not (self._buf or self._skip or self.failed or self.done or self._fragment_opcode or self._discarding):
            # The common case: the bytes are one whole unfragmented message (a 20 ms frame, an
            # acknowledgment). The general loop below reads it the same way, in more steps.
            n = len(data)
            b0 = data[0] if n > 2 else 0
            if b0 == 0x81 or b0 == 0x82:
                b1 = data[1]
                length, at = b1 & 0x7F, 2
                if length == 126:
                    length, at = ((data[2] << 8) | data[3], 4) if n > 4 else (-1, 0)
                elif length == 127:
                    length = -1  # a 64-bit length: the general path
                masked = b1 & 0x80
                if 0 <= length <= self.max_message and bool(masked) is self.client_frames:
                    if masked and at + 4 + length == n:
                        payload = apply_mask(data[at + 4 :], data[at : at + 4])
                    elif not masked and at + length == n:
                        payload = data[at:]
                    else:
                        payload = None
                    if payload is not None:
                        message = _message(b0 & 0x0F, payload)
                        self.failed = isinstance(message, Failure)
                        return [message]
        if self.done:
            return []
        if self._skip:
            skipped = min(self._skip, len(data))
            self._skip -= skipped
            data = data[skipped:]
        buf = self._buf + data if self._buf else data
        events: list[WsEvent] = []
        at, n = 0, len(buf)
        while n - at >= 2:
            try:
                b0, b1 = buf[at], buf[at + 1]
                length = b1 & 0x7F
                head = 2
                if length == 126:
                    if n - at < 4:
                        break
                    length = _U16.unpack_from(buf, at + 2)[0]
                    head = 4
                elif length == 127:
                    if n - at < 10:
                        break
                    length = _U64.unpack_from(buf, at + 2)[0]
                    if length >> 63:
                        raise WsProtocolError("frame length with its most significant bit set")
                    head = 10
                masked = b1 & 0x80
                if bool(masked) is not self.client_frames:
                    raise WsProtocolError("unmasked frame from a client" if self.client_frames else "masked frame")
                opcode = b0 & 0x0F
                if b0 & 0x70:
                    raise WsProtocolError("reserved bit set (no extension was negotiated)")
                end = at + head + (4 if masked else 0) + length
                if opcode >= 0x8:
                    if length > 125 or not b0 & 0x80:
                        raise WsProtocolError("control frame over 125 bytes or fragmented")
                elif self._discarding:
                    if opcode != OP_CONT:
                        raise WsProtocolError("a new message inside a fragmented one")
                    self._skip, at = max(0, end - n), min(end, n)
                    self._discarding = not b0 & 0x80
                    continue
                elif length + self._fragment_bytes > self.max_message and self.skip_oversized:
                    if opcode == OP_CONT and not self._fragment_opcode:
                        raise WsProtocolError("a continuation frame with no message to continue")
                    if opcode != OP_CONT and self._fragment_opcode:
                        raise WsProtocolError("a new message inside a fragmented one")
                    self._skip, at = max(0, end - n), min(end, n)
                    self._fragment_opcode, self._fragments, self._fragment_bytes = 0, [], 0
                    self._discarding = not b0 & 0x80
                    if not self.failed:
                        events.append(Skipped(length))
                    continue
                elif length + self._fragment_bytes > self.max_message:
                    self._skip, at = max(0, end - n), min(end, n)
                    self._fragment_opcode, self._fragments, self._fragment_bytes = 0, [], 0
                    if self.failed:
                        continue
                    self.failed = True
                    events.append(Failure(1009, f"message over {self.max_message} bytes"))
                    continue
                if end > n:
                    break
                if masked:
                    payload = apply_mask(buf[at + head + 4 : end], buf[at + head : at + head + 4])
                else:
                    payload = buf[at + head : end]
                at = end
                event = self._frame(b0 & 0x80, opcode, payload)
            except WsProtocolError as exc:
                self.done = True  # the stream of frames cannot be followed any further
                if not self.failed:
                    self.failed = True
                    events.append(Failure(exc.code, exc.reason))
                break
            if event is None:
                continue
            if isinstance(event, Close):
                self.done = True
                events.append(event)
                break
            if isinstance(event, Failure):
                if not self.failed:
                    self.failed = True
                    events.append(event)
            elif not self.failed:
                events.append(event)
        self._buf = bytes(buf[at:]) if at < n and not self.done else b""
        return events

    def _frame(self, fin: int, opcode: int, payload: bytes) -> WsEvent | None:
        if opcode in (OP_TEXT, OP_BINARY):
            if self._fragment_opcode:
                raise WsProtocolError("a new message inside a fragmented one")
            if fin:
                return _message(opcode, payload)
            self._fragment_opcode, self._fragments, self._fragment_bytes = opcode, [payload], len(payload)
            return None
        if opcode == OP_CONT:
            if not self._fragment_opcode:
                raise WsProtocolError("a continuation frame with no message to continue")
            self._fragments.append(payload)
            self._fragment_bytes += len(payload)
            if not fin:
                return None
            opcode, whole = self._fragment_opcode, b"".join(self._fragments)
            self._fragment_opcode, self._fragments, self._fragment_bytes = 0, [], 0
            return _message(opcode, whole)
        if opcode == OP_PING:
            return Ping(bytes(payload))
        if opcode == OP_PONG:
            return Pong(bytes(payload))
        if opcode == OP_CLOSE:
            return _close(payload)
        raise WsProtocolError(f"unknown opcode {opcode:#x}")


def _message(opcode: int, payload: bytes) -> str | bytes | Failure:
    if opcode == OP_BINARY:
        return bytes(payload)
    try:
        return str(payload, "utf-8")
    except UnicodeDecodeError:
        return Failure(1007, "text message is not valid UTF-8")  # framing intact: reading goes on


def _close(payload: bytes) -> Close:
    if not payload:
        return Close(1005, "")
    if len(payload) == 1:
        raise WsProtocolError("close frame with a one-byte payload")
    code = _U16.unpack_from(payload)[0]
    if not close_code_valid(code):
        raise WsProtocolError(f"close code {code} may not be sent")
    try:
        reason = str(payload[2:], "utf-8")
    except UnicodeDecodeError:
        raise WsProtocolError("close reason is not valid UTF-8", 1007) from None
    return Close(code, reason)


# -- writing --------------------------------------------------------------------------------------


def _head(opcode: int, n: int, mask_bit: int) -> bytes:
    if n < 126:
        return bytes((0x80 | opcode, mask_bit | n))
    if n < 65536:
        return bytes((0x80 | opcode, mask_bit | 126)) + _U16.pack(n)
    return bytes((0x80 | opcode, mask_bit | 127)) + _U64.pack(n)


def server_frame(opcode: int, payload: bytes) -> bytes:
    """One complete (FIN), unmasked frame as a server sends it."""
    return _head(opcode, len(payload), 0) + payload


_KEYS: list[bytes] = []  # client frame masks, drawn from the OS's CSPRNG (RFC 6455 10.3) 1,024 at a time


def _mask_key() -> bytes:
    pool = os.urandom(4096)
    _KEYS.extend(pool[i : i + 4] for i in range(0, 4096, 4))
    return _KEYS.pop()


def client_frame(opcode: int, payload: bytes) -> bytes:
    """One complete (FIN), masked frame as a client sends it; each frame has a mask of its own."""
    key = _KEYS.pop() if _KEYS else _mask_key()
    n = len(payload)
    head = bytes((0x80 | opcode, 0x80 | n)) if n < 126 else _head(opcode, n, 0x80)
    return head + key + apply_mask(payload, key)


def close_payload(code: int, reason: str = "") -> bytes:
    """A close frame's payload; 1005 (no code) is an empty one. The reason is cut to fit 125 bytes."""
    if code == 1005:
        return b""
    return _U16.pack(code) + reason.encode()[:123].decode(errors="ignore").encode()  # whole characters


# -- the opening handshake (server side) -----------------------------------------------------------


def accept_key(key: str) -> str:
    """``Sec-WebSocket-Accept`` for a client's ``Sec-WebSocket-Key`` (RFC 6455 4.2.2)."""
    return base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()


def server_handshake(headers: Mapping[str, str], protocols: tuple[str, ...]) -> tuple[dict[str, str], str | None]:
    """Check a client's opening handshake; return the 101 response's headers and the subprotocol
    chosen (the client's first one that ``protocols`` has, else none).

    Raises:
        HandshakeError: not a WebSocket upgrade, another version, or a bad key.
    """
    if headers.get("Upgrade", "").strip().lower() != "websocket":
        raise HandshakeError("not a WebSocket upgrade (Upgrade: websocket)")
    if "upgrade" not in (t.strip().lower() for t in headers.get("Connection", "").split(",")):
        raise HandshakeError("no Connection: upgrade")
    if headers.get("Sec-WebSocket-Version", "").strip() != "13":
        raise HandshakeError("unsupported Sec-WebSocket-Version (13 only)")
    key = headers.get("Sec-WebSocket-Key", "").strip()
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            raise HandshakeError("Sec-WebSocket-Key is not 16 bytes in base64")
    except ValueError:
        raise HandshakeError("Sec-WebSocket-Key is not base64") from None
    response = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Accept": accept_key(key)}
    chosen = None
    offered = [p.strip() for p in headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
    for name in offered:
        if name in protocols:
            chosen = name
            response["Sec-WebSocket-Protocol"] = name
            break
    return response, chosen
