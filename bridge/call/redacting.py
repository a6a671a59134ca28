"""``BRIDGE_REDACT`` on a call: what goes on record, and with ``BRIDGE_REDACT_EVENTS`` what the bot gets.

:mod:`bridge.redaction` finds card numbers (Luhn-checked, in figures or spoken digits), US SSNs, phone
numbers and emails and replaces them by ``[card]``, ``[ssn]``, ``[phone]``, ``[email]``; a redacted
run of words keeps its times, as one word. This module applies it where a call's words leave it:

* on record (:class:`bridge.call.record.CallRecord`): each final's utterance before the transcript
  store and ``transcript.completed`` see it, the add-ons' results (a translation repeats the number),
  and the post-call analysis (a summary may quote it);
* in the live events when ``transcripts.redact_events`` is on (:class:`bridge.call.notices.SttNotices`):
  ``utterance.final``, the add-on events, and the bot socket's ``utterance.partial``. Off by default:
  the bot usually needs the number the caller said (that is why the caller said it).

The bridge's own reply loop (barge-in, ``gather``) reads the words before any of this: redaction is about
what is kept and shown, not what the call can act on. Keys are never redacted, nor values that are
identifiers (:data:`_KEEP`), only text.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bridge.redaction import Redactor

if TYPE_CHECKING:
    from bridge.setting_records import TranscriptSettings

# values that are identifiers, labels or codes, never someone's words
_KEEP = frozenset(
    {"id", "utterance_id", "stt_session_id", "call_id", "type", "speaker", "language", "original_language", "status"}
)


@dataclass(frozen=True, slots=True)
class Redaction:
    redactor: Redactor
    events: bool  # the live events too (transcripts.redact_events)

    @classmethod
    def from_settings(cls, settings: TranscriptSettings) -> Redaction | None:
        """None when nothing is to be redacted (``transcripts.redact`` empty, the default)."""
        if not settings.redact:
            return None
        return cls(Redactor(settings.redact), settings.redact_events)

    def utterance(self, utterance: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of an ``utterance.final``'s utterance with its text and words redacted."""
        redacted, _spans = self.redactor.utterance(utterance)
        return redacted

    def spans(self, utterance: Mapping[str, Any]) -> tuple[dict[str, Any], list[tuple[float, float]]]:
        """The redacted copy and the times (call seconds, from the words) of what was redacted."""
        return self.redactor.utterance(utterance)

    def strings(self, value: Any, key: str | None = None) -> Any:
        """A copy of a JSON-like value with every text in it redacted (not keys, not :data:`_KEEP`'s)."""
        if isinstance(value, str):
            return value if key in _KEEP else self.redactor.text(value)
        if isinstance(value, Mapping):
            return {k: self.strings(v, k) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.strings(v, key) for v in value]
        return value
