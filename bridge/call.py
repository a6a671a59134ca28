"""One call, from its first stream's ``start`` to ``call.ended``: phone audio -> Gladia -> bot events.

This is where the data-flow diagram becomes code. A call is built once its first stream has said
``start`` (so it knows its ids, parameters and profile), and is then carried by one stream at a time
(:class:`bridge.phone_stream.PhoneStream`); the stream's reading task drives :meth:`Call.run` and
never awaits the network on the audio path (``SttStream.send_audio`` and ``CallDelivery.submit`` are
synchronous), so a slow Gladia or bot cannot delay the phone.

1. :meth:`Call.begin`: pick the STT profile (default, then the called number, then the ``stt.*`` stream
   parameters allowed), open the delivery queue and the Gladia session, post ``call.started``.
2. :meth:`Call.attach`: a stream carries the call (the first one, or a restarted one).
3. :meth:`Call.run`: phone audio -> transcoder -> session, until ``stop``, a socket close or a
   protocol error.
4. :meth:`Call.end`: flush, finish the session (last finals), post ``call.ended`` with the summary
   (:meth:`Call.stats`), log one ``call.ended`` line. Once, whatever the interleaving.

Stream restarts: a carrier's stream that drops without ``stop`` (Twilio does not reconnect, but an
application can re-issue the TwiML from a status callback) leaves the call *suspended*
(:mod:`bridge.suspended_calls`) for ``server.stream_restart_grace`` seconds, its Gladia session and delivery
queue kept open. A new stream whose ``start`` names the same call (``callSid``) *and proves it* is
attached to the call: same call id, same Gladia session, same event sequence, and the bot gets
``call.stream_restarted``. The proof is the ``bridge.resume`` stream parameter, an HMAC of the call id
under ``BRIDGE_SECRET`` that ``/twilio/voice`` puts in the TwiML (and the same account, when the
carrier says it): a captured upgrade signature or a known call id is not enough to take a call over.
"""

from __future__ import annotations

import hashlib
import hmac
import inspect
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, assert_never

import aiohttp
import structlog
from pydantic import ValidationError

from bridge.adapters.base import (
    Audio,
    CallStarted,
    CallStopped,
    CarrierError,
    Dtmf,
    FlowControl,
    Gap,
    Ignored,
    MarkReached,
    PhoneEvent,
    StreamCounters,
)
from bridge.audio import AudioFormat
from bridge.delivery import CallDelivery, Delivery, PendingEvent
from bridge.errors import ActionError, PhoneProtocolError
from bridge.phone_stream import AudioPath, CallResult, MessageSource, PhoneStream
from bridge.reply.actions import parse_actions
from bridge.reply.bot_socket import BotSocket
from bridge.reply.call_reply import CallReply
from bridge.reply.tts import Speaker
from bridge.settings import Settings, speaker_labels
from bridge.stats import CallStats, EndReason, Meter
from bridge.stt.admission import Admission
from bridge.stt.notices import (
    CallerSpeech,
    FinalUtterance,
    PartialUtterance,
    SessionReplaced,
    SttGaveUp,
    SttNotice,
)
from bridge.stt.protocol import init_request
from bridge.stt.stream import SessionState as SttSessionState
from bridge.stt.stream import SttStream
from bridge.stt_profile import PARAM_PREFIX, SttProfile, stt_overrides
from bridge.transcripts import TranscriptStore
from bridge.untrusted import loads, same_secret
from bridge.webhook import WebhookResponse

log = structlog.get_logger("bridge.call")

