"""One call's way back to the caller: the bot's actions in, paced audio out (the I/O shell).

Drives the pure pieces: :class:`~bridge.reply.playout.Playout` (what is sent when, what was heard),
:class:`~bridge.reply.bargein.BargeIn` (what the caller's voice and keys do to it) and the TTS
:class:`~bridge.reply.tts.Speaker`. One task per call, :meth:`CallReply.run`, does all the sending:
it wakes when the playout or barge-in has something due (about ten times a second while audio
plays, never while the call is quiet) or when an action, a mark echo or caller speech came in.
Nothing here is awaited by the phone's reading task: the caller's audio never waits for the way back.

Actions are produced in order by a second task (synthesis is one sentence at a time, off the event
loop; the first sentence plays while the next is synthesised). ``stop``, ``hangup after=now``,
``configure`` and a ``queue: replace`` act at once; the others wait their turn. Every ``say``,
``play`` and ``audio`` action ends with one ``playback.finished``, ``playback.interrupted`` or
``action.failed`` event; ``mark`` actions with ``playback.mark``.

Exactly once: a webhook answer's actions are applied once per ``webhook-id`` (a retried event that
the bot answered twice), a REST request's once per ``Idempotency-Key``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal, ParamSpec, TypeVar, assert_never
from urllib.parse import urlsplit

import aiohttp
import numpy as np
import structlog

from bridge.adapters.base import PhoneAdapter
from bridge.audio import AudioFormat, Transcoder, make_transcoder
from bridge.errors import ActionFailed, TtsError, UnsupportedOperation, WavError
from bridge.reply.actions import (
    Action,
    AudioChunk,
    Configure,
    Hangup,
    Mark,
    Play,
    Say,
    SendDtmf,
    Stop,
)
from bridge.reply.bargein import BargeIn, BargeInPolicy
from bridge.reply.dtmf import dtmf_pcm16
from bridge.reply.playout import (
    BotMarkPlayed,
    HangupNow,
    Output,
    PlaybackFinished,
    PlaybackInterrupted,
    PlaybackStarted,
    Playout,
    Segment,
    SendAudio,
    SendClear,
    SendMark,
)
from bridge.reply.tts import SentenceBuffer, Speaker, sentences
from bridge.settings import ReplySettings
from bridge.untrusted import read_bounded
from bridge.wav import read_wav

log = structlog.get_logger("bridge.reply")

Emit = Callable[[str, dict[str, Any]], None]  # (event type, payload without "call") -> the bot
Send = Callable[[str | bytes], Awaitable[None]]  # one message to the carrier
ActionStatus = Literal["queued", "done", "failed"]
MAX_PENDING_ACTIONS = 256  # queued and not yet produced, per call
MAX_FINALS_KEPT = 64  # the caller's latest utterance ids, to tell a stale reply (in_reply_to)
MAX_KEYS = 1024  # remembered webhook-ids and idempotency keys, per call
MAX_AUDIO_STREAMS = 16  # a bot's streamed says, and its own audio streams, open at once on one call
MAX_QUEUED_SECONDS = 300.0  # audio waiting to be played on one call; more is refused (action.failed)
MAX_PENDING_MARKS = 1000  # bot marks waiting on one call (queued behind audio, or for their echo)
MAX_ENDED_STREAMS = 256  # interrupted streams remembered per call, so that their later pieces are dropped

# The way back's own threads, apart from the event loop's default executor (which aiohttp's DNS lookups,
# shutdown work and any library share, none of it on our clock): the short conversions every reply
# waits for (TTS resampling, DTMF tones, a bot's audio chunks) on one pool, and a bot's WAVs (a 4 MiB
# prompt takes far longer) on another, so that one bot's big prompts never delay another call's tones.
_CONVERT = ThreadPoolExecutor(max_workers=2, thread_name_prefix="reply-convert")
_DECODE = ThreadPoolExecutor(max_workers=2, thread_name_prefix="reply-decode")


@dataclass(slots=True)
class ReplyCounters:
    actions: int = 0
    failed: int = 0
    played_ms: float = 0.0
    interrupted: int = 0


@dataclass(frozen=True, slots=True)
class ActionResult:
    id: str
    status: ActionStatus
    error: str | None = None

    def json(self) -> dict[str, Any]:
        return {"id": self.id, "status": self.status} | ({"error": self.error} if self.error else {})


class CallReply:
    """See the module docstring. ``emit`` posts a bot event; ``on_hangup`` ends the call."""

    def __init__(
        self,
        call_id: str,
        *,
        settings: ReplySettings,
        speaker: Speaker | None,
        http: aiohttp.ClientSession | None,
        emit: Emit,
        on_hangup: Callable[[], None],
    ) -> None:
        self.call_id = call_id
        self.settings = settings
        self.speaker = speaker
        self.http = http
        self.emit = emit
        self.on_hangup = on_hangup
        self.policy = BargeInPolicy(
            settings.barge_in, settings.min_words, settings.false_interruption_timeout, settings.echo_guard_ms
        )
        self.stale_replies = settings.stale_replies
        self.voice: str | None = None
        self._adapter: PhoneAdapter | None = None
        self._send: Send | None = None
        self.playout: Playout | None = None
        self.barge_in: BargeIn | None = None
        self._format: AudioFormat | None = None
        self._pending: deque[Action] = deque()  # to produce, in order
        self._producing: Action | None = None
        self._cancel_production = False
        self._wake = asyncio.Event()
        self._produce = asyncio.Event()
        self._out: deque[Output] = deque()  # from synchronous handlers, sent by the run task
        self._keys: OrderedDict[str, list[ActionResult]] = OrderedDict()
        # the caller's latest 64 utterance ids (a list: an empty deque costs 760 bytes, on every call)
        self._finals: list[str] = []
        self._streams: dict[str, SentenceBuffer] = {}
        self._audio_streams: dict[tuple[str, int], Transcoder] = {}  # a bot's own audio, by stream
        # streams that ended before their last piece (stop, replace, barge-in): later pieces are dropped
        self._ended_streams: OrderedDict[str, None] = OrderedDict()
        self._tasks: list[asyncio.Task[None]] = []
        self._messages: deque[str | bytes] = deque()  # to the carrier, in order
        self._hangup = False
        self._flow_paused = False
        self._closed = False
        self.counters = ReplyCounters()
        self._earlier_playouts = (0, 0.0, 0)  # underruns, cleared ms, resumed: of streams before this one

    # -- the stream that carries the call -------------------------------------------------------

    def attach(self, adapter: PhoneAdapter, send: Send) -> None:
        """The phone stream that carries the call now (its first, or a restarted one). Audio that was
        playing on a previous stream is reported interrupted (reason ``stop``): it is gone with it."""
        if self.playout is not None:
            if self.playout.playing:
                self._dispatch(self.playout.interrupt(time.monotonic(), "stop", only_interruptible=False))
            self._earlier_playouts = self._playout_figures()
        self._adapter, self._send = adapter, send
        self._format = adapter.outbound_format
        if self._tasks or self._pending:  # the way back is in use: a playout for this stream, now
            self._activate()

    def _activate(self) -> None:
        """The playout and barge-in for the current stream, and the call's two tasks (started once).
        Built on the first action, not for every call: most of a call's reply state would otherwise
        be held by calls that never hear a reply (the memory per call)."""
        adapter, fmt = self._adapter, self._format
        assert adapter is not None and fmt is not None
        framing = adapter.outbound_framing
        frame, min_bytes = framing.frame_bytes, framing.frame_bytes * framing.min_frames
        silence_byte = 0xFF if fmt.codec == "ulaw" else (0xD5 if fmt.codec == "alaw" else 0)
        self.playout = Playout(
            bytes_per_ms=fmt.bytes_per_second / 1000.0,
            frame_bytes=frame,
            silence_byte=silence_byte,
            min_bytes=min_bytes,
            lead_ms=self.settings.lead_ms_by_carrier.get(adapter.provider, self.settings.lead_ms),
            chunk_ms=self.settings.chunk_ms,
            marks=adapter.supports_marks,
            mark_grace=self.settings.mark_grace,
        )
        self.barge_in = BargeIn(self.playout, self.policy)
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._run(), name=f"reply-{self.call_id}"),
                asyncio.create_task(self._producer(), name=f"reply-produce-{self.call_id}"),
            ]
        self._wake.set()

    # -- actions in ---------------------------------------------------------------------------

    def apply(self, actions: list[Action], key: str | None = None) -> list[ActionResult]:
        """Accept a request's actions (already validated). ``key``: a webhook-id or an
        Idempotency-Key; a key seen before returns its first results and applies nothing."""
        if key is not None and key in self._keys:
            return self._keys[key]  # the first answer, nothing applied twice
        if not self._tasks and self._adapter is not None and not self._closed:
            self._activate()  # the call's first action (before its stream: attach() does it)
        results = [self._accept(action) for action in actions]
        self.counters.actions += sum(r.status != "failed" for r in results)
        if key is not None:
            self._keys[key] = results
            while len(self._keys) > MAX_KEYS:
                self._keys.popitem(last=False)
        self._produce.set()
        self._wake.set()
        return results

    def _accept(self, action: Action) -> ActionResult:
        if self._closed:
            return ActionResult(action.id, "failed", "the call has ended")
        now = time.monotonic()
        match action:
            case Stop():
                self._drop_pending("stop")
                self._interrupt(now, "stop")
                if self._adapter is not None and not self._adapter.supports_clear:
                    error = (
                        f"{self._adapter.provider}: the carrier cannot drop audio it already holds; the queue "
                        f"was dropped, up to {self.settings.lead_ms:.0f} ms already sent still plays"
                    )
                    self.fail(action.id, error)
                    return ActionResult(action.id, "failed", error)
                return ActionResult(action.id, "done")
            case Say() | Play() | AudioChunk() | Mark() | SendDtmf() | Hangup() if (
                self._adapter is not None and not self._adapter.plays_audio
            ):
                error = (
                    f"{self._adapter.provider}: this stream only listens (a fork of both parties): "
                    "nothing can be played, marked or hung up on it"
                )
                self.fail(action.id, error)
                return ActionResult(action.id, "failed", error)
            case Hangup(after="now"):
                self._drop_pending("hangup")
                self._interrupt(now, "hangup")
                self._out.append(HangupNow())
                return ActionResult(action.id, "done")
            case Configure():
                if action.barge_in is not None:
                    self.policy = self.policy.updated(action.barge_in)
                    if self.barge_in is not None:
                        self.barge_in.policy = self.policy
                if action.voice is not None:
                    self.voice = action.voice
                if action.stale_replies is not None:
                    self.stale_replies = action.stale_replies
                return ActionResult(action.id, "done")
            case Play(url=str() as url) if not self._url_allowed(url):
                error = f"play url host {urlsplit(url).hostname!r} is not in BRIDGE_PLAY_URL_HOSTS"
                self.fail(action.id, error)
                return ActionResult(action.id, "failed", error)
            case Say() | Play() | AudioChunk() | Mark() | SendDtmf() | Hangup():
                if len(self._pending) >= MAX_PENDING_ACTIONS:
                    error = f"more than {MAX_PENDING_ACTIONS} actions waiting on this call"
                    self.fail(action.id, error)
                    return ActionResult(action.id, "failed", error)
                in_use = self._id_in_use(action)
                if in_use is not None:
                    self.fail(action.id, in_use)
                    return ActionResult(action.id, "failed", in_use)
                if isinstance(action, Say | Play | AudioChunk) and action.queue == "replace":
                    self._drop_pending("replace")
                    self._interrupt(now, "replace")
                    self._ended_streams.pop(_key(action), None)  # a replace starts it anew
                self._pending.append(action)
                return ActionResult(action.id, "queued")
            case _:
                assert_never(action)

    def _id_in_use(self, action: Action) -> str | None:
        """Why ``action`` cannot have its id (None: it can). The bridge reports every outcome by id, so
        two live actions (queued, producing or playing) with one id would merge and lose outcomes. The
        pieces of a stream share its ``stream_id`` on purpose: they are one action while it is open,
        that is until its ``last`` piece (a piece after that, while the stream still lives, is refused)."""
        key = _key(action)
        producing = [self._producing] if self._producing is not None else []
        # Whether each stream is open: produced pieces without their last yet, then the queue in order.
        is_open = dict.fromkeys(itertools.chain(self._streams, (sid for sid, _ in self._audio_streams)), True)
        for queued in itertools.chain(producing, self._pending):
            if _streamed(queued):
                assert isinstance(queued, Say | AudioChunk)
                is_open[_key(queued)] = not queued.last
        live = {_key(a) for a in itertools.chain(self._pending, producing)} | set(is_open)
        if self.playout is not None:
            live.update(self.playout.live_actions)
        if key not in live or (_streamed(action) and is_open.get(key, False)):
            return None
        return (
            f"action id {key!r} is already used by a live action on this call (queued, producing or playing): "
            "ids must be unique while their action lives"
        )

    def fail(self, action_id: str | None, error: str) -> None:
        """``action.failed``: an action (or, with no id, a whole answer) the bridge could not carry out."""
        self.counters.failed += 1
        self.emit("action.failed", {"action_id": action_id, "error": error})

    def _url_allowed(self, url: str) -> bool:
        host = (urlsplit(url).hostname or "").lower()
        return bool(host) and host in self.settings.play_url_hosts

    def _drop_pending(self, reason: Literal["stop", "replace", "hangup"]) -> None:
        """Actions not yet produced end without a sound (played_ms 0); one being produced stops. A
        stream is one action (named by its ``stream_id``): it ends once, here or, when some of it is
        in the playout, by the playout's interruption that follows; its later pieces are dropped."""
        in_playout = self.playout.live_actions if self.playout is not None else frozenset()
        ended: dict[str, None] = {}
        for action in itertools.chain([self._producing] if self._producing is not None else [], self._pending):
            if isinstance(action, Say | Play | AudioChunk):
                ended.setdefault(_key(action), None)
                if _streamed(action):
                    self._end_stream(_key(action))
        for stream_id in itertools.chain(self._streams, (sid for sid, _ in self._audio_streams)):
            ended.setdefault(stream_id, None)  # open: pieces may still come
            self._end_stream(stream_id)
        for action_id in ended:
            if action_id not in in_playout:
                self.emit(
                    "playback.interrupted", {"action_id": action_id, "played_ms": 0, "heard_text": "", "reason": reason}
                )
        self._pending.clear()
        self._streams.clear()
        self._audio_streams.clear()
        if self._producing is not None:
            self._cancel_production = True

    def _end_stream(self, stream_id: str) -> None:
        self._ended_streams[stream_id] = None
        self._ended_streams.move_to_end(stream_id)
        while len(self._ended_streams) > MAX_ENDED_STREAMS:
            self._ended_streams.popitem(last=False)

    def _ended(self, action_id: str) -> None:
        """The playout ended an action early (barge-in, stop, replace): the rest of it is not produced,
        and an open stream's later pieces are dropped."""
        if self._producing is not None and _key(self._producing) == action_id:
            self._cancel_production = True
        open_audio = [k for k in self._audio_streams if k[0] == action_id]
        if action_id in self._streams or open_audio:
            self._streams.pop(action_id, None)
            for k in open_audio:
                del self._audio_streams[k]
            self._end_stream(action_id)

    def _stream_ended(self, action: Say | AudioChunk) -> bool:
        """A piece of a stream that ended early: dropped (its outcome was reported). Its last piece
        closes the matter, so the stream_id may name a new stream afterwards."""
        if action.stream_id is None or action.stream_id not in self._ended_streams:
            return False
        if action.last:
            del self._ended_streams[action.stream_id]
        return True

    def _interrupt(self, now: float, reason: Literal["stop", "replace", "hangup"]) -> None:
        if self.playout is not None:
            self._out.extend(self.playout.interrupt(now, reason, only_interruptible=False))
        if self.barge_in is not None:
            self.barge_in.stopped()

    # -- what the call tells us ---------------------------------------------------------------

    def mark_reached(self, name: str) -> None:
        if self.playout is not None:
            self._out.extend(self.playout.mark_reached(name, time.monotonic()))
            self._wake.set()

    def flow(self, paused: bool) -> None:
        """The carrier's playback queue is full (Asterisk MEDIA_XOFF) or has room again (MEDIA_XON):
        nothing is sent meanwhile. With the playout's lead the queue never gets near full; a carrier
        that says so anyway is obeyed."""
        self._flow_paused = paused
        log.info("reply.flow_control", paused=paused)
        self._wake.set()

    def caller_speech(self, started: bool) -> None:
        if self.barge_in is None:
            return
        now = time.monotonic()
        due = self.barge_in.next_due()
        self._heard(self.barge_in.speech_started(now) if started else self.barge_in.speech_ended(now), due)

    def caller_words(self, text: str) -> None:
        if self.barge_in is not None:
            due = self.barge_in.next_due()
            self._heard(self.barge_in.words(text, time.monotonic()), due)

    def _heard(self, outputs: list[Output], due: float | None) -> None:
        """What the barge-in made of the caller: the reply task wakes when there is something to do
        now or the time it must look again has changed (not for every word of a caller who is not
        interrupting anything)."""
        assert self.barge_in is not None
        if outputs or self.barge_in.next_due() != due:
            self._out.extend(outputs)
            self._wake.set()

    def caller_final(self, utterance_id: str, text: str) -> str | None:
        """A final of the caller: barge-in words, the latest turn (stale replies). Returns the action
        the caller heard while saying it (``during_playback``), or None."""
        during = self.playout.current_action if self.playout is not None and self.playout.playing else None
        self._finals.append(utterance_id)
        del self._finals[:-MAX_FINALS_KEPT]
        self.caller_words(text)
        return during

    def caller_dtmf(self) -> None:
        if self.barge_in is not None:
            self._out.extend(self.barge_in.dtmf(time.monotonic()))
            self._wake.set()

    def _playout_figures(self) -> tuple[int, float, int]:
        u, c, r = self._earlier_playouts
        if self.playout is None or self.barge_in is None:
            return u, c, r
        cleared_ms = self.playout.counters.cleared_bytes / self.playout.bytes_per_ms
        return u + self.playout.counters.underruns, c + cleared_ms, r + self.barge_in.counters.resumed

    def figures(self) -> dict[str, int]:
        """The reply loop's part of ``call.ended``'s summary."""
        underruns, cleared_ms, resumed = self._playout_figures()
        return {
            "reply_actions": self.counters.actions,
            "reply_failed": self.counters.failed,
            "reply_played_ms": round(self.counters.played_ms),
            "reply_interrupted": self.counters.interrupted,
            "reply_underruns": underruns,
            "reply_cleared_ms": round(cleared_ms),
            "barge_in_resumed": resumed,
        }

    def state(self) -> dict[str, Any]:
        """For ``GET /v1/calls/{id}``: listening, speaking or paused; the queue; what was heard."""
        playout = self.playout
        now = time.monotonic()
        if playout is not None and playout.paused:
            status = "paused"
        elif (playout is not None and playout.playing) or self._producing is not None or self._pending:
            status = "speaking"
        else:
            status = "listening"
        queue = playout.queued_actions if playout is not None else []
        queue += [
            a.id for a in ([self._producing] if self._producing else []) + list(self._pending) if a.id not in queue
        ]
        return {
            "state": status,
            "queue": queue,
            "played_ms": round(playout.heard_ms(now)) if playout is not None else 0,
        }

    async def close(self) -> None:
        """The call is over: what was playing or queued is reported interrupted (``hangup``)."""
        if self._closed:
            return
        self._closed = True
        self._drop_pending("hangup")
        if self.playout is not None:
            self._dispatch(self.playout.interrupt(time.monotonic(), "hangup", only_interruptible=False), send=False)
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            _, stuck = await asyncio.wait(self._tasks, timeout=5.0)
            if stuck:  # never expected: say so rather than hold the call's end
                log.error("reply.task_stuck", tasks=sorted(t.get_name() for t in stuck))

    # -- the sending task ---------------------------------------------------------------------

    async def _run(self) -> None:
        """The sending task. It lives as long as the call: an unexpected error in one step is logged
        with its traceback and the next step goes on (a step that keeps failing is retried ten times
        a second, never in a busy loop)."""
        while True:
            try:
                await self._step()
            except Exception:
                log.exception("reply.send_error")
                await asyncio.sleep(0.1)

    async def _step(self) -> None:
        if self._flow_paused:  # the carrier asked for no more audio: wait for its XON
            self._wake.clear()
            await self._wake.wait()
            return
        await self._flush()
        playout, barge_in = self.playout, self.barge_in
        assert playout is not None and barge_in is not None
        now = time.monotonic()
        self._out.extend(barge_in.tick(now))
        self._out.extend(playout.tick(now))
        if not self._out:
            due = [t for t in (playout.next_due(), barge_in.next_due()) if t is not None]
            self._wake.clear()
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that lands as
            # the wake-up does, and close() would then wait for this task forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, min(due) - time.monotonic()) if due else None):
                    await self._wake.wait()

    async def _flush(self) -> None:
        while self._out:
            self._dispatch([self._out.popleft()])
            await self._send_queued()

    def _dispatch(self, outputs: list[Output], *, send: bool = True) -> None:
        """Each output to the carrier's queue or the bot. One that fails (the bot channel raised, an
        adapter bug) is logged with its traceback and the others still go."""
        for out in outputs:
            try:
                self._dispatch_one(out, send)
            except Exception:
                log.exception("reply.dispatch_error", output=type(out).__name__)

    def _dispatch_one(self, out: Output, send: bool) -> None:
        adapter = self._adapter
        match out:
            case SendAudio():
                if send and adapter is not None:
                    self._messages.extend(adapter.audio_messages(out.data))
            case SendMark():
                if send and adapter is not None:
                    self._messages.append(adapter.mark_message(out.name))
            case SendClear():
                if send and adapter is not None:
                    with contextlib.suppress(UnsupportedOperation):  # pausing still stops the sending
                        self._messages.append(adapter.clear_message())
            case PlaybackStarted():
                self.emit("playback.started", {"action_id": out.action_id})
            case PlaybackFinished():
                self.counters.played_ms += out.played_ms
                self.emit("playback.finished", {"action_id": out.action_id, "played_ms": out.played_ms})
            case PlaybackInterrupted():
                self._ended(out.action_id)
                self.counters.played_ms += out.played_ms
                self.counters.interrupted += 1
                self.emit(
                    "playback.interrupted",
                    {
                        "action_id": out.action_id,
                        "played_ms": out.played_ms,
                        "heard_text": out.heard_text,
                        "reason": out.reason,
                    },
                )
            case BotMarkPlayed():
                self.emit("playback.mark", {"name": out.name})
            case HangupNow():
                if send and adapter is not None:
                    message = adapter.hangup_message()
                    if message is not None:
                        self._messages.append(message)
                self._hangup = True
            case _:
                assert_never(out)

    async def _send_queued(self) -> None:
        send = self._send
        while self._messages:
            message = self._messages.popleft()
            if send is not None:
                try:
                    await send(message)
                except (ConnectionError, RuntimeError):  # the socket is closing: the call ends anyway
                    self._messages.clear()
        if self._hangup:
            self._hangup = False
            log.info("reply.hangup")
            self.on_hangup()

    # -- producing audio, in order --------------------------------------------------------------

    async def _producer(self) -> None:
        """The producing task. It lives as long as the call: an action that fails in a way no one
        planned for (a MemoryError, a bug, an engine raising anything) fails that action only
        (``action.failed`` and one log line with the traceback), and the next action is produced."""
        while True:
            if not self._pending:
                self._produce.clear()
                await self._produce.wait()
                continue
            action = self._pending.popleft()
            self._producing, self._cancel_production = action, False
            try:
                await self._produce_one(action)
            except (ActionFailed, TtsError, WavError) as exc:
                error = str(exc)[:300]
                log.warning("reply.action_failed", action_id=_key(action), error=error)
                self._fail_safely(_key(action), error)
            except Exception as exc:
                log.exception("reply.action_error", action_id=_key(action))
                self._fail_safely(_key(action), f"the bridge could not carry out this action ({type(exc).__name__})")
            finally:
                self._producing = None
            self._wake.set()

    def _fail_safely(self, action_id: str, error: str) -> None:
        if self._cancel_production:  # it was stopped meanwhile: its one outcome (interrupted) went out
            return
        try:
            self.fail(action_id, error)
        except Exception:  # the bot channel itself failed: the producing goes on regardless
            log.exception("reply.fail_not_reported", action_id=action_id)

    async def _produce_one(self, action: Action) -> None:
        match action:
            case Say():
                await self._say(action)
            case Play():
                await self._play(action)
            case AudioChunk():
                await self._audio_chunk(action)
            case Mark():
                self._add(Segment(action.id, b"", bot_mark=action.name))
            case SendDtmf():
                audio = await _off_loop(_CONVERT, self._dtmf_outbound, action.digits)
                if not self._cancel_production:
                    self._add(Segment(action.id, audio, text="", interrupt="none"))
            case Hangup():
                if self.playout is not None:
                    self._out.extend(self.playout.hangup_after_playback(time.monotonic()))
            case Stop() | Configure():
                pass  # applied when accepted
            case _:
                assert_never(action)

    def _stale(self, action: Say | Play | AudioChunk) -> bool:
        """A reply to an utterance the caller has moved past (another final came after it)."""
        if action.in_reply_to is None or self.stale_replies == "play" or not self._finals:
            return False
        if action.in_reply_to not in self._finals or action.in_reply_to == self._finals[-1]:
            return False
        error = (
            f"stale reply: in_reply_to {action.in_reply_to!r} but the caller spoke again since "
            f"(latest utterance {self._finals[-1]!r}); set stale_replies to play to keep such replies"
        )
        log.info("reply.stale_dropped", action_id=action.id, in_reply_to=action.in_reply_to)
        self.fail(action.id, error)
        return True

    async def _say(self, action: Say) -> None:
        if self._stream_ended(action):
            return
        if action.stream_id is not None:
            if action.stream_id not in self._streams and len(self._streams) >= MAX_AUDIO_STREAMS:
                raise ActionFailed(f"more than {MAX_AUDIO_STREAMS} streamed says open on this call")
            buffer = self._streams.setdefault(action.stream_id, SentenceBuffer())
            texts = buffer.push(action.text, action.last)
            if action.last:
                self._streams.pop(action.stream_id, None)
        else:
            texts = None
        if self.speaker is None:
            raise TtsError("no speech engine: install the local extra (pip install '.[local]') or set TTS_API_URL")
        if self._stale(action):
            return
        parts = texts if texts is not None else sentences(action.text)
        action_id = action.stream_id or action.id  # a streamed say is one action: its stream
        last_piece = action.last
        if not parts and last_piece:
            self._add(Segment(action_id, b"", last=True, interrupt=action.interrupt))  # the stream's end
        for i, text in enumerate(parts):
            if self._cancel_production:
                return
            speech = await self.speaker.sentence(text, action.voice or self.voice)
            if self._cancel_production:
                return
            audio = await _off_loop(_CONVERT, self._to_outbound, speech.pcm, speech.sample_rate)
            self._add(
                Segment(
                    action_id, audio, text=text, last=last_piece and i == len(parts) - 1, interrupt=action.interrupt
                )
            )

    async def _play(self, action: Play) -> None:
        if self._stale(action):
            return
        data = action.audio if action.audio is not None else await self._fetch(action.url or "")
        waiting = self.playout.queued_bytes / self.playout.bytes_per_ms / 1000.0 if self.playout is not None else 0.0
        # Always off the loop, however small: an 84-byte WAV can still ask for a costly conversion.
        audio = await _off_loop(_DECODE, self._wav_to_outbound, data, waiting)
        if not self._cancel_production:
            self._add(Segment(action.id, audio, interrupt=action.interrupt))

    def _wav_to_outbound(self, data: bytes, waiting: float) -> bytes:
        """(In a thread.) The WAV in the carrier's format; refused before conversion when, with the
        ``waiting`` seconds already queued, it would take the call over ``MAX_QUEUED_SECONDS``."""
        wav = read_wav(data, max_seconds=MAX_QUEUED_SECONDS)
        if waiting + wav.seconds > MAX_QUEUED_SECONDS:
            raise WavError(
                f"a WAV of {wav.seconds:.1f} s with {waiting:.1f} s already waiting: over the "
                f"{MAX_QUEUED_SECONDS:.0f} s of audio a call may have waiting"
            )
        pcm = (np.clip(wav.samples, -1.0, 1.0) * 32767).astype("<i2").tobytes()
        return self._to_outbound(pcm, wav.sample_rate)

    def _dtmf_outbound(self, digits: str) -> bytes:
        """(In a thread.) The digits' tones in the carrier's format."""
        return self._to_outbound(dtmf_pcm16(digits), 8000)

    async def _audio_chunk(self, action: AudioChunk) -> None:
        """A piece of the bot's own audio. The pieces of one stream are one action, named by the stream,
        converted by one transcoder (no seams between pieces), flushed with the last; off the loop."""
        if self.playout is None or self._format is None or self._stream_ended(action):
            return
        key = (action.stream_id, action.sample_rate)
        transcoder = self._audio_streams.get(key)
        if transcoder is None:
            if len(self._audio_streams) >= MAX_AUDIO_STREAMS:
                self.fail(action.stream_id, f"more than {MAX_AUDIO_STREAMS} audio streams open on this call")
                return
            transcoder = await _off_loop(
                _CONVERT, make_transcoder, AudioFormat("pcm16", action.sample_rate), self._format
            )
            if self._cancel_production:
                return
            self._audio_streams[key] = transcoder
        audio = await _off_loop(_CONVERT, _convert, transcoder, action.audio, action.last)
        if action.last:
            self._audio_streams.pop(key, None)
        if not self._cancel_production:
            self._add(Segment(action.stream_id, audio, last=action.last, interrupt=action.interrupt))

    async def _fetch(self, url: str) -> bytes:
        if not self._url_allowed(url) or self.http is None:
            raise ActionFailed(f"play url host {urlsplit(url).hostname!r} is not in BRIDGE_PLAY_URL_HOSTS")
        limit = self.settings.max_play_bytes
        try:
            async with self.http.get(url, allow_redirects=False, timeout=aiohttp.ClientTimeout(total=10)) as resp:
                if resp.status != 200:
                    raise ActionFailed(f"play url answered {resp.status}")
                too_big = f"play url body over {limit} bytes (reply.max_play_bytes)"
                if resp.content_length is not None and resp.content_length > limit:
                    raise ActionFailed(too_big)
                # The whole body, to its end (one read returns only what has arrived so far).
                data, truncated = await read_bounded(resp.content, limit)
                if truncated:
                    raise ActionFailed(too_big)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ActionFailed(f"play url failed: {type(exc).__name__}: {exc}"[:200]) from exc
        return data

    def _to_outbound(self, pcm: bytes, rate: int) -> bytes:
        assert self._format is not None
        transcoder = make_transcoder(AudioFormat("pcm16", rate), self._format)
        return transcoder.feed(pcm) + transcoder.flush()

    def _add(self, segment: Segment) -> None:
        if self.playout is None or self._closed:
            return
        if segment.bot_mark is not None and self.playout.waiting_marks >= MAX_PENDING_MARKS:
            self.fail(segment.action_id, f"over {MAX_PENDING_MARKS} marks waiting on this call: refused")
            return
        queued_ms = self.playout.queued_bytes / self.playout.bytes_per_ms
        if queued_ms + len(segment.audio) / self.playout.bytes_per_ms > MAX_QUEUED_SECONDS * 1000:
            self.fail(segment.action_id, f"over {MAX_QUEUED_SECONDS:.0f} s of audio waiting on this call: refused")
            return
        self._out.extend(self.playout.add(segment, time.monotonic()))
        self._wake.set()


def _key(action: Action) -> str:
    """The id an action's outcome is reported under: a stream's pieces are one action, its stream_id."""
    if isinstance(action, Say | AudioChunk) and action.stream_id is not None:
        return action.stream_id
    return action.id


def _streamed(action: Action) -> bool:
    return isinstance(action, AudioChunk) or (isinstance(action, Say) and action.stream_id is not None)


_P = ParamSpec("_P")
_T = TypeVar("_T")


async def _off_loop(executor: Executor, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """``fn(*args)`` on one of the way back's own pools (see ``_CONVERT``), not the loop's default."""
    return await asyncio.get_running_loop().run_in_executor(executor, lambda: fn(*args, **kwargs))


def _convert(transcoder: Transcoder, pcm: bytes, last: bool) -> bytes:
    """(In a thread.) One piece of a stream through its transcoder; the rest with the last."""
    audio = transcoder.feed(pcm)
    return audio + transcoder.flush() if last else audio
