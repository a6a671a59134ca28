"""Redaction of card numbers, US SSNs, phone numbers and emails in what the recogniser wrote (pure).

``BRIDGE_REDACT=card,ssn,phone,email`` (:func:`parse_kinds`) names what a :class:`Redactor` removes.
:meth:`Redactor.text` redacts a plain text; :meth:`Redactor.utterance` a Gladia utterance, its words
included: a redacted run of words becomes one word (``" [card]"``, the first word's start, the last
word's end, the lowest confidence), the text says the same, and the times of each redacted run are
returned so the recording can be silenced there. Placeholders: ``[card]``, ``[ssn]``, ``[phone]``,
``[email]``. How numbers are read (figures, digit words, ``double four``, ``forty two``, homophones,
groups) is :mod:`bridge.redaction_numbers`'.

The rules, chosen to leak nothing a caller says on purpose while keeping ordinary numbers:

- **card**: 13-19 digits passing Luhn, first digit not 0 (no issuer numbers from 0; a run of zeros or
  a leading ``oh`` is no card). A run of 13-19 digits is a card as a whole, or else where its groups
  allow (``1 4111 1111 1111 1111``: the last four groups; ``four one one one, one one one one, ...``),
  never by dropping digits of a 16-digit number said in one breath: a Luhn-invalid 16-digit number is
  no card, whichever way it is said (cut anywhere, some 13-15-digit part of it would pass Luhn about
  half the time). A run of 17-19 digits that fails Luhn may be a card and its code or expiry in one
  breath (``four one one one ... one two three``): its first and last 15 and 16 digits are tried too
  (Amex's length and everyone else's). A run longer than 19 digits cannot be one card: every stretch
  of 13-19 digits in it passing Luhn is redacted, all of them (over-redacting a long digit string
  rather than leaving a card in it). The windows are tried in that order, the whole run first, and all
  that pass at the first step where one does are redacted, so no chance pass can hide the card.
- **ssn**: 9 digits, area not 000, 666 or 9xx, group not 00, serial not 0000; written ``ddd-dd-dddd``
  or ``ddd dd dddd`` (figures), or any 9 digits (spoken, figures, mixed) with ``social`` (``social
  security``), ``SSN`` or ``s s n`` among the 8 words before them. Nine bare digits without either are
  too common (ZIP+4, accounts, references) to be taken as an SSN.
- **phone**: Google's libphonenumber (the ``phonenumbers`` port): ``PhoneNumberMatcher`` with
  leniency VALID and a default region (``US``; numbers with ``+`` in any region) over the text with
  spoken digits written as figures, once with soft numbers as words and once as digits (``Oh, five five
  five ...`` and ``for one five ...``). VALID, not POSSIBLE: a number must fit its region's numbering
  plan (an area code in use, a possible exchange), so most 10-digit order numbers and references stay,
  as do numbers no one can have (``555 123 4567``); a caller's real number is always valid.
- **email**: ``local@domain.tld`` as written, and spoken: ``john dot smith at example dot com``
  (``dot``, ``underscore``, ``dash``, ``hyphen`` in the local part; letters spelled one by one; ``dot``
  in the domain, which ends in a common top-level domain). A spoken form whose local part is a word
  like ``me`` or ``us`` (``reach me at example dot com``) is a web address, not an email.
- Overlaps merge into one placeholder of the strongest kind: card, ssn, email, phone (a 16-digit Luhn
  number is a card, not a phone; an email made of a phone number is an email). Only the kinds asked
  for are looked for. Leftover punctuation of a redacted word stays (``4111, ... 1111.`` is ``[card].``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import phonenumbers

from bridge.redaction_numbers import Run, Token, digitised, find_runs, tokenize

KINDS = ("card", "ssn", "phone", "email")
_RANK = {"card": 0, "ssn": 1, "email": 2, "phone": 3}
CARD_DIGITS = (13, 19)
SSN_CONTEXT_WORDS = 8

Span = tuple[int, int, str]  # characters [start, end) of the text, and the kind found there

_TLDS = (
    "com|net|org|edu|gov|mil|int|info|biz|io|co|ai|app|dev|me|tv|us|uk|ca|au|nz|ie|de|fr|es|it|nl|be|ch|at"
    "|se|no|dk|fi|pl|pt|br|mx|in|jp|cn|za|eu"
)
_WRITTEN_EMAIL = re.compile(r"(?<![\w.%+-])[\w.%+-]+@[\w-]+(?:\.[\w-]+)*\.[^\W\d_]{2,}(?!\w)")
# j o h n, or a word; every repetition bounded, so that no text makes the search go back over all of it
_LOCAL_WORD = r"(?:[^\W_](?:\s+[^\W_](?![^\W_])){1,40}|[^\W_]{1,64})"
_LOCAL_SEP = r"(?:\s*[._-]\s*|\s+(?:dot|underscore|dash|hyphen)\s+)"
_LABEL = r"[^\W_][\w-]{0,62}"
_DOT = r"(?:\s*\.\s*|\s+dot\s+)"
_SPOKEN_EMAIL = re.compile(
    rf"(?<![\w.@'’])(?P<local>{_LOCAL_WORD}(?:{_LOCAL_SEP}{_LOCAL_WORD}){{0,8}})(?:\s*@\s*|\s+at\s+)"
    rf"{_LABEL}(?:{_DOT}{_LABEL}){{0,6}}?{_DOT}(?:{_TLDS})(?![\w@])",
    re.IGNORECASE,
)
_NOT_A_MAILBOX = frozenset(
    {"me", "us", "him", "her", "them", "you", "it", "is", "be", "here", "there", "look", "online", "home", "work"}
    | {"email", "mail", "address", "site", "website", "page", "available", "reach", "contact", "find", "write"}
)


def parse_kinds(value: str) -> frozenset[str]:
    """``BRIDGE_REDACT``: kinds separated by commas (spaces allowed, any case); empty or ``none``: nothing.

    Raises:
        ValueError: a kind that is not one of :data:`KINDS`, named.
    """
    names = [part.strip().lower() for part in value.split(",")]
    names = [name for name in names if name]
    if not names or names == ["none"]:
        return frozenset()
    for name in names:
        if name not in KINDS:
            raise ValueError(f"unknown redaction kind {name!r}: use {', '.join(KINDS)} (or none)")
    return frozenset(names)


def luhn_ok(digits: str) -> bool:
    """The Luhn (mod 10) check of card numbers, over ASCII digits."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def ssn_ok(digits: str) -> bool:
    """Nine digits the SSA could have issued: area not 000, 666 or 9xx, group not 00, serial not 0000."""
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    return len(digits) == 9 and area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def _windows(run: Run, low: int, high: int) -> Iterable[tuple[int, int]]:
    """Digit ranges [a, b) of ``run`` with ``low``-``high`` digits: the whole run, then cut at its groups."""
    n = len(run.digits)
    if low <= n <= high:
        yield 0, n
    cuts = run.cuts()
    for i, a in enumerate(cuts):
        for b in cuts[i + 1 :]:
            if b - a > high:
                break
            if b - a >= low and (a, b) != (0, n):
                yield a, b


