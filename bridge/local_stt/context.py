"""What the local engine tells Whisper before each utterance: the call's context (pure).

Each utterance is decoded alone, and Whisper takes a prompt (its "previous text" tokens) that can carry
what it cannot hear in the piece itself:

* the session's ``custom_vocabulary`` (``realtime_processing.custom_vocabulary_config.vocabulary``:
  strings or ``{"value": ...}`` objects, as Gladia's API carries them), at most :data:`MAX_WORDS` words
  of at most :data:`MAX_WORD_CHARS` characters each, so the words to expect are spelled as given;
* with ``history`` on, the channel's own previous finals, their last :data:`MAX_HISTORY_CHARS`
  characters cut at a word boundary (each channel is one speaker: the caller's context is not the
  agent's).

``history`` is off by default: on the telephone corpus (tests/corpus, ``benchmarks/bench_wer.py
--context``) Whisper tiny.en scored worse with the previous finals as its prompt (perfect cuts 29.2% ->
31.4%, the VAD's cuts 28.2% -> 30.9%): it carries the prompt's sentence on ("The light on the modem"
after a final became "but I don't know them"). ``bridge stt-server --history-prompt`` turns it on.

Bounded on every side: a session's vocabulary is read once, the history is a string of bounded length.
"""

from __future__ import annotations

from typing import Any

MAX_WORDS = 50  # vocabulary entries used
MAX_WORD_CHARS = 60  # characters of one entry
MAX_HISTORY_CHARS = 200  # characters of the channel's previous finals (about 50 tokens of Whisper's 223)


def vocabulary(realtime_processing: dict[str, Any] | None) -> tuple[str, ...]:
    """The custom vocabulary a session asked for (empty when none, or when it is switched off)."""
    if not isinstance(realtime_processing, dict) or realtime_processing.get("custom_vocabulary") is not True:
        return ()
    config = realtime_processing.get("custom_vocabulary_config")
    entries = config.get("vocabulary") if isinstance(config, dict) else None
    if not isinstance(entries, list):
        return ()
    words: list[str] = []
    for entry in entries:
        value = entry.get("value") if isinstance(entry, dict) else entry
        if isinstance(value, str) and (text := " ".join(value.split())[:MAX_WORD_CHARS]):
            words.append(text)
        if len(words) == MAX_WORDS:
            break
    return tuple(words)


class CallContext:
    """The prompt of each channel's next utterance: the vocabulary, then what the channel said last."""

    __slots__ = ("_history", "_vocabulary", "history")

    def __init__(self, channels: int, words: tuple[str, ...] = (), *, history: bool = False) -> None:
        self._vocabulary = (", ".join(words) + ".") if words else ""
        self._history = [""] * channels
        self.history = history

    def heard(self, channel: int, text: str) -> None:
        """A final of ``channel``: the context of its next utterance (kept only with ``history``)."""
        if not self.history:
            return
        said = " ".join(text.split())
        if said and said[-1] not in ".?!":
            said += "."  # a prompt that ends mid-sentence makes Whisper carry the sentence on
        joined = f"{self._history[channel]} {said}".strip()
        if len(joined) > MAX_HISTORY_CHARS:
            joined = joined[-MAX_HISTORY_CHARS:]
            cut = joined.find(" ")
            joined = joined[cut + 1 :] if cut >= 0 else ""
        self._history[channel] = joined

    def prompt(self, channel: int) -> str | None:
        """Whisper's prompt for ``channel``'s next utterance; None when there is nothing to say yet."""
        text = f"{self._vocabulary} {self._history[channel]}".strip()
        return text or None
