"""The bot's webhook answers to a call's events: the actions they carry are applied, and what they cause
cannot loop.

Answers cannot loop: an event the bridge posts because of a webhook answer is one *generation* after
the event answered (the caller's events, and what time brings, are generation 0). An action.failed of
generation 2 or more (a failure caused by the answer to a failure) is logged, not posted; any other
event more than ``MAX_ANSWER_CHAIN`` answers away from the caller (e.g. playback.interrupted of a bot
answering each one with a ``queue: replace`` say) is logged, not posted. :class:`AnswerChain` is that
bookkeeping (pure); :class:`WebhookAnswers` reads the answers and applies them to the call's reply.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import structlog

from bridge.delivery import PendingEvent
from bridge.delivery.webhook import WebhookResponse
from bridge.errors import ActionError
from bridge.reply.actions import parse_actions
from bridge.reply.call_reply import CallReply
from bridge.untrusted import loads

log = structlog.get_logger("bridge.call")

MAX_ANSWER_CHAIN = 8
MAX_GENERATIONS_KEPT = 4096  # events and actions whose generation is remembered, per call


class AnswerChain:
    """How many webhook answers away from the caller each event and action of a call is (pure)."""

    __slots__ = ("_actions", "_events", "answering")

    def __init__(self) -> None:
        self.answering: int | None = None  # the generation of what the answer being applied causes
        self._events: OrderedDict[str, int] = OrderedDict()  # webhook-id -> generation (>= 1)
        self._actions: OrderedDict[str, int] = OrderedDict()  # answered action id -> generation

    def answer_to(self, webhook_id: str) -> int:
        """The generation of what the answer to an event causes (the event's own, plus one)."""
        return self._events.pop(webhook_id, 0) + 1

    def of_event(self, type_: str, action_id: object) -> int:
        """The generation of an event of the reply loop: that of the answer being applied, else (an
        ``action.failed`` later on) that of the answer that asked for the action, else 0."""
        generation = self.answering
        if generation is None and type_ == "action.failed":  # e.g. a say of an answer, failed later
            generation = self._actions.get(str(action_id), 0)
        return generation or 0

    @staticmethod
    def posted(type_: str, generation: int) -> bool:
        """Whether an event of that generation is posted (False: it would feed a loop of answers)."""
        return not ((type_ == "action.failed" and generation >= 2) or generation > MAX_ANSWER_CHAIN)

    def event_posted(self, webhook_id: str, generation: int) -> None:
        if generation:
            _remember(self._events, webhook_id, generation)

    def action_applied(self, action_id: str, generation: int) -> None:
        _remember(self._actions, action_id, generation)


class WebhookAnswers:
    """A call's reply-loop events out (:meth:`emit`) and the bot's answers to its events in
    (:meth:`answered`), with the chain that keeps answers from looping."""

    __slots__ = ("_describe", "_ignored", "_post", "chain", "not_sent", "reply")

    def __init__(
        self,
        reply: CallReply,
        post: Callable[[str, dict[str, Any]], PendingEvent | None],
        describe: Callable[[], dict[str, Any]],
    ) -> None:
        self.reply = reply
        self._post = post
        self._describe = describe  # the call object of the events
        self.chain = AnswerChain()
        self.not_sent = 0  # events an answer caused that were logged, not posted (see MAX_ANSWER_CHAIN)
        self._ignored = 0  # 2xx answers without actions (logged once per call)

    def emit(self, type_: str, payload: dict[str, Any]) -> None:
        """An event of the reply loop (action.failed, playback.*): posted unless it would feed a loop
        of webhook answers (see MAX_ANSWER_CHAIN)."""
        generation = self.chain.of_event(type_, payload.get("action_id"))
        if not self.chain.posted(type_, generation):
            self.not_sent += 1
            if self.not_sent == 1:  # one line per call (call.ended's line gives the count)
                log.warning(
                    "reply.answer_event_not_sent",
                    type=type_,
                    generation=generation,
                    error=str(payload.get("error", ""))[:200] or None,
                    detail="caused by a webhook answer to an event itself caused by an answer: not posted, "
                    "so answers cannot loop",
                )
            return
        event = self._post(type_, {"call": self._describe(), **payload})
        if event is not None:
            self.chain.event_posted(event.webhook_id, generation)

    def answered(self, event: PendingEvent, response: WebhookResponse) -> None:
        """The bot's 2xx answer to an event. Only an answer that carries actions (a JSON object with an
        ``actions`` key) applies them, once per webhook-id; any other body (JSON without ``actions``,
        text, HTML) is accepted and ignored (one log line per call). What the answer causes cannot
        loop (see MAX_ANSWER_CHAIN)."""
        generation = self.chain.answer_to(event.webhook_id)
        body = response.body.strip()
        if not body:
            return
        self.chain.answering = generation
        try:
            self._apply(event, response, body, generation)
        finally:
            self.chain.answering = None

    def _apply(self, event: PendingEvent, response: WebhookResponse, body: bytes, generation: int) -> None:
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
            self._ignored += 1
            if self._ignored == 1:
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
            self.chain.action_applied(result.id, generation)


def _remember(kept: OrderedDict[str, int], key: str, generation: int) -> None:
    kept[key] = generation
    while len(kept) > MAX_GENERATIONS_KEPT:
        kept.popitem(last=False)