def _card_windows(run: Run) -> list[list[tuple[int, int]]]:
    """Where a card may be in ``run``, in tiers tried in turn: whole or at its groups; then, past 16
    digits (a card and its expiry or code in one breath), its first or last 15 or 16; past 19, anywhere."""
    n = len(run.digits)
    low, high = CARD_DIGITS
    tiers = [list(_windows(run, low, high))]
    if n > high:
        tiers.append([(a, b) for a in range(n) for b in range(a + low, min(a + high, n) + 1)])
    elif n > 16:
        tiers.append([(0, 15), (0, 16), (n - 16, n), (n - 15, n)])
    return tiers


def _found(run: Run, windows: Iterable[tuple[int, int]], kind: str) -> list[Span]:
    spans = run.digit_spans()
    return [(spans[a][0], spans[b - 1][1], kind) for a, b in windows]


def _cards(runs: Sequence[Run]) -> list[Span]:
    found: list[Span] = []
    for run in runs:
        digits = run.digits
        for tier in _card_windows(run):
            cards = [(a, b) for a, b in tier if digits[a] != "0" and luhn_ok(digits[a:b])]
            if (0, len(digits)) in cards:
                cards = [(0, len(digits))]  # the whole run is the card
            if cards:
                found += _found(run, cards, "card")
                break
    return found


def _ssn_context(tokens: Sequence[Token], end: int) -> bool:
    """``social`` (``social security``), ``SSN`` or ``s s n`` among the words before token ``end`` (a
    placeholder's ``[ssn]`` is not one)."""
    words: list[str] = []
    k = end - 1
    while k >= 0 and len(words) < SSN_CONTEXT_WORDS:
        placeholder = 0 < k < len(tokens) - 1 and tokens[k - 1].text == "[" and tokens[k + 1].text == "]"
        if tokens[k].text.isalpha() and not placeholder:
            words.append(tokens[k].low)
        k -= 1
    spelled = any(words[i : i + 3] == ["n", "s", "s"] for i in range(len(words)))
    return spelled or "social" in words or "ssn" in words


