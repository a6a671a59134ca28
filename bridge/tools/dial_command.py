"""``bridge dial``: place an outbound call through a running bridge (``POST /v1/calls``) and follow its
events (``GET /v1/calls/{id}/events``, server-sent events: :mod:`bridge.http.call_events`) in the terminal,
one line per event, until the call ends.

Exit status: 0 the call ended (``call.ended``); 1 it was not answered (``call.failed``: exit after its
``call.ended``, or 3 s); 2 a refusal or an HTTP error (the bridge's error body printed) or a bridge out of
reach; 3 no end within ``--timeout``.
"""

from __future__ import annotations

import argparse
import asyncio
import codecs
import json
import os
import re
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any, TextIO

from bridge.dial.order import DIAL_CARRIERS

FAILED_GRACE_S = 3.0  # after call.failed, how long to wait for its call.ended
NOTICES = frozenset({"speech.started", "utterance.partial"})  # the stream's events with no sequence
NOT_YET_S = 2.0  # a 404 this soon after the 201 is a call whose first event is not out yet: ask again
RECONNECTS = 3  # event streams in a row that brought nothing before giving up
_LINE_BREAK = re.compile(r"\r\n|\r|\n")

# The fields worth a look in each event's line (searched in the body, its "data", then its nested objects).
FIELDS: dict[str, tuple[str, ...]] = {
    "call.dialing": ("carrier_call_id",),
    "call.started": ("direction",),
    "call.answered_by": ("answered_by", "detection_ms"),
    "call.beep": ("after_ms",),
    "call.failed": ("status", "detail"),
    "call.ended": ("end_reason",),
    "utterance.final": ("speaker", "text"),
    "playback.started": ("action_id",),
    "playback.finished": ("action_id", "played_ms"),
    "playback.interrupted": ("action_id", "played_ms", "reason", "heard_text"),
    "playback.mark": ("name",),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``bridge dial`` subcommand's arguments (on its subparser)."""
    parser.add_argument("to", help="the number (E.164, e.g. +15550142) or sip: URI to call")
    parser.add_argument("--carrier", default="twilio", choices=DIAL_CARRIERS, help="who places the call (twilio)")
    parser.add_argument(
        "--from",
        dest="from_",
        default=_first_from(),
        help="the caller id, one of the bridge's BRIDGE_DIAL_FROM (default: $BRIDGE_DIAL_FROM's first entry)",
    )
    parser.add_argument(
        "--machine-detection",
        choices=("off", "detect", "detect_message_end"),
        default="off",
        help="answering-machine detection: detect (call.answered_by), detect_message_end (and call.beep)",
    )
    parser.add_argument("--ring-timeout", type=int, default=None, help="seconds to ring (default: the bridge's, 30)")
    parser.add_argument("--first-say", default=None, help="what the bot says as soon as the call is answered")
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a call parameter for the bot (repeatable), e.g. --param campaign=reminders",
    )
    parser.add_argument("--bridge", default="http://127.0.0.1:8080", help="the bridge (default http://127.0.0.1:8080)")
    parser.add_argument(
        "--token", default=os.environ.get("BRIDGE_API_TOKEN") or None, help="the API token (default $BRIDGE_API_TOKEN)"
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to follow the call at most (300)")


def _first_from() -> str | None:
    entries = [e.strip() for e in os.environ.get("BRIDGE_DIAL_FROM", "").split(",") if e.strip()]
    return entries[0] if entries else None


def order_body(args: argparse.Namespace) -> dict[str, Any] | str:
    """The ``POST /v1/calls`` body the arguments ask for, or what is wrong with them."""
    if not args.from_:
        return "--from is needed (or BRIDGE_DIAL_FROM set)"
    parameters: dict[str, str] = {}
    for item in args.param:
        name, sep, value = item.partition("=")
        if not sep or not name:
            return f"--param needs NAME=VALUE, got {item!r}"
        parameters[name] = value
    body: dict[str, Any] = {
        "to": args.to,
        "from": args.from_,
        "carrier": args.carrier,
        "machine_detection": args.machine_detection,
    }
    if parameters:
        body["parameters"] = parameters
    if args.ring_timeout is not None:
        body["ring_timeout_s"] = args.ring_timeout
    if args.first_say is not None:
        body["first_say"] = args.first_say
    return body


@dataclass(frozen=True, slots=True)
class SseEvent:
    """One dispatched server-sent event: its type (``message`` when unnamed), data, and the last event id."""

    type: str
    data: str
    id: str


class SseParser:
    """The event-stream format as the WHATWG HTML standard interprets it ("server-sent events", parsing an
    event stream), fed text as it arrives: lines end at CRLF, LF or CR (a CR at a chunk's end may be the
    first half of a CRLF); ``:`` starts a comment; ``field: value`` with one leading space dropped; a blank
    line dispatches the event (none when no data came); ``id`` with a NUL is ignored; a leading BOM is dropped."""

    def __init__(self) -> None:
        self.last_id = ""
        self.retry: int | None = None
        self._partial = ""
        self._skip_lf = False
        self._started = False
        self._data: list[str] = []
        self._type = ""

    def feed(self, text: str) -> list[SseEvent]:
        """The events completed by ``text``."""
        if not self._started and text:
            self._started = True
            text = text.removeprefix("\ufeff")
        if self._skip_lf and text:
            text = text.removeprefix("\n")
            self._skip_lf = False
        if not text:
            return []
        lines = _LINE_BREAK.split(self._partial + text)
        self._partial = lines.pop()  # the unterminated rest
        self._skip_lf = text.endswith("\r")
        events: list[SseEvent] = []
        for line in lines:
            event = self._line(line)
            if event is not None:
                events.append(event)
        return events

    def _line(self, line: str) -> SseEvent | None:
        if not line:
            data, type_ = self._data, self._type or "message"
            self._data, self._type = [], ""
            return SseEvent(type_, "\n".join(data), self.last_id) if data else None
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._type = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self.last_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry = int(value)
        return None


def _find(body: dict[str, Any], key: str) -> Any:
    """``key`` in an event body: at its top, in its ``data``, else in one of its nested objects."""
    if key in body:
        return body[key]
    data = body.get("data")
    if isinstance(data, dict) and key in data:
        return data[key]
    for value in body.values():
        if isinstance(value, dict) and key in value:
            return value[key]
    return None


def event_line(seconds: float, type_: str, data: str) -> str:
    """One readable line for an event: the time since the POST, its type, its useful fields."""
    try:
        body = json.loads(data)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return f"{seconds:+8.2f}s  {type_:<22} {data[:200]}"
    keys = FIELDS.get(type_, ("action_id", "played_ms", "reason") if type_.startswith("playback.") else ())
    parts = []
    for key in keys:
        value = _find(body, key)
        if value is None:
            continue
        shown = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) or " " in value else value
        parts.append(f"{key}={shown}")
    return f"{seconds:+8.2f}s  {type_:<22} {' '.join(parts)}".rstrip()


