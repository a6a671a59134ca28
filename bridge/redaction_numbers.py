"""Numbers as a caller says them and a recogniser writes them, read as runs of digits (pure).

The redaction of :mod:`bridge.redaction` looks for card numbers, SSNs and phone numbers in what a
recogniser wrote: figures (``4111 1111``), spoken digits (``four one one one``), both mixed, split by
commas, dashes and full stops, spread over many words. This module turns a text into tokens and the
tokens into :class:`Run` s: the longest stretches of numbers said one after another, each digit
remembering where in the text it came from.

What counts as a number (a :class:`Chunk`):

- a figure group, any Unicode decimal digits (``4111``, ``٤١١١``), read as ASCII digits;
- a digit word: ``zero``, ``nought``, ``oh``/``o`` (0), ``one`` ... ``nine``;
- ``double``/``triple`` before a digit (word or single figure): ``double four`` is ``44``;
- ``ten`` ... ``nineteen`` (two digits), ``twenty`` ... ``ninety`` alone (``20``) or before a digit word
  (``forty two``, ``forty-two``: ``42``): callers read cards in pairs (``forty-one eleven``);
- ``<digit> hundred``: ``800``, ``<digit> hundred [and] <ten to ninety-nine>``: ``523``; ``<digit>
  hundred <digit>`` is ``800`` then the digit, as in toll-free numbers (``one eight hundred five five
  five``), not ``805``. ``thousand`` and larger end a run: amounts and years are not digit strings;
- the homophones a recogniser writes for digit words (``for``/``fore`` 4, ``to``/``too`` 2, ``won``
  1, ``ate`` 8), only next to a spoken digit word (``for one one one``), never next to figures.

Between two numbers of a run may stand whitespace and at most three of: a comma, a full stop, a dash
or hyphen of any width, an underscore, the words ``dash``, ``hyphen`` and ``and`` (``4111 and 1111``),
an invisible format character (zero-width space ...), a filler (``uh``, ``um``, ``er`` ...). A
homophone, or ``oh``/``o`` starting a run (``Oh, 4111 ...``), is *soft*: maybe not a digit at all. A
run is cut into *groups* where the caller or the recogniser marked one: between two figure groups,
between figures and words, at any separator but whitespace and fillers, around a soft number. Spoken
digit words said in one breath (``four one one one one ...``) are one group.
"""

from __future__ import annotations

import bisect
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

UNITS = {
    "zero": "0",
    "nought": "0",
    "oh": "0",
    "o": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
}
TEENS = {
    "ten": "10",
    "eleven": "11",
    "twelve": "12",
    "thirteen": "13",
    "fourteen": "14",
    "fifteen": "15",
    "sixteen": "16",
    "seventeen": "17",
    "eighteen": "18",
    "nineteen": "19",
}
TENS = {
    "twenty": "2",
    "thirty": "3",
    "forty": "4",
    "fourty": "4",
    "fifty": "5",
    "sixty": "6",
    "seventy": "7",
    "eighty": "8",
    "ninety": "9",
}
MULTIPLIERS = {"double": 2, "triple": 3}
HOMOPHONES = {"for": "4", "fore": "4", "to": "2", "too": "2", "won": "1", "ate": "8"}
FILLERS = frozenset({"uh", "uhm", "um", "umm", "er", "erm", "ah", "hmm", "mm"})
SPOKEN_SEPARATORS = frozenset({"dash", "hyphen", "and"})
SEPARATORS = frozenset(",.-–—‐‑_")
_ZEROS = frozenset({"zero", "nought", "oh", "o"})
_MAX_SEPARATORS = 3
_TOKEN = re.compile(r"\d+|[^\W\d_]+|\S")


@dataclass(frozen=True, slots=True)
class Token:
    """A figure group, a word (letters) or one other non-space character, with its place in the text."""

    text: str
    start: int
    end: int

    @property
    def low(self) -> str:
        return self.text.lower()


@dataclass(frozen=True, slots=True)
class Chunk:
    """One number as said: a figure group, or one spoken number (``four``, ``double four``, ``forty two``)."""

    digits: str  # ASCII digits
    start: int  # its characters in the text
    end: int
    spoken: bool
    soft: bool = False  # a homophone, or ``oh`` starting a run: maybe not a digit
    cut_before: bool = False  # a group boundary lies between the previous chunk and this one
    tokens: int = 1  # how many tokens it took (internal)


