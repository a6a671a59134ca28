"""How a transcript of the corpus is scored (both sides, reference and hypothesis, alike): lower case,
punctuation dropped, contractions expanded, "$49.99" as "49 dollars and 99 cents", ordinals as numbers,
number words as numbers ("forty nine" = "49", "two hundred and ten" = "210"), and every number as its
single digits, so "seven three one" = "731" = "7 3 1" and "nineteen eighty seven" = "1987". Used by
``benchmarks/bench_wer.py``."""

from __future__ import annotations

import re

from bridge.tools.speech import word_error_rate

_UNITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
_TEENS = ["ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
_TENS = ["twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_ORDINALS = {
    **{
        w: i
        for i, w in enumerate(
            [
                "zeroth",
                "first",
                "second",
                "third",
                "fourth",
                "fifth",
                "sixth",
                "seventh",
                "eighth",
                "ninth",
                "tenth",
                "eleventh",
                "twelfth",
                "thirteenth",
                "fourteenth",
                "fifteenth",
                "sixteenth",
                "seventeenth",
                "eighteenth",
                "nineteenth",
            ]
        )
    },
    **{w: 20 + 10 * i for i, w in enumerate(["twentieth", "thirtieth", "fortieth", "fiftieth"])},
}
_SMALL = {w: i for i, w in enumerate(_UNITS)} | {w: 10 + i for i, w in enumerate(_TEENS)}
_TENS_VALUE = {w: 20 + 10 * i for i, w in enumerate(_TENS)}
_SCALES = {"hundred": 100, "thousand": 1000, "million": 1_000_000}
_CONTRACTIONS = {
    "i'm": "i am",
    "it's": "it is",
    "that's": "that is",
    "don't": "do not",
    "doesn't": "does not",
    "hasn't": "has not",
    "isn't": "is not",
    "can't": "cannot",
    "i'd": "i would",
    "i've": "i have",
    "you're": "you are",
    "we're": "we are",
    "what's": "what is",
    "there's": "there is",
    "won't": "will not",
}
_ABBREVIATIONS = {"dr": "doctor", "mr": "mister", "ok": "okay"}
_MONEY = re.compile(r"\$(\d[\d,]*)(?:\.(\d{1,2}))?")
_ORDINAL_SUFFIX = re.compile(r"\b(\d+)(?:st|nd|rd|th)\b")


def _numbers(tokens: list[str]) -> list[str]:
    """Runs of number words as numbers ("forty nine" -> "49"); a new number starts where the words
    could not continue the one before ("four five" is 4 and 5, "nineteen eighty" 19 and 80)."""
    out: list[str] = []
    total = current = 0
    last = ""  # kind of the last number word in the run: unit, teen, tens, tens_unit, scale, ordinal
    in_number = False

    def close() -> None:
        nonlocal total, current, last, in_number
        if in_number:
            out.append(str(total + current))
        total = current = 0
        last = ""
        in_number = False

    for i, tok in enumerate(tokens):
        nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
        if tok == "and" and in_number and last == "scale" and (nxt in _SMALL or nxt in _TENS_VALUE):
            continue  # "two hundred and ten"
        if tok in _SMALL:
            value = _SMALL[tok]
            kind = "unit" if value < 10 else "teen"
            if in_number and not (last == "scale" or (last == "tens" and kind == "unit")):
                close()
            current += value
            last, in_number = ("tens_unit" if last == "tens" else kind), True
        elif tok in _TENS_VALUE:
            if in_number and last != "scale":
                close()
            current += _TENS_VALUE[tok]
            last, in_number = "tens", True
        elif tok in _SCALES and in_number and last != "ordinal":
            scale = _SCALES[tok]
            if scale == 100:
                current = max(current, 1) * 100
            else:
                total, current = total + max(current, 1) * scale, 0
            last = "scale"
        elif tok in _ORDINALS:
            value = _ORDINALS[tok]
            if in_number and not (last == "scale" or (last == "tens" and value < 10)):
                close()
            current += value
            in_number = True
            close()
        else:
            close()
            out.append(tok)
    close()
    return out


def score_words(text: str) -> list[str]:
    """The words a transcript is scored on (both sides): see the module's docstring."""
    text = text.lower().replace("’", "'")
    text = _MONEY.sub(lambda m: f" {m[1]} dollars" + (f" and {m[2]} cents" if m[2] else ""), text)
    text = _ORDINAL_SUFFIX.sub(r"\1", text)
    text = text.replace("%", " percent").replace("&", " and ")
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)  # 1,200 -> 1200
    tokens: list[str] = []
    for tok in re.sub(r"[^a-z0-9' ]+", " ", text).split():
        tok = tok.strip("'")
        tok = _CONTRACTIONS.get(tok, tok)
        tokens.extend(_ABBREVIATIONS.get(tok, tok).split())
    out: list[str] = []
    for tok in _numbers(tokens):
        out.extend(tok if tok.isdigit() else [tok])
    return out


def edits(reference: list[str], hypothesis: list[str]) -> int:
    return round(word_error_rate(reference, hypothesis) * max(1, len(reference)))
