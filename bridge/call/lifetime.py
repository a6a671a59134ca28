"""One call, from its first stream's ``start`` to ``call.ended``: phone audio -> Gladia -> bot events.

This is where the data-flow diagram becomes code. A call is built once its first stream has said
``start`` (so it knows its ids, parameters and profile), and is then carried by one stream at a time
(:class:`bridge.phone_stream.PhoneStream`); the stream's reading task drives :meth:`Call.run` and never
awaits the network or the disk on the audio path (``SttStream.send_audio``, ``CallDelivery.submit``,
``CallRecorder.heard`` are synchronous), so a slow Gladia, bot or disk cannot delay the phone.

1. :meth:`Call.begin`: pick the STT profile (default, then the called number, then the ``stt.*`` stream
   parameters allowed), open the delivery queue and the Gladia session, post ``call.started``.
2. :meth:`Call.attach`: a stream carries the call (the first one, or a restarted one): the recording goes on.
3. :meth:`Call.run`: phone audio -> transcoder -> session (and recording), until ``stop``, a close or an error.
4. :meth:`Call.end`: flush, finish the session (last finals), post ``call.ended`` with the summary
   (:meth:`Call.stats`), log one ``call.ended`` line; then ``recording.completed`` (bridge.call.recorder).
Once, whatever the interleaving. Restarts: bridge.call.suspended, bridge.call.resume, bridge.call.transfer."""

from __future__ import annotations

import inspect
import time
import uuid
from asyncio import Event
from collections.abc import Callable
from dataclasses import replace
from typing import Any, assert_never

import structlog

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
from bridge.audio import AudioFormat, hushed
from bridge.call import payloads as call_payloads
from bridge.call.analysis_wait import analysis_unless_stopping
from bridge.call.answering import Answering
from bridge.call.answers import WebhookAnswers
from bridge.call.dialed import Dialed, answering_for, first_say, tell_early
from bridge.call.figures import CallFigures, EarlierStreams
from bridge.call.fleet_side import FleetSide
from bridge.call.notices import SttNotices
from bridge.call.payloads import started_json
from bridge.call.profile import call_profile, call_speakers
from bridge.call.record import CallRecord
from bridge.call.recorder import recorder_for
from bridge.call.resume import CarriedCall, restart_accepted
from bridge.call.services import CallServices
from bridge.call.transfer import CallTransfer
from bridge.delivery import CallDelivery, PendingEvent
from bridge.errors import PhoneProtocolError
from bridge.phone_stream import AudioPath, CallResult, MessageSource, PhoneStream
from bridge.reply.bot_socket import BotSocket
from bridge.reply.call_reply import CallReply
from bridge.stats import CallStats, EndReason, Meter
from bridge.stt.stream import SttStream

log = structlog.get_logger("bridge.call")


