"""Which language each utterance of a session is recognised in: Gladia's ``language_config`` on a local
model (pure).

Gladia's rules, as far as a model that decodes one utterance at a time can follow them:

* one language listed: that language, for every utterance;
* several listed: each utterance's language detected among them (Whisper's language detection, its
  probabilities kept for the listed ones only);
* none listed: detected among every language the model knows (tiny.en knows English alone);
* ``code_switching`` false (Gladia's default): the language found first is kept for the rest of the
  session. Gladia takes the first utterance's; here it is the first final whose language Whisper gave
  a probability of at least :data:`LOCK_PROBABILITY` (among every language it knows), because a first
  "Hello?" of half a second can come out as any language, and a wrong lock would spoil every utterance
  after it. Until then each final is detected on its own;
* ``code_switching`` true: detected on every utterance.

A session that lists a language its model does not know is refused at ``POST /v2/live``
(:func:`refusals`): English-only tiny.en would write French speech as English words.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from bridge.local_stt.request import LanguageConfig

# A detection this sure fixes a session's language: faster-whisper's own bar for "detected"
# (language_detection_threshold). Telephone speech often stays under it (espeak's French at 8 kHz: 0.42).
LOCK_PROBABILITY = 0.5

# What to do, said first: the bridge keeps the first 300 characters of a refused POST /v2/live's body.
MULTILINGUAL_HINT = (
    "needs local_stt.model = \"base\" (pip install 'telephony-gladia-bridge[local-base]'; "
    "bridge stt-server --model base)"
)


def refusals(listed: Sequence[str], known: Collection[str], model: str) -> list[str]:
    """One validation error (Gladia's wording, as request.py's) per listed language the model does not know."""
    if set(known) == {"en"}:
        return [
            f"language_config.languages: {code} {MULTILINGUAL_HINT}: {model} is English only"
            for code in listed
            if code != "en"
        ]
    return [
        f"language_config.languages: {code} is not one of the languages of {model}"
        for code in listed
        if code not in known
    ]


def pick(probabilities: Sequence[tuple[str, float]], among: Collection[str]) -> tuple[str, float]:
    """The most likely language of ``probabilities`` (Whisper's, every language it knows) that is one of
    ``among`` (empty: any), with Whisper's probability of it."""
    kept = [(code, p) for code, p in probabilities if not among or code in among]
    if not kept:  # none of the candidates known to the model: the first candidate, unsure
        return next(iter(among), "en"), 0.0
    return max(kept, key=lambda cp: cp[1])


@dataclass(slots=True)
class SessionLanguages:
    """One session's language choice, utterance after utterance."""

    listed: tuple[str, ...] = ()
    code_switching: bool = False
    locked: str | None = None  # the session's language once found (code_switching off)

    @classmethod
    def of(cls, config: LanguageConfig | None) -> SessionLanguages:
        if config is None:
            return cls()
        return cls(tuple(dict.fromkeys(config.languages)), config.code_switching)

    def ask(self) -> tuple[str | None, tuple[str, ...]]:
        """``(language, among)`` for the next utterance: the language to use, or None and the candidates
        to detect among (empty: any the model knows)."""
        if len(self.listed) == 1:
            return self.listed[0], ()
        if self.locked is not None:
            return self.locked, ()
        return None, self.listed

    def heard(self, language: str, probability: float) -> None:
        """A final was recognised in ``language``, detected with ``probability`` (1: it was given)."""
        if not self.code_switching and self.locked is None and probability >= LOCK_PROBABILITY:
            self.locked = language
