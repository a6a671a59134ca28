"""FreeSWITCH's event socket (ESL), sans-I/O: bytes in, framed messages out; commands built as bytes (pure).

The bridge talks to FreeSWITCH only to hand a forked call over (``uuid_transfer``), one short inbound
connection per transfer, so it needs a small part of the protocol
(https://developer.signalwire.com/freeswitch/FreeSWITCH-Explained/Client-and-Developer-Interfaces/Event-Socket-Library/;
``src/mod/event_handlers/mod_event_socket/mod_event_socket.c``):

* each message is a block of ``Name: value`` lines ended by an empty line, then, when the block has
  ``Content-Length``, exactly that many bytes of body;
* on connect the server sends ``Content-Type: auth/request``; the client answers ``auth <password>``;
  the server replies ``command/reply`` with ``Reply-Text: +OK accepted`` or ``-ERR invalid`` (and then
  ``text/disconnect-notice``);
* ``api <command>`` is answered by ``api/response`` whose body is the command's output (``+OK ...``,
  ``-ERR ...`` or ``-USAGE: ...``).

A client command is one line ended by an empty line, so a newline inside a value would start a second
command: every builder refuses control characters, and :func:`uuid_transfer` refuses spaces and quotes
in its arguments (FreeSWITCH splits api arguments on spaces, honouring quotes). The reader is bounded: a
header block over ``max_header`` bytes or a body over ``max_body`` raises :class:`EslProtocolError` before
it is buffered whole. (A maintained asyncio client exists on PyPI, ``genesis``; one request per transfer
does not justify a dependency.)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from bridge.errors import ControlError

MAX_HEADER = 16 * 1024
MAX_BODY = 1024 * 1024


class EslProtocolError(ControlError, ValueError):
    """FreeSWITCH's event socket sent something this client cannot frame (or over its bounds)."""


@dataclass(frozen=True, slots=True)
class EslEvent:
    """One framed ESL message: its headers (names as sent) and its body (empty without Content-Length)."""

    headers: Mapping[str, str]
    body: bytes = b""

    def header(self, name: str, default: str = "") -> str:
        """A header's value, the name matched without regard to case."""
        return _lookup(self.headers, name, default)

    @property
    def content_type(self) -> str:
        return self.header("Content-Type")

    @property
    def reply_text(self) -> str:
        """``Reply-Text`` of a ``command/reply`` (``+OK accepted``, ``-ERR invalid``)."""
        return self.header("Reply-Text")

    @property
    def text(self) -> str:
        """The body as text (an ``api/response``'s output), undecodable bytes replaced."""
        return self.body.decode("utf-8", "replace")


class EslClient:
    """Frames the bytes an ESL server sends; call :meth:`feed` with each chunk as it arrives.

    Args:
        max_header: the largest header block accepted, in bytes.
        max_body: the largest ``Content-Length`` accepted.
    """

    def __init__(self, *, max_header: int = MAX_HEADER, max_body: int = MAX_BODY) -> None:
        self._buffer = bytearray()
        self._max_header = max_header
        self._max_body = max_body
        self._pending: dict[str, str] | None = None  # headers of a message whose body is still coming
        self._body_length = 0
        self._failed = False

    def feed(self, data: bytes) -> list[EslEvent]:
        """Every message completed by ``data`` (none, one or several), in order.

        Raises:
            EslProtocolError: a header line without ``:``, a bad ``Content-Length``, or a header block or
                body over its bound. The client is then unusable (the connection should be closed).
        """
        if self._failed:
            raise EslProtocolError("the event socket stream already failed")
        self._buffer += data
        events: list[EslEvent] = []
        try:
            while (event := self._next()) is not None:
                events.append(event)
        except EslProtocolError:
            self._failed = True
            raise
        return events

    def _next(self) -> EslEvent | None:
        if self._pending is None:
            # Blank lines between messages carry nothing (some servers add one after a body).
            start = 0
            while start < len(self._buffer) and self._buffer[start] in (0x0A, 0x0D):
                start += 1
            del self._buffer[:start]
            end, skip = _block_end(self._buffer)
            if end < 0:
                if len(self._buffer) > self._max_header:
                    raise EslProtocolError(f"an ESL header block over {self._max_header} bytes")
                return None
            if end > self._max_header:
                raise EslProtocolError(f"an ESL header block over {self._max_header} bytes")
            headers = _parse_headers(bytes(self._buffer[:end]))
            del self._buffer[: end + skip]
            self._body_length = _content_length(headers, self._max_body)
            self._pending = headers
        if len(self._buffer) < self._body_length:
            return None
        body = bytes(self._buffer[: self._body_length])
        del self._buffer[: self._body_length]
        headers, self._pending = self._pending, None
        return EslEvent(headers, body)