class Call(FleetSide):
    """One call's lifetime (see the module docstring). Build it with :meth:`begin`."""

    # fmt: off
    __slots__ = (
        "_answers", "_audio_path", "_counters", "_earlier", "_last_posted", "_notices", "_stopping", "_t0",
        "answering", "bot_socket", "both_parties", "delivery", "direction", "dtmf", "end_suspended_now",
        "ended_posted", "id", "leave_suspension", "on_ended", "profile", "publish", "record", "recorder", "reply",
        "resume_secret", "settings", "speakers", "started", "stream", "streams", "stt", "stt_format", "stt_refused",
        "target", "transcripts", "transfer"
    )
    # fmt: on

    def __init__(
        self,
        started: CallStarted,
        services: CallServices,
        carried: CarriedCall | None = None,
        outbound: Dialed | None = None,
    ) -> None:
        """``outbound``: the call the bot ordered whose stream this is (:mod:`bridge.call.dialed`)."""
        self.id = outbound.call_id if outbound else carried.call_id if carried is not None else uuid.uuid4().hex
        self.direction = "outbound" if outbound is not None else "inbound"
        self.publish = services.tap.publish if services.tap else None  # the live event tap (GET /v1/calls/{id}/events)
        self._stopping = services.stopping  # the bridge is stopping: no wait for the post-call analysis
        self.ended_posted = Event()  # call.ended is out, the analysis awaited: the phone's socket closes
        settings, http = services.settings, services.http
        self.settings = settings
        self.resume_secret = services.resume_secret
        self.started = started  # the start of the stream carrying the call now (ids, parameters)
        structlog.contextvars.bind_contextvars(
            call_id=self.id, provider=started.carrier, call_sid=started.call_sid, stream_sid=started.stream_sid
        )
        self.profile, self.stt_refused = call_profile(settings, started)
        target = self.profile.audio_format(started.audio_format)
        assert target is not None  # a native profile always has a format once the stream's is known
        self.target: AudioFormat = target  # one track's
        self.stt_format = replace(target, channels=started.channels)  # to Gladia: channel 0 the caller, 1 the other
        self.both_parties = started.channels == 2
        self.speakers = call_speakers(settings, started)
        self.recorder = recorder_for(services, self.id, started, self.stt_format, carried is not None)
        self.reply = CallReply(
            self.id,
            settings=settings.reply,
            speaker=services.speaker,
            http=http,
            emit=self._emit,
            on_hangup=self._bot_hung_up,
            tap=self.recorder,
        )
        self.reply.pause.on_span = self.recorder.silence  # a sensitive pause: silent on both channels
        self.reply.pause.audio_time = lambda: self.stt.replay.appended_bytes / self.stt_format.bytes_per_second
        # the reply's events out and the bot's answers to the call's events in (bridge.call.answers)
        self._answers = WebhookAnswers(self.reply, self._post, self.call_json)
        self.delivery: CallDelivery
        if outbound is not None:
            self.delivery = outbound.delivery
            self.delivery.respond_to(self._answers.answered)
            self.bot_socket = outbound.bot_socket
            if self.bot_socket is not None:
                self.bot_socket.apply = self.reply.apply
        else:
            self.delivery = services.delivery.open(
                self.id,
                self.call_json(),
                on_response=self._answers.answered,
                carry_on=(carried.last_sequence, carried.events) if carried is not None else None,
            )
            self.bot_socket = (
                BotSocket(settings.bot_ws, http, self.id, self.reply.apply, on_acked=self.delivery.acknowledged)
                if settings.bot_ws.url
                else None
            )
        self.stream: PhoneStream | None = None  # the stream carrying the call (its last, once suspended)
        self.transfer = CallTransfer(
            self, settings=settings, secret=services.resume_secret, desk=services.desk, http=http,
            emit=self._emit, fail=self.reply.fail, back=self.reply.transfer_back,
        )  # fmt: skip
        self.reply.transfer = self.transfer
        self.transcripts = services.transcripts  # the record kept after the call (None: off)
        self.record = CallRecord(self.id, self.transcripts, services.redaction)  # ... and transcript.completed
        self._notices = SttNotices(  # what Gladia tells, to bot events
            self.id, self.call_json, self.speakers, self.both_parties, self.reply, self._post, self.bot_socket,
            self._final, self.record.addon, services.live_redaction, services.tap,
        )  # fmt: skip
        body = call_payloads.stt_request(self.profile.request_body(self.stt_format), self.id, started)
        self.stt = SttStream(
            http=http,
            settings=settings.gladia,
            request_body=body,
            audio_format=self.stt_format,
            on_notice=self._notices,
            admission=services.admission,
            resume=carried.session if carried is not None else None,
        )
        self.answering: Answering | None = answering_for(  # an outbound call's answering-machine detection
            outbound, replace(self.stt_format, channels=1), self._post_call, self.reply.cut_for_machine
        )
        self.streams = 0
        self._counters = StreamCounters()  # the current stream's
        self._earlier = EarlierStreams()  # the phone counters of the call's earlier streams
        self._audio_path: AudioPath | None = None  # the current stream's converter (flushed at the end)
        self._t0 = time.monotonic()
        self._ended = False
        self._last_posted = False  # call.ended went out
        self.dtmf = 0
        self.on_ended: Callable[[str, CallStats], None] | None = None  # e.g. the metrics' last update
        # Set while the call is suspended (a restart may come): ends it from there (bridge.call.suspended)
        self.end_suspended_now: Callable[[EndReason], None] | None = None
        # Set there too: off the suspended calls without ending (fleet mode: it goes on elsewhere)
        self.leave_suspension: Callable[[], None] | None = None

    @classmethod
    def begin(
        cls,
        started: CallStarted,
        services: CallServices,
        stream: PhoneStream | None = None,
        outbound: Dialed | None = None,
    ) -> Call:
        """A new call for a stream's ``start`` (``stream``: the one that said it, which the call
        attaches next): delivery and Gladia session opened, ``call.started`` posted. ``outbound``: the
        call the bot ordered; its ``first_say`` is queued before ``call.started`` (the person hears the
        bot at once), and what its carrier said before the stream follows ``call.started``."""
        call = cls(started, services, outbound=outbound)
        call.stream = stream
        target = call.stt_format
        if first := first_say(outbound):  # queued before call.started: the person hears the bot at once
            call.reply.apply(first)
        call._post(
            "call.started",
            started_json(call.call_json(), target, call.speakers, call.transfer.capabilities(), call.stt_refused),
        )
        tell_early(outbound, call.answering)
        call.stt.start()
        call.record.started(call.call_json(), list(call.speakers[: target.channels]))
        log.info(
            "call.started",
            caller=call_payloads.param(started, "from"),
            called=call_payloads.param(started, "to"),
            encoding=target.encoding,
            sample_rate=target.sample_rate,
        )
        return call

    @classmethod
    def carry_on(cls, started: CallStarted, carried: CarriedCall, services: CallServices) -> Call:
        """Fleet mode: a call another instance held, whose restarted stream reached this one. Same call
        id, the same Gladia session from its acknowledged offset, the event sequence and the events it
        had not delivered; the bot gets ``call.stream_restarted``."""
        call = cls(started, services, carried)
        call.streams = carried.streams  # attaching the stream says call.stream_restarted
        call.stt.start()
        log.info("call.carried_on", streams=carried.streams + 1, events_left=len(carried.events))
        return call

    # -- streams ------------------------------------------------------------------------------

    def accepts_restart(self, started: CallStarted) -> bool:
        """Whether a new stream's ``start`` proves it belongs to this (suspended) call."""
        return restart_accepted(self.resume_secret, self.started, self.stt_format.channels, started)

    def attach(self, stream: PhoneStream) -> None:
        """``stream`` carries the call from now on: its first stream, or a restarted one."""
        assert stream.started is not None
        if self.streams:
            self._earlier.add(self._counters)
            self.started = stream.started
            structlog.contextvars.bind_contextvars(
                call_id=self.id, call_sid=self.started.call_sid, stream_sid=self.started.stream_sid
            )
            self._post("call.stream_restarted", {"call": self.call_json(), "streams": self.streams + 1})
            self.recorder.new_stream()
            log.info("call.stream_restarted", streams=self.streams + 1)
        self.streams += 1
        self._audio_path = stream.use_transcoder(
            self.target, previous=self._audio_path, max_delay_ms=self.settings.parties.max_delay_ms
        )
        self._counters = stream.counters
        stream.call_id = self.id
        self.stream = stream
        self.reply.attach(stream.adapter, stream.send)
        if self.streams > 1:
            self.transfer.returned(stream.started)  # a transfer nobody answered: the caller is back

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
                    audio = stream.party_audio(event) if self.both_parties else stream.audio(event.payload)
                    if self.answering is not None:
                        self.answering.hear(audio)
                    # a sensitive gather runs: what the caller says or keys in-band reaches no transcript
                    self.stt.send_audio(audio := hushed(audio, self.stt_format) if self.reply.hushed else audio)
                    self.recorder.heard(audio)
                case CallStopped():
                    return True
                case Dtmf():
                    self.dtmf += 1
                    if not self.reply.caller_key(event.digit):  # a gather takes its keys: no call.dtmf
                        hush = {"sensitive": True} if self.reply.pause.active else {}  # in memory only
                        self._post("call.dtmf", {"call": self.call_json(), "digit": event.digit, **hush})
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
        # Each part is guarded (what one raises is logged, the rest runs): call.ended and on_ended always happen.
        await self._end_part("audio_flush", self._flush_audio)
        await self._end_part("reply_close", self.reply.close)  # what played: interrupted before call.ended
        await self._end_part("stt_finish", self._finish_stt)
        stats = self.stats(result.reason)
        summary = stats.summary()
        await self._end_part(
            "call_ended", lambda: self._post("call.ended", {"call": self.call_json(), "summary": summary})
        )
        transcripts, bot_socket, on_ended = self.transcripts, self.bot_socket, self.on_ended
        if transcripts is not None:  # on record before recording.completed: a recording is served once its call ended
            await self._end_part(
                "transcript_record", lambda: transcripts.call_ended(self.id, time.time(), result.reason)
            )
        await self._end_part("recording", lambda: self.recorder.finish(self._post_call))
        if self.stt.results.analysis.wanted:  # the phone's socket need not wait for the analysis
            self.ended_posted.set()
        await self._end_part("transcript_completed", self._transcript_completed)
        await self._end_part("delivery_close", self.delivery.close)
        if bot_socket is not None:
            await self._end_part("bot_socket_close", bot_socket.close)
        if self._answers.not_sent:
            log.warning("reply.answer_events_not_sent", events=self._answers.not_sent, detail="see MAX_ANSWER_CHAIN")
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
        if not self.stt.gave_up:  # what never came over the socket: finals, add-on results
            await self.stt.read_back()

    async def _transcript_completed(self) -> None:
        """``transcript.completed``, with the post-call analysis when asked for (bridge.call.analysis_wait)."""
        analysis = await analysis_unless_stopping(self.stt, self.settings.stt.analysis_timeout, self._stopping)
        completed = self.record.completed_json(
            self.call_json(), list(self.speakers[: self.stt_format.channels]), self.utterances, analysis
        )
        self._post("transcript.completed", completed)

    async def end_suspended(self, reason: EndReason) -> None:
        """End a suspended call (no new stream came in time, it was shed, or the bridge is stopping)."""
        structlog.contextvars.bind_contextvars(
            call_id=self.id,
            provider=self.started.carrier,
            call_sid=self.started.call_sid,
            stream_sid=self.started.stream_sid,
        )
        await self.end(CallResult(reason))

    # -- the record ----------------------------------------------------------------------------

    @property
    def utterances(self) -> int:
        """The finals the call has had (bridge.call.notices turns them into utterance.final)."""
        return self._notices.utterances

    # -- the way back ----------------------------------------------------------------------------

    def _post(self, type_: str, payload: dict[str, Any]) -> PendingEvent | None:
        """A bot event: to the webhook (durable, ordered) and, when there is one, the bot's socket.
        ``call.ended`` then ``transcript.completed`` are the call's last events: anything after them
        (e.g. a bad answer to one) is logged. Returns the event queued (None: not sent)."""
        if self._last_posted and type_ not in ("transcript.completed", "recording.completed"):
            log.info("bot.event_after_end", type=type_, detail="the call has ended: not sent")
            return None
        self._last_posted = self._last_posted or type_ == "call.ended"
        event = self.delivery.submit(type_, payload)
        if event is not None and self.bot_socket is not None:
            self.bot_socket.send_event(event.body, sequence=event.sequence, sensitive=event.sensitive)
        if event is not None and self.publish is not None and not event.sensitive:
            self.publish(self.id, event.sequence, type_, event.body)
        return event

    def _post_call(self, type_: str, payload: dict[str, Any]) -> None:
        self._post(type_, {"call": self.call_json(), **payload})

    def _final(self, utterance: dict[str, Any]) -> None:
        """A final for the record (none that touches a sensitive pause); a cue for answering-machine detection."""
        if self.reply.pause.covers(float(utterance["start"]), float(utterance["end"])):
            return
        for start, end in self.record.final(utterance):  # redacted: silent in the recording too
            self.recorder.silence(start, end)
        if self.answering is not None:
            self.answering.words(str(utterance.get("text") or ""))

    def _emit(self, type_: str, payload: dict[str, Any]) -> None:
        """An event of the reply loop: posted unless it would feed a loop of answers (bridge.call.answers)."""
        self._answers.emit(type_, payload)

    def _bot_hung_up(self) -> None:
        if self.end_suspended_now is not None:  # no stream carries the call: it ends now, no restart
            log.info("call.hung_up_while_suspended")
            self.end_suspended_now("bot_hangup")
        elif self.stream is not None:
            self.stream.hang_up()

    # -- what the call says about itself ---------------------------------------------------------

    def call_json(self) -> dict[str, Any]:
        """The ``call`` object of every bot event."""
        return call_payloads.call_json(self.id, self.started, self.direction)

    def meter(self) -> tuple[Meter, float | None]:
        """What the metrics task reads every second: the counters Prometheus adds up, and how far
        Gladia's acknowledgments lag behind the audio sent, in seconds (None without a connection)."""
        figures = self._figures()
        return figures.meter(), figures.ack_lag()

    def stats(self, end_reason: EndReason | None = None) -> CallStats:
        """Every figure of the call now, as one frozen snapshot (``call.ended``'s summary is one)."""
        return self._figures().snapshot(end_reason)

    def _figures(self) -> CallFigures:
        return CallFigures(
            phone=self._counters,
            earlier=self._earlier,
            stt=self.stt,
            delivery=self.delivery.counters,
            reply=self.reply.figures,
            streams=self.streams,
            utterances=self.utterances,
            dtmf=self.dtmf,
            carrier=self.started.carrier,
            started_at=self._t0,
        )