RESUME_PARAMETER = "bridge.resume"  # the stream parameter holding a call's resume token
MAX_CONVERSATION_UTTERANCES = 2000  # transcript.completed carries at most this many utterances ...
MAX_CONVERSATION_CHARS = 200_000  # ... and this much text (the whole record is in the transcript API)
_TURN_FIELDS = ("id", "channel", "speaker", "start", "end", "text", "language")
_TURN_CHANNEL, _TURN_START = _TURN_FIELDS.index("channel"), _TURN_FIELDS.index("start")
SPEAKERS_PARAMETER = "bridge.speakers"  # a stream's speaker labels, channel 0 then 1: "caller,agent"
# Answers cannot loop: an event the bridge posts because of a webhook answer is one *generation* after
# the event answered (the caller's events, and what time brings, are generation 0). An action.failed
# of generation 2 or more (a failure caused by the answer to a failure) is logged, not posted; any
# other event more than MAX_ANSWER_CHAIN answers away from the caller (e.g. playback.interrupted of a
# bot answering each one with a `queue: replace` say) is logged, not posted.
MAX_ANSWER_CHAIN = 8
MAX_GENERATIONS_KEPT = 4096  # events and actions whose generation is remembered, per call


def restart_proven(secret: bytes, started: CallStarted) -> bool:
    """Whether a stream's ``start`` carries the resume token of its carrier call (``bridge.resume``)."""
    if not secret:
        return False
    want = resume_token(secret, started.provider, started.call_sid)
    return same_secret(started.parameters.get(RESUME_PARAMETER, ""), want)


def resume_token(secret: bytes, provider: str, call_sid: str) -> str:
    """The proof a restarted stream gives that it belongs to the call: an HMAC of the carrier's call
    id under the bridge's secret (``/twilio/voice`` puts it in the TwiML as a ``<Parameter>``)."""
    return hmac.new(secret, f"{provider}:{call_sid}".encode(), hashlib.sha256).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class CarriedCall:
    """What a call brings when another instance hands it over (fleet mode)."""

    call_id: str
    session: SttSessionState | None  # None: the former owner had no Gladia session yet (a new one opens)
    last_sequence: int
    events: list[PendingEvent]  # its events not yet delivered, in order
    streams: int = 1


