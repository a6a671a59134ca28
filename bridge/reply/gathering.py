"""The call's running ``gather`` (the I/O shell around bridge.reply.gather): its timer, its prompt, its
one ``dtmf.gathered`` event.

At most one gather runs on a call: a new one ends the running one first (``replaced``; what is left
of its prompt is dropped, reason ``replace``). It collects the caller's keys from the moment it is
accepted, and those keys are its own: they are not also sent as ``call.dtmf`` events. Its ``prompt``
is an ordinary ``say`` or ``play`` under the gather's id, queued behind what is already queued,
interruptible by a key: its ``playback.*`` events carry the gather's ``action_id``, and the
first-key timeout starts when it ends (the :class:`Gatherer` watches the reply's events for that).
The first key ends the prompt wherever it is: playing (the barge-in's ``interrupt: dtmf``), or still
waiting its turn (a caller who knows the menu need not hear it).

The outcome goes to the bot at once, from the key that ends the gather (no timer in between), or from
a ``loop.call_later`` timer at the pure core's next due time (re-armed when that changes).

A sensitive gather (a PIN, a card number): its digits go to the bot and nowhere else. Nothing here
logs digits (a gather's log lines carry its id, how many keys and why it ended), the event says
``sensitive: true`` (delivery treats such events as sensitive), and while it runs :attr:`Gatherer.hushed`
tells the call to send silence instead of the caller's audio to speech-to-text.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Literal

import structlog

from bridge.reply.actions import Gather, Play, PromptSay, Say
from bridge.reply.gather import Gathered, Gathering
from bridge.reply.playout import PlaybackInterrupted
from bridge.reply.producer import Fail, Producer, action_key
from bridge.reply.sender import Emit, Sender

log = structlog.get_logger("bridge.reply")

PROMPT_ENDS = frozenset({"playback.finished", "playback.interrupted", "action.failed"})
QueuePrompt = Callable[[Say | Play], str | None]  # the reply queues it by its own rules: None, or the refusal


def prompt_action(action: Gather) -> Say | Play | None:
    """A gather's prompt as the ``say`` or ``play`` that speaks it: the gather's id (its playback events
    are the gather's), interruptible by a key."""
    prompt = action.prompt
    if prompt is None:
        return None
    if isinstance(prompt, PromptSay):
        return Say(type="say", id=action.id, text=prompt.text, voice=prompt.voice, interrupt="dtmf")
    return Play(type="play", id=action.id, audio=prompt.audio, url=prompt.url, interrupt="dtmf")


class Gatherer:
    """The call's gather, if one runs. ``emit`` posts a bot event; ``fail`` reports an action refused.
    :meth:`emit` is the reply's way to the bot: every event passes by, so a prompt's end is seen
    whichever part of the reply reports it. ``producer`` and ``sender`` are the reply's (set once they
    exist): where a prompt may wait or play."""

    __slots__ = ("_core", "_emit", "_prompt", "_timer", "_timer_at", "fail", "hushed", "producer", "sender")

    def __init__(self, emit: Emit, *, fail: Fail) -> None:
        self._emit = emit
        self.fail = fail
        self.producer: Producer | None = None
        self.sender: Sender | None = None
        self._core: Gathering | None = None  # the running gather
        self.hushed = False  # a sensitive gather runs (from its acceptance to its outcome): read per frame
        self._prompt: str | None = None  # its prompt's id while the prompt has not ended
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None

    def emit(self, type_: str, payload: dict[str, Any]) -> None:
        """A reply event to the bot; the running gather's prompt ending starts its first-key timeout."""
        self._emit(type_, payload)
        if self._prompt is not None and type_ in PROMPT_ENDS and payload.get("action_id") == self._prompt:
            self._prompt = None
            if self._core is not None:
                self._core.prompt_done(time.monotonic())
                self._arm()

    # -- the bot's side ---------------------------------------------------------------------------

    def accept(self, action: Gather, queue: QueuePrompt) -> str | None:
        """Start ``action``: the running gather ends (``replaced``), the prompt is queued by ``queue``.
        Returns why it was refused (already reported as ``action.failed``), or None."""
        running = self._core
        in_use = self.producer.id_in_use(action) if self.producer is not None else None
        if in_use is None and running is not None and running.action_id == action.id:
            in_use = f"action id {action.id!r} is already used by the gather running on this call"
        if in_use is not None:
            self.fail(action.id, in_use)
            return in_use
        prompt = prompt_action(action)
        if prompt is not None:
            refusal = queue(prompt)  # refused: the running gather goes on
            if refusal is not None:
                return refusal
        if self._prompt is not None:  # the menu of a gather that no longer runs: what is left of it is dropped
            self._stop_prompt(self._prompt, time.monotonic(), "replace")
        self.end("replaced")
        now = time.monotonic()
        self._core = Gathering(
            action.id,
            num_digits=action.num_digits,
            finish_on_key=action.finish_on_key,
            timeout_ms=action.timeout_ms,
            inter_digit_timeout_ms=action.inter_digit_timeout_ms,
            now=now,
            waits_for_prompt=prompt is not None,
        )
        self.hushed = action.sensitive
        self._prompt = action.id if prompt is not None else None
        log.info("reply.gather_started", action_id=action.id, sensitive=action.sensitive, prompt=prompt is not None)
        self._arm()
        return None

    def end(self, reason: Literal["replaced", "hangup"]) -> None:
        """The running gather, if any, ends (another replaced it; the call ended)."""
        if self._core is not None:
            self._finish(self._core.end(reason, time.monotonic()))

    # -- the caller's side ------------------------------------------------------------------------

    def key(self, digit: str) -> bool:
        """A key the caller pressed. True when the running gather took it (its outcome, if this key
        ends it, is posted now); False when no gather runs (the key is a ``call.dtmf`` event)."""
        core = self._core
        if core is None:
            return False
        now = time.monotonic()
        if self._finish(core.tick(now)):  # its time had come (the timer is late): this key is not its
            return False
        if core.keys == 0 and self._prompt is not None:
            self._stop_prompt(self._prompt, now, "dtmf")
        if not self._finish(core.key(digit, now)):
            self._arm()
        return True

    def _stop_prompt(self, action_id: str, now: float, reason: Literal["dtmf", "replace"]) -> None:
        """The prompt ends wherever it is: on the first key (reason ``dtmf``, as a key press on playing
        ``interrupt: dtmf`` audio), or when another gather replaces this one (``replace``). In the
        playout (maybe queued behind audio that a key does not interrupt, or already interrupted by the
        barge-in: then nothing is left to do), being produced, or waiting in the queue."""
        producer, sender = self.producer, self.sender
        if producer is None or sender is None:
            return
        playout = sender.playout
        # the barge-in ended it a moment ago (its one outcome is on its way), or it is in the playout
        ended = any(isinstance(out, PlaybackInterrupted) and out.action_id == action_id for out in sender.out)
        if not ended and playout is not None and action_id in playout.live_actions:
            sender.out.extend(playout.interrupt(now, reason, actions={action_id}, only_interruptible=False))
            sender.wake.set()
            ended = True
        if ended:
            producer.ended(action_id)  # now, not once the sending task reports it: no later sentence is added
            return
        waiting = [a for a in producer.pending if action_key(a) == action_id]
        producing = producer.producing is not None and action_key(producer.producing) == action_id
        if producing and not producer.cancel_production:
            producer.ended(action_id)  # nothing of it reached the playout yet: none will
        elif not waiting:
            return
        for queued in waiting:
            producer.pending.remove(queued)
        self.emit("playback.interrupted", {"action_id": action_id, "played_ms": 0, "heard_text": "", "reason": reason})

    # -- inside -----------------------------------------------------------------------------------

    def _finish(self, outcome: Gathered | None) -> bool:
        """Post the gather's outcome (and forget the gather); False when there is none."""
        if outcome is None:
            return False
        sensitive = self.hushed
        self._core, self._prompt, self.hushed = None, None, False
        self._cancel_timer()
        # never the digits: a sensitive gather's are a PIN or a card number, and any gather's may be
        log.info("reply.gathered", action_id=outcome.action_id, keys=len(outcome.digits), reason=outcome.reason)
        payload: dict[str, Any] = {"action_id": outcome.action_id, "digits": outcome.digits, "reason": outcome.reason}
        if sensitive:
            payload["sensitive"] = True
        try:
            self._emit("dtmf.gathered", payload)
        except Exception as exc:  # the bot channel failed; the call goes on (no traceback: it may quote the digits)
            log.error("reply.gathered_not_reported", action_id=outcome.action_id, error=type(exc).__name__)
        return True

    def _arm(self) -> None:
        """The timer at the running gather's next due time (unchanged: left as it is)."""
        due = self._core.next_due() if self._core is not None else None
        if due == self._timer_at and (due is None or self._timer is not None):
            return
        self._cancel_timer()
        if due is not None:
            delay = max(0.0, due - time.monotonic())
            self._timer, self._timer_at = asyncio.get_running_loop().call_later(delay, self._fire), due

    def _fire(self) -> None:
        self._timer, self._timer_at = None, None
        if self._core is not None and not self._finish(self._core.tick(time.monotonic())):
            self._arm()  # woke a little early (the loop's clock resolution): again, at the same time

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._timer_at = None, None
