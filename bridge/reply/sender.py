"""The sending task of one call's way back: it drives the playout and the barge-in on their clock and
carries what they decide out, audio, marks, clears and hang-ups to the carrier, playback events to the bot.

One task per call (:meth:`Sender.run`) does all the sending: it wakes when the playout or barge-in has
something due (about ten times a second while audio plays, never while the call is quiet) or when
something was pushed on :attr:`Sender.out` (an action, a mark echo, caller speech) and :attr:`Sender.wake`
set. The call's other parts never await the carrier: they push outputs and set the event.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Literal, Protocol, assert_never

import structlog

from bridge.adapters.base import PhoneAdapter
from bridge.audio import AudioFormat
from bridge.errors import UnsupportedOperation
from bridge.reply.bargein import BargeIn
from bridge.reply.figures import ReplyCounters
from bridge.reply.playout import (
    BotMarkPlayed,
    HandOverNow,
    HangupNow,
    Output,
    PlaybackFinished,
    PlaybackInterrupted,
    PlaybackStarted,
    Playout,
    SendAudio,
    SendClear,
    SendMark,
)

log = structlog.get_logger("bridge.reply")

Emit = Callable[[str, dict[str, Any]], None]  # (event type, payload without "call") -> the bot
Send = Callable[[str | bytes], Awaitable[None]]  # one message to the carrier


class PlayoutTap(Protocol):
    """Told what goes to the caller (the call's recording, :mod:`bridge.call.recorder`); never blocks."""

    def played(self, data: bytes, fmt: AudioFormat) -> None: ...

    def cleared(self) -> None: ...


class Sender:
    """The sending task and what it sends through: the current phone stream (``adapter``, ``send``) and
    its playout and barge-in. ``on_ended(action_id)``: the playout ended an action early (its rest is
    not to be produced); ``on_hangup``: the bot's hang-up went out, the call ends."""

    __slots__ = (
        "_handover",
        "_hangup",
        "_messages",
        "adapter",
        "barge_in",
        "counters",
        "emit",
        "flow_paused",
        "on_ended",
        "on_hand_over",
        "on_hangup",
        "out",
        "playout",
        "send",
        "tap",
        "wake",
    )

    def __init__(
        self,
        *,
        emit: Emit,
        on_hangup: Callable[[], None],
        on_ended: Callable[[str], None],
        counters: ReplyCounters,
        tap: PlayoutTap | None = None,
    ) -> None:
        self.emit = emit
        self.tap = tap
        self.on_hangup = on_hangup
        self.on_ended = on_ended
        self.on_hand_over: Callable[[str], None] = lambda action_id: None  # a transfer is due (its id)
        self.counters = counters
        self.adapter: PhoneAdapter | None = None
        self.send: Send | None = None
        self.playout: Playout | None = None
        self.barge_in: BargeIn | None = None
        self.wake = asyncio.Event()
        self.out: deque[Output] = deque()  # from synchronous handlers, sent by the run task
        self._messages: deque[str | bytes] = deque()  # to the carrier, in order
        self._hangup = False
        self._handover: str | None = None
        self.flow_paused = False

    def interrupt(self, now: float, reason: Literal["stop", "replace", "hangup", "transfer", "machine"]) -> None:
        """What plays or waits in the playout ends now (``reason``), whatever its interrupt policy."""
        if self.playout is not None:
            self.out.extend(self.playout.interrupt(now, reason, only_interruptible=False))
        if self.barge_in is not None:
            self.barge_in.stopped()

    async def run(self) -> None:
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
        if self.flow_paused:  # the carrier asked for no more audio: wait for its XON
            self.wake.clear()
            await self.wake.wait()
            return
        await self._flush()
        playout, barge_in = self.playout, self.barge_in
        assert playout is not None and barge_in is not None
        now = time.monotonic()
        self.out.extend(barge_in.tick(now))
        self.out.extend(playout.tick(now))
        if not self.out:
            due = [t for t in (playout.next_due(), barge_in.next_due()) if t is not None]
            self.wake.clear()
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that lands as
            # the wake-up does, and close() would then wait for this task forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, min(due) - time.monotonic()) if due else None):
                    await self.wake.wait()

    async def _flush(self) -> None:
        while self.out:
            self.dispatch([self.out.popleft()])
            await self._send_queued()

    def dispatch(self, outputs: list[Output], *, send: bool = True) -> None:
        """Each output to the carrier's queue or the bot. One that fails (the bot channel raised, an
        adapter bug) is logged with its traceback and the others still go."""
        for out in outputs:
            try:
                self._dispatch_one(out, send)
            except Exception:
                log.exception("reply.dispatch_error", output=type(out).__name__)

    def _dispatch_one(self, out: Output, send: bool) -> None:
        adapter = self.adapter
        match out:
            case SendAudio():
                if send and adapter is not None:
                    self._messages.extend(adapter.audio_messages(out.data))
                    if self.tap is not None:
                        self.tap.played(out.data, adapter.outbound_format)
            case SendMark():
                if send and adapter is not None:
                    self._messages.append(adapter.mark_message(out.name))
            case SendClear():
                if send and adapter is not None:
                    with contextlib.suppress(UnsupportedOperation):  # pausing still stops the sending
                        self._messages.append(adapter.clear_message())
                        if self.tap is not None:  # cleared: not heard (without a clear, the lead plays)
                            self.tap.cleared()
            case PlaybackStarted():
                self.emit("playback.started", {"action_id": out.action_id})
            case PlaybackFinished():
                self.counters.played_ms += out.played_ms
                self.emit("playback.finished", {"action_id": out.action_id, "played_ms": out.played_ms})
            case PlaybackInterrupted():
                self.on_ended(out.action_id)
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
            case HandOverNow():
                self._handover = out.action_id
            case _:
                assert_never(out)

    async def _send_queued(self) -> None:
        send = self.send
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
        if self._handover is not None:
            action_id, self._handover = self._handover, None
            log.info("reply.hand_over", action_id=action_id)
            self.on_hand_over(action_id)