class Call:
    """One call's lifetime (see the module docstring). Build it with :meth:`begin`."""

    def __init__(
        self,
        started: CallStarted,
        *,
        settings: Settings,
        http: aiohttp.ClientSession,
        delivery: Delivery,
        admission: Admission | None,
        resume_secret: bytes,
        speaker: Speaker | None = None,
        transcripts: TranscriptStore | None = None,
        carried: CarriedCall | None = None,
    ) -> None:
        self.id = carried.call_id if carried is not None else uuid.uuid4().hex
        self.settings = settings
        self.resume_secret = resume_secret
        self.started = started  # the start of the stream carrying the call now (ids, parameters)
        structlog.contextvars.bind_contextvars(
            call_id=self.id, provider=started.provider, call_sid=started.call_sid, stream_sid=started.stream_sid
        )
        self.profile = self._profile(started)
        target = self.profile.audio_format(started.audio_format)
        assert target is not None  # a native profile always has a format once the stream's is known
        self.target: AudioFormat = target  # one track's
        # What Gladia gets: one channel, or both parties as two (channel 0 the caller, 1 the other party).
        self.stt_format = replace(target, channels=started.channels)
        self.both_parties = started.channels == 2
        self.speakers = self._speakers(started)
        self.reply = CallReply(
            self.id, settings=settings.reply, speaker=speaker, http=http, emit=self._emit, on_hangup=self._bot_hung_up
        )
        self.events: CallDelivery = delivery.open(
            self.id,
            self.call_json(),
            on_response=self._bot_answered,
            carry_on=(carried.last_sequence, carried.events) if carried is not None else None,
        )
        self.bot_socket = (
            BotSocket(settings.bot_ws, http, self.id, self.reply.apply, on_acked=self.events.acknowledged)
            if settings.bot_ws.url
            else None
        )
        self._stream: PhoneStream | None = None
        body = init_request(
            self.profile.request_body(self.stt_format),
            {
                "bridge_call_id": self.id,
                "provider": started.provider,
                "call_sid": started.call_sid,
                "stream_sid": started.stream_sid,
            },
        )
        self.stt = SttStream(
            http=http,
            settings=settings.gladia,
            request_body=body,
            audio_format=self.stt_format,
            on_notice=self._on_stt,
            admission=admission,
            resume=carried.session if carried is not None else None,
        )
        self.streams = 0
        self._counters = StreamCounters()  # the current stream's
        self._earlier = (0, 0, 0)  # frames, bytes, gaps of the call's earlier streams
        self._audio_path: AudioPath | None = None  # the current stream's converter (flushed at the end)
        self._t0 = time.monotonic()
        self._ended = False
        self._last_posted = False  # call.ended went out
        self.utterances = 0
        self.transcripts = transcripts  # the record kept after the call (None: off)
        # for transcript.completed, bounded: one tuple per utterance, its fields in _TURN_FIELDS' order
        # (a tuple is about a third of a dict's size, and a call keeps up to 2000 of them)
        self._conversation: list[tuple[Any, ...]] = []
        self._conversation_chars = 0
        self.dtmf = 0
        self.on_ended: Callable[[str, CallStats], None] | None = None  # e.g. the metrics' last update
        # Set while the call is suspended (its stream dropped, a restart may come): ends it from there
        # (bridge.suspended_calls), e.g. when the bot hangs up meanwhile.
        self.end_suspended_now: Callable[[EndReason], None] | None = None
        self._answering: int | None = None  # the generation of what the answer being applied causes
        self._generations: OrderedDict[str, int] = OrderedDict()  # webhook-id -> generation (>= 1)
        self._action_generations: OrderedDict[str, int] = OrderedDict()  # answered action id -> generation
        self._not_sent = 0  # events an answer caused that were logged, not posted (see MAX_ANSWER_CHAIN)
        self._ignored_answers = 0  # 2xx answers without actions (logged once per call)

    @classmethod
    def begin(cls, started: CallStarted, **deps: Any) -> Call:
        """A new call for a stream's ``start``: delivery and Gladia session opened, ``call.started`` posted."""
        call = cls(started, **deps)
        target = call.stt_format
        call._post(
            "call.started",
            {
                "call": call.call_json(),
                "stt": {
                    "encoding": target.encoding,
                    "sample_rate": target.sample_rate,
                    "bit_depth": target.bit_depth,
                    "channels": target.channels,
                },
                "speakers": list(call.speakers[: target.channels]),
            },
        )
        call.stt.start()
        if call.transcripts is not None:
            call.transcripts.call_started(
                {**call.call_json(), "speakers": list(call.speakers[: target.channels])}, time.time()
            )
        log.info(
            "call.started",
            caller=call.param("from"),
            called=call.param("to"),
            encoding=target.encoding,
            sample_rate=target.sample_rate,
        )
        return call

    @classmethod
    def carry_on(cls, started: CallStarted, carried: CarriedCall, **deps: Any) -> Call:
        """Fleet mode: a call another instance held, whose restarted stream reached this one. Same call
        id, the same Gladia session from its acknowledged offset, the event sequence and the events it
        had not delivered; the bot gets ``call.stream_restarted``."""
        call = cls(started, carried=carried, **deps)
        call.streams = carried.streams  # attaching the stream says call.stream_restarted
        call.stt.start()
        log.info("call.carried_on", streams=carried.streams + 1, events_left=len(carried.events))
        return call

    async def hand_over(self, timeout: float) -> SttSessionState | None:
        """Fleet mode: the call's restarted stream reached another instance, which carries it on. This
        one lets Gladia acknowledge what it sent, closes its session socket (the session stays open),
        stops its reply and ends here without a word to the bot (the call goes on over there).
        Returns where the Gladia session stands."""
        if self._ended:
            return None
        self._ended = True
        state = await self.stt.hand_over(timeout)
        await self.reply.close()
        self.events.close()  # what is left is delivered by the next owner (the delivery gate closes)
        if self.bot_socket is not None:
            await self.bot_socket.close()
        log.info("call.handed_over", session=state.session_id if state is not None else None)
        return state

    # -- streams ------------------------------------------------------------------------------

    def accepts_restart(self, started: CallStarted) -> bool:
        """Whether a new stream's ``start`` proves it belongs to this (suspended) call."""
        if not self.resume_secret:
            return False
        if (started.provider, started.call_sid) != (self.started.provider, self.started.call_sid):
            return False
        if started.channels != self.stt_format.channels:
            return False  # the Gladia session was opened for the other number of channels
        accounts = (started.account_sid, self.started.account_sid)
        if None not in accounts and accounts[0] != accounts[1]:
            return False
        return restart_proven(self.resume_secret, started)

    def attach(self, stream: PhoneStream) -> None:
        """``stream`` carries the call from now on: its first stream, or a restarted one."""
        assert stream.started is not None
        if self.streams:
            c = self._counters
            f, b, g = self._earlier
            self._earlier = (f + c.audio_frames, b + c.audio_bytes, g + c.gaps)
            self.started = stream.started
            structlog.contextvars.bind_contextvars(
                call_id=self.id, call_sid=self.started.call_sid, stream_sid=self.started.stream_sid
            )
            self._post("call.stream_restarted", {"call": self.call_json(), "streams": self.streams + 1})
            log.info("call.stream_restarted", streams=self.streams + 1)
        self.streams += 1
        self._audio_path = stream.use_transcoder(
            self.target, previous=self._audio_path, max_delay_ms=self.settings.parties.max_delay_ms
        )
        self._counters = stream.counters
        stream.call_id = self.id
        self._stream = stream
        self.reply.attach(stream.adapter, stream.send)

    async def run(self, stream: PhoneStream, messages: MessageSource, first: list[PhoneEvent]) -> CallResult:
        """Carry ``stream``'s messages (``first``: events already read with its ``start``) into the call
        until the stream ends; returns how it ended. A protocol error ends the stream, not the bridge.
        Each message is handled as it arrives, on the connection's stack (``messages.deliver``)."""
        result = stream.end_without_stop
        adapter = stream.adapter

        def on_message(message: str | bytes) -> bool:
            return self._handle(stream, adapter.receive(message))

        try:
            if self._handle(stream, first) or await messages.deliver(on_message):
                result = CallResult("stop")
            self._handle(stream, adapter.close())  # what the adapter still holds (e.g. reordered audio)
        except PhoneProtocolError as exc:
            log.warning("call.bad_message", error=exc.reason, close_code=exc.close_code)
            result = CallResult("protocol_error", exc.close_code, exc.reason)
        return stream.forced_end or result

    def _handle(self, stream: PhoneStream, events: list[PhoneEvent]) -> bool:
        """Dispatch one message's events; True when the stream has ended."""
        for event in events:
            match event:
                case Audio():
                    if self.both_parties:
                        self.stt.send_audio(stream.party_audio(event))
                    else:
                        self.stt.send_audio(stream.audio(event.payload))
                case CallStopped():
                    return True
                case Dtmf():
                    self.dtmf += 1
                    self._post("call.dtmf", {"call": self.call_json(), "digit": event.digit})
                    self.reply.caller_dtmf()
                case Gap() | CarrierError() | Ignored():
                    stream.note(event)
                case MarkReached():
                    self.reply.mark_reached(event.name)
                case FlowControl():
                    self.reply.flow(event.paused)
                case CallStarted():
                    pass  # the adapter refuses a second start; nothing to do
                case _:
                    assert_never(event)
        return False

    # -- the end --------------------------------------------------------------------------------

    async def end(self, result: CallResult) -> None:
        """Finish the call: last audio, Gladia's last finals, ``call.ended``. Runs once."""
        if self._ended:  # every call ends exactly once, whatever the interleaving
            return
        self._ended = True
        self.end_suspended_now = None
        # Each part is guarded: whatever one raises is logged with its traceback and the rest still
        # runs, so call.ended is always posted and logged and on_ended always called.
        await self._end_part("audio_flush", self._flush_audio)
        await self._end_part("reply_close", self.reply.close)  # what played: interrupted before call.ended
        await self._end_part("stt_finish", self._finish_stt)
        stats = self.stats(result.reason)
        summary = stats.summary()
        await self._end_part(
            "call_ended", lambda: self._post("call.ended", {"call": self.call_json(), "summary": summary})
        )
        await self._end_part(
            "transcript_completed", lambda: self._post("transcript.completed", self._transcript_json())
        )
        transcripts, bot_socket, on_ended = self.transcripts, self.bot_socket, self.on_ended
        if transcripts is not None:
            await self._end_part(
                "transcript_record", lambda: transcripts.call_ended(self.id, time.time(), result.reason)
            )
        await self._end_part("delivery_close", self.events.close)
        if bot_socket is not None:
            await self._end_part("bot_socket_close", bot_socket.close)
        if self._not_sent:
            log.warning("reply.answer_events_not_sent", events=self._not_sent, detail="see MAX_ANSWER_CHAIN")
        log.info("call.ended", **summary)
        if on_ended is not None:
            await self._end_part("on_ended", lambda: on_ended(self.id, stats))

    async def _end_part(self, name: str, part: Callable[[], object]) -> None:
        """One part of the call's end; what it raises is logged (with its traceback), not raised."""
        try:
            done = part()
            if inspect.isawaitable(done):
                await done
        except Exception:
            log.exception("call.end_part_failed", part=name)

    async def _flush_audio(self) -> None:
        if self._audio_path is not None:
            self.stt.send_audio(self._audio_path.flush())

    async def _finish_stt(self) -> None:
        await self.stt.finish(self.settings.gladia.finish_timeout)
        if not self.stt.ended_normally and not self.stt.gave_up:
            await self.stt.recover_missed_finals()

    async def end_suspended(self, reason: EndReason) -> None:
        """End a suspended call (no new stream came in time, it was shed, or the bridge is stopping)."""
        structlog.contextvars.bind_contextvars(
            call_id=self.id,
            provider=self.started.provider,
            call_sid=self.started.call_sid,
            stream_sid=self.started.stream_sid,
        )
        await self.end(CallResult(reason))

    # -- STT notices (called from the session task; never awaits) -----------------------------

    def _on_stt(self, notice: SttNotice) -> None:
        match notice:
            case FinalUtterance():
                self.utterances += 1
                # Only the caller's words (channel 0) steer the reply: on a call of both parties,
                # channel 1 is the other party (or, on a stereo stream that plays back, the bot itself).
                during = (
                    self.reply.caller_final(notice.id, notice.utterance.text) if notice.utterance.channel == 0 else None
                )
                utterance = _utterance_json(notice, self.speakers)
                self._post(
                    "utterance.final",
                    {
                        "call": self.call_json(),
                        "utterance": utterance,
                        "stt_session_id": notice.session_id,
                        "during_playback": during,
                    },
                )
                self._record(utterance)
            case SessionReplaced():
                self._post(
                    "stt.session_replaced",
                    {
                        "call": self.call_json(),
                        "old_stt_session_id": notice.old_session_id,
                        "stt_session_id": notice.new_session_id,
                        "reason": notice.reason,
                    },
                )
            case SttGaveUp():
                self._post("stt.failed", {"call": self.call_json(), "reason": notice.reason})
            case CallerSpeech():
                if notice.channel == 0:
                    self.reply.caller_speech(notice.started)
                if notice.started and self.bot_socket is not None:
                    self.bot_socket.realtime(
                        "speech.started", {"call_id": self.id, "call": self.call_json(), **self._who(notice.channel)}
                    )
            case PartialUtterance():
                if notice.channel == 0:
                    self.reply.caller_words(notice.text)
                if self.bot_socket is not None:
                    self.bot_socket.realtime(
                        "utterance.partial",
                        {
                            "call_id": self.id,
                            "call": self.call_json(),
                            "text": notice.text,
                            **self._who(notice.channel),
                        },
                    )
            case _:
                assert_never(notice)

    def _who(self, channel: int) -> dict[str, Any]:
        if not self.both_parties:
            return {}
        return {"channel": channel, "speaker": self.speakers[channel] if channel in (0, 1) else f"channel {channel}"}

    # -- the record ----------------------------------------------------------------------------

    def _record(self, utterance: dict[str, Any]) -> None:
        """A final for the transcript: kept on record (the store's writer thread; never waits) and,
        within bounds, for ``transcript.completed``."""
        if self.transcripts is not None:
            self.transcripts.utterance(self.id, utterance)
        chars = len(utterance["text"])
        if len(self._conversation) < MAX_CONVERSATION_UTTERANCES and (
            self._conversation_chars + chars <= MAX_CONVERSATION_CHARS
        ):
            self._conversation_chars += chars
            self._conversation.append(tuple([utterance[k] for k in _TURN_FIELDS]))

    def _transcript_json(self) -> dict[str, Any]:
        """``transcript.completed``: the whole conversation in order of time, each utterance with its
        speaker (words are in the transcript API); cut at the bounds, and then it says so."""
        ordered = sorted(self._conversation, key=lambda u: (u[_TURN_START], u[_TURN_CHANNEL]))
        turns = [dict(zip(_TURN_FIELDS, u, strict=True)) for u in ordered]
        return {
            "call": self.call_json(),
            "speakers": list(self.speakers[: self.stt_format.channels]),
            "utterances": turns,
            "utterances_total": self.utterances,
            "truncated": len(turns) < self.utterances,
            "transcript_path": f"/v1/calls/{self.id}/transcript" if self.transcripts is not None else None,
        }

    # -- the way back ----------------------------------------------------------------------------

    def _post(self, type_: str, payload: dict[str, Any]) -> PendingEvent | None:
        """A bot event: to the webhook (durable, ordered) and, when there is one, the bot's socket.
        ``call.ended`` then ``transcript.completed`` are the call's last events: anything after them
        (e.g. a bad answer to one) is logged. Returns the event queued (None: not sent)."""
        if self._last_posted and type_ != "transcript.completed":
            log.info("bot.event_after_end", type=type_, detail="the call has ended: not sent")
            return None
        self._last_posted = self._last_posted or type_ == "call.ended"
        event = self.events.submit(type_, payload)
        if event is not None and self.bot_socket is not None:
            self.bot_socket.send_event(event.body, sequence=event.sequence)
        return event

    def _emit(self, type_: str, payload: dict[str, Any]) -> None:
        """An event of the reply loop (action.failed, playback.*): posted unless it would feed a loop
        of webhook answers (see MAX_ANSWER_CHAIN)."""
        generation = self._answering
        if generation is None and type_ == "action.failed":  # e.g. a say of an answer, failed later
            generation = self._action_generations.get(str(payload.get("action_id")), 0)
        generation = generation or 0
        if (type_ == "action.failed" and generation >= 2) or generation > MAX_ANSWER_CHAIN:
            self._not_sent += 1
            if self._not_sent == 1:  # one line per call (call.ended's line gives the count)
                log.warning(
                    "reply.answer_event_not_sent",
                    type=type_,
                    generation=generation,
                    error=str(payload.get("error", ""))[:200] or None,
                    detail="caused by a webhook answer to an event itself caused by an answer: not posted, "
                    "so answers cannot loop",
                )
            return
        event = self._post(type_, {"call": self.call_json(), **payload})
        if event is not None and generation:
            _remember(self._generations, event.webhook_id, generation)

    def _bot_answered(self, event: PendingEvent, response: WebhookResponse) -> None:
        """The bot's 2xx answer to an event. Only an answer that carries actions (a JSON object with an
        ``actions`` key) applies them, once per webhook-id; any other body (JSON without ``actions``,
        text, HTML) is accepted and ignored (one log line per call). What the answer causes cannot
        loop (see MAX_ANSWER_CHAIN)."""
        generation = self._generations.pop(event.webhook_id, 0) + 1
        body = response.body.strip()
        if not body:
            return
        self._answering = generation
        try:
            self._apply_answer(event, response, body, generation)
        finally:
            self._answering = None

    def _apply_answer(self, event: PendingEvent, response: WebhookResponse, body: bytes, generation: int) -> None:
        data: Any = None
        error = "over 64 KiB: not applied"
        if not response.truncated:
            try:
                data = loads(body)  # nested deeper than MAX_JSON_DEPTH: refused unparsed
            except ValueError as exc:
                error = f"not JSON: {exc}"
        if not (isinstance(data, dict) and "actions" in data):
            if data is None and b'"actions"' in body:  # meant as actions, but unreadable
                log.warning("reply.bad_answer", webhook_id=event.webhook_id, error=error[:200])
                self.reply.fail(None, f"webhook answer to {event.webhook_id}: {error}")
                return
            self._ignored_answers += 1
            if self._ignored_answers == 1:
                log.info(
                    "reply.answer_ignored",
                    webhook_id=event.webhook_id,
                    content_type=response.content_type[:100],
                    detail='a 2xx answer without {"actions": [...]} is accepted and ignored (logged once per call)',
                )
            return
        try:
            actions = parse_actions(data)
        except ActionError as exc:
            log.warning("reply.bad_answer", webhook_id=event.webhook_id, error=str(exc)[:200])
            self.reply.fail(None, f"webhook answer to {event.webhook_id}: {exc}")
            return
        for result in self.reply.apply(actions, key=event.webhook_id):
            _remember(self._action_generations, result.id, generation)

    def lost_to_another_instance(self) -> None:
        """Fleet mode: another instance took the call over (this one was cut off from Redis, or
        paused): end it here. Its end is not sent (the new owner sent ``instance_lost``)."""
        if self._stream is not None and self._stream.forced_end is None:
            self._stream.forced_end = CallResult("instance_lost", 1001, "another bridge instance has the call")
            self._stream.hang_up()

    def _bot_hung_up(self) -> None:
        if self.end_suspended_now is not None:  # no stream carries the call: it ends now, no restart
            log.info("call.hung_up_while_suspended")
            self.end_suspended_now("bot_hangup")
        elif self._stream is not None:
            self._stream.hang_up()

    # -- what the call says about itself ---------------------------------------------------------

    def param(self, name: str) -> str | None:
        """``from``/``to``: what the carrier said, else a stream parameter of that name (any case)."""
        known = {"from": self.started.caller, "to": self.started.called}.get(name)
        if known:
            return known
        for key, value in self.started.parameters.items():
            if key.lower() == name:
                return value
        return None

    def _speakers(self, started: CallStarted) -> tuple[str, str]:
        """Who is on each channel: the ``bridge.speakers`` stream parameter ("caller,agent"), else the
        called number's labels (``parties.numbers``), else ``parties.labels``."""
        parties = self.settings.parties
        given = started.parameters.get(SPEAKERS_PARAMETER)
        if given:
            try:
                pair = tuple(v.strip() for v in given.split(","))
                if len(pair) != 2:
                    raise ValueError("not two comma-separated labels")
                return speaker_labels((pair[0], pair[1]))
            except ValueError as exc:
                log.warning("call.bad_speakers_parameter", error=str(exc)[:200])
        return parties.numbers.get(self.param("to") or "", parties.labels)

    def _profile(self, started: CallStarted) -> SttProfile:
        stt = self.settings.stt
        overrides, refused = stt_overrides(started.parameters, stt.per_call_parameters)
        if refused:  # one line per call, however many parameters
            log.warning("call.stt_parameters_refused", refused=refused[:10], count=len(refused))
        called = self.param("to")
        try:
            return stt.profile_for(called, overrides)
        except (ValidationError, ValueError) as exc:
            log.warning(
                "call.bad_stt_parameters",
                error=str(exc).splitlines()[0][:200],
                parameters=sorted(k for k in started.parameters if k.startswith(PARAM_PREFIX))[:10],
            )
        return stt.profile_for(called)

    def call_json(self) -> dict[str, Any]:
        """The ``call`` object of every bot event."""
        return {
            "id": self.id,
            "provider": self.started.provider,
            "call_sid": self.started.call_sid,
            "stream_sid": self.started.stream_sid,
            "from": self.param("from"),
            "to": self.param("to"),
            "parameters": {k: v for k, v in self.started.parameters.items() if k != RESUME_PARAMETER},
        }

    def meter(self) -> tuple[Meter, float | None]:
        """What the metrics task reads every second: the counters Prometheus adds up, and how far
        Gladia's acknowledgments lag behind the audio sent, in seconds (None without a connection)."""
        stt, replay, counters = self.stt, self.stt.replay, self._counters
        frames, nbytes, _ = self._earlier
        reply = self.reply.figures()
        bps = self.stt_format.bytes_per_second
        return Meter(
            frames + counters.audio_frames,
            nbytes + counters.audio_bytes,
            replay.sent_bytes,
            replay.resent_bytes,
            stt.reconnects,
            stt.finals,
            reply["reply_actions"],
            reply["reply_failed"],
            reply["reply_played_ms"],
            reply["reply_interrupted"],
            reply["reply_underruns"],
            reply["barge_in_resumed"],
        ), (replay.unacked / bps if stt.connections and bps else None)

    def stats(self, end_reason: EndReason | None = None) -> CallStats:
        """Every figure of the call now, as one frozen snapshot (``call.ended``'s summary is one)."""
        stt, replay, counters = self.stt, self.stt.replay, self._counters
        frames, nbytes, gaps = self._earlier
        return CallStats(
            end_reason=end_reason,
            duration_s=round(time.monotonic() - self._t0, 3),
            phone_streams=self.streams,
            phone_frames=frames + counters.audio_frames,
            phone_bytes=nbytes + counters.audio_bytes,
            phone_gaps=gaps + counters.gaps,
            stt_bytes=replay.appended_bytes,
            stt_bytes_sent=replay.sent_bytes,
            stt_sessions=len(stt.session_ids),
            stt_session_id=stt.session_id,
            stt_connections=stt.connections,
            stt_reconnects=stt.reconnects,
            stt_resent_bytes=replay.resent_bytes,
            stt_unacked_bytes=replay.unacked,
            stt_overflow_bytes=replay.overflow_bytes,
            stt_lost_bytes=replay.lost_bytes,
            stt_duplicate_finals_dropped=stt.duplicate_finals,
            stt_ended_normally=stt.ended_normally,
            stt_gave_up=stt.gave_up,
            stt_queued_s=stt.queued_seconds,
            stt_keepalive_bytes=stt.keepalive_bytes,
            stt_recovered_finals=stt.recovered_finals,
            utterances=self.utterances,
            dtmf=self.dtmf,
            webhook_delivered=self.events.counters.delivered,
            webhook_failed=self.events.counters.failed,
            webhook_dropped=self.events.counters.dropped,
            **self.reply.figures(),
            provider=self.started.provider,
            stt_finals=stt.finals,
            stt_bytes_per_second=self.stt_format.bytes_per_second,
        )


def _utterance_json(final: FinalUtterance, speakers: tuple[str, str]) -> dict[str, Any]:
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
        "speaker": speakers[utt.channel] if 0 <= utt.channel < len(speakers) else f"channel {utt.channel}",
        "words": [
            {
                "word": w.word.strip(),
                "start": round(w.start + shift, 3),
                "end": round(w.end + shift, 3),
                "confidence": w.confidence,
            }
            for w in utt.words
        ],
    }


def _remember(kept: OrderedDict[str, int], key: str, generation: int) -> None:
    kept[key] = generation
    while len(kept) > MAX_GENERATIONS_KEPT:
        kept.popitem(last=False)
