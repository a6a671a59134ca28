"""A call's transcript: its record in the transcript store, and the conversation it keeps, bounded, for
its last bot event, ``transcript.completed``.

The whole record (words included) is in the transcript store and its API (:class:`CallRecord` writes
it; the store's writer thread does the I/O, never awaited), with the finals' add-on results and the
post-call analysis. ``transcript.completed`` carries each final's text, times, channel and speaker, in
order of time, at most ``MAX_CONVERSATION_UTTERANCES`` of them and ``MAX_CONVERSATION_CHARS`` of text, and
then says it is cut (:class:`Conversation`, pure), and the analysis when the call has one.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bridge.call.redacting import Redaction
    from bridge.record_store import RecordStore

MAX_CONVERSATION_UTTERANCES = 2000  # transcript.completed carries at most this many utterances ...
MAX_CONVERSATION_CHARS = 200_000  # ... and this much text (the whole record is in the transcript API)
_TURN_FIELDS = ("id", "channel", "speaker", "start", "end", "text", "language")
_TURN_CHANNEL, _TURN_START = _TURN_FIELDS.index("channel"), _TURN_FIELDS.index("start")


class Conversation:
    """A call's utterances for ``transcript.completed``, within bounds. One tuple per utterance, its
    fields in ``_TURN_FIELDS``' order (a tuple is about a third of a dict's size, and a call keeps up
    to 2000 of them)."""

    __slots__ = ("_chars", "_turns")

    def __init__(self) -> None:
        self._turns: list[tuple[Any, ...]] = []
        self._chars = 0

    def add(self, utterance: dict[str, Any]) -> bool:
        """Keep a final (an ``utterance.final``'s utterance) if it fits; False when it is left out."""
        chars = len(utterance["text"])
        if len(self._turns) >= MAX_CONVERSATION_UTTERANCES or self._chars + chars > MAX_CONVERSATION_CHARS:
            return False
        self._chars += chars
        self._turns.append(tuple([utterance[k] for k in _TURN_FIELDS]))
        return True

    def turns(self) -> list[dict[str, Any]]:
        """The utterances kept, in order of time (then channel)."""
        ordered = sorted(self._turns, key=lambda u: (u[_TURN_START], u[_TURN_CHANNEL]))
        return [dict(zip(_TURN_FIELDS, u, strict=True)) for u in ordered]


def transcript_json(
    call: dict[str, Any],
    speakers: list[str],
    conversation: Conversation,
    utterances_total: int,
    transcript_path: str | None,
    analysis: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``transcript.completed``: the whole conversation in order of time, each utterance with its
    speaker (words are in the transcript API); cut at the bounds, and then it says so. With
    ``analysis`` (the post-call summary's outcome, when the call asked for one) it carries it too."""
    turns = conversation.turns()
    payload = {
        "call": call,
        "speakers": speakers,
        "utterances": turns,
        "utterances_total": utterances_total,
        "truncated": len(turns) < utterances_total,
        "transcript_path": transcript_path,
    }
    if analysis is not None:
        payload["analysis"] = dict(analysis)
    return payload


class CallRecord:
    """One call's transcript: in the store (None: transcripts off) and in its conversation, redacted
    first when ``redaction`` is given (BRIDGE_REDACT: bridge.call.redacting)."""

    __slots__ = ("call_id", "conversation", "redaction", "store")

    def __init__(self, call_id: str, store: RecordStore | None, redaction: Redaction | None = None) -> None:
        self.call_id = call_id
        self.store = store
        self.redaction = redaction
        self.conversation = Conversation()

    def started(self, call: dict[str, Any], speakers: list[str]) -> None:
        if self.store is not None:
            self.store.call_started({**call, "speakers": speakers}, time.time())

    def final(self, utterance: dict[str, Any]) -> list[tuple[float, float]]:
        """A final for the transcript: kept on record (the store's writer thread; never waits) and,
        within bounds, for ``transcript.completed``. Returns the times of what was redacted from it (for
        the recording to silence; none without redaction)."""
        spans: list[tuple[float, float]] = []
        if self.redaction is not None:
            utterance, spans = self.redaction.spans(utterance)
        if self.store is not None:
            self.store.utterance(self.call_id, utterance)
        self.conversation.add(utterance)
        return spans

    def addon(self, type_: str, item: Mapping[str, Any]) -> None:
        """An add-on result of a final (``utterance.translation`` / ``.entities`` / ``.sentiment``, its
        payload without ``call``) for the record; ``transcript.completed`` does not carry them."""
        if self.store is not None:
            self.store.addon(self.call_id, type_, item if self.redaction is None else self.redaction.strings(item))

    def analysis(self, analysis: Mapping[str, Any]) -> Mapping[str, Any]:
        """The call's post-call analysis (``{status, summary?, chapters?, errors?}``) for the record; returns
        it as recorded (redacted)."""
        if self.redaction is not None:
            analysis = self.redaction.strings(analysis)
        if self.store is not None:
            self.store.analysis(self.call_id, analysis)
        return analysis

    def completed_json(
        self,
        call: dict[str, Any],
        speakers: list[str],
        utterances_total: int,
        analysis: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """``transcript.completed`` (see :func:`transcript_json`), with where the whole record is, and
        ``analysis`` when given (else the key is absent; when given, it goes on record too)."""
        if analysis is not None:
            analysis = self.analysis(analysis)
        path = f"/v1/calls/{self.call_id}/transcript" if self.store is not None else None
        return transcript_json(call, speakers, self.conversation, utterances_total, path, analysis)