def dial_command(args: argparse.Namespace) -> int:
    """``bridge dial`` with the arguments :mod:`bridge.cli` read; its exit status (module docstring)."""
    return asyncio.run(dial(args, sys.stdout, sys.stderr))


async def dial(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Place the call and follow it, printing to ``out`` (events) and ``err`` (problems); the exit status."""
    import aiohttp

    body = order_body(args)
    if isinstance(body, str):
        print(f"bridge dial: {body}", file=err)
        return 2
    if not args.token:
        print("bridge dial: --token is needed (or BRIDGE_API_TOKEN set)", file=err)
        return 2
    base = args.bridge.rstrip("/")
    auth = {"Authorization": f"Bearer {args.token}"}
    started = time.monotonic()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, connect=10.0)) as http:
        try:
            headers = {**auth, "Idempotency-Key": uuid.uuid4().hex}
            async with http.post(f"{base}/v1/calls", json=body, headers=headers) as resp:
                text = await resp.text(errors="replace")
                if resp.status != 201:
                    print(f"bridge dial: POST /v1/calls: {resp.status} {text.strip()}", file=err)
                    return 2
            created = json.loads(text)
            call_id = str(created["id"])
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            print(f"bridge dial: cannot reach {base}: {exc or type(exc).__name__}", file=err)
            return 2
        except (ValueError, KeyError, TypeError):
            print(f"bridge dial: POST /v1/calls: 201 without an id: {text[:200]}", file=err)
            return 2
        carrier_id = created.get("carrier_call_id") if isinstance(created, dict) else None
        print(f"call {call_id} {created.get('status', '')}" + (f" ({carrier_id})" if carrier_id else ""), file=out)
        out.flush()
        follower = _Follow(http, f"{base}/v1/calls/{call_id}/events", auth, started, out, err)
        try:
            return await asyncio.wait_for(follower.run(), max(0.0, started + args.timeout - time.monotonic()))
        except TimeoutError:
            print(f"bridge dial: no call.ended within {args.timeout:g} s", file=err)
            return 3
        except (aiohttp.ClientError, OSError) as exc:
            print(f"bridge dial: the event stream failed: {exc or type(exc).__name__}", file=err)
            return 2


class _Follow:
    """Following one call's event stream, resumed with ``Last-Event-ID`` when a connection ends early."""

    def __init__(self, http: Any, url: str, auth: dict[str, str], started: float, out: TextIO, err: TextIO) -> None:
        self.http, self.url, self.auth, self.started, self.out, self.err = http, url, auth, started, out, err
        self.last_id = ""
        self.failed_at: float | None = None
        self.events = 0

    def _outcome(self) -> int:
        return 1 if self.failed_at is not None else 0

    async def run(self) -> int:
        import aiohttp

        empty = 0
        while True:
            headers = {**self.auth, "Accept": "text/event-stream"}
            if self.last_id:
                headers["Last-Event-ID"] = self.last_id
            before = self.events
            async with self.http.get(self.url, headers=headers) as resp:
                if resp.status == 404 and not self.events and time.monotonic() < self.started + NOT_YET_S:
                    await asyncio.sleep(0.2)  # the 201 came before the call's first event: ask again
                    continue
                if resp.status == 204:  # the bridge has nothing more for this call
                    return self._outcome()
                if resp.status != 200:
                    text = await resp.text(errors="replace")
                    print(f"bridge dial: GET {self.url}: {resp.status} {text.strip()}", file=self.err)
                    return 2
                try:
                    done = await self._read(resp)
                except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError):
                    done = None  # the connection broke: resume
            if done is not None:
                return done
            if self.failed_at is not None:
                return 1
            empty = 0 if self.events > before else empty + 1
            if empty >= RECONNECTS:
                print("bridge dial: the event stream ends without call.ended", file=self.err)
                return 2
            await asyncio.sleep(0.5)

    async def _read(self, resp: Any) -> int | None:
        """Print the stream's events; the exit status once the call is over, None if the stream ended first."""
        parser = SseParser()
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        while True:
            wait = None if self.failed_at is None else self.failed_at + FAILED_GRACE_S - time.monotonic()
            if wait is not None and wait <= 0:
                return 1
            try:
                chunk = await asyncio.wait_for(resp.content.readany(), wait)
            except TimeoutError:
                return 1  # call.failed, and no call.ended within the grace
            if not chunk:
                return None
            for event in parser.feed(decoder.decode(chunk)):
                if event.type in NOTICES:
                    continue  # live notices (a partial several times a second): not what this prints
                self.events += 1
                self.last_id = event.id or self.last_id
                print(event_line(time.monotonic() - self.started, event.type, event.data), file=self.out)
                self.out.flush()
                if event.type == "call.ended":
                    return self._outcome()
                if event.type == "call.failed" and self.failed_at is None:
                    self.failed_at = time.monotonic()
