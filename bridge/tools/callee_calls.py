"""The fake callee's records and rules (for :mod:`bridge.tools.callee`): how the callee answers
(:class:`Answering`), what happened on each call (:class:`CalleeCall`), and when each carrier's
answering-machine detector says what (pure functions of the greeting)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from bridge.tools import greetings
from bridge.tools.ear import TwilioEar
from bridge.tools.greetings import Greeting

AnswerKind = Literal["human", "machine", "busy", "no-answer", "failed"]
ANSWERS: tuple[str, ...] = ("human", "machine", "busy", "no-answer", "failed")
SILENCE_END_MS = 1500  # a greeting without a beep ends, for the carriers' detectors, this long after its speech
# Telnyx hangup_cause for a call that is not answered (the brief's reading of telnyx types/call_hangup.py)
TELNYX_NOT_ANSWERED = {"busy": "user_busy", "no-answer": "timeout", "failed": "unspecified"}

Greeter = Callable[[Literal["human", "machine"], int, str], Greeting]


def default_greeter(kind: Literal["human", "machine"], variant: int, voice: str) -> Greeting:
    """The synthesised greeting of :mod:`bridge.tools.greetings` (Piper loads on first use)."""
    return greetings.greeting(kind, variant, voice=voice)


@dataclass
class Answering:
    """How the fake callee answers (the tests' fault switches)."""

    answer: AnswerKind = "human"
    ring_ms: int = 200  # ringing before the answer (or before busy / no-answer / failed)
    amd_ms: int = 1200  # the carrier's AMD verdict this long after the answer, when the create asked for AMD
    stay_s: float = 10.0  # the callee hangs up this long after its greeting ends, unless the bridge ends first
    variant: int = 0  # greeting(answer, variant)
    voice: str = "piper"
    refuse: int | None = None  # answer the create request with this HTTP status (e.g. 400, 503) and do nothing
    greeter: Greeter | None = None  # None: default_greeter; tests may give a short synthetic greeting


@dataclass
class CalleeCall:
    """One call placed on the fake, as it went. ``heard`` is every audio payload the bridge sent on the call's
    streams, in order, as it came: 8 kHz mu-law for Twilio, and for Telnyx the stream's bidirectional codec
    (PCMU unless the create asked for another: then its bytes as sent). ``ear`` is the same audio as the
    callee's loudspeaker played it (real time, cut by clears)."""

    carrier_call_id: str
    to: str
    from_: str
    request: dict[str, Any]  # the create request, decoded (Twilio: field -> value, or list of values when repeated)
    heard: bytearray = field(default_factory=bytearray)
    marks: list[str] = field(default_factory=list)  # marks echoed back, in order
    cleared: int = 0  # clear messages received
    statuses: list[str] = field(default_factory=list)  # Twilio CallStatus / Telnyx event_type reported, in order
    amd: list[dict[str, str]] = field(default_factory=list)  # every AMD callback posted (Telnyx: event_type, result)
    greeting: Greeting | None = None
    answered_at: float | None = None  # loop time when the (first) stream started
    done: asyncio.Event = field(default_factory=asyncio.Event)  # set when the call is over (final status posted)
    ear: TwilioEar = field(default_factory=TwilioEar)
    streams: list[dict[str, Any]] = field(default_factory=list)  # each stream's start message, as sent
    state: str = "queued"  # queued, ringing, in-progress, then the final status
    ended_by: str = ""  # who ended an answered call: bridge (REST hang-up or stream closed), callee
    _hangup: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    _cancel: asyncio.Event = field(default_factory=asyncio.Event, repr=False)


# -- the pure part: what the carrier's detector says, and when ------------------------------------------


def twilio_answered_by(
    kind: str, machine_detection: str, greeting: Greeting | None, amd_ms: int
) -> tuple[str, int] | None:
    """Twilio's ``AnsweredBy`` for a callee of ``kind`` and the ms after the answer it comes, or None when the
    create asked for no detection. ``Enable``: ``human`` / ``machine_start`` at ``amd_ms``. ``DetectMessageEnd``:
    a machine's verdict waits for the end of its greeting: ``machine_end_beep`` when the beep ends, or
    ``machine_end_silence`` ``SILENCE_END_MS`` after its speech when it has no beep
    (https://www.twilio.com/docs/voice/answering-machine-detection)."""
    if machine_detection not in ("Enable", "DetectMessageEnd"):
        return None
    if kind != "machine":
        return "human", amd_ms
    if machine_detection == "Enable":
        return "machine_start", amd_ms
    if greeting is not None and greeting.beep_end_ms is not None:
        return "machine_end_beep", greeting.beep_end_ms
    speech_end = greeting.speech_end_ms if greeting is not None else amd_ms
    return "machine_end_silence", speech_end + SILENCE_END_MS


def telnyx_detection(kind: str, mode: str, greeting: Greeting | None, amd_ms: int) -> list[tuple[int, str, str]]:
    """Telnyx's AMD webhooks for a callee of ``kind`` under ``answering_machine_detection`` ``mode``, as
    (ms after the answer, event_type, result), in order. ``detect``: ``call.machine.detection.ended``;
    ``detect_beep`` / ``detect_words`` add ``call.machine.greeting.ended`` ``beep_detected`` only when there is
    a beep; ``greeting_end`` adds it always (``beep_detected``, or ``ended`` by silence); ``premium`` uses the
    premium events (``human_residence`` for a person: UNVERIFIED which of the human results a fake should
    give). call-control.md §3.A; https://developers.telnyx.com/docs/voice/programmable-voice/answering-machine-detection.
    """
    if mode not in ("detect", "detect_beep", "detect_words", "greeting_end", "premium"):
        return []
    premium = mode == "premium"
    detection = "call.machine.premium.detection.ended" if premium else "call.machine.detection.ended"
    if kind != "machine":
        return [(amd_ms, detection, "human_residence" if premium else "human")]
    events = [(amd_ms, detection, "machine")]
    greeting_ended = "call.machine.premium.greeting.ended" if premium else "call.machine.greeting.ended"
    beep = greeting.beep_end_ms if greeting is not None else None
    if beep is not None and mode != "detect":
        events.append((max(beep, amd_ms), greeting_ended, "beep_detected"))
    elif mode == "greeting_end":
        speech_end = greeting.speech_end_ms if greeting is not None else amd_ms
        events.append((max(speech_end + SILENCE_END_MS, amd_ms), greeting_ended, "ended"))
    elif premium:
        speech_end = greeting.speech_end_ms if greeting is not None else amd_ms
        events.append((max(speech_end + SILENCE_END_MS, amd_ms), greeting_ended, "no_beep_detected"))
    return events


def without_query(url: str) -> str:
    """A ``<Stream url>`` as Twilio connects it: Twilio's ``<Stream>`` takes no query string (custom data goes
    in ``<Parameter>``s; https://www.twilio.com/docs/voice/twiml/stream), so the fake drops any."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def twilio_timestamp(now: float | None = None) -> str:
    """Twilio's ``Timestamp`` callback field: RFC 2822 in UTC."""
    return time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(now))


def iso_now(now: float | None = None) -> str:
    return datetime.fromtimestamp(time.time() if now is None else now, UTC).isoformat().replace("+00:00", "Z")
