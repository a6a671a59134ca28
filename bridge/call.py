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
whose ``start`` names the same call (``callSid``) takes the call over: same call id, same Gladia
session, same event sequence, and the bot gets ``call.stream_restarted``.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import structlog
from pydantic import ValidationError

from bridge.adapters.base import (
    Audio,
    CallStarted,
    CallStopped,
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


def stt_overrides(parameters: Mapping[str, str]) -> tuple[dict[str, Any], list[str]]:
    """Profile overrides from stream parameters named ``stt.<field>[.<field>...]``.

    Values are JSON when they parse (``0.2``, ``["fr","en"]``, ``true``) and strings otherwise.
    Shortcuts: ``stt.language`` (one code or a comma list) and ``stt.custom_vocabulary`` (comma
    list). Returns the overrides and the names of parameters that could not be used.
    """
    out: dict[str, Any] = {}
    bad: list[str] = []
    for name, raw in parameters.items():
        if not name.startswith(PARAM_PREFIX):
            continue
        path = name[len(PARAM_PREFIX):].split(".")
        if not all(path):
            bad.append(name)
            continue
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        if path == ["language"]:
            langs = [v.strip() for v in str(raw).split(",") if v.strip()]
            out.setdefault("language_config", {})["languages"] = langs
            continue
        if path == ["custom_vocabulary"]:
            words = [v.strip() for v in str(raw).split(",") if v.strip()]
            rt = out.setdefault("realtime_processing", {})
            rt["custom_vocabulary"] = True
            rt["custom_vocabulary_config"] = {"vocabulary": words}
            continue
        node = out
        for key in path[:-1]:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                bad.append(name)
                break
            node = child
        else:
            node[path[-1]] = value
    return out, bad


class SuspendedCalls:
    """Calls whose stream dropped without ``stop``, waiting (bounded) for a new stream."""

    def __init__(self) -> None:
        self._calls: dict[tuple[str, str], tuple[Call, asyncio.TimerHandle]] = {}
        self._ending: set[asyncio.Task[None]] = set()
        self.closed = False  # set when the bridge stops: calls then end instead of waiting

    def __len__(self) -> int:
        return len(self._calls)

    def suspend(self, call: Call, key: tuple[str, str], grace: float) -> None:
        handle = asyncio.get_running_loop().call_later(grace, self._expire, key)
        self._calls[key] = (call, handle)

    def track(self, task: asyncio.Task[None]) -> None:
        """A call's end-of-call work, which shutdown must wait for."""
        self._ending.add(task)
        task.add_done_callback(self._ending.discard)

    def take(self, key: tuple[str, str]) -> Call | None:
        entry = self._calls.pop(key, None)
        if entry is None:
            return None
        entry[1].cancel()
        return entry[0]

    def _expire(self, key: tuple[str, str]) -> None:
        entry = self._calls.pop(key, None)
        if entry is not None:
            task = asyncio.create_task(entry[0].end_suspended("stream_lost"))
            self._ending.add(task)
            task.add_done_callback(self._ending.discard)

    async def end_all(self) -> None:
        """Shutdown: end every suspended call now, and wait for calls already ending."""
        self.closed = True
        entries = list(self._calls.values())
        self._calls.clear()
        for _, handle in entries:
            handle.cancel()
        await asyncio.gather(*(call.end_suspended("stream_lost") for call, _ in entries), *self._ending,
                             return_exceptions=True)


class Call:
    """One call's lifetime (see the module docstring)."""

    def __init__(self, *, adapter: PhoneAdapter, settings: Settings, http: aiohttp.ClientSession,
                 delivery: Delivery, suspended: SuspendedCalls | None = None,
                 admission: Admission | None = None) -> None:
        self.admission = admission
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
                        for event in self.adapter.receive(message):
                            if isinstance(event, CallStarted):
                                self._begin(event)
                            elif isinstance(event, CallStopped):
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
            except PhoneProtocolError as exc:
                log.warning("call.bad_message", error=exc.reason, close_code=exc.close_code)
                result = CallResult("protocol_error", exc.close_code, exc.reason)
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
        """End a suspended call (no new stream came in time, or the bridge is stopping)."""
        assert self.started is not None
        structlog.contextvars.bind_contextvars(call_id=self.id, provider=self.started.provider,
                                               call_sid=self.started.call_sid, stream_sid=self.started.stream_sid)
        await self._end(CallResult(reason))

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
        previous = self.suspended.take((started.provider, started.call_sid)) if self.suspended else None
        if previous is not None:
            self._adopt(previous, started)
            return
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
                    self.stt.send_audio(self.transcoder.feed(event.payload))
                case CallStopped():
                    return True
                case Dtmf():
                    self.dtmf += 1
                    self.events.submit("call.dtmf", {"call": self._call_json(), "digit": event.digit})
                case Gap():
                    log.info("call.sequence_gap", expected=event.expected, received=event.received)
                case MarkReached():
                    log.debug("call.mark", name=event.name)
                case Ignored():
                    if event.unknown and event.kind not in self._warned_unknown:
                        self._warned_unknown.add(event.kind)
                        log.warning("call.unknown_event", event_type=event.kind)
                case CallStarted():
                    pass  # the adapter refuses a second start; nothing to do
        return False

    async def _end(self, result: CallResult) -> None:
        assert self.stt is not None and self.transcoder is not None and self.events is not None
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
        overrides, bad = stt_overrides(started.parameters)
        called = self._param("to")
        try:
            return stt.profile_for(called, overrides)
        except (ValidationError, ValueError) as exc:
            log.warning("call.bad_stt_parameters", error=str(exc).splitlines()[0],
                        parameters=sorted(k for k in started.parameters if k.startswith(PARAM_PREFIX)))
        for name in bad:
            log.warning("call.bad_stt_parameter", parameter=name)
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
            "parameters": self.started.parameters,
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
