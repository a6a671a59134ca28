"""FreeSWITCH's event socket: the sans-I/O reader (bridge.control.esl) framing the documented server messages
however they are split, the command builders refusing what would inject a second command, and esl_api
(bridge.control.send) against a loopback fake FreeSWITCH speaking the documented protocol."""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from bridge.control import esl
from bridge.control.send import esl_api, parse_esl_url
from bridge.errors import ControlError

# What mod_event_socket writes (mod_event_socket.c; the ESL page of the FreeSWITCH documentation).
AUTH_REQUEST = b"Content-Type: auth/request\n\n"
ACCEPTED = b"Content-Type: command/reply\nReply-Text: +OK accepted\n\n"
INVALID = b"Content-Type: command/reply\nReply-Text: -ERR invalid\n\n"
GOODBYE_TEXT = b"Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n"
GOODBYE = b"Content-Type: text/disconnect-notice\nContent-Length: %d\n\n%s" % (len(GOODBYE_TEXT), GOODBYE_TEXT)
REJECTION_TEXT = b"Access Denied, go away.\n"
REJECTION = b"Content-Type: text/rude-rejection\nContent-Length: %d\n\n%s" % (len(REJECTION_TEXT), REJECTION_TEXT)
LOG_LINE = b"Content-Type: log/data\nContent-Length: 12\nLog-Level: 7\n\nsome log...\n"
UUID = "6b2a1b6e-3f2a-4d5e-9c1b-0a1b2c3d4e5f"


def api_response(output: bytes) -> bytes:
    return b"Content-Type: api/response\nContent-Length: %d\n\n%s" % (len(output), output)


TRANSCRIPT = AUTH_REQUEST + ACCEPTED + LOG_LINE + api_response(b"+OK\n") + GOODBYE
EXPECTED = [
    ("auth/request", b""),
    ("command/reply", b""),
    ("log/data", b"some log...\n"),
    ("api/response", b"+OK\n"),
    ("text/disconnect-notice", GOODBYE_TEXT),
]


def _summary(events: list[esl.EslEvent]) -> list[tuple[str, bytes]]:
    return [(e.content_type, e.body) for e in events]


# --- the reader -----------------------------------------------------------------------------------------


def test_a_whole_transcript_in_one_chunk_gives_every_message_in_order() -> None:
    """Messages merged in one read are all framed, bodies exactly Content-Length long."""
    events = esl.EslClient().feed(TRANSCRIPT)
    assert _summary(events) == EXPECTED
    assert events[1].reply_text == "+OK accepted"
    assert events[2].header("log-level") == "7"
    assert events[3].text == "+OK\n"


def test_byte_by_byte_gives_the_same_messages() -> None:
    """One byte at a time, each message comes out exactly when its last byte arrives."""
    client = esl.EslClient()
    events: list[esl.EslEvent] = []
    ends: list[int] = []
    for n in range(len(TRANSCRIPT)):
        got = client.feed(TRANSCRIPT[n : n + 1])
        events += got
        ends += [n + 1] * len(got)
    assert _summary(events) == EXPECTED
    boundaries, total = [], 0
    for part in (AUTH_REQUEST, ACCEPTED, LOG_LINE, api_response(b"+OK\n"), GOODBYE):
        total += len(part)
        boundaries.append(total)
    assert ends == boundaries


@pytest.mark.parametrize("seed", range(20))
def test_random_splits_give_the_same_messages(seed: int) -> None:
    """Any split of the stream frames the same messages."""
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(TRANSCRIPT)), rng.randint(1, 15)))
    client = esl.EslClient()
    events: list[esl.EslEvent] = []
    for start, end in zip([0, *cuts], [*cuts, len(TRANSCRIPT)], strict=True):
        events += client.feed(TRANSCRIPT[start:end])
    assert _summary(events) == EXPECTED


def test_crlf_line_ends_and_blank_lines_between_messages_are_read() -> None:
    """A server writing CRLF, or an extra empty line after a body, frames the same."""
    data = b"Content-Type: auth/request\r\n\r\n\n" + api_response(b"-ERR no\n").replace(b"\n\n", b"\r\n\r\n", 1)
    assert _summary(esl.EslClient().feed(data)) == [("auth/request", b""), ("api/response", b"-ERR no\n")]


def test_a_header_block_over_the_bound_is_refused_before_it_ends() -> None:
    """A header block growing past ``max_header`` with no end in sight raises, and the reader stays failed."""
    client = esl.EslClient(max_header=64)
    with pytest.raises(esl.EslProtocolError, match="header block"):
        client.feed(b"Content-Type: api/response\nX-Filler: " + b"a" * 100)
    with pytest.raises(esl.EslProtocolError):
        client.feed(b"\n\n")


