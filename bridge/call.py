"""One call, start to end: phone events -> audio -> Gladia session -> bot events.

This is where the data-flow diagram becomes code. The call's own task is the only reader of the
phone socket; it never awaits the network on the audio path (``SttSession.send_audio`` and
``CallDelivery.submit`` are synchronous), so a slow Gladia or bot cannot delay the phone.

1. Wait (bounded by ``server.start_timeout``) for the carrier's ``start``: call ids and parameters.
2. Pick the STT profile (default, then the called number, then ``stt.*`` stream parameters),
   build the transcoder, open the Gladia session and the delivery queue, post ``call.started``.
3. Phone audio -> transcoder -> session, until ``stop``, a socket close or a protocol error.
4. Flush, finish the session (last finals), post ``call.ended`` with the summary, log one
   ``call.ended`` line.

Stream restarts: a carrier's stream that drops without ``stop`` (Twilio does not reconnect, but an
application can re-issue the TwiML from a status callback) leaves the call *suspended* for
``server.stream_restart_grace`` seconds, its Gladia session and delivery queue kept open. A new stream
whose ``start`` names the same call (``callSid``) *and proves it* takes the call over: same call id,
same Gladia session, same event sequence, and the bot gets ``call.stream_restarted``. The proof is the
``bridge.resume`` stream parameter, an HMAC of the call id under ``BRIDGE_SECRET`` that
``/twilio/voice`` puts in the TwiML (and the same account, when the carrier says it): a captured
upgrade signature or a known call id is not enough to take a call over. A live call is never taken
over, and suspended calls count against ``server.max_calls`` (the longest-waiting one is ended first
to make room).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Collection, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import structlog
from pydantic import ValidationError

from bridge.adapters.base import (
    Audio,
    CallStarted,
    CallStopped,
    CarrierError,
    Dtmf,
    Gap,
    Ignored,
    MarkReached,
    PhoneAdapter,
    PhoneEvent,
    StreamCounters,
)
from bridge.audio import Transcoder, make_transcoder
from bridge.delivery import CallDelivery, Delivery
from bridge.errors import PhoneProtocolError
from bridge.settings import Settings, SttProfile
from bridge.stt.protocol import init_request
from bridge.stt.session import Admission, FinalUtterance, SessionReplaced, SttGaveUp, SttNotice, SttSession

log = structlog.get_logger("bridge.call")

PARAM_PREFIX = "stt."


@dataclass(frozen=True, slots=True)
class CallResult:
    """How the phone side ended; the shell closes the socket with ``close_code`` if still open."""

    reason: str
    close_code: int = 1000
    message: str = ""


MAX_PARAMETER_CHARS = 512
_LANGUAGE = re.compile(r"[a-z]{2,3}(-[A-Za-z0-9]{2,8})?")
_SCALAR = (str, int, float, bool)


def _per_call_value(path: str, raw: str) -> Any:
    """The value of one allowed ``stt.<path>`` parameter, bounded; raises ValueError saying why not."""
    if len(raw) > MAX_PARAMETER_CHARS:
        raise ValueError(f"longer than {MAX_PARAMETER_CHARS} characters")
    if path == "language":
        codes = [v.strip() for v in raw.split(",") if v.strip()]
        if not 1 <= len(codes) <= 8 or not all(_LANGUAGE.fullmatch(c) for c in codes):
            raise ValueError("not 1 to 8 language codes such as en or fr,en")
        return codes
    if path == "custom_vocabulary":
        words = [v.strip() for v in raw.split(",") if v.strip()]
        if not 1 <= len(words) <= 100 or any(len(w) > 64 for w in words):
            raise ValueError("not 1 to 100 comma-separated words of at most 64 characters")
        return words
    try:
        value: Any = json.loads(raw)
    except ValueError:
        value = raw
    if path == "encoding" and value not in ("native", "wav/ulaw", "wav/alaw", "wav/pcm"):
        raise ValueError("not one of native, wav/ulaw, wav/alaw, wav/pcm")
    if path == "sample_rate" and value not in (8000, 16000):
        raise ValueError("not 8000 or 16000 (other rates only in the configured profiles)")
    if path == "bit_depth" and value not in (8, 16):
        raise ValueError("not 8 or 16")
    if path == "endpointing" and not (isinstance(value, int | float) and 0.01 <= value <= 10):
        raise ValueError("not a number of seconds from 0.01 to 10")
    if isinstance(value, list):
        if len(value) > 32 or not all(isinstance(v, _SCALAR) for v in value):
            raise ValueError("a list of more than 32 items, or of lists or objects")
    elif not isinstance(value, _SCALAR):
        raise ValueError("an object: only numbers, strings, booleans and lists of them")
    return value


def stt_overrides(parameters: Mapping[str, str], allowed: Collection[str]) -> tuple[dict[str, Any], list[str]]:
    """Profile overrides from stream parameters named ``stt.<field>[.<field>...]``.

    Only the fields in ``allowed`` (``stt.per_call_parameters``) are taken, each with bounds: a caller
    who controls the stream parameters (anyone who can reach a TwiML bin or a SIP header) must not
    choose where Gladia posts transcripts, paid add-ons, a thousand languages or another account.
    Values are JSON when they parse (``0.2``, ``true``) and strings otherwise. Shortcuts:
    ``stt.language`` (one code or a comma list) and ``stt.custom_vocabulary`` (comma list).
    Returns the overrides and one line per refused parameter (name and why).
    """
    out: dict[str, Any] = {}
    refused: list[str] = []
    for name, raw in parameters.items():
        if not name.startswith(PARAM_PREFIX):
            continue
        path = name[len(PARAM_PREFIX):]
        if path not in allowed:
            refused.append(f"{name[:64]}: not in stt.per_call_parameters")
            continue
        try:
            value = _per_call_value(path, raw)
        except ValueError as exc:
            refused.append(f"{name}: {exc}")
            continue
        if path == "language":
            out.setdefault("language_config", {})["languages"] = value
            continue
        if path == "custom_vocabulary":
            rt = out.setdefault("realtime_processing", {})
            rt["custom_vocabulary"] = True
            rt["custom_vocabulary_config"] = {"vocabulary": value}
            continue
        *parents, leaf = path.split(".")
        node = out
        for key in parents:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                refused.append(f"{name}: conflicts with another parameter")
                break
            node = child
        else:
            node[leaf] = value
    return out, refused


RESUME_PARAMETER = "bridge.resume"  # the stream parameter holding a call's resume token


def resume_token(secret: bytes, provider: str, call_sid: str) -> str:
    """The proof a restarted stream gives that it belongs to the call: an HMAC of the carrier's call
    id under the bridge's secret (``/twilio/voice`` puts it in the TwiML as a ``<Parameter>``)."""
    return hmac.new(secret, f"{provider}:{call_sid}".encode(), hashlib.sha256).hexdigest()[:32]


