"""Sends call-control requests: an :class:`~bridge.control.rest.HttpRequest` over HTTP, an api command over
FreeSWITCH's event socket (the I/O shell of :mod:`bridge.control.rest` and :mod:`bridge.control.esl`).

Both are bounded by one deadline for the whole exchange and turn every network failure into
:class:`~bridge.errors.ControlError`, whose message names the operation and the host and never a credential
(the exception is raised ``from None``: an aiohttp exception can carry the request's headers). An HTTP answer,
whatever its status, is returned, not raised: what a 404 or a 409 means is the caller's to decide per carrier.
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import unquote, urlsplit

import aiohttp
from yarl import URL

from bridge.control import esl
from bridge.control.rest import HttpRequest
from bridge.errors import ControlError

BODY_KEPT = 2048  # bytes of an answer's body returned (enough for a carrier's error JSON)
ESL_PORT = 8021  # FreeSWITCH's default event-socket port (event_socket.conf.xml)


def _where(url: str) -> str:
    """The URL without its query (an ARI endpoint is a phone number) and without any user info."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # not a port number: the request will fail on it, the message still names the host
        port = ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


async def send_request(http: aiohttp.ClientSession, request: HttpRequest, timeout: float) -> tuple[int, str]:
    """Send ``request`` once (no redirect followed, no retry) and read the start of the answer.

    Args:
        http: the bridge's client session.
        request: built by :mod:`bridge.control.rest`; its URL is sent byte for byte (quoted ids stay quoted).
        timeout: seconds for the whole exchange, connection to the last byte kept.

    Returns:
        The HTTP status and the first :data:`BODY_KEPT` bytes of the body as text.

    Raises:
        ControlError: no connection, a broken answer, or no answer within ``timeout``.
    """
    what = f"{request.method} {_where(request.url)}"
    try:
        async with asyncio.timeout(timeout):
            async with http.request(
                request.method,
                URL(request.url, encoded=True),
                headers=request.headers,
                data=request.body,
                allow_redirects=False,  # a redirect elsewhere must not receive the Authorization header
            ) as response:
                body = bytearray()
                while len(body) < BODY_KEPT:
                    chunk = await response.content.read(BODY_KEPT - len(body))
                    if not chunk:
                        break
                    body += chunk
                return response.status, body.decode("utf-8", "replace")
    except TimeoutError:
        raise ControlError(f"{what}: no answer within {timeout:g} s") from None
    except (aiohttp.ClientError, OSError) as exc:
        raise ControlError(f"{what}: {type(exc).__name__}") from None


def parse_esl_url(url: str) -> tuple[str, int, str]:
    """``esl://:password@host:port`` as host, port (8021 if absent) and the password (percent-decoded).

    Raises:
        ControlError: not an ``esl://`` URL with a host and a password (the message does not show it).
    """
    try:
        parts = urlsplit(url)
        port = parts.port or ESL_PORT
    except ValueError:
        raise ControlError("the FreeSWITCH event-socket URL is not a URL (esl://:password@host:8021)") from None
    if parts.scheme != "esl" or not parts.hostname or parts.password is None:
        raise ControlError("the FreeSWITCH event-socket URL must be esl://:password@host:port")
    return parts.hostname, port, unquote(parts.password)


async def esl_api(url: str, command: str, timeout: float) -> str:
    """Run one ``api`` command on FreeSWITCH: connect, authenticate, send, read its ``api/response``, close.

    Args:
        url: ``esl://:password@host:port`` (the ``freeswitch_esl_url`` setting).
        command: e.g. :func:`bridge.control.esl.uuid_transfer`'s.
        timeout: seconds for the whole exchange.

    Returns:
        The command's output (``+OK ...``).

    Raises:
        ControlError: no connection, the password refused, an output starting ``-ERR``/``-USAGE``, the
            connection closed early, or nothing within ``timeout``.
    """
    host, port, password = parse_esl_url(url)
    request = esl.api(command)
    where = f"FreeSWITCH event socket {host}:{port}"
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            return await _exchange(reader, writer, password, request, where)
    except TimeoutError:
        raise ControlError(f"{where}: no answer within {timeout:g} s") from None
    except OSError as exc:
        raise ControlError(f"{where}: {type(exc).__name__}") from None
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 1.0)


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, password: str, request: bytes, where: str
) -> str:
    client = esl.EslClient()
    events: list[esl.EslEvent] = []

    async def next_event() -> esl.EslEvent:
        while not events:
            data = await reader.read(65536)
            if not data:
                raise ControlError(f"{where}: closed the connection")
            events.extend(client.feed(data))
        return events.pop(0)

    stage = "auth"
    while True:
        event = await next_event()
        kind = event.content_type
        if kind == "text/disconnect-notice":
            raise ControlError(f"{where}: disconnected ({stage})")
        if kind == "text/rude-rejection":  # the socket's ACL refused this address ("Access Denied, go away.")
            raise ControlError(f"{where}: this address is refused by the event socket's ACL")
        if stage == "auth" and kind == "auth/request":
            writer.write(esl.auth(password))
            await writer.drain()
            stage = "auth reply"
        elif stage == "auth reply" and kind == "command/reply":
            if not event.reply_text.startswith("+OK"):
                raise ControlError(f"{where}: the event-socket password was refused")
            writer.write(request)
            await writer.drain()
            stage = "api"
        elif stage == "api" and kind == "api/response":
            output = event.text.strip()
            if output.startswith("-"):  # -ERR ..., -USAGE: ...
                raise ControlError(f"{where}: {output[:200]}")
            return output
        # Anything else (events, log lines) is not an answer to this exchange: read on.