def test_a_body_over_the_bound_is_refused_from_its_header() -> None:
    """A Content-Length over ``max_body`` raises as soon as the header block is read, before any body."""
    with pytest.raises(esl.EslProtocolError, match="over 1000"):
        esl.EslClient(max_body=1000).feed(b"Content-Type: api/response\nContent-Length: 1001\n\n")


@pytest.mark.parametrize(
    "data", [b"Content-Type: api/response\nContent-Length: -1\n\n", b"Content-Length: 1e3\n\n", b"no colon here\n\n"]
)
def test_a_malformed_header_block_is_a_protocol_error(data: bytes) -> None:
    """A negative or non-decimal Content-Length, or a line that is not ``Name: value``, is refused."""
    with pytest.raises(esl.EslProtocolError):
        esl.EslClient().feed(data)


def test_a_protocol_error_is_a_control_error() -> None:
    """A broken event socket ends a transfer the way a refusing carrier API does."""
    assert issubclass(esl.EslProtocolError, ControlError)


# --- the commands ---------------------------------------------------------------------------------------


def test_commands_are_one_line_and_an_empty_line() -> None:
    """``auth`` and ``api`` are written as the protocol has them."""
    assert esl.auth("ClueCon") == b"auth ClueCon\n\n"
    assert esl.api("status") == b"api status\n\n"


def test_uuid_transfer_builds_the_documented_syntax() -> None:
    """``uuid_transfer <uuid> <dest-exten> [<dialplan>] [<context>]`` (mod_commands.c TRANSFER_SYNTAX)."""
    dest = esl.inline_bridge("sofia/gateway/gw1/+15550142")
    assert dest == "bridge:sofia/gateway/gw1/+15550142"
    assert esl.uuid_transfer(UUID, dest) == f"uuid_transfer {UUID} bridge:sofia/gateway/gw1/+15550142 inline"
    assert esl.uuid_transfer(UUID, "1000", "XML", "default") == f"uuid_transfer {UUID} 1000 XML default"


@pytest.mark.parametrize(
    ("uuid", "destination"),
    [
        (UUID + "\napi shutdown", "1000"),
        (UUID, "1000\n\napi fsctl shutdown"),
        (UUID, "1000 XML evil"),
        (UUID, "'1000"),
        ("-both", "1000"),
        ("", "1000"),
        (UUID, "1000\r"),
        (UUID, "\t1000"),
    ],
)
def test_uuid_transfer_refuses_what_would_change_the_command(uuid: str, destination: str) -> None:
    """A newline (a second command), a space or quote (another argument) or a leading ``-`` (a flag) is refused."""
    with pytest.raises(ControlError):
        esl.uuid_transfer(uuid, destination)


def test_an_inline_dial_string_cannot_add_an_application() -> None:
    """In the inline dialplan ``,`` separates applications: a dial string holding one is refused."""
    with pytest.raises(ControlError):
        esl.inline_bridge("sofia/gateway/gw1/+1555,system:reboot")


@pytest.mark.parametrize("bad", ["pass\nword", "x\r"])
def test_auth_refuses_a_line_break_without_showing_the_password(bad: str) -> None:
    with pytest.raises(ControlError) as caught:
        esl.auth(bad)
    assert bad.strip() not in str(caught.value)


def test_api_refuses_an_injected_second_command() -> None:
    with pytest.raises(ControlError):
        esl.api("status\n\napi fsctl shutdown")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("esl://:ClueCon@127.0.0.1:8022", ("127.0.0.1", 8022, "ClueCon")),
        ("esl://:p%40ss%3Aw@fs.example", ("fs.example", 8021, "p@ss:w")),
    ],
)
def test_the_esl_url_gives_host_port_and_password(url: str, expected: tuple[str, int, str]) -> None:
    assert parse_esl_url(url) == expected


@pytest.mark.parametrize("url", ["http://:x@h:1", "esl://h:8021", "esl://:x@h:notaport", "esl://:x@:8021"])
def test_a_bad_esl_url_is_refused_without_the_password(url: str) -> None:
    with pytest.raises(ControlError) as caught:
        parse_esl_url(url)
    assert ":x@" not in str(caught.value)


# --- esl_api against a fake FreeSWITCH ------------------------------------------------------------------