@dataclass(frozen=True, slots=True)
class Run:
    """Numbers said one after another; ``first_token`` is the index of its first token, ``plus`` the span
    of a spoken ``plus`` right before it (``plus four four ...``); ``digits`` all its digits, ``offsets``
    where each chunk's digits start in them."""

    chunks: tuple[Chunk, ...]
    first_token: int
    plus: tuple[int, int] | None
    digits: str
    offsets: tuple[int, ...]

    @classmethod
    def of(cls, chunks: Sequence[Chunk], first_token: int, plus: tuple[int, int] | None = None) -> Run:
        offsets = [0]
        for c in chunks[:-1]:
            offsets.append(offsets[-1] + len(c.digits))
        return cls(tuple(chunks), first_token, plus, "".join(c.digits for c in chunks), tuple(offsets))

    def chunks_in(self, a: int, b: int) -> tuple[Chunk, ...]:
        """The chunks whose digits start within digits ``a``-``b``."""
        return self.chunks[bisect.bisect_left(self.offsets, a) : bisect.bisect_left(self.offsets, b)]

    def digit_spans(self) -> list[tuple[int, int]]:
        """Each digit's characters: its own for a figure, the whole spoken number for a word."""
        spans: list[tuple[int, int]] = []
        for c in self.chunks:
            if c.spoken:
                spans.extend((c.start, c.end) for _ in c.digits)
            else:
                spans.extend((c.start + i, c.start + i + 1) for i in range(len(c.digits)))
        return spans

    def cuts(self) -> list[int]:
        """The digit positions where a group starts or ends (0 and the length included)."""
        inner = [n for n, c in zip(self.offsets, self.chunks, strict=True) if c.cut_before and n]
        return [0, *inner, len(self.digits)]


def tokenize(text: str) -> list[Token]:
    return [Token(m.group(), m.start(), m.end()) for m in _TOKEN.finditer(text)]


def _ascii_digits(text: str) -> str:
    return "".join(str(unicodedata.decimal(ch)) for ch in text)


def _is_separator(token: Token) -> bool:
    if token.low in FILLERS or token.low in SPOKEN_SEPARATORS or token.text in SEPARATORS:
        return True
    return len(token.text) == 1 and unicodedata.category(token.text) == "Cf"


def _spoken(toks: Sequence[Token], i: int, digits: str, used: int, soft: bool = False) -> Chunk:
    return Chunk(digits, toks[i].start, toks[i + used - 1].end, spoken=True, soft=soft, tokens=used)


def _word_at(toks: Sequence[Token], i: int) -> str:
    return toks[i].low if i < len(toks) else ""


def _after_hundred(toks: Sequence[Token], i: int, unit: str) -> Chunk:
    """``<unit> hundred`` at ``i`` (the unit), with what follows it if that completes the number."""
    j = i + 2
    if _word_at(toks, j) == "and" and (_word_at(toks, j + 1) in TEENS or _word_at(toks, j + 1) in TENS):
        j += 1
    word = _word_at(toks, j)
    if word in TEENS:
        return _spoken(toks, i, unit + TEENS[word], j + 1 - i)
    if word in TENS:
        tens = _tens(toks, j)
        return _spoken(toks, i, unit + tens.digits, j - i + tens.tokens)
    return _spoken(toks, i, unit + "00", 2)


def _tens(toks: Sequence[Token], i: int) -> Chunk:
    tens = TENS[toks[i].low]
    j = i + 1
    if j < len(toks) and toks[j].text in "-‐‑" and toks[j].start == toks[i].end:
        j += 1
    unit = _word_at(toks, j)
    if unit in UNITS and unit not in _ZEROS:
        return _spoken(toks, i, tens + UNITS[unit], j + 1 - i)
    return _spoken(toks, i, tens + "0", 1)


def parse_number(toks: Sequence[Token], i: int, homophone: bool = False) -> Chunk | None:
    """The number that starts at token ``i``, if one does; a homophone only when ``homophone``."""
    if i >= len(toks):
        return None
    token = toks[i]
    word = token.low
    if token.text[0].isdecimal():
        return Chunk(_ascii_digits(token.text), token.start, token.end, spoken=False)
    if word in MULTIPLIERS:
        nxt = toks[i + 1] if i + 1 < len(toks) else None
        if nxt is not None and nxt.low in UNITS:
            return _spoken(toks, i, UNITS[nxt.low] * MULTIPLIERS[word], 2)
        if nxt is not None and nxt.text.isdecimal() and len(nxt.text) == 1:
            return _spoken(toks, i, _ascii_digits(nxt.text) * MULTIPLIERS[word], 2)
        return None
    if word in UNITS:
        if _word_at(toks, i + 1) == "hundred" and word not in _ZEROS:
            return _after_hundred(toks, i, UNITS[word])
        return _spoken(toks, i, UNITS[word], 1)
    if word in TEENS:
        return _spoken(toks, i, TEENS[word], 1)
    if word in TENS:
        return _tens(toks, i)
    if homophone and word in HOMOPHONES:
        return _spoken(toks, i, HOMOPHONES[word], 1, soft=True)
    return None