def _block_end(buffer: bytearray) -> tuple[int, int]:
    """Where the header block ends (the empty line) and the length of that terminator; -1 if not yet."""
    lf = buffer.find(b"\n\n")
    crlf = buffer.find(b"\r\n\r\n")
    if crlf >= 0 and (lf < 0 or crlf < lf):
        return crlf, 4
    return lf, 2 if lf >= 0 else 0


def _parse_headers(block: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for raw in block.decode("utf-8", "replace").split("\n"):
        line = raw.rstrip("\r")
        name, colon, value = line.partition(":")
        if not colon or not name.strip():
            raise EslProtocolError(f"an ESL header line without a name: {line[:80]!r}")
        headers[name.strip()] = value.strip()
    return headers


def _lookup(headers: Mapping[str, str], name: str, default: str) -> str:
    wanted = name.lower()
    return next((v for k, v in headers.items() if k.lower() == wanted), default)


def _content_length(headers: Mapping[str, str], max_body: int) -> int:
    raw = _lookup(headers, "Content-Length", "")
    if not raw:
        return 0
    if not raw.isdigit() or not raw.isascii():
        raise EslProtocolError(f"an ESL Content-Length that is not a number: {raw[:20]!r}")
    length = int(raw)
    if length > max_body:
        raise EslProtocolError(f"an ESL body of {length} bytes, over {max_body}")
    return length


def _one_line(value: str, what: str) -> str:
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise ControlError(f"an ESL {what} cannot hold a control character (it would end the command)")
    return value


def auth(password: str) -> bytes:
    """The answer to ``auth/request``: ``auth <password>`` and the empty line.

    Raises:
        ControlError: the password holds a control character (the message does not show it).
    """
    return f"auth {_one_line(password, 'password')}\n\n".encode()


def api(command: str) -> bytes:
    """A blocking ``api <command>`` request; the server answers one ``api/response``.

    Raises:
        ControlError: the command is empty or holds a control character (a newline would be a second command).
    """
    if not command.strip():
        raise ControlError("an empty ESL api command")
    return f"api {_one_line(command, 'command')}\n\n".encode()


def _argument(value: str, what: str) -> str:
    _one_line(value, what)
    if not value or value.startswith("-") or any(c.isspace() or c in "'\"`" for c in value):
        # A space would split the argument, a quote would join the next ones, a leading "-" reads as
        # uuid_transfer's -bleg/-both flag.
        raise ControlError(f"an ESL {what} must be one word without quotes: {value[:64]!r}")
    return value


def uuid_transfer(uuid: str, destination: str, dialplan: str = "inline", context: str | None = None) -> str:
    """The api command that sends channel ``uuid`` into the dialplan at ``destination``.

    ``uuid_transfer <uuid> [-bleg|-both] <dest-exten> [<dialplan>] [<context>]`` (signalwire/freeswitch@44f78e9
    ``mod_commands.c`` ``TRANSFER_SYNTAX``); this transfers the channel itself (no ``-bleg``/``-both``). With
    the ``inline`` dialplan ``destination`` is an application list (``bridge:sofia/gateway/gw1/+15551230000``,
    see :func:`inline_bridge`; the inline form is UNVERIFIED against a first-party page, so an operator may
    name an XML extension and its dialplan/context instead).

    Raises:
        ControlError: an argument is empty, holds a space, a quote or a control character, or starts with ``-``.
    """
    words = [_argument(uuid, "uuid"), _argument(destination, "destination"), _argument(dialplan, "dialplan")]
    if context is not None:
        words.append(_argument(context, "context"))
    return "uuid_transfer " + " ".join(words)


def inline_bridge(dial_string: str) -> str:
    """An ``inline`` dialplan destination bridging to ``dial_string`` (``sofia/gateway/gw1/+15551230000``).

    Raises:
        ControlError: ``dial_string`` holds ``,`` (the inline dialplan's application separator: it would run
            a second application) or anything :func:`uuid_transfer` refuses.
    """
    if "," in dial_string:
        raise ControlError("an ESL dial string cannot hold ',' (it would start a second inline application)")
    return _argument(f"bridge:{_argument(dial_string, 'dial string')}", "destination")