@dataclass
class FakeFreeSwitch:
    """mod_event_socket as documented: auth/request, auth -> +OK accepted or -ERR invalid (then the disconnect
    notice), api -> api/response. Knows one channel; records the commands it ran."""

    password: str = "ClueCon"
    channels: set[str] = field(default_factory=lambda: {UUID})
    commands: list[str] = field(default_factory=list)
    silent: bool = False  # accept the connection, never say anything
    chatty: bool = False  # a log line before each answer
    refuse_address: bool = False  # the socket's ACL does not allow the client (apply-inbound-acl)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if self.silent:
                await reader.read()
                return
            if self.refuse_address:
                writer.write(REJECTION)
                await writer.drain()
                return
            writer.write(AUTH_REQUEST)
            line = (await reader.readuntil(b"\n\n")).decode().strip()
            if line != f"auth {self.password}":
                writer.write(INVALID + GOODBYE)
                await writer.drain()
                return
            writer.write(ACCEPTED)
            while True:
                command = (await reader.readuntil(b"\n\n")).decode().strip().removeprefix("api ")
                self.commands.append(command)
                words = command.split(" ")
                if words[0] == "uuid_transfer" and len(words) >= 3:
                    output = b"+OK\n" if words[1] in self.channels else b"-ERR No such channel!\n"
                else:
                    output = b"-ERR " + words[0].encode() + b" Command not found!\n"
                writer.write((LOG_LINE if self.chatty else b"") + api_response(output))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def freeswitch() -> AsyncIterator[tuple[FakeFreeSwitch, int]]:
    fake = FakeFreeSwitch()
    server = await asyncio.start_server(fake.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield fake, port
        server.close()


async def test_uuid_transfer_over_the_event_socket(freeswitch: tuple[FakeFreeSwitch, int]) -> None:
    """Connect, authenticate, run the command, read +OK: FreeSWITCH ran exactly that command."""
    fake, port = freeswitch
    fake.chatty = True
    command = esl.uuid_transfer(UUID, esl.inline_bridge("sofia/gateway/gw1/+15550142"))
    assert await esl_api(f"esl://:ClueCon@127.0.0.1:{port}", command, timeout=5) == "+OK"
    assert fake.commands == [command]


async def test_an_unknown_channel_is_a_control_error_with_freeswitchs_words(
    freeswitch: tuple[FakeFreeSwitch, int],
) -> None:
    """``-ERR No such channel!`` becomes a ControlError carrying FreeSWITCH's text."""
    _, port = freeswitch
    with pytest.raises(ControlError, match="No such channel"):
        await esl_api(f"esl://:ClueCon@127.0.0.1:{port}", esl.uuid_transfer("other-uuid", "1000"), timeout=5)


async def test_a_wrong_password_is_a_control_error_that_does_not_show_it(
    freeswitch: tuple[FakeFreeSwitch, int],
) -> None:
    """``-ERR invalid`` on auth: ControlError saying the password was refused, without the password; no api sent."""
    fake, port = freeswitch
    with pytest.raises(ControlError, match="password was refused") as caught:
        await esl_api(f"esl://:Wrong-Secret@127.0.0.1:{port}", esl.uuid_transfer(UUID, "1000"), timeout=5)
    assert "Wrong-Secret" not in str(caught.value)
    assert fake.commands == []


async def test_an_address_the_acl_refuses_is_a_control_error(freeswitch: tuple[FakeFreeSwitch, int]) -> None:
    """``text/rude-rejection`` (the event socket's ACL) instead of auth/request: ControlError saying so."""
    fake, port = freeswitch
    fake.refuse_address = True
    with pytest.raises(ControlError, match="ACL"):
        await esl_api(f"esl://:ClueCon@127.0.0.1:{port}", "status", timeout=5)
    assert fake.commands == []


async def test_a_silent_server_is_a_timeout(freeswitch: tuple[FakeFreeSwitch, int]) -> None:
    """A socket that never says auth/request ends in ControlError within the timeout."""
    fake, port = freeswitch
    fake.silent = True
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ControlError, match="no answer"):
        await esl_api(f"esl://:ClueCon@127.0.0.1:{port}", "status", timeout=0.2)
    assert loop.time() - started < 2


async def test_nothing_listening_is_a_control_error() -> None:
    """A refused connection: ControlError naming the event socket, not the password."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ControlError, match="event socket") as caught:
        await esl_api(f"esl://:ClueCon@127.0.0.1:{port}", "status", timeout=5)
    assert "ClueCon" not in str(caught.value)