def _skip_separators(toks: Sequence[Token], i: int) -> tuple[int, bool]:
    """The token after the separators at ``i`` (at most three), and whether one was punctuation."""
    j = i
    marked = False
    while j < len(toks) and j - i < _MAX_SEPARATORS and _is_separator(toks[j]):
        marked = marked or toks[j].low not in FILLERS
        j += 1
    return j, marked


def _spoken_word_at(toks: Sequence[Token], i: int) -> bool:
    """A spoken number (not a homophone) starts at token ``i``, after any separators."""
    j, _ = _skip_separators(toks, i)
    chunk = parse_number(toks, j)
    return chunk is not None and chunk.spoken


def _soften_start(chunks: list[Chunk], toks: Sequence[Token], first: int) -> None:
    """``oh``/``o`` starting a run is soft (``Oh, 4111 ...``), and a group ends after it. (At a run's end
    it is a zero: nobody says "oh" after a number.)"""
    if toks[first].low in ("oh", "o") and chunks[0].tokens == 1:
        chunks[0] = _replace(chunks[0], soft=True)
        if len(chunks) > 1:
            chunks[1] = _replace(chunks[1], cut_before=True)


def _replace(chunk: Chunk, *, soft: bool | None = None, cut_before: bool | None = None) -> Chunk:
    return Chunk(
        chunk.digits,
        chunk.start,
        chunk.end,
        chunk.spoken,
        chunk.soft if soft is None else soft,
        chunk.cut_before if cut_before is None else cut_before,
        chunk.tokens,
    )


def find_runs(toks: Sequence[Token]) -> list[Run]:
    """Every run of numbers in ``toks``, left to right; a run that is only soft numbers is none."""
    runs: list[Run] = []
    i = 0
    while i < len(toks):
        first = parse_number(toks, i, homophone=_spoken_word_at(toks, i + 1))
        if first is None:
            i += 1
            continue
        chunks = [first]
        j = i + first.tokens
        while True:
            k, marked = _skip_separators(toks, j)
            prev = chunks[-1]
            homophone = (prev.spoken and not prev.soft) or _spoken_word_at(toks, k + 1)
            nxt = parse_number(toks, k, homophone=homophone)
            if nxt is None:
                break
            cut = marked or not (prev.spoken and nxt.spoken) or prev.soft or nxt.soft
            chunks.append(_replace(nxt, cut_before=cut))
            j = k + nxt.tokens
        _soften_start(chunks, toks, i)
        if any(not c.soft for c in chunks):
            before = toks[i - 1] if i else None
            plus = (before.start, before.end) if before is not None and before.low == "plus" else None
            runs.append(Run.of(chunks, i, plus))
        i = j
    return runs


def digitised(text: str, runs: Sequence[Run], soft_digits: bool = False) -> tuple[str, list[tuple[int, int]]]:
    """``text`` with each run written as figures, the way a phone-number parser reads them, and for each
    character of the result the characters of ``text`` it stands for.

    Spoken digits said in one breath are written together (``five five five`` is ``555``); a comma
    before a space becomes a space (``415, 555, 2671``); a filler is dropped; a spoken ``plus`` before a
    run is ``+``. A soft number at a run's end stays a word (``Oh, five five five ...`` is not ``0555...``),
    unless ``soft_digits``: then every soft number is a digit (``for one five ...`` was ``four one five ...``).
    """
    out: list[str] = []
    where: list[tuple[int, int]] = []

    def put(piece: str, start: int, end: int) -> None:
        out.append(piece)
        where.extend((start, end) for _ in piece)

    def verbatim(start: int, end: int) -> None:
        out.append(text[start:end])
        where.extend((p, p + 1) for p in range(start, end))

    pos = 0
    for run in runs:
        chunks = run.chunks
        if run.plus is not None and (soft_digits or not chunks[0].soft):
            verbatim(pos, run.plus[0])
            put("+", *run.plus)
        else:
            verbatim(pos, chunks[0].start)
        for n, c in enumerate(chunks):
            edge = c.soft and n in (0, len(chunks) - 1) and not soft_digits
            if n:
                prev = chunks[n - 1]
                gap = text[prev.end : c.start]
                gap = re.sub(r"[^\W\d_]+", " ", gap)  # fillers
                gap = re.sub(r"\s+", " ", re.sub(r",(?=\s)", " ", gap))
                soft = (prev.soft or c.soft) and not soft_digits
                joined = prev.spoken and c.spoken and not gap.strip() and not soft
                put("" if joined else gap, prev.end, c.start)
            if edge:
                verbatim(c.start, c.end)
            else:
                put(c.digits, c.start, c.end)
        pos = chunks[-1].end
    verbatim(pos, len(text))
    return "".join(out), where
