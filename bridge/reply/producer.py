"""The producing task of one call's way back: the bot's accepted actions, in order, made into audio
segments for the playout (synthesis one sentence at a time, off the event loop: the first sentence plays
while the next is synthesised; a ``play`` url fetched and its WAV decoded; DTMF tones; a bot's own audio).

Holds what is still to produce: the queue of actions, the one being produced, and the streams (a
streamed ``say`` or a bot's audio, one action while open; those ended early, whose later pieces are
dropped). :class:`~bridge.reply.call_reply.CallReply` accepts the actions; the segments go to the
:class:`~bridge.reply.sender.Sender`'s playout.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Literal, assert_never

import aiohttp
import structlog

from bridge.audio import AudioFormat, Transcoder, make_transcoder
from bridge.errors import ActionFailed, TtsError, WavError
from bridge.reply.actions import (
    Action,
    AudioChunk,
    Configure,
    Gather,
    Hangup,
    Mark,
    Play,
    Say,
    SendDtmf,
    Stop,
    Transfer,
)
from bridge.reply.outbound_audio import (
    CONVERT,
    DECODE,
    MAX_QUEUED_SECONDS,
    convert,
    dtmf_outbound,
    fetch,
    off_loop,
    to_outbound,
    wav_to_outbound,
)
from bridge.reply.playout import Segment
from bridge.reply.sender import Emit, Sender
from bridge.reply.tts import SentenceBuffer, Speaker, sentences
from bridge.settings import ReplySettings

log = structlog.get_logger("bridge.reply")

MAX_PENDING_ACTIONS = 256  # queued and not yet produced, per call
MAX_AUDIO_STREAMS = 16  # a bot's streamed says, and its own audio streams, open at once on one call
MAX_PENDING_MARKS = 1000  # bot marks waiting on one call (queued behind audio, or for their echo)
MAX_ENDED_STREAMS = 256  # interrupted streams remembered per call, so that their later pieces are dropped

Fail = Callable[[str | None, str], None]  # action.failed: (action id, error)
Stale = Callable[[Say | Play | AudioChunk], bool]  # a reply the caller moved past: failed (True) or not


class Producer:
    """The producing task (:meth:`run`) and the queue it works through. ``fail`` reports an action
    that failed; ``stale`` drops a reply to an utterance the caller moved past (and reports it)."""

    __slots__ = (
        "_audio_streams",
        "_ended_streams",
        "_sender",
        "_streams",
        "cancel_production",
        "closed",
        "emit",
        "fail",
        "format",
        "http",
        "pending",
        "produce",
        "producing",
        "settings",
        "speaker",
        "stale",
        "voice",
    )

    def __init__(
        self,
        *,
        settings: ReplySettings,
        speaker: Speaker | None,
        http: aiohttp.ClientSession | None,
        sender: Sender,
        emit: Emit,
        fail: Fail,
        stale: Stale,
    ) -> None:
        self.settings = settings
        self.speaker = speaker
        self.http = http
        self._sender = sender
        self.emit = emit
        self.fail = fail
        self.stale = stale
        self.voice: str | None = None
        self.format: AudioFormat | None = None  # the carrier's, of the current phone stream
        self.closed = False
        self.pending: deque[Action] = deque()  # to produce, in order
        self.producing: Action | None = None
        self.cancel_production = False
        self.produce = asyncio.Event()
        self._streams: dict[str, SentenceBuffer] = {}
        self._audio_streams: dict[tuple[str, int], Transcoder] = {}  # a bot's own audio, by stream
        # streams that ended before their last piece (stop, replace, barge-in): later pieces are dropped
        self._ended_streams: OrderedDict[str, None] = OrderedDict()

    # -- the queue and its streams --------------------------------------------------------------

    def id_in_use(self, action: Action) -> str | None:
        """Why ``action`` cannot have its id (None: it can). The bridge reports every outcome by id, so
        two live actions (queued, producing or playing) with one id would merge and lose outcomes. The
        pieces of a stream share its ``stream_id`` on purpose: they are one action while it is open,
        that is until its ``last`` piece (a piece after that, while the stream still lives, is refused)."""
        key = action_key(action)
        producing = [self.producing] if self.producing is not None else []
        # Whether each stream is open: produced pieces without their last yet, then the queue in order.
        is_open = dict.fromkeys(itertools.chain(self._streams, (sid for sid, _ in self._audio_streams)), True)
        for queued in itertools.chain(producing, self.pending):
            if is_streamed(queued):
                assert isinstance(queued, Say | AudioChunk)
                is_open[action_key(queued)] = not queued.last
        live = {action_key(a) for a in itertools.chain(self.pending, producing)} | set(is_open)
        playout = self._sender.playout
        if playout is not None:
            live.update(playout.live_actions)
        if key not in live or (is_streamed(action) and is_open.get(key, False)):
            return None
        return (
            f"action id {key!r} is already used by a live action on this call (queued, producing or playing): "
            "ids must be unique while their action lives"
        )

    def drop_pending(self, reason: Literal["stop", "replace", "hangup", "transfer", "machine"]) -> None:
        """Actions not yet produced end without a sound (played_ms 0); one being produced stops. A
        stream is one action (named by its ``stream_id``): it ends once, here or, when some of it is
        in the playout, by the playout's interruption that follows; its later pieces are dropped."""
        playout = self._sender.playout
        in_playout = playout.live_actions if playout is not None else frozenset()
        ended: dict[str, None] = {}
        # One being produced that the playout already ended (barge-in, a key) had its one outcome then.
        producing = [self.producing] if self.producing is not None and not self.cancel_production else []
        for action in itertools.chain(producing, self.pending):
            if isinstance(action, Say | Play | AudioChunk):
                ended.setdefault(action_key(action), None)
                if is_streamed(action):
                    self._end_stream(action_key(action))
        for stream_id in itertools.chain(self._streams, (sid for sid, _ in self._audio_streams)):
            ended.setdefault(stream_id, None)  # open: pieces may still come
            self._end_stream(stream_id)
        for action_id in ended:
            if action_id not in in_playout:
                self.emit(
                    "playback.interrupted", {"action_id": action_id, "played_ms": 0, "heard_text": "", "reason": reason}
                )
        self.pending.clear()
        self._streams.clear()
        self._audio_streams.clear()
        if self.producing is not None:
            self.cancel_production = True

    def restart_stream(self, action: Action) -> None:
        """A ``queue: replace`` starts its stream anew: pieces of it are no longer dropped."""
        self._ended_streams.pop(action_key(action), None)

    def _end_stream(self, stream_id: str) -> None:
        self._ended_streams[stream_id] = None
        self._ended_streams.move_to_end(stream_id)
        while len(self._ended_streams) > MAX_ENDED_STREAMS:
            self._ended_streams.popitem(last=False)

    def ended(self, action_id: str) -> None:
        """The playout ended an action early (barge-in, stop, replace): the rest of it is not produced,
        and an open stream's later pieces are dropped."""
        if self.producing is not None and action_key(self.producing) == action_id:
            self.cancel_production = True
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

    # -- producing audio, in order --------------------------------------------------------------

    async def run(self) -> None:
        """The producing task. It lives as long as the call: an action that fails in a way no one
        planned for (a MemoryError, a bug, an engine raising anything) fails that action only
        (``action.failed`` and one log line with the traceback), and the next action is produced."""
        while True:
            if not self.pending:
                self.produce.clear()
                await self.produce.wait()
                continue
            action = self.pending.popleft()
            self.producing, self.cancel_production = action, False
            try:
                await self._produce_one(action)
            except (ActionFailed, TtsError, WavError) as exc:
                error = str(exc)[:300]
                log.warning("reply.action_failed", action_id=action_key(action), error=error)
                self._fail_safely(action_key(action), error)
            except Exception as exc:
                log.exception("reply.action_error", action_id=action_key(action))
                self._fail_safely(
                    action_key(action), f"the bridge could not carry out this action ({type(exc).__name__})"
                )
            finally:
                self.producing = None
            self._sender.wake.set()

    def _fail_safely(self, action_id: str, error: str) -> None:
        if self.cancel_production:  # it was stopped meanwhile: its one outcome (interrupted) went out
            return
        try:
            self.fail(action_id, error)
        except Exception:  # the bot channel itself failed: the producing goes on regardless
            log.exception("reply.fail_not_reported", action_id=action_id)

    def _outbound_format(self) -> AudioFormat:
        assert self.format is not None
        return self.format

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
                audio = await off_loop(CONVERT, dtmf_outbound, action.digits, self._outbound_format())
                if not self.cancel_production:
                    self._add(Segment(action.id, audio, text="", interrupt="none"))
            case Hangup():
                if self._sender.playout is not None:
                    self._sender.out.extend(self._sender.playout.hangup_after_playback(time.monotonic()))
            case Transfer():
                if self._sender.playout is not None:
                    self._sender.out.extend(self._sender.playout.hand_over_after_playback(action.id, time.monotonic()))
            case Stop() | Configure() | Gather():
                pass  # applied when accepted
            case _:
                assert_never(action)

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
        if self.stale(action):
            return
        parts = texts if texts is not None else sentences(action.text)
        action_id = action.stream_id or action.id  # a streamed say is one action: its stream
        last_piece = action.last
        if not parts and last_piece:
            self._add(Segment(action_id, b"", last=True, interrupt=action.interrupt))  # the stream's end
        for i, text in enumerate(parts):
            if self.cancel_production:
                return
            speech = await self.speaker.sentence(text, action.voice or self.voice)
            if self.cancel_production:
                return
            audio = await off_loop(CONVERT, to_outbound, speech.pcm, speech.sample_rate, self._outbound_format())
            if self.cancel_production:  # ended while converting (a key, a stop): nothing more of it plays
                return
            self._add(
                Segment(
                    action_id, audio, text=text, last=last_piece and i == len(parts) - 1, interrupt=action.interrupt
                )
            )

    async def _play(self, action: Play) -> None:
        if self.stale(action):
            return
        data = action.audio if action.audio is not None else await fetch(self.http, action.url or "", self.settings)
        playout = self._sender.playout
        waiting = playout.queued_bytes / playout.bytes_per_ms / 1000.0 if playout is not None else 0.0
        # Always off the loop, however small: an 84-byte WAV can still ask for a costly conversion.
        audio = await off_loop(DECODE, wav_to_outbound, data, waiting, self._outbound_format())
        if not self.cancel_production:
            self._add(Segment(action.id, audio, interrupt=action.interrupt))

    async def _audio_chunk(self, action: AudioChunk) -> None:
        """A piece of the bot's own audio. The pieces of one stream are one action, named by the stream,
        converted by one transcoder (no seams between pieces), flushed with the last; off the loop."""
        if self._sender.playout is None or self.format is None or self._stream_ended(action):
            return
        key = (action.stream_id, action.sample_rate)
        transcoder = self._audio_streams.get(key)
        if transcoder is None:
            if len(self._audio_streams) >= MAX_AUDIO_STREAMS:
                self.fail(action.stream_id, f"more than {MAX_AUDIO_STREAMS} audio streams open on this call")
                return
            transcoder = await off_loop(CONVERT, make_transcoder, AudioFormat("pcm16", action.sample_rate), self.format)
            if self.cancel_production:
                return
            self._audio_streams[key] = transcoder
        audio = await off_loop(CONVERT, convert, transcoder, action.audio, action.last)
        if action.last:
            self._audio_streams.pop(key, None)
        if not self.cancel_production:
            self._add(Segment(action.stream_id, audio, last=action.last, interrupt=action.interrupt))

    def _add(self, segment: Segment) -> None:
        playout = self._sender.playout
        if playout is None or self.closed:
            return
        if segment.bot_mark is not None and playout.waiting_marks >= MAX_PENDING_MARKS:
            self.fail(segment.action_id, f"over {MAX_PENDING_MARKS} marks waiting on this call: refused")
            return
        queued_ms = playout.queued_bytes / playout.bytes_per_ms
        if queued_ms + len(segment.audio) / playout.bytes_per_ms > MAX_QUEUED_SECONDS * 1000:
            self.fail(segment.action_id, f"over {MAX_QUEUED_SECONDS:.0f} s of audio waiting on this call: refused")
            return
        self._sender.out.extend(playout.add(segment, time.monotonic()))
        self._sender.wake.set()


def action_key(action: Action) -> str:
    """The id an action's outcome is reported under: a stream's pieces are one action, its stream_id."""
    if isinstance(action, Say | AudioChunk) and action.stream_id is not None:
        return action.stream_id
    return action.id


def is_streamed(action: Action) -> bool:
    """A piece of a stream: a bot's audio, or a ``say`` with a ``stream_id``."""
    return isinstance(action, AudioChunk) or (isinstance(action, Say) and action.stream_id is not None)