def _ssns(text: str, tokens: Sequence[Token], runs: Sequence[Run]) -> list[Span]:
    found: list[Span] = []
    for run in runs:
        context = _ssn_context(tokens, run.first_token)
        found += _found(run, [(a, b) for a, b in _windows(run, 9, 9) if _ssn_at(text, run, a, b, context)], "ssn")
    return found


def _ssn_at(text: str, run: Run, a: int, b: int, context: bool) -> bool:
    """Digits ``a``-``b`` of ``run`` are an SSN: one the SSA could issue, after ``social`` or ``SSN``
    (``context``) or written as three figure groups of 3, 2 and 4 digits with one separator."""
    if not ssn_ok(run.digits[a:b]):
        return False
    if context:
        return True
    groups = run.chunks_in(a, b)
    if [len(c.digits) for c in groups] != [3, 2, 4] or any(c.spoken for c in groups):
        return False
    seps = {text[groups[0].end : groups[1].start].strip(), text[groups[1].end : groups[2].start].strip()}
    return len(seps) == 1 and seps <= {"-", ""}


def _phones(text: str, runs: Sequence[Run], region: str) -> list[Span]:
    found: list[Span] = []
    variants = [False, True] if any(c.soft for run in runs for c in run.chunks) else [False]
    for soft_digits in variants:
        figures, where = digitised(text, runs, soft_digits)
        for match in phonenumbers.PhoneNumberMatcher(figures, region, leniency=phonenumbers.Leniency.VALID):
            found.append((where[match.start][0], where[match.end - 1][1], "phone"))
    return found


def _emails(text: str) -> list[Span]:
    found = [(m.start(), m.end(), "email") for m in _WRITTEN_EMAIL.finditer(text)]
    for m in _SPOKEN_EMAIL.finditer(text):
        if m.group("local").lower() not in _NOT_A_MAILBOX:
            found.append((m.start(), m.end(), "email"))
    return found


def merge(spans: Iterable[Span]) -> list[Span]:
    """Overlapping spans as one, of the strongest kind (card, ssn, email, phone), in text order."""
    out: list[Span] = []
    for start, end, kind in sorted(spans):
        if out and start < out[-1][1]:
            s0, e0, k0 = out[-1]
            out[-1] = (s0, max(e0, end), min(k0, kind, key=_RANK.__getitem__))
        else:
            out.append((start, end, kind))
    return out


def _apply(text: str, spans: Sequence[Span], offset: int = 0) -> str:
    """``text`` with each span (characters of a text starting at ``offset``) replaced by its placeholder."""
    parts: list[str] = []
    pos = 0
    for start, end, kind in spans:
        parts.append(text[pos : start - offset])
        parts.append(f"[{kind}]")
        pos = end - offset
    parts.append(text[pos:])
    return "".join(parts)


