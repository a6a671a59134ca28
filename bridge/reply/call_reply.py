"""One call's way back to the caller: the bot's actions in, paced audio out (the I/O shell).

:class:`CallReply`, what the call holds, accepts the bot's actions and hears what the caller does. It
drives the pure pieces: :class:`~bridge.reply.playout.Playout` (what is sent when, what was heard),
:class:`~bridge.reply.bargein.BargeIn` (what the caller's voice and keys do to it), through two tasks per
call: sending (:mod:`bridge.reply.sender`) and producing (:mod:`bridge.reply.producer`, with the TTS
:class:`~bridge.reply.tts.Speaker`). Nothing here is awaited by the phone's reading task.

Actions are produced in order. ``stop``, ``hangup after=now``, ``configure`` and a ``queue: replace``
act at once; the others wait their turn. Every ``say``, ``play`` and ``audio`` action ends with one
``playback.finished``, ``playback.interrupted`` or ``action.failed`` event; ``mark`` with ``playback.mark``.

Exactly once: a webhook answer's actions are applied once per ``webhook-id`` (a retried event that
the bot answered twice), a REST request's once per ``Idempotency-Key``.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol, assert_never
from urllib.parse import urlsplit

import aiohttp
import structlog

from bridge.adapters.base import PhoneAdapter
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
from bridge.reply.bargein import BargeIn, BargeInPolicy
from bridge.reply.figures import ReplyCounters, ReplyFigures, reply_figures, reply_state
from bridge.reply.gathering import Gatherer
from bridge.reply.outbound_audio import url_allowed
from bridge.reply.pausing import Pausing
from bridge.reply.playout import HandOverNow, HangupNow, Output, Playout
from bridge.reply.producer import MAX_PENDING_ACTIONS, Producer
from bridge.reply.sender import Emit, PlayoutTap, Send, Sender
from bridge.reply.tts import Speaker
from bridge.settings import ReplySettings

log = structlog.get_logger("bridge.reply")

ActionStatus = Literal["queued", "done", "failed"]
MAX_FINALS_KEPT = 64  # the caller's latest utterance ids, to tell a stale reply (in_reply_to)
MAX_KEYS = 1024  # remembered webhook-ids and idempotency keys, per call


class TransferHooks(Protocol):
    """What carries a ``transfer`` out for the call (bridge.call.transfer.CallTransfer)."""

    def check(self, action: Transfer) -> str | None:
        """Why this transfer cannot be done on this call (the ``action.failed`` error), or None."""
        ...

    def hand_over(self, action: Transfer) -> None:
        """Its moment has come (``after=now``, or what was queued before it has played)."""
        ...


NOT_NOW = "the call is being transferred"


@dataclass(frozen=True, slots=True)
class ActionResult:
    id: str
    status: ActionStatus
    error: str | None = None

    def json(self) -> dict[str, Any]:
        return {"id": self.id, "status": self.status} | ({"error": self.error} if self.error else {})


class CallReply:
    """See the module docstring. ``emit`` posts a bot event; ``on_hangup`` ends the call."""

    # fmt: off
    __slots__ = (
        "_closed", "_earlier_playouts", "_finals", "_gather", "_keys", "_producer", "_sender", "_tasks", "_transfers",
        "call_id", "counters", "emit", "http", "on_hangup", "pause", "policy", "settings", "speaker", "stale_replies",
        "transfer", "transferring"
    )
    # fmt: on

    def __init__(
        self,
        call_id: str,
        *,
        settings: ReplySettings,
        speaker: Speaker | None,
        http: aiohttp.ClientSession | None,
        emit: Emit,
        on_hangup: Callable[[], None],
        tap: PlayoutTap | None = None,
    ) -> None:
        """``tap``: told what the caller is played and when the carrier is cleared (the call's recording)."""
        self.call_id = call_id
        self.settings = settings
        self.speaker = speaker
        self.http = http
        self._gather = Gatherer(emit, fail=self.fail)  # the running gather: it sees every event of the reply
        self.emit = emit = self._gather.emit
        self.pause = Pausing(settings.sensitive_max_s, emit)  # configure sensitive, a sensitive gather
        self.on_hangup = on_hangup
        self.policy = BargeInPolicy(
            settings.barge_in, settings.min_words, settings.false_interruption_timeout, settings.echo_guard_ms
        )
        self.stale_replies = settings.stale_replies
        self.counters = ReplyCounters()
        self._sender = Sender(emit=emit, on_hangup=on_hangup, on_ended=self._ended, counters=self.counters, tap=tap)
        self._producer = Producer(
            settings=settings,
            speaker=speaker,
            http=http,
            sender=self._sender,
            emit=emit,
            fail=self.fail,
            stale=self._stale,
        )
        self._gather.producer, self._gather.sender = self._producer, self._sender
        self._keys: OrderedDict[str, list[ActionResult]] = OrderedDict()
        # the caller's latest 64 utterance ids (a list: an empty deque costs 760 bytes, on every call)
        self._finals: list[str] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False
        self._earlier_playouts = (0, 0.0, 0)  # underruns, cleared ms, resumed: of streams before this one
        # Call control: set by the call (None: transfers fail, saying so); the transfers accepted and
        # not yet handed over, by id; True from a hand-over until the caller is back (or the end).
        self.transfer: TransferHooks | None = None
        self._transfers: dict[str, Transfer] = {}
        self.transferring = False
        self._sender.on_hand_over = self._hand_over

    @property
    def playout(self) -> Playout | None:
        """The current phone stream's playout (None before the call's first action)."""
        return self._sender.playout

    @property
    def barge_in(self) -> BargeIn | None:
        return self._sender.barge_in

    @property
    def voice(self) -> str | None:
        """The voice of a ``say`` that names none (``configure``)."""
        return self._producer.voice

    @voice.setter
    def voice(self, voice: str | None) -> None:
        self._producer.voice = voice

    # -- the stream that carries the call -------------------------------------------------------

    def attach(self, adapter: PhoneAdapter, send: Send) -> None:
        """The phone stream that carries the call now (its first, or a restarted one). Audio that was
        playing on a previous stream is reported interrupted (reason ``stop``): it is gone with it."""
        if self.playout is not None:
            if self.playout.playing:
                self._sender.dispatch(self.playout.interrupt(time.monotonic(), "stop", only_interruptible=False))
            self._earlier_playouts = self._playout_figures()
        self._sender.adapter, self._sender.send = adapter, send
        self._producer.format = adapter.outbound_format
        if self._tasks or self._producer.pending:  # the way back is in use: a playout for this stream, now
            self._activate()

    def _activate(self) -> None:
        """The playout and barge-in for the current stream, and the call's two tasks (started once).
        Built on the first action, not for every call: most of a call's reply state would otherwise
        be held by calls that never hear a reply (the memory per call)."""
        adapter, fmt = self._sender.adapter, self._producer.format
        assert adapter is not None and fmt is not None
        framing = adapter.outbound_framing
        frame, min_bytes = framing.frame_bytes, framing.frame_bytes * framing.min_frames
        silence_byte = 0xFF if fmt.codec == "ulaw" else (0xD5 if fmt.codec == "alaw" else 0)
        playout = Playout(
            bytes_per_ms=fmt.bytes_per_second / 1000.0,
            frame_bytes=frame,
            silence_byte=silence_byte,
            min_bytes=min_bytes,
            lead_ms=self.settings.lead_ms_by_carrier.get(adapter.carrier, self.settings.lead_ms),
            chunk_ms=self.settings.chunk_ms,
            marks=adapter.supports_marks,
            mark_grace=self.settings.mark_grace,
        )
        self._sender.playout, self._sender.barge_in = playout, BargeIn(playout, self.policy)
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._sender.run(), name=f"reply-{self.call_id}"),
                asyncio.create_task(self._producer.run(), name=f"reply-produce-{self.call_id}"),
            ]
        self._sender.wake.set()

    # -- actions in ---------------------------------------------------------------------------

    def apply(self, actions: list[Action], key: str | None = None) -> list[ActionResult]:
        """Accept a request's actions (already validated). ``key``: a webhook-id or an
        Idempotency-Key; a key seen before returns its first results and applies nothing."""
        if key is not None and key in self._keys:
            return self._keys[key]  # the first answer, nothing applied twice
        if not self._tasks and self._sender.adapter is not None and not self._closed:
            self._activate()  # the call's first action (before its stream: attach() does it)
        results = [self._accept(action) for action in actions]
        self.counters.actions += sum(r.status != "failed" for r in results)
        if key is not None:
            self._keys[key] = results
            while len(self._keys) > MAX_KEYS:
                self._keys.popitem(last=False)
        self._producer.produce.set()
        self._sender.wake.set()
        return results

    def _accept(self, action: Action) -> ActionResult:
        if self._closed:
            return ActionResult(action.id, "failed", "the call has ended")
        if self.transferring and not isinstance(action, Configure):
            self.fail(action.id, NOT_NOW)
            return ActionResult(action.id, "failed", NOT_NOW)
        now = time.monotonic()
        adapter, producer = self._sender.adapter, self._producer
        match action:
            case Stop():
                producer.drop_pending("stop")
                self._sender.interrupt(now, "stop")
                if adapter is not None and not adapter.supports_clear:
                    error = (
                        f"{adapter.carrier}: the carrier cannot drop audio it already holds; the queue "
                        f"was dropped, up to {self.settings.lead_ms:.0f} ms already sent still plays"
                    )
                    self.fail(action.id, error)
                    return ActionResult(action.id, "failed", error)
                return ActionResult(action.id, "done")
            case Say() | Play() | AudioChunk() | Mark() | SendDtmf() | Hangup() if (
                adapter is not None and not adapter.plays_audio
            ):
                error = (
                    f"{adapter.carrier}: this stream only listens (a fork of both parties): "
                    "nothing can be played, marked or hung up on it"
                )
                self.fail(action.id, error)
                return ActionResult(action.id, "failed", error)
            case Transfer():
                refusal = self.transfer.check(action) if self.transfer is not None else "transfer is not available here"
                if refusal is None and self._transfers:
                    refusal = f"a transfer is already waiting on this call ({next(iter(self._transfers))!r})"
                if refusal is None:
                    refusal = producer.id_in_use(action)
                if refusal is not None:
                    self.fail(action.id, refusal)
                    return ActionResult(action.id, "failed", refusal)
                self._transfers[action.id] = action
                if action.after == "now":
                    producer.drop_pending("transfer")
                    self._sender.interrupt(now, "transfer")
                    self._sender.out.append(HandOverNow(action.id))
                    return ActionResult(action.id, "done")
                producer.pending.append(action)
                return ActionResult(action.id, "queued")
            case Gather():  # its prompt is queued like a say or play, under its id (bridge.reply.gathering)
                refusal = self._gather.accept(action, lambda prompt: self._accept(prompt).error)
                return ActionResult(action.id, "queued" if refusal is None else "failed", refusal)
            case Hangup(after="now"):
                producer.drop_pending("hangup")
                self._sender.interrupt(now, "hangup")
                self._sender.out.append(HangupNow())
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
                if action.sensitive is not None:
                    self.pause.set(action.sensitive, "configure")
                return ActionResult(action.id, "done")
            case Play(url=str() as url) if not url_allowed(url, self.settings):
                error = f"play url host {urlsplit(url).hostname!r} is not in BRIDGE_PLAY_URL_HOSTS"
                self.fail(action.id, error)
                return ActionResult(action.id, "failed", error)
            case Say() | Play() | AudioChunk() | Mark() | SendDtmf() | Hangup():
                if len(producer.pending) >= MAX_PENDING_ACTIONS:
                    error = f"more than {MAX_PENDING_ACTIONS} actions waiting on this call"
                    self.fail(action.id, error)
                    return ActionResult(action.id, "failed", error)
                in_use = producer.id_in_use(action)
                if in_use is not None:
                    self.fail(action.id, in_use)
                    return ActionResult(action.id, "failed", in_use)
                if isinstance(action, Say | Play | AudioChunk) and action.queue == "replace":
                    producer.drop_pending("replace")
                    self._sender.interrupt(now, "replace")
                    producer.restart_stream(action)  # a replace starts it anew
                producer.pending.append(action)
                return ActionResult(action.id, "queued")
            case _:
                assert_never(action)

    def fail(self, action_id: str | None, error: str) -> None:
        """``action.failed``: an action (or, with no id, a whole answer) the bridge could not carry out."""
        self.counters.failed += 1
        self.emit("action.failed", {"action_id": action_id, "error": error})

    def _hand_over(self, action_id: str) -> None:
        """A transfer's moment (the sending task): what still waits is dropped, the call hands over."""
        action = self._transfers.pop(action_id, None)
        if action is None or self._closed or self.transfer is None:
            return
        self.transferring = True
        self._producer.drop_pending("transfer")
        self.transfer.hand_over(action)

    def cut_for_machine(self) -> None:
        """A machine answered and the bot waits for its beep: what plays ends (reason ``machine``)."""
        self._producer.drop_pending("machine")
        self._sender.interrupt(time.monotonic(), "machine")
        self._sender.wake.set()

    def transfer_back(self) -> None:
        """The transfer found nobody and the caller is back on the call: actions are taken again."""
        self.transferring = False

    def _ended(self, action_id: str) -> None:
        """The playout ended an action early: the producer drops the rest of it."""
        self._producer.ended(action_id)

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

    # -- what the call tells us ---------------------------------------------------------------

    def mark_reached(self, name: str) -> None:
        if self.playout is not None:
            self._sender.out.extend(self.playout.mark_reached(name, time.monotonic()))
            self._sender.wake.set()

    def flow(self, paused: bool) -> None:
        """The carrier's playback queue is full (Asterisk MEDIA_XOFF) or has room again (MEDIA_XON):
        nothing is sent meanwhile. With the playout's lead the queue never gets near full; a carrier
        that says so anyway is obeyed."""
        self._sender.flow_paused = paused
        log.info("reply.flow_control", paused=paused)
        self._sender.wake.set()

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
            self._sender.out.extend(outputs)
            self._sender.wake.set()

    def caller_final(self, utterance_id: str, text: str) -> str | None:
        """A final of the caller: barge-in words, the latest turn (stale replies). Returns the action
        the caller heard while saying it (``during_playback``), or None."""
        during = self.playout.current_action if self.playout is not None and self.playout.playing else None
        self._finals.append(utterance_id)
        del self._finals[:-MAX_FINALS_KEPT]
        self.caller_words(text)
        return during

    @property
    def hushed(self) -> bool:
        """A sensitive pause (or gather) runs: the caller's audio reaches speech-to-text as silence."""
        return self.pause.hushed(self._gather.hushed)

    def caller_key(self, digit: str) -> bool:
        """A key the caller pressed: barge-in (``dtmf``), then a running gather's. True when a gather
        took it (it is then not also a ``call.dtmf`` event)."""
        self.caller_dtmf()
        return self._gather.key(digit)

    def caller_dtmf(self) -> None:
        if self.barge_in is not None:
            self._sender.out.extend(self.barge_in.dtmf(time.monotonic()))
            self._sender.wake.set()

    # -- what it did ----------------------------------------------------------------------------

    def _playout_figures(self) -> tuple[int, float, int]:
        u, c, r = self._earlier_playouts
        if self.playout is None or self.barge_in is None:
            return u, c, r
        cleared_ms = self.playout.counters.cleared_bytes / self.playout.bytes_per_ms
        return u + self.playout.counters.underruns, c + cleared_ms, r + self.barge_in.counters.resumed

    def figures(self) -> ReplyFigures:
        """The reply loop's part of ``call.ended``'s summary."""
        return reply_figures(self.counters, *self._playout_figures(), self.pause.paused_s())

    def state(self) -> dict[str, Any]:
        """For ``GET /v1/calls/{id}``: listening, speaking or paused; the queue; what was heard."""
        return reply_state(self.playout, self._producer.producing, self._producer.pending)

    async def close(self) -> None:
        """The call is over: what was playing or queued is reported interrupted (``hangup``)."""
        if self._closed:
            return
        self._closed = self._producer.closed = True
        self._producer.drop_pending("hangup")
        if self.playout is not None:
            self._sender.dispatch(
                self.playout.interrupt(time.monotonic(), "hangup", only_interruptible=False), send=False
            )
        self._gather.end("hangup")  # before call.ended, like the playback events
        self.pause.end()
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            _, stuck = await asyncio.wait(self._tasks, timeout=5.0)
            if stuck:  # never expected: say so rather than hold the call's end
                log.error("reply.task_stuck", tasks=sorted(t.get_name() for t in stuck))