@dataclass(eq=False, slots=True)
class _Suspended:
    call: Call
    key: tuple[str, str]
    since: float
    timer: asyncio.TimerHandle | None = None


class SuspendedCalls:
    """Calls whose stream dropped without ``stop``, each waiting (bounded) for a new stream.

    Several calls may wait under one carrier call id (Twilio allows several ``<Stream>``s on a call,
    and each can drop). Every entry leaves exactly one way: taken by a new stream that proves it is
    the same call, or ended (its grace ran out, it was shed to make room, or the bridge stopped).
    """

    def __init__(self, limit: int = 100) -> None:
        self.limit = limit
        self._by_key: dict[tuple[str, str], list[_Suspended]] = {}
        self._entries: dict[_Suspended, None] = {}  # oldest first
        self._ending: set[asyncio.Task[None]] = set()
        self.closed = False  # set when the bridge stops: calls then end instead of waiting
        self.shed = 0

    def __len__(self) -> int:
        return len(self._entries)

    def suspend(self, call: Call, key: tuple[str, str], grace: float) -> None:
        loop = asyncio.get_running_loop()
        entry = _Suspended(call, key, loop.time())
        entry.timer = loop.call_later(grace, self._end, entry, "stream_lost")
        self._by_key.setdefault(key, []).append(entry)
        self._entries[entry] = None
        while len(self._entries) > self.limit:
            self.shed_oldest("too many suspended calls")

    def track(self, task: asyncio.Task[None]) -> None:
        """A call's end-of-call work, which shutdown must wait for."""
        self._ending.add(task)
        task.add_done_callback(self._ending.discard)

    def waiting(self, key: tuple[str, str]) -> int:
        return len(self._by_key.get(key, ()))

    def take(self, key: tuple[str, str], started: CallStarted) -> Call | None:
        """The oldest call suspended under ``key`` that ``started`` proves to be, taken off the list."""
        for entry in self._by_key.get(key, ()):
            if entry.call.accepts_restart(started):
                self._remove(entry)
                if entry.timer is not None:
                    entry.timer.cancel()
                return entry.call
        return None

    def shed_oldest(self, why: str) -> bool:
        """End the longest-waiting suspended call to make room; False when there is none."""
        entry = next(iter(self._entries), None)
        if entry is None:
            return False
        self.shed += 1
        log.warning("call.shed", call_id=entry.call.id, reason=why, suspended=len(self._entries))
        self._end(entry, "shed")
        return True

    def _remove(self, entry: _Suspended) -> None:
        self._entries.pop(entry, None)
        siblings = self._by_key.get(entry.key, [])
        if entry in siblings:
            siblings.remove(entry)
        if not siblings:
            self._by_key.pop(entry.key, None)

    def _end(self, entry: _Suspended, reason: str) -> None:
        if entry not in self._entries:
            return
        self._remove(entry)
        if entry.timer is not None:
            entry.timer.cancel()
        self.track(asyncio.create_task(entry.call.end_suspended(reason), name=f"call-end-{entry.call.id}"))

    async def end_all(self) -> None:
        """Shutdown: end every suspended call now, and wait for calls already ending."""
        self.closed = True
        for entry in list(self._entries):
            self._end(entry, "stream_lost")
        await asyncio.gather(*self._ending, return_exceptions=True)


