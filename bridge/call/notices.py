"""What a call's Gladia session tells, turned into bot events and the reply's cues.

The session task calls :class:`SttNotices` with each notice; it never awaits (posting an event queues
it). Finals become ``utterance.final`` (and go on record); an add-on's result about one becomes
``utterance.translation`` / ``.entities`` / ``.sentiment`` (on record too) or ``stt.addon_failed``; a
replaced or lost session ``stt.session_replaced`` / ``stt.failed``; speech and partial words go to the
bot's socket as realtime events, and to the live event streams (``GET /v1/calls/{id}/events``, ``GET
/v1/events``) with the same body, built only when one of them has a reader (a partial comes several times a
second: nobody pays for its JSON unless it goes somewhere). Only the caller's words (channel 0) steer the
reply.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, assert_never

from bridge.call.payloads import addon_json, utterance_json, who
from bridge.call.redacting import Redaction
from bridge.delivery import PendingEvent
from bridge.reply.bot_socket import BotSocket, realtime_body
from bridge.reply.call_reply import CallReply

if TYPE_CHECKING:
    from bridge.call.services import LiveTap
from bridge.stt.notices import (
    AddonResult,
    CallerSpeech,
    FinalUtterance,
    PartialUtterance,
    SessionReplaced,
    SttGaveUp,
    SttNotice,
)


class SttNotices:
    """One call's STT notices to bot events (see the module docstring); counts the finals."""

    # fmt: off
    __slots__ = (
        "_describe", "_post", "_record", "_record_addon", "bot_socket", "both_parties", "call_id", "redaction",
        "reply", "speakers", "tap", "utterances"
    )
    # fmt: on

    def __init__(
        self,
        call_id: str,
        describe: Callable[[], dict[str, Any]],
        speakers: tuple[str, str],
        both_parties: bool,
        reply: CallReply,
        post: Callable[[str, dict[str, Any]], PendingEvent | None],
        bot_socket: BotSocket | None,
        record: Callable[[dict[str, Any]], None],
        record_addon: Callable[[str, dict[str, Any]], None] | None = None,
        redaction: Redaction | None = None,
        tap: LiveTap | None = None,
    ) -> None:
        self.call_id = call_id
        self._describe = describe  # the call object of the events
        self.speakers = speakers
        self.both_parties = both_parties
        self.reply = reply
        self._post = post
        self.bot_socket = bot_socket
        self._record = record  # a final's utterance, for the transcript
        self._record_addon = record_addon  # an add-on's result (type, payload without "call"), likewise
        self.redaction = redaction  # BRIDGE_REDACT_EVENTS: the live events' words redacted (the record's always are)
        self.tap = tap  # the live event streams' tap (bridge.event_tap.EventTap), for the notices
        self.utterances = 0

    def __call__(self, notice: SttNotice) -> None:
        match notice:
            case FinalUtterance():
                self.utterances += 1
                # Only the caller's words (channel 0) steer the reply: on a call of both parties,
                # channel 1 is the other party (or, on a stereo stream that plays back, the bot itself).
                during = (
                    self.reply.caller_final(notice.id, notice.utterance.text) if notice.utterance.channel == 0 else None
                )
                utterance = utterance_json(notice, self.speakers)
                self._post(
                    "utterance.final",
                    {
                        "call": self._describe(),
                        "utterance": utterance if self.redaction is None else self.redaction.utterance(utterance),
                        "stt_session_id": notice.session_id,
                        "during_playback": during,
                    },
                )
                self._record(utterance)
            case SessionReplaced():
                self._post(
                    "stt.session_replaced",
                    {
                        "call": self._describe(),
                        "old_stt_session_id": notice.old_session_id,
                        "stt_session_id": notice.new_session_id,
                        "reason": notice.reason,
                    },
                )
            case SttGaveUp():
                self._post("stt.failed", {"call": self._describe(), "reason": notice.reason})
            case CallerSpeech():
                if notice.channel == 0:
                    self.reply.caller_speech(notice.started)
                if notice.started and self._heard():
                    self._notice(
                        "speech.started",
                        {"call_id": self.call_id, "call": self._describe(), **self._who(notice.channel)},
                    )
            case PartialUtterance():
                if notice.channel == 0:
                    self.reply.caller_words(notice.text)
                if self._heard():
                    self._notice(
                        "utterance.partial",
                        {
                            "call_id": self.call_id,
                            "call": self._describe(),
                            "text": notice.text
                            if self.redaction is None
                            else self.redaction.redactor.text(notice.text),
                            **self._who(notice.channel),
                        },
                    )
            case AddonResult():
                type_, payload = addon_json(notice, self.speakers)
                shown = payload if self.redaction is None else self.redaction.strings(payload)
                self._post(type_, {"call": self._describe(), **shown})
                if self._record_addon is not None and type_ != "stt.addon_failed":
                    self._record_addon(type_, payload)
            case _:
                assert_never(notice)

    def _heard(self) -> bool:
        """Whether a notice goes anywhere now: the bot's socket, or a reader of the live event streams."""
        return self.bot_socket is not None or (self.tap is not None and self.tap.hears(self.call_id))

    def _notice(self, type_: str, payload: dict[str, Any]) -> None:
        """A notice (no sequence, live only), one body for the bot's socket and the live streams."""
        body = realtime_body(type_, payload)
        if self.bot_socket is not None:
            self.bot_socket.send_event(body, durable=False)
        if self.tap is not None:
            self.tap.notice(self.call_id, type_, body)

    def _who(self, channel: int) -> dict[str, Any]:
        return who(self.both_parties, self.speakers, channel)
