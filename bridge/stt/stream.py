"""One call's speech-to-text stream: a Gladia live v2 session kept alive across network drops, and
replaced by a new one (as many as it takes) when Gladia will not resume it.

Drives the pure pieces (:mod:`bridge.stt.protocol`, :mod:`bridge.stt.replay`, :mod:`bridge.stt.finals`):
the REST side with :mod:`bridge.stt.gladia_api`, the session WebSocket with :mod:`bridge.stt.connection`
(callbacks, no task per frame), the send path with :mod:`bridge.stt.sender`. This module is the
connection loop: open, reconnect, replace and end sessions; where a session stands for another
instance is :mod:`bridge.stt.session_state`, what the stream counts :mod:`bridge.stt.counters`.

1. ``POST {api_url}/v2/live`` with the call's ``StreamingRequest`` (retried with backoff on 429,
   5xx and network errors); the answer's ``url`` is the session WebSocket.
2. Stream audio as binary frames, written as soon as the phone's frame is transcoded; every
   acknowledgment trims the replay buffer.
3. On a close other than a normal end: reconnect to the *same* URL with backoff, resend from the
   acknowledged offset, then continue live. Finals already delivered are never delivered again.
4. The session is lost (handshake 401/403/404, close 4400-4499, or a server close 1000 before we
   asked to stop): a new session is opened for the rest of the call, starting with the audio the
   lost one had not acknowledged, and the call is told (``SessionReplaced``).
5. At hang-up (:meth:`SttStream.finish`): flush, ``stop_recording`` (sent again after any
   reconnect), wait for the last finals and ``end_session`` / close 1000, bounded in time.
6. A session that did not end normally, or whose finals still lack add-on results, is read back with
   ``GET /v2/live/{id}`` after the call (:meth:`SttStream.read_back`): finals and results never
   received are delivered. :meth:`SttStream.analysis` waits (bounded) for the post-call analysis.

Add-ons: each result after its final, once (:mod:`bridge.stt.results`); the analysis kept for the call's end.

Admission (``gladia.max_sessions``): a call waits for a free slot, its audio buffered (bounded).
:meth:`SttStream.send_audio` never awaits: the phone socket is never slowed by Gladia.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, assert_never

import aiohttp
import structlog

from bridge.audio import AudioFormat
from bridge.backoff import Backoff
from bridge.errors import (
    ConnectFailed,
    HandshakeRefused,
    SttError,
    SttProtocolError,
    close_code_loses_session,
    handshake_status_loses_session,
)
from bridge.settings import GladiaSettings
from bridge.stt.addons import AddonFailed, Entities, PostResults, Sentiments, Translation
from bridge.stt.admission import Admission
from bridge.stt.connection import SessionConnection, connect
from bridge.stt.counters import SttCounters
from bridge.stt.gladia_api import GladiaApi
from bridge.stt.notices import (
    CallerSpeech,
    PartialUtterance,
    SessionReplaced,
    SttGaveUp,
    SttNotice,
)
from bridge.stt.protocol import (
    Ack,
    Lifecycle,
    OtherMessage,
    PostProcessing,
    ServerError,
    SpeechEnd,
    SpeechStart,
    StopAck,
    Transcript,
    parse_server_message,
)
from bridge.stt.replay import ReplayBuffer
from bridge.stt.results import SessionResults
from bridge.stt.sender import AudioSender
from bridge.stt.session_state import SessionState

# SessionState is part of the stream's interface (``resume``, :meth:`SttStream.state`); its importers use it from here.
__all__ = ["SessionState", "SttStream"]

log = structlog.get_logger("bridge.stt")


@dataclass(frozen=True, slots=True)
class _Session:
    id: str
    url: str
    origin_bytes: int  # call-audio byte position of this session's byte 0


# How one connection ended: "ended" normally (nothing more to do), "reconnect" to the same session
# on a new connection, or the session is "lost" (it cannot continue; open a new one).
_Outcome = Literal["ended", "reconnect", "lost"]


class SttStream:
    """See the module docstring. Create it, start :meth:`run` as a task, feed audio, :meth:`finish`."""

    # fmt: off
    __slots__ = (
        "_admission", "_api", "_backoff_policy", "_body", "_ended", "_format", "_goodbye", "_last_session_id",
        "_pending_replacement", "_sender", "_session", "_sessions", "_settings", "_sleep", "_task",
        "counters", "ended_normally", "gave_up", "on_notice", "replay", "results"
    )
    # fmt: on

    def __init__(
        self,
        *,
        http: aiohttp.ClientSession,
        settings: GladiaSettings,
        request_body: dict[str, Any],
        audio_format: AudioFormat,
        on_notice: Callable[[SttNotice], None],
        admission: Admission | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        resume: SessionState | None = None,
    ) -> None:
        self._admission = admission or Admission(0)
        self._api = GladiaApi(http, settings)
        self._settings = settings
        self._backoff_policy = Backoff(settings.reconnect_initial_delay, settings.reconnect_max_delay)
        self._body = request_body
        self._format = audio_format
        self.on_notice = on_notice
        self._sleep = sleep
        chunk = max(audio_format.bytes_for_ms(settings.chunk_ms), audio_format.frame_bytes)
        self.replay = ReplayBuffer(
            max_bytes=int(audio_format.bytes_per_second * settings.replay_buffer_seconds),
            chunk_bytes=chunk,
            frame_bytes=audio_format.frame_bytes,  # two channels: a frame is one sample of each
        )
        self.counters = SttCounters()
        self._sender = AudioSender(self.replay, audio_format, settings.keepalive_seconds, self.counters)
        self._ended = False  # end_session received on the current connection
        self._session: _Session | None = None
        self.results = SessionResults(request_body, self.counters, on_notice)
        self._sessions: list[tuple[_Session, bool]] = []  # (session, ended normally) for recovery
        self._last_session_id: str | None = None  # the session opened last (a new one replaces it)
        # how the stream ended, for the call: it gave up (why), or its session ended normally
        self.gave_up: str | None = None
        self.ended_normally = False
        self._pending_replacement: tuple[str | None, str] | None = None
        self._task: asyncio.Task[None] | None = None
        self._goodbye = 1000  # the close code when the connection is cancelled (1001: handed over)
        if resume is not None:  # fleet mode: carry on a session another instance streamed
            self._session = _Session(resume.session_id, resume.url, resume.origin_bytes)
            self._last_session_id = resume.session_id
            self.counters.sessions += 1
            self.replay.start_at(resume.acked, resume.inclusive_ranges)
            self.replay.appended_bytes = resume.origin_bytes + resume.acked  # call positions line up
            self.results.finals.seed(dict(resume.last_final_ends))
            self.results.links.seed(resume.session_id, dict(resume.last_final_ends))

    @property
    def audio_format(self) -> AudioFormat:
        return self._format

    @property
    def duplicate_finals(self) -> int:
        return self.results.finals.duplicates

    @property
    def session_id(self) -> str | None:
        return self._session.id if self._session else None

    # -- called by the call, never awaits ----------------------------------------------------

    def send_audio(self, data: bytes) -> None:
        """Queue audio for the session (replay buffer). Non-blocking; bounded by the replay bound."""
        if self.gave_up or not data:
            return
        dropped = self.replay.append(data)
        if dropped and self.replay.overflow_bytes == dropped:
            log.warning(
                "stt.buffer_overflow", dropped_bytes=dropped, bound_seconds=self._settings.replay_buffer_seconds
            )
        self._sender.pump()

    def start(self) -> None:
        """Start the connection loop as a task (it inherits the caller's log context)."""
        self._task = asyncio.create_task(self.run(), name="stt-session")

    async def finish(self, timeout: float) -> None:
        """Hang-up: send what is left and ``stop_recording``, then wait for the session to end.

        Returns after ``end_session``/close 1000, or after ``timeout`` seconds (the session is then
        abandoned, and logged as ``stt.finish_timeout``).
        """
        self._sender.stop()
        if self._task is None:
            return
        done, _ = await asyncio.wait({self._task}, timeout=timeout)
        if not done:
            if self._session is None and not self.gave_up:  # still waiting for a slot or for POST /v2/live
                self._give_up(f"no Gladia session could be opened within {timeout:g} s of the hang-up")
            log.warning(
                "stt.finish_timeout", session_id=self.session_id, timeout=timeout, unacked_bytes=self.replay.unacked
            )
            await self.cancel()

    def state(self) -> SessionState | None:
        """Where the session stands now (None before one is open)."""
        if self._session is None:
            return None
        return SessionState(
            self._session.id,
            self._session.url,
            self._session.origin_bytes,
            self.replay.acked,
            self.replay.inclusive_ranges,
            tuple(sorted(self.results.finals.last_ends().items())),
        )

    async def hand_over(self, timeout: float) -> SessionState | None:
        """Fleet mode: another instance carries the call on. Wait (bounded) until Gladia acknowledged
        everything sent, then close this connection without ``stop_recording``: the session stays open
        for the next owner, and two sockets never share it. Returns where it stands."""
        self._sender.pump()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while self.replay.unacked and self._task is not None and not self._task.done():
                    await asyncio.sleep(0.02)
        state = self.state()
        if self.replay.unacked:
            log.warning("stt.handover_unacked", session_id=self.session_id, unacked_bytes=self.replay.unacked)
        self._goodbye = 1001  # going away: not the end of the session
        await self.cancel()
        return state

    async def cancel(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    # -- the connection loop ------------------------------------------------------------------

    async def run(self) -> None:
        """Run the session until it ends normally, gives up, or is cancelled."""
        loop = asyncio.get_running_loop()
        queued_at = loop.time()
        if self._admission.limit and self._admission.active >= self._admission.limit:
            log.info(
                "stt.queued",
                active=self._admission.active,
                limit=self._admission.limit,
                waiting=self._admission.waiting + 1,
            )
        await self._admission.acquire()
        self.counters.queued_seconds = round(loop.time() - queued_at, 3)
        try:
            await self._run()
        finally:
            self._admission.release()

    async def _run(self) -> None:
        failures = 0
        init_failing_since: float | None = None
        loop = asyncio.get_running_loop()
        while True:
            if self._session is None:
                try:
                    self._session = await self._open_session()
                except SttError as exc:
                    failures += 1
                    now = loop.time()
                    init_failing_since = init_failing_since if init_failing_since is not None else now
                    if not exc.retryable or now - init_failing_since >= self._settings.init_retry_seconds:
                        self._give_up(f"init failed: {exc}")
                        return
                    log.warning("stt.init_retry", error=str(exc), status=exc.status, attempt=failures)
                    await self._backoff(failures)
                    continue
                failures = 0
                init_failing_since = None
            # Per connection; reset before connecting, since messages (even end_session) may arrive in the
            # same packet as the handshake's answer, before connect() returns.
            self._ended = False
            self._sender.stop_sent = False
            try:
                async with asyncio.timeout(self._settings.connect_timeout):
                    conn = await connect(self._session.url, on_message=self._on_message, on_writable=self._sender.pump)
            except HandshakeRefused as exc:
                if handshake_status_loses_session(exc.status):
                    if self._session_over():
                        return
                    self._lose_session(f"handshake refused with HTTP {exc.status}")
                    continue
                failures += 1
                log.warning("stt.connect_failed", status=exc.status, attempt=failures)
                await self._backoff(failures)
                continue
            except (ConnectFailed, TimeoutError) as exc:
                failures += 1
                log.warning("stt.connect_failed", error=str(exc) or type(exc).__name__, attempt=failures)
                await self._backoff(failures)
                continue

            self.counters.connections += 1
            resend = self.replay.rewind()
            if self.counters.connections > 1:
                self.counters.reconnects += 1
                log.info("stt.reconnected", session_id=self._session.id, resend_bytes=resend, acked=self.replay.acked)
            else:
                log.info("stt.connected", session_id=self._session.id)
            outcome = await self._connection(conn)
            if conn.messages:
                failures = 0
            match outcome:
                case "ended":
                    self.ended_normally = True
                    self._sessions.append((self._session, True))
                    return
                case "lost":
                    if self._session_over():
                        return
                    self._lose_session(f"closed with code {conn.close_code}")
                case "reconnect":
                    failures += 1
                    log.info("stt.reconnecting", close_code=conn.close_code, attempt=failures)
                    await self._backoff(failures)
                case _:
                    assert_never(outcome)

    async def _open_session(self) -> _Session:
        live = await self._api.create(self._body)
        session = _Session(live.id, live.url, self.replay.call_position_of_base())
        old, self._last_session_id = self._last_session_id, session.id
        self.counters.sessions += 1
        log.info("stt.session_created", session_id=session.id, replaces=old)
        return session

    def _session_over(self) -> bool:
        """At hang-up with every byte acknowledged, a session that cannot be resumed is simply over
        (its last finals are read back after the call); no new session is needed."""
        if not (self._sender.stopping and self.replay.unacked == 0 and self._session is not None):
            return False
        log.warning("stt.session_ended_abnormally", session_id=self._session.id)
        self._sessions.append((self._session, False))
        return True

    def _lose_session(self, reason: str) -> None:
        old = self._session.id if self._session else None
        if self._session is not None:
            self._sessions.append((self._session, False))
        log.warning("stt.session_lost", session_id=old, reason=reason)
        self._session = None
        self._pending_replacement = (old, reason)
        self.replay.restart_session()
        self.results.finals.new_session()

    def _give_up(self, reason: str) -> None:
        self.gave_up = reason
        log.error("stt.gave_up", reason=reason)
        self.on_notice(SttGaveUp(reason))

    async def _backoff(self, attempt: int) -> None:
        await self._sleep(self._backoff_policy.delay(attempt))

    async def _connection(self, conn: SessionConnection) -> _Outcome:
        """Run one connection until it closes. Audio goes out from the sender (pumped by
        :meth:`send_audio`), messages come in through :meth:`_on_message`: no task per frame."""
        assert self._session is not None
        if self._pending_replacement is not None:
            old, reason = self._pending_replacement
            self._pending_replacement = None
            self.on_notice(SessionReplaced(old, self._session.id, reason))
        try:
            self._sender.attach(conn)
            await asyncio.shield(conn.closed)
        finally:
            self._sender.detach()
            if not conn.closed.done():  # cancelled (finish timed out, or handed over): say goodbye
                conn.close(self._goodbye)
        code = conn.close_code
        if self._ended or (code == 1000 and self._sender.stopping):
            return "ended"
        if code is not None and (close_code_loses_session(code) or code == 1000):
            return "lost"
        return "reconnect"

    def _on_message(self, data: str | bytes) -> None:
        """One server message, straight from the connection's ``data_received``."""
        try:
            event = parse_server_message(data)
        except SttProtocolError as exc:
            log.warning("stt.bad_message", error=str(exc))
            return
        match event:
            case Ack():
                self.replay.ack(event.byte_start, event.byte_end)
            case Transcript():
                if event.is_final:
                    self._final(event)
                else:
                    self.on_notice(PartialUtterance(event.utterance.text, event.utterance.channel))
            case Lifecycle():
                if event.kind == "end_session":
                    self._ended = True
            case ServerError():
                log.warning("stt.server_error", kind=event.kind, message=event.message)
            case SpeechStart():
                self.on_notice(CallerSpeech(started=True, channel=event.channel))
            case SpeechEnd():
                self.on_notice(CallerSpeech(started=False, channel=event.channel))
            case Translation() | Entities() | Sentiments() | AddonFailed():
                assert self._session is not None
                self.results.addon(self._session.id, self._origin(), event)
            case PostResults():
                assert self._session is not None
                self.results.post(self._session.id, event)
            case StopAck() | PostProcessing() | OtherMessage():
                pass  # nothing the bridge acts on
            case _:
                assert_never(event)

    def _final(self, event: Transcript) -> None:
        assert self._session is not None
        self.results.transcript(self._session.id, self._origin(), event)

    def _origin(self) -> float:
        """Where the current session's time 0 is in the call, in seconds."""
        assert self._session is not None
        return self._session.origin_bytes / self._format.bytes_per_second

    def _all_sessions(self) -> list[tuple[_Session, bool]]:
        """Every session of the call, in order, and whether it ended normally."""
        sessions = list(self._sessions)
        if self._session is not None and all(s.id != self._session.id for s, _ in sessions):
            sessions.append((self._session, self.ended_normally))
        return sessions

    async def read_back(self) -> int:
        """After the call: read back every session that did not end normally, or whose finals still
        lack add-on results, and deliver what never arrived on the socket (:mod:`bridge.stt.results`).
        Returns how many finals were recovered."""
        sessions = [(s, self.results.needs_read_back(s.id) or not ended) for s, ended in self._all_sessions()]
        todo = [(s.id, s.origin_bytes / self._format.bytes_per_second) for s, needed in sessions if needed]
        return await self.results.read_back(self._api, todo, self._sleep)

    async def analysis(self, timeout: float) -> dict[str, object] | None:
        """``transcript.completed``'s ``analysis`` (None: the profile asks for none), waiting at most
        ``timeout`` seconds for what did not come over the socket."""
        ids = [s.id for s, _ in self._all_sessions()]
        return await self.results.wait_for_analysis(self._api, ids, timeout, self._sleep)
