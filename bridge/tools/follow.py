"""``bridge call --carrier twilio``: the call as Twilio runs it, TwiML and all.

Twilio starts a call by asking the voice URL what to do (``POST /twilio/voice``, signed), connects the
``<Connect><Stream>`` it gets, and when the bridge closes that stream (a transfer, a hang-up) requests the
``<Connect action>`` URL and goes on with the TwiML it answers: ``<Dial>`` the person (the whisper of
``<Number url>`` for the person who answers, the dial's result posted to ``<Dial action>``),
``<Connect><Stream>`` again (the caller back to the bot: same CallSid, a new StreamSid, the rest of the
caller's audio), ``<Hangup/>``. :class:`TwilioCall` plays that carrier side against the bridge: every
request signed with ``X-Twilio-Signature`` (``TWILIO_AUTH_TOKEN``) over the exact URL it goes to, every
document printed, the dial's outcome chosen by the user (``--dial-status``).

Without ``/twilio/voice`` (``--no-twiml``: the stream straight to a URL), the tool acts as if the call's
TwiML had been ``<Connect action="{base}/twilio/after-stream">``.

Sources: https://www.twilio.com/docs/voice/twiml/connect (``action``, Twilio's standard request parameters),
https://www.twilio.com/docs/voice/twiml/dial (``action``, ``DialCallStatus``/``DialCallSid``/
``DialCallDuration``), https://www.twilio.com/docs/voice/twiml/number (``url``, ``statusCallbackEvent``);
the ``DialCallStatus`` values (completed, busy, no-answer, failed, canceled) are UNVERIFIED in
/work/shared/reference/call-control.md §1.A: the tool sends the one asked for, whatever the bridge reads.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlencode, urlsplit

import aiohttp

from bridge.adapters.twilio import signature
from bridge.tools.keypad import KeyPress
from bridge.tools.player import CallReport, play_call, print_reply, print_report
from bridge.tools.twiml_read import (
    MAX_TWIML,
    ConnectStream,
    Dial,
    DialTarget,
    Hangup,
    Pause,
    Play,
    Redirect,
    Say,
    Unsupported,
    Verb,
    read_twiml,
)

DIAL_STATUSES = ("answered", "busy", "no-answer", "failed", "canceled")
ANSWERED_SECONDS = 10  # how long a person who answers talks with the caller (DialCallDuration)
MAX_DOCUMENTS = 20  # TwiML documents in one call: more is a loop
MAX_AUDIO = 16 * 2**20  # bytes of whisper audio saved at most
API_VERSION = "2010-04-01"


class FollowError(Exception):
    """A request of the call's went wrong (not reachable, not 2xx, not TwiML)."""