def _num(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


class Redactor:
    """Redacts the ``kinds`` (a subset of :data:`KINDS`); phone numbers without ``+`` are read as numbers
    of ``region`` (an ISO 3166 region code, as libphonenumber's)."""

    def __init__(self, kinds: Iterable[str], region: str = "US") -> None:
        self.kinds = frozenset(kinds)
        unknown = sorted(self.kinds - set(KINDS))
        if unknown:
            raise ValueError(f"unknown redaction kind {unknown[0]!r}: use {', '.join(KINDS)}")
        if region not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"unknown phone region {region!r}: an ISO 3166 code libphonenumber knows, such as US")
        self.region = region

    def spans(self, text: str) -> list[Span]:
        """What to redact in ``text``: merged, in order."""
        if not self.kinds or not text:
            return []
        tokens = tokenize(text)
        runs = find_runs(tokens)
        found: list[Span] = []
        if "card" in self.kinds:
            found += _cards(runs)
        if "ssn" in self.kinds:
            found += _ssns(text, tokens, runs)
        if "phone" in self.kinds:
            found += _phones(text, runs, self.region)
        if "email" in self.kinds:
            found += _emails(text)
        return merge(found)

    def text(self, text: str) -> str:
        """``text`` with what was found replaced by its placeholder (``[card]`` ...)."""
        return _apply(text, self.spans(text))

    def utterance(self, utterance: Mapping[str, Any]) -> tuple[dict[str, Any], list[tuple[float, float]]]:
        """A redacted copy of a Gladia utterance (``utterance`` is not changed) and the times of what was
        redacted, from the words' times. Words are read as one text (joined the way they are written:
        with a leading space each, or by spaces); a run of words holding something redacted becomes one
        word. The text is redacted where the words are when it is the words with punctuation between;
        it is the redacted words' text when it is not and something was redacted, or when anything is
        left to redact in it (so it never holds what the words do not). Without words, the text alone."""
        out = dict(utterance)
        raw = utterance.get("words")
        words = [dict(w) if isinstance(w, Mapping) else w for w in raw] if isinstance(raw, list) else None
        if words is not None:
            out["words"] = words
        text = utterance.get("text")
        if not words:
            if isinstance(text, str):
                out["text"] = self.text(text)
            return out, []
        strings = [_word_text(w) for w in words]
        joined, at = _join(strings)
        cores = [s.strip() for s in strings]
        places = _align(text, cores) if isinstance(text, str) else None
        spans = self.spans(joined)
        groups = _groups(spans, joined, cores, at)
        if isinstance(text, str):
            if places is not None:
                for first, last, _, core in reversed(groups):
                    text = text[: places[first]] + core + text[places[last] + len(cores[last]) :]
            if (places is None and groups) or self.spans(text):
                text = _apply(joined, spans)  # the text says what the words do not: the words' text
            out["text"] = text
        if not groups:
            return out, []
        new_words: list[Any] = []
        times: list[tuple[float, float]] = []
        k = 0
        for first, last, _, core in groups:
            run = words[first : last + 1]
            start, end = _num(run[0].get("start")), _num(run[-1].get("end"))
            confidence = min(
                (_num(w.get("confidence")) for w in run if isinstance(w, dict) and "confidence" in w), default=0.0
            )
            lead, trail = (
                strings[first][: len(strings[first]) - len(strings[first].lstrip())],
                strings[last][len(strings[last].rstrip()) :],
            )
            new_words += [
                *words[k:first],
                {"word": lead + core + trail, "start": start, "end": end, "confidence": confidence},
            ]
            times.append((start, end))
            k = last + 1
        out["words"] = [*new_words, *words[k:]]
        return out, times


def _word_text(word: Any) -> str:
    text = word.get("word") if isinstance(word, dict) else None
    return text if isinstance(text, str) else ""


def _join(strings: Sequence[str]) -> tuple[str, list[int]]:
    """The words as one text, and where each word (stripped) starts in it (-1: a blank word). Words that
    carry a leading space (Whisper's, Gladia's) are joined as written, so one without it continues the
    word before; words without leading spaces are joined by one space."""
    leading = any(s[:1].isspace() for s in strings[1:])
    parts: list[str] = []
    at: list[int] = []
    pos = 0
    for s in strings:
        core = s.strip()
        if not core:
            at.append(-1)
            continue
        sep = ("" if not s[:1].isspace() else " ") if leading else " "
        if parts:
            parts.append(sep)
            pos += len(sep)
        at.append(pos)
        parts.append(core)
        pos += len(core)
    return "".join(parts), at


Group = tuple[int, int, list[Span], str]  # first and last word, the spans, the words' redacted text


def _groups(spans: Sequence[Span], joined: str, cores: Sequence[str], at: Sequence[int]) -> list[Group]:
    """The runs of words the spans touch, runs sharing a word merged, each with its redacted text."""
    runs: list[tuple[int, int, list[Span]]] = []
    for span in spans:
        touched = [k for k, p in enumerate(at) if 0 <= p < span[1] and p + len(cores[k]) > span[0]]
        first, last = touched[0], touched[-1]
        if runs and first <= runs[-1][1]:
            runs[-1] = (runs[-1][0], max(last, runs[-1][1]), [*runs[-1][2], span])
        else:
            runs.append((first, last, [span]))
    return [
        (first, last, inside, _apply(joined[at[first] : at[last] + len(cores[last])], inside, at[first]))
        for first, last, inside in runs
    ]


def _align(text: str, cores: Sequence[str]) -> list[int] | None:
    """Where each word (stripped) is in ``text``, in order, with nothing but spaces and punctuation
    between them; None when the text says something the words do not."""
    places: list[int] = []
    pos = 0
    for core in cores:
        if not core:
            places.append(-1)
            continue
        found = text.find(core, pos)
        if found < 0 or any(ch.isalnum() for ch in text[pos:found]):
            return None
        places.append(found)
        pos = found + len(core)
    return None if any(ch.isalnum() for ch in text[pos:]) else places