class Call:
    """One call's lifetime (see the module docstring)."""

    def __init__(self, *, adapter: PhoneAdapter, settings: Settings, http: aiohttp.ClientSession,
                 delivery: Delivery, suspended: SuspendedCalls | None = None,
                 admission: Admission | None = None, resume_secret: bytes = b"") -> None:
        self.admission = admission
        self.resume_secret = resume_secret
        self._ended = False
        self.forced_end: CallResult | None = None  # set by the shell when it ends the stream itself
        self._stream_t0 = time.monotonic()
        self._stream_audio = 0  # audio bytes received on this stream
        self._audio_allowance = 0.0  # bytes the stream may have sent before the rate is checked again
        self._gap_logged_at = -1e9
        self._carrier_errors = 0
        self._gaps_unlogged = 0
        self.adapter = adapter
        self.settings = settings
        self.http = http
        self.delivery = delivery
        self.suspended = suspended
        self.streams = 1
        self._earlier_phone = (0, 0, 0)  # frames, bytes, gaps of the call's earlier streams
        self.metrics_seen: object = None  # what bridge.metrics already reported for this call
        self.id = uuid.uuid4().hex
        self.started: CallStarted | None = None
        self.stt: SttSession | None = None
        self.events: CallDelivery | None = None
        self.transcoder: Transcoder | None = None
        self.profile: SttProfile | None = None
        self._t0 = time.monotonic()
        self._warned_unknown: set[str] = set()
        self.utterances = 0
        self.dtmf = 0

    # -- the call ------------------------------------------------------------------------------

    async def run(self, messages: AsyncIterator[str | bytes]) -> CallResult:
        """Drive the call from the phone socket's messages until it ends; never raises."""
        structlog.contextvars.bind_contextvars(call_id=self.id, provider=self.adapter.provider)
        result = CallResult("hangup" if self.adapter.close_ends_call else "socket_closed", 1000)
        try:
            try:
                async with asyncio.timeout(self.settings.server.start_timeout):
                    while self.started is None:
                        message = await anext(messages, None)
                        if message is None:
                            return CallResult("closed_before_start")
                        events = self.adapter.receive(message)
                        for i, event in enumerate(events):
                            if isinstance(event, CallStarted):
                                self._begin(event)
                                # The rest of that message (a fork's first binary frame is its start
                                # and its first audio at once) belongs to the call.
                                if self._handle(events[i + 1:]):
                                    return CallResult("stop")
                                break
                            if isinstance(event, CallStopped):
                                return CallResult("stopped_before_start")
            except TimeoutError:
                log.warning("call.no_start", timeout=self.settings.server.start_timeout)
                return CallResult("start_timeout", 1008, "no 'start' message in time")
            except PhoneProtocolError as exc:
                log.warning("call.bad_message", error=exc.reason, close_code=exc.close_code)
                return CallResult("protocol_error", exc.close_code, exc.reason)

            try:
                async for message in messages:
                    if self._handle(self.adapter.receive(message)):
                        result = CallResult("stop")
                        break
                self._handle(self.adapter.close())  # what the adapter still holds (e.g. reordered audio)
            except PhoneProtocolError as exc:
                log.warning("call.bad_message", error=exc.reason, close_code=exc.close_code)
                result = CallResult("protocol_error", exc.close_code, exc.reason)
            if self.forced_end is not None:
                result = self.forced_end
            return result
        finally:
            if self.started is not None:
                grace = self.settings.server.stream_restart_grace
                if (result.reason == "socket_closed" and self.suspended is not None and grace > 0
                        and not self.suspended.closed):
                    log.info("call.stream_lost", waiting_for_restart=grace)
                    self.suspended.suspend(self, (self.started.provider, self.started.call_sid), grace)
                else:
                    # The end of a call (last finals, call.ended) runs as its own task, shielded: it
                    # completes even if the server cancels the handler when the phone hangs up
                    # (aiohttp's handler_cancellation).
                    end = asyncio.create_task(self._end(result), name=f"call-end-{self.id}")
                    if self.suspended is not None:
                        self.suspended.track(end)
                    await asyncio.shield(end)
            structlog.contextvars.unbind_contextvars("call_id", "provider", "call_sid", "stream_sid")

    async def end_suspended(self, reason: str) -> None:
        """End a suspended call (no new stream came in time, it was shed, or the bridge is stopping)."""
        if self.started is None:
            return
        structlog.contextvars.bind_contextvars(call_id=self.id, provider=self.started.provider,
                                               call_sid=self.started.call_sid, stream_sid=self.started.stream_sid)
        await self._end(CallResult(reason))

    def accepts_restart(self, started: CallStarted) -> bool:
        """Whether a new stream's ``start`` proves it belongs to this (suspended) call."""
        if self.started is None or not self.resume_secret:
            return False
        if (started.provider, started.call_sid) != (self.started.provider, self.started.call_sid):
            return False
        accounts = (started.account_sid, self.started.account_sid)
        if None not in accounts and accounts[0] != accounts[1]:
            return False
        want = resume_token(self.resume_secret, started.provider, started.call_sid)
        return hmac.compare_digest(started.parameters.get(RESUME_PARAMETER, "").encode(), want.encode())

    def _adopt(self, previous: Call, started: CallStarted) -> None:
        """Take over a suspended call: its id, Gladia session, delivery queue and counters."""
        self.id = previous.id
        self.started = started
        structlog.contextvars.bind_contextvars(call_id=self.id, call_sid=started.call_sid,
                                               stream_sid=started.stream_sid)
        self.stt, self.events, self.profile = previous.stt, previous.events, previous.profile
        assert self.stt is not None and self.events is not None and self.profile is not None
        self.stt.on_notice = self._on_stt
        target = self.profile.audio_format(started.audio_format)
        assert target is not None
        same_format = previous.transcoder is not None and previous.transcoder.source == started.audio_format
        self.transcoder = previous.transcoder if same_format else make_transcoder(started.audio_format, target)
        self.utterances, self.dtmf, self._t0 = previous.utterances, previous.dtmf, previous._t0
        self.metrics_seen = previous.metrics_seen  # the earlier stream's counts were already reported
        self.streams = previous.streams + 1
        c = previous.adapter.counters
        f, b, g = previous._earlier_phone
        self._earlier_phone = (f + c.audio_frames, b + c.audio_bytes, g + c.gaps)
        self.events.submit("call.stream_restarted", {"call": self._call_json(), "streams": self.streams})
        log.info("call.stream_restarted", streams=self.streams)

    def _begin(self, started: CallStarted) -> None:
        key = (started.provider, started.call_sid)
        previous = self.suspended.take(key, started) if self.suspended else None
        if previous is not None:
            self._adopt(previous, started)
            return
        if self.suspended is not None and self.suspended.waiting(key):
            log.warning("call.restart_refused", call_sid=started.call_sid, waiting=self.suspended.waiting(key),
                        detail="a stream names a suspended call without its resume token (bridge.resume) or "
                               "from another account: started as a call of its own")
        self.started = started
        structlog.contextvars.bind_contextvars(call_sid=started.call_sid, stream_sid=started.stream_sid)
        self.profile = self._profile(started)
        target = self.profile.audio_format(started.audio_format)
        assert target is not None
        self.transcoder = make_transcoder(started.audio_format, target)
        self.events = self.delivery.open(self.id, self._call_json())
        self.events.submit("call.started", {"call": self._call_json(), "stt": {
            "encoding": target.encoding, "sample_rate": target.sample_rate, "bit_depth": target.bit_depth}})
        body = init_request(self.profile.request_body(target), {
            "bridge_call_id": self.id, "provider": started.provider,
            "call_sid": started.call_sid, "stream_sid": started.stream_sid,
        })
        self.stt = SttSession(http=self.http, settings=self.settings.gladia, request_body=body,
                              audio_format=target, on_notice=self._on_stt, admission=self.admission)
        self.stt.start()
        log.info("call.started", caller=self._param("from"), called=self._param("to"),
                 encoding=target.encoding, sample_rate=target.sample_rate)

    def _handle(self, events: list[PhoneEvent]) -> bool:
        """Dispatch one message's events; True when the stream has ended."""
        assert self.stt is not None and self.transcoder is not None and self.events is not None
        for event in events:
            match event:
                case Audio():
                    self._stream_audio += len(event.payload)
                    if self._stream_audio > self._audio_allowance:
                        self._check_audio_rate()
                    self.stt.send_audio(self.transcoder.feed(event.payload))
                case CallStopped():
                    return True
                case Dtmf():
                    self.dtmf += 1
                    self.events.submit("call.dtmf", {"call": self._call_json(), "digit": event.digit})
                case Gap():
                    self._gap(event)
                case MarkReached():
                    log.debug("call.mark", name=event.name)
                case Ignored():
                    if event.unknown and event.kind not in self._warned_unknown:
                        self._warned_unknown.add(event.kind)
                        log.warning("call.unknown_event", event_type=event.kind)
                case CarrierError():
                    self._carrier_errors += 1
                    if self._carrier_errors <= 10:
                        log.warning("call.carrier_error", detail=event.detail[:300], count=self._carrier_errors)
                case CallStarted():
                    pass  # the adapter refuses a second start; nothing to do
        return False

    def _gap(self, gap: Gap) -> None:
        """Lost or reordered carrier messages: the first gap is logged, then one line per 10 s with the
        count since (a stream of 500 gaps is two lines, not 500); the summary has the total."""
        self._gaps_unlogged += 1
        now = time.monotonic()
        if now - self._gap_logged_at >= 10.0:
            log.info("call.sequence_gap", expected=gap.expected, received=gap.received, gaps=self._gaps_unlogged)
            self._gap_logged_at, self._gaps_unlogged = now, 0

    def _check_audio_rate(self) -> None:
        """No carrier sends audio faster than real time: a stream may be ahead of the clock by
        ``server.audio_burst_seconds`` (a jitter buffer flushing) and run at ``server.max_audio_speed``
        times real time; beyond that it is closed (1008). Checked only when the byte count passes the
        last allowance, so a stream at real time costs one comparison per frame."""
        server = self.settings.server
        if server.max_audio_speed <= 0 or self.started is None:
            self._audio_allowance = float("inf")
            return
        rate = self.started.audio_format.bytes_per_second
        elapsed = time.monotonic() - self._stream_t0
        allowance = rate * (server.audio_burst_seconds + server.max_audio_speed * elapsed)
        if self._stream_audio > allowance:
            speed = self._stream_audio / rate / max(elapsed, 1e-3)
            raise PhoneProtocolError(f"audio faster than real time ({self._stream_audio / rate:.0f} s of audio in "
                                     f"{elapsed:.1f} s, {speed:.0f}x)", 1008)
        self._audio_allowance = allowance + rate  # look again after one more second of audio

    async def _end(self, result: CallResult) -> None:
        assert self.stt is not None and self.transcoder is not None and self.events is not None
        if self._ended:  # every call ends exactly once, whatever the interleaving
            return
        self._ended = True
        self.stt.send_audio(self.transcoder.flush())
        await self.stt.finish(self.settings.gladia.finish_timeout)
        if not self.stt.ended_normally and not self.stt.gave_up:
            await self.stt.recover_missed_finals()
        summary = self.summary(result)
        self.events.submit("call.ended", {"call": self._call_json(), "summary": summary})
        self.events.close()
        log.info("call.ended", **summary)

    # -- STT notices (called from the session task; never awaits) -----------------------------

    def _on_stt(self, notice: SttNotice) -> None:
        assert self.events is not None
        match notice:
            case FinalUtterance():
                self.utterances += 1
                self.events.submit("utterance.final", {
                    "call": self._call_json(),
                    "utterance": _utterance_json(notice),
                    "stt_session_id": notice.session_id,
                })
            case SessionReplaced():
                self.events.submit("stt.session_replaced", {
                    "call": self._call_json(), "old_stt_session_id": notice.old_session_id,
                    "stt_session_id": notice.new_session_id, "reason": notice.reason,
                })
            case SttGaveUp():
                self.events.submit("stt.failed", {"call": self._call_json(), "reason": notice.reason})

    # -- helpers -------------------------------------------------------------------------------

    def _param(self, name: str) -> str | None:
        """``from``/``to``: what the carrier said, else a stream parameter of that name (any case)."""
        assert self.started is not None
        known = {"from": self.started.caller, "to": self.started.called}.get(name)
        if known:
            return known
        for key, value in self.started.parameters.items():
            if key.lower() == name:
                return value
        return None

    def _profile(self, started: CallStarted) -> SttProfile:
        stt = self.settings.stt
        overrides, refused = stt_overrides(started.parameters, stt.per_call_parameters)
        if refused:  # one line per call, however many parameters
            log.warning("call.stt_parameters_refused", refused=refused[:10], count=len(refused))
        called = self._param("to")
        try:
            return stt.profile_for(called, overrides)
        except (ValidationError, ValueError) as exc:
            log.warning("call.bad_stt_parameters", error=str(exc).splitlines()[0][:200],
                        parameters=sorted(k for k in started.parameters if k.startswith(PARAM_PREFIX))[:10])
        return stt.profile_for(called)

    def phone_totals(self, counters: StreamCounters) -> tuple[int, int]:
        """Audio frames and bytes of the whole call (every stream it had)."""
        frames, nbytes, _ = self._earlier_phone
        return frames + counters.audio_frames, nbytes + counters.audio_bytes

    def _call_json(self) -> dict[str, Any]:
        assert self.started is not None
        return {
            "id": self.id,
            "provider": self.started.provider,
            "call_sid": self.started.call_sid,
            "stream_sid": self.started.stream_sid,
            "from": self._param("from"),
            "to": self._param("to"),
            "parameters": {k: v for k, v in self.started.parameters.items() if k != RESUME_PARAMETER},
        }

    def summary(self, result: CallResult) -> dict[str, Any]:
        stt = self.stt
        assert stt is not None and self.events is not None
        replay = stt.replay
        counters = self.adapter.counters
        frames, nbytes, gaps = self._earlier_phone
        return {
            "end_reason": result.reason,
            "duration_s": round(time.monotonic() - self._t0, 3),
            "phone_streams": self.streams,
            "phone_frames": frames + counters.audio_frames,
            "phone_bytes": nbytes + counters.audio_bytes,
            "phone_gaps": gaps + counters.gaps,
            "stt_bytes": replay.appended_bytes,
            "stt_bytes_sent": replay.sent_bytes,
            "stt_sessions": len(stt.session_ids),
            "stt_session_id": stt.session_id,
            "stt_connections": stt.connections,
            "stt_reconnects": stt.reconnects,
            "stt_resent_bytes": replay.resent_bytes,
            "stt_unacked_bytes": replay.unacked,
            "stt_overflow_bytes": replay.overflow_bytes,
            "stt_lost_bytes": replay.lost_bytes,
            "stt_duplicate_finals_dropped": stt.duplicate_finals,
            "stt_ended_normally": stt.ended_normally,
            "stt_gave_up": stt.gave_up,
            "stt_queued_s": stt.queued_seconds,
            "stt_keepalive_bytes": stt.keepalive_bytes,
            "stt_recovered_finals": stt.recovered_finals,
            "utterances": self.utterances,
            "dtmf": self.dtmf,
            "webhook_delivered": self.events.counters.delivered,
            "webhook_failed": self.events.counters.failed,
            "webhook_dropped": self.events.counters.dropped,
        }


def _utterance_json(final: FinalUtterance) -> dict[str, Any]:
    utt = final.utterance
    shift = final.call_start - utt.start
    return {
        "id": final.id,
        "text": utt.text.strip(),
        "start": round(final.call_start, 3),
        "end": round(final.call_end, 3),
        "language": utt.language,
        "confidence": utt.confidence,
        "channel": utt.channel,
        "words": [{"word": w.word.strip(), "start": round(w.start + shift, 3), "end": round(w.end + shift, 3),
                   "confidence": w.confidence} for w in utt.words],
    }