def http_base(stream_url: str) -> str:
    """The bridge's HTTP base from its stream URL: ``ws://host:port/...`` -> ``http://host:port``."""
    parts = urlsplit(stream_url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return f"{scheme}://{parts.netloc}"


@dataclass
class TwilioCall:
    """One Twilio call played against the bridge (see the module docstring)."""

    http: aiohttp.ClientSession
    base: str  # the bridge's http(s) base URL
    ulaw: bytes  # the caller's audio, the whole call
    out: TextIO
    progress: TextIO | None = None
    auth_token: str | None = None
    parameters: dict[str, str] = field(default_factory=dict)  # From, To and the extra --param ones
    keys: list[KeyPress] = field(default_factory=list)
    dial_status: str = "answered"
    announce_out: Path | None = None
    play: dict[str, Any] = field(default_factory=dict)  # more play_call arguments (realtime, linger...)
    call_sid: str = field(default_factory=lambda: "CA" + uuid.uuid4().hex)
    account_sid: str = "AC" + "0" * 32
    reports: list[CallReport] = field(default_factory=list)
    dials: list[Dial] = field(default_factory=list)
    last_document: str = ""  # the TwiML fetched last, as it came
    _position: int = 0  # bytes of the caller's audio played so far
    _fetched: int = 0

    @property
    def caller(self) -> str:
        return self.parameters.get("From", "+15550100")

    @property
    def called(self) -> str:
        return self.parameters.get("To", "+15550199")

    def fields(self, status: str = "in-progress") -> dict[str, str]:
        """Twilio's standard request parameters for this call."""
        return {
            "CallSid": self.call_sid,
            "AccountSid": self.account_sid,
            "From": self.caller,
            "To": self.called,
            "CallStatus": status,
            "Direction": "inbound",
            "ApiVersion": API_VERSION,
        }

    async def run(self, stream_url: str | None = None) -> int:
        """The whole call: from ``/twilio/voice``, or (``stream_url``) straight to the stream. Its exit
        status: 0 when the call ended as its TwiML said, 1 when something failed on the way."""
        try:
            if stream_url is None:
                try:
                    verbs = await self.fetch("POST", f"{self.base}/twilio/voice", self.fields("ringing"))
                except FollowError as exc:
                    raise FollowError(f"{exc} (--no-twiml streams straight to the stream URL)") from exc
            else:
                own = {k: v for k, v in self.parameters.items()}
                verbs = [ConnectStream(stream_url, own, f"{self.base}/twilio/after-stream")]
            return await self._interpret(verbs)
        except FollowError as exc:
            self.out.write(f"call stopped: {exc}\n")
            return 1

    async def _interpret(self, verbs: list[Verb]) -> int:
        while True:
            for verb in verbs:
                match verb:
                    case ConnectStream():
                        report = await self._stream(verb)
                        if not report.closed_by_bridge:
                            return 0 if report.close_code == 1000 else 1  # the caller hung up: the call is over
                        if verb.action is not None:
                            verbs = await self.fetch(verb.method, verb.action, self.fields())
                            break
                    case Dial():
                        dialled = await self.dial(verb)
                        if dialled is not None:
                            verbs = dialled
                            break
                    case Hangup():
                        self.out.write("hangup: the call ends\n")
                        return 0
                    case Redirect():
                        verbs = await self.fetch(verb.method, verb.url, self.fields())
                        break
                    case Say():
                        self.out.write(f"say: {verb.text}\n")
                    case Play():
                        self.out.write(f"play: {verb.url}\n")
                    case Pause():
                        self.out.write(f"pause: {verb.seconds:g} s\n")
                    case Unsupported():
                        self.out.write(
                            f"<{verb.verb}>: not something this tool plays; the call ends here "
                            "(--no-twiml streams straight to the stream URL)\n"
                        )
                        return 1
            else:
                self.out.write("end of the TwiML: the call ends\n")
                return 0

    async def _stream(self, verb: ConnectStream) -> CallReport:
        """The caller on the stream: the rest of the audio and of the keys, a new StreamSid, the same call."""
        extra = {k: v for k, v in self.parameters.items() if k not in ("From", "To")}
        parameters = {**verb.parameters, **{k: v for k, v in extra.items() if k not in verb.parameters}}
        offset = self._position / 8000
        keys = [replace(k, at=max(0.0, k.at - offset)) for k in self.keys]
        headers = {"X-Twilio-Signature": signature(self.auth_token, verb.url)} if self.auth_token else None
        self.out.write(f"stream: {verb.url} ({len(self.ulaw) - self._position} bytes of audio left)\n")
        report = await play_call(
            verb.url,
            self.ulaw[self._position :],
            parameters=parameters,
            headers=headers,
            progress=self.progress,
            carrier="twilio",
            call_sid=self.call_sid,
            keys=keys,
            **self.play,
        )
        self.reports.append(report)
        self._position += report.frames_sent * 160
        self.keys = self.keys[len(report.keys_sent) :]
        print_report(report, self.out)
        if report.ear is not None and self.play.get("listen_reply"):
            print_reply(report.ear, self.out)
        if report.closed_by_bridge:
            self.out.write("the bridge closed the stream (the caller had not hung up)\n")
        return report

    async def dial(self, dial: Dial) -> list[Verb] | None:
        """The person dialled: what the user chose happens; the TwiML of ``<Dial action>`` (None: no action)."""
        self.dials.append(dial)
        for target in dial.targets:
            self.out.write(
                f"transfer: {target.to} (ring timeout {dial.timeout_s} s, announce: {'yes' if target.url else 'no'})\n"
            )
        target = dial.targets[0]
        child = "CA" + uuid.uuid4().hex
        if self.announce_out is not None and target.url:
            await self._announce(target, child)
        answered = self.dial_status == "answered"
        if answered and target.status_callback and "answered" in target.status_events:
            await self.request(target.status_callback, target.status_method, self._child(target, child))
        self.out.write(f"dial: {self.dial_status}\n")
        if dial.action is None:
            return None
        fields = {
            **self.fields(),
            "DialCallStatus": "completed" if answered else self.dial_status,
            "DialCallSid": child,
            "DialCallDuration": str(ANSWERED_SECONDS if answered else 0),
        }
        return await self.fetch(dial.method, dial.action, fields)

    def _child(self, target: DialTarget, child: str) -> dict[str, str]:
        """The standard parameters of the dialled person's call (a child of the caller's)."""
        return {
            "CallSid": child,
            "ParentCallSid": self.call_sid,
            "AccountSid": self.account_sid,
            "From": self.caller,
            "To": target.to,
            "CallStatus": "in-progress",
            "Direction": "outbound-dial",
            "ApiVersion": API_VERSION,
            "CallbackSource": "call-progress-events",
            "SequenceNumber": "0",
            "Timestamp": time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime()),
        }

    async def _announce(self, target: DialTarget, child: str) -> None:
        """The whisper, as the person's phone gets it: its TwiML, then the audio of its ``<Play>``."""
        assert target.url is not None and self.announce_out is not None
        verbs = await self.fetch(target.method, target.url, self._child(target, child))
        plays = [v for v in verbs if isinstance(v, Play)]
        if not plays:
            raise FollowError(f"the whisper at {target.url} has no <Play>")
        _, content_type, audio = await self.request(plays[0].url, "GET", {}, limit=MAX_AUDIO)
        self.announce_out.write_bytes(audio)
        self.out.write(f"announce: {len(audio)} bytes of {content_type or 'audio'} saved to {self.announce_out}\n")

    async def fetch(self, method: str, url: str, fields: dict[str, str]) -> list[Verb]:
        """A TwiML document, printed, then read."""
        self._fetched += 1
        if self._fetched > MAX_DOCUMENTS:
            raise FollowError(f"more than {MAX_DOCUMENTS} TwiML documents in one call")
        status, _, body = await self.request(url, method, fields, limit=MAX_TWIML)
        text = self.last_document = body.decode("utf-8", "replace")
        self.out.write(f"{method} {url} -> {status}\n  {text}\n")
        try:
            return read_twiml(body)
        except ValueError as exc:
            raise FollowError(f"{url}: {exc}") from exc

    async def request(
        self, url: str, method: str, fields: dict[str, str], *, limit: int = MAX_TWIML
    ) -> tuple[int, str, bytes]:
        """One request as Twilio makes it: POST a form (or GET with the fields in the query), signed
        over the exact URL (and a POST's fields) when ``TWILIO_AUTH_TOKEN`` is set; (status, type, body)."""
        if method == "GET" and fields:
            url += ("&" if "?" in url else "?") + urlencode(fields)
        form = fields if method == "POST" else None
        headers = {"X-Twilio-Signature": signature(self.auth_token, url, form)} if self.auth_token else {}
        try:
            async with self.http.request(
                method, url, data=form, headers=headers, timeout=aiohttp.ClientTimeout(total=15)
            ) as response:
                body = bytearray()
                async for chunk in response.content.iter_chunked(65536):
                    body += chunk
                    if len(body) > limit:
                        raise FollowError(f"{method} {url}: the answer is over {limit} bytes")
                if not 200 <= response.status < 300:
                    detail = bytes(body[:200]).decode("utf-8", "replace").strip()
                    raise FollowError(f"{method} {url} -> HTTP {response.status} {detail}")
                return response.status, response.headers.get("Content-Type", ""), bytes(body)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise FollowError(f"{method} {url}: {exc or type(exc).__name__}") from exc
