"""Redaction (``BRIDGE_REDACT``): a corpus of what callers say, in figures and in words, with what must be
left of it; utterances with word timings; generated cards.

Oracles that are not the module's own: the payment networks' published test card numbers (valid by
construction; each with its last digit changed is invalid), a Luhn check written differently from the
module's (digit sums of doubled digits), the SSA's rules for numbers it never issues, and Google's
libphonenumber's own ``is_valid_number`` for the phone numbers used.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import phonenumbers
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from bridge.redaction import KINDS, Redactor, luhn_ok, parse_kinds, ssn_ok
from bridge.redaction_numbers import HOMOPHONES, MULTIPLIERS, TEENS, TENS, UNITS, find_runs, tokenize

ALL = Redactor(KINDS)
TEST_CARDS = ["4111111111111111", "5555555555554444", "378282246310005", "6011111111111117"]
DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def other_luhn(number: str) -> bool:
    """Luhn as the payment networks describe it: from the right, every second digit doubled, the digits
    of every product summed."""
    digits = [int(c) for c in number]
    odd = digits[-1::-2]
    even = [sum(int(c) for c in str(2 * d)) for d in digits[-2::-2]]
    return (sum(odd) + sum(even)) % 10 == 0


def spoken(number: str) -> str:
    return " ".join(DIGIT_WORDS[int(c)] for c in number)


CORPUS: list[tuple[str, str]] = [
    # cards in figures, each network's test number, grouped or not
    ("My card is 4111 1111 1111 1111.", "My card is [card]."),
    ("It's 4111-1111-1111-1111, expiry 12/27.", "It's [card], expiry 12/27."),
    ("5555555555554444", "[card]"),
    ("Amex 3782 822463 10005 please", "Amex [card] please"),
    ("the number 6011 1111 1111 1117 ok", "the number [card] ok"),
    ("card:4111111111111111;", "card:[card];"),
    ("it is 4111, 1111, 1111, 1111.", "it is [card]."),
    ("option 1 4111 1111 1111 1111", "option 1 [card]"),
    # Luhn-invalid (the last digit changed): not a card, and not a phone either
    ("My card is 4111 1111 1111 1112.", "My card is 4111 1111 1111 1112."),
    ("5555 5555 5555 4445", "5555 5555 5555 4445"),
    ("378282246310006", "378282246310006"),
    ("6011-1111-1111-1118", "6011-1111-1111-1118"),
    # cards in words: digit words, oh, double/triple, pairs, mixed with figures, a homophone
    ("four one one one one one one one one one one one one one one one", "[card]"),
    ("Five five five five, five five five five, five five five five, four four four four.", "[card]."),
    ("it is four one one one, 1111, 1111, 1111.", "it is [card]."),
    ("double five double five double five double five double five double five four four four four", "[card]"),
    ("three seven eight two, eight two two four six three, one oh oh oh five", "[card]"),
    ("six oh one one, triple one one, one one one one, one one one seven", "[card]"),
    ("forty one eleven, eleven eleven, eleven eleven, eleven eleven", "[card]"),
    ("forty-one eleven eleven eleven eleven eleven eleven eleven", "[card]"),
    ("for one one one one one one one one one one one one one one one", "[card]"),
    ("card four one one one one one uh one one one one one one one one one one thanks", "card [card] thanks"),
    (
        "four one one one one one one one one one one one one one one two",
        "four one one one one one one one one one one one one one one two",
    ),
    (
        "three seven eight two eight two two four six three one oh oh oh six",
        "three seven eight two eight two two four six three one oh oh oh six",
    ),
    # what slips past a naive matcher: other scripts' digits, invisible separators, words between groups,
    # a card and its code or expiry in one breath
    ("٤١١١ ١١١١ ١١١١ ١١١١", "[card]"),
    ("４１１１１１１１１１１１１１１１", "[card]"),
    ("4111\u200b1111\u200b1111\u200b1111", "[card]"),
    ("four one one one dash one one one one dash one one one one dash one one one one", "[card]"),
    ("4111 1111 and 1111 1111", "[card]"),
    ("4111 1111 1111 1111 12 25", "[card] 12 25"),
    ("4111 1111 1111 1111 123", "[card] 123"),
    ("four one one one one one one one one one one one one one one one one two three", "[card] one two three"),
    (
        "three seven eight two eight two two four six three one oh oh oh five one two two seven",
        "[card] one two two seven",
    ),
    # SSNs: written forms anywhere, any nine digits after "social"/"SSN"; never-issued numbers stay
    ("My SSN is 123-45-6789.", "My SSN is [ssn]."),
    ("ssn 123 45 6789", "ssn [ssn]"),
    ("ref 123-45-6789 thanks", "ref [ssn] thanks"),
    (
        "my social security number is one two three, four five, six seven eight nine",
        "my social security number is [ssn]",
    ),
    ("my social is 123456789", "my social is [ssn]"),
    ("my s s n is five one two, three four, five six seven eight", "my s s n is [ssn]"),
    ("SSN 666-12-3456", "SSN 666-12-3456"),
    ("SSN 000-12-3456", "SSN 000-12-3456"),
    ("SSN 912-34-5678", "SSN 912-34-5678"),
    ("SSN 123-00-4567", "SSN 123-00-4567"),
    ("SSN 123-45-0000", "SSN 123-45-0000"),
    ("order 123456789", "order 123456789"),
    ("one two three four five six seven eight nine", "one two three four five six seven eight nine"),
    # phone numbers: US in several formats, words, a toll-free number, a +44 one; fictional 555s stay
    ("Call me at (415) 555-2671.", "Call me at [phone]."),
    ("my number is 415-555-2671", "my number is [phone]"),
    ("415.555.2671", "[phone]"),
    ("+1 415 555 2671 or later", "[phone] or later"),
    ("call four one five, five five five, two six seven one", "call [phone]"),
    ("it's four one five five five five two six seven one thanks", "it's [phone] thanks"),
    ("Oh, four one five five five five two six seven one.", "Oh, [phone]."),
    ("one eight hundred five five five oh one nine nine", "[phone]"),
    ("London +44 20 7946 0958.", "London [phone]."),
    ("plus four four two oh, seven nine four six, oh nine five eight", "[phone]"),
    ("555 123 4567", "555 123 4567"),
    # emails, written and spoken
    ("write to john.smith@example.com.", "write to [email]."),
    ("JOHN_SMITH+tag@mail.example.co.uk", "[email]"),
    ("it's john dot smith at example dot com", "it's [email]"),
    ("j o h n at gmail dot com please", "[email] please"),
    ("john.smith at example.org", "[email]"),
    ("reach me at example dot com", "reach me at example dot com"),
    ("meet me at noon. Come early", "meet me at noon. Come early"),
    ("I'm at home dot com", "I'm at home dot com"),
    ("four one five dash five five five dash two six seven one", "[phone]"),
    # nothing to redact: amounts, dates, times, short order numbers, counts
    ("I paid 210 dollars on the fifth", "I paid 210 dollars on the fifth"),
    ("The meeting is on 12/25/2024 at 10:30.", "The meeting is on 12/25/2024 at 10:30."),
    ("Order number 123456789012 shipped", "Order number 123456789012 shipped"),
    ("two thousand twenty four", "two thousand twenty four"),
    ("I have three kids, two dogs and one cat", "I have three kids, two dogs and one cat"),
    ("Room 404, floor 12, extension 2231", "Room 404, floor 12, extension 2231"),
    ("It costs $1,234,567.89 in total", "It costs $1,234,567.89 in total"),
    ("", ""),
    # mixtures in one sentence
    (
        "Card 4111111111111111, phone 415-555-2671, email a.b@example.org, SSN 123-45-6789.",
        "Card [card], phone [phone], email [email], SSN [ssn].",
    ),
    (
        "card five five five five five five five five five five five five four four four four and my cell is "
        "four one five five five five two six seven one, or mail mary at example dot org",
        "card [card] and my cell is [phone], or mail [email]",
    ),
]


@pytest.mark.parametrize(("said", "kept"), CORPUS)
def test_corpus(said: str, kept: str) -> None:
    assert ALL.text(said) == kept


@pytest.mark.parametrize(("said", "kept"), [(said, kept) for said, kept in CORPUS if said])
def test_corpus_as_timed_words(said: str, kept: str) -> None:
    """The same corpus as an utterance of Whisper words (one per space): the text and the words agree."""
    out, spans = ALL.utterance(utterance(said))
    assert out["text"] == kept == "".join(w["word"] for w in out["words"]).strip()
    assert len(spans) == sum("[" in w["word"] for w in out["words"]) == kept.count("[")


def test_the_corpus_is_large_and_its_oracles_agree() -> None:
    assert len(CORPUS) >= 40
    for card in TEST_CARDS:
        assert other_luhn(card) and luhn_ok(card)
        wrong = card[:-1] + str((int(card[-1]) + 1) % 10)
        assert not other_luhn(wrong) and not luhn_ok(wrong)
    for number in ["+1 415 555 2671", "+44 20 7946 0958", "+1 800 555 0199"]:
        assert phonenumbers.is_valid_number(phonenumbers.parse(number))
    assert not phonenumbers.is_valid_number(phonenumbers.parse("555 123 4567", "US"))


@pytest.mark.parametrize(
    ("kinds", "said", "kept"),
    [
        ({"email"}, "4111 1111 1111 1111 or a@b.io", "4111 1111 1111 1111 or [email]"),
        ({"card"}, "call 415-555-2671 about 4111111111111111", "call 415-555-2671 about [card]"),
        ({"phone"}, "call 415-555-2671, SSN 123-45-6789", "call [phone], SSN 123-45-6789"),
        ({"ssn"}, "SSN 123-45-6789 and 4111111111111111", "SSN [ssn] and 4111111111111111"),
        (set(), "4111111111111111 a@b.io", "4111111111111111 a@b.io"),
    ],
)
def test_only_the_kinds_asked_for(kinds: set[str], said: str, kept: str) -> None:
    assert Redactor(kinds).text(said) == kept


def test_the_default_region_is_a_setting() -> None:
    assert ALL.text("ring 020 7946 0958") == "ring 020 7946 0958"  # not a US number
    assert Redactor(KINDS, region="GB").text("ring 020 7946 0958") == "ring [phone]"
    with pytest.raises(ValueError, match="'XX'"):
        Redactor(KINDS, region="XX")


def test_a_card_said_with_its_expiry_in_one_breath_is_still_redacted() -> None:
    """More than 19 digits cannot be one card: every Luhn-valid stretch of 13-19 is redacted, wherever."""
    for card in TEST_CARDS:
        for said in (f"{spoken(card)} one two two seven", f"{card} 1227", f"{spoken(card)} one two three"):
            out = Redactor({"card"}).text(said)
            assert "[card]" in out
            assert not re.search(r"\d{5}", out.replace(" ", "")), out


@pytest.mark.parametrize(
    ("said", "digits"),
    [
        ("forty-two", ["42"]),
        ("forty two", ["42"]),
        ("double oh seven", ["007"]),
        ("triple 5", ["555"]),
        ("one eight hundred five", ["18005"]),
        ("five hundred twenty three", ["523"]),
        ("nineteen eighty four", ["1984"]),
        ("for one one", ["411"]),
        ("waiting for 555", ["555"]),
        ("I want to go", []),
        ("Oh, five five", ["055"]),
        ("two thousand", ["2"]),
        ("one, uh, two - three", ["123"]),
    ],
)
def test_numbers_as_said(said: str, digits: list[str]) -> None:
    assert [run.digits for run in find_runs(tokenize(said))] == digits


def test_ssn_rules() -> None:
    assert ssn_ok("123456789") and ssn_ok("665000001") is False and ssn_ok("899991234")
    assert not any(ssn_ok(n) for n in ["000123456", "666123456", "900123456", "123004567", "123450000"])


def test_parse_kinds() -> None:
    assert parse_kinds("") == frozenset() and parse_kinds(" none ") == frozenset()
    assert parse_kinds("card,ssn, phone ,EMAIL") == frozenset(KINDS)
    assert parse_kinds("card,,card") == frozenset({"card"})
    with pytest.raises(ValueError, match=r"'iban'.*card, ssn, phone, email"):
        parse_kinds("card,iban")
    with pytest.raises(ValueError, match="'none'"):
        parse_kinds("none,card")
    with pytest.raises(ValueError, match="'iban'"):
        Redactor({"iban"})


def words_of(text: str, start: float = 10.0, step: float = 0.5, space: str = " ") -> list[dict[str, Any]]:
    return [
        {"word": space + w, "start": start + i * step, "end": start + i * step + 0.4, "confidence": 0.99 - i / 100}
        for i, w in enumerate(text.split())
    ]


def utterance(text: str, space: str = " ", **extra: Any) -> dict[str, Any]:
    words = words_of(text, space=space)
    return {"text": text, "start": 10.0, "end": words[-1]["end"], "words": words, "channel": 1, **extra}


def test_an_utterance_keeps_its_words_timings_and_other_keys() -> None:
    said = utterance("My card is four one one one, 1111 1111 1111. Thanks.", language="en", id="u1")
    before = copy.deepcopy(said)
    out, spans = ALL.utterance(said)
    assert said == before  # not mutated
    assert out["text"] == "My card is [card]. Thanks."
    assert [w["word"] for w in out["words"]] == [" My", " card", " is", " [card].", " Thanks."]
    card = out["words"][3]
    assert card == {"word": " [card].", "start": 11.5, "end": 14.9, "confidence": pytest.approx(0.90)}
    assert out["words"][4] == said["words"][10] and out["words"][:3] == said["words"][:3]
    assert spans == [(11.5, 14.9)]
    assert {k: out[k] for k in ("start", "end", "channel", "language", "id")} == {
        k: said[k] for k in ("start", "end", "channel", "language", "id")
    }
    assert out["text"] == "".join(w["word"] for w in out["words"]).strip()


def test_several_redactions_in_one_utterance() -> None:
    said = utterance("card 4111111111111111 and mail john at example dot com or call 415-555-2671 ok")
    out, spans = ALL.utterance(said)
    assert out["text"] == "card [card] and mail [email] or call [phone] ok"
    assert [w["word"] for w in out["words"]] == [
        *[" card", " [card]", " and", " mail", " [email]", " or", " call", " [phone]", " ok"]
    ]
    assert spans == [(10.5, 10.9), (12.0, 14.4), (15.5, 15.9)]


def test_words_without_leading_spaces_and_a_text_that_differs() -> None:
    said = utterance("SSN 123-45-6789 please", space="")
    said["text"] = "S.S.N. 123-45-6789, please"  # the text says more than the words: written from them
    out, spans = ALL.utterance(said)
    assert [w["word"] for w in out["words"]] == ["SSN", "[ssn]", "please"]
    assert out["text"] == "SSN [ssn] please"
    assert spans == [(10.5, 10.9)]


def test_punctuation_of_the_text_between_words_is_kept() -> None:
    said = utterance("Email: a.b@example.org, thanks!")
    said["text"] = "Email:  a.b@example.org,   thanks!"
    out, _ = ALL.utterance(said)
    assert out["text"] == "Email:  [email],   thanks!"


def test_a_word_continuing_the_one_before_and_odd_entries() -> None:
    """Whisper's words carry a leading space; one without it continues the word before (``john`` +
    ``.smith@example.com``). Blank words inside a redacted run go with it; entries that are not words
    are kept as they are; a word without a confidence does not count for the lowest."""
    said: dict[str, Any] = {
        "text": "mail john.smith@example.com now",
        "words": [
            {"word": " mail", "start": 0.0, "end": 0.4, "confidence": 0.9},
            {"word": " john", "start": 0.5, "end": 0.8, "confidence": 0.8},
            {"word": " ", "start": 0.8, "end": 0.8, "confidence": 0.1},
            {"word": ".smith@example.com", "start": 0.8, "end": 1.9},
            "noise",
            {"word": " now", "start": 2.0, "end": 2.2, "confidence": 0.95},
        ],
    }
    out, spans = ALL.utterance(said)
    assert out["words"] == [
        said["words"][0],
        {"word": " [email]", "start": 0.5, "end": 1.9, "confidence": 0.1},
        "noise",
        said["words"][5],
    ]
    assert out["text"] == "mail [email] now" and spans == [(0.5, 1.9)]


def test_the_text_never_keeps_what_the_words_do_not_say() -> None:
    """Aligned words and text whose punctuation joins what the words keep apart (``john`` ``@`` ...):
    the text is the words' text, not the text with an email in it."""
    said = utterance("write john example.com today")
    said["text"] = "write john@example.com today"
    out, spans = ALL.utterance(said)
    assert out["text"] == "write john example.com today" and spans == []
    assert out["words"] == said["words"]


def test_an_utterance_without_words_or_with_nothing_to_redact() -> None:
    out, spans = ALL.utterance({"text": "card 4111 1111 1111 1111", "start": 1.0, "end": 2.0})
    assert out == {"text": "card [card]", "start": 1.0, "end": 2.0} and spans == []
    out, spans = ALL.utterance({"text": "card 4111 1111 1111 1111", "words": []})
    assert out["text"] == "card [card]" and spans == []
    plain = utterance("I paid 210 dollars on the fifth")
    out, spans = ALL.utterance(plain)
    assert out == plain and out is not plain and out["words"] is not plain["words"] and spans == []
    out, spans = Redactor(()).utterance(utterance("4111 1111 1111 1111"))
    assert out["text"] == "4111 1111 1111 1111" and spans == []


def test_a_luhn_invalid_number_in_words_is_left() -> None:
    said = utterance(spoken("4111111111111112"))
    out, spans = Redactor({"card"}).utterance(said)
    assert out == said and spans == []


@st.composite
def luhn_numbers(draw: st.DrawFn, valid: bool = True) -> str:
    body = str(draw(st.integers(1, 9))) + "".join(
        str(d) for d in draw(st.lists(st.integers(0, 9), min_size=14, max_size=14))
    )
    check = next(str(d) for d in range(10) if other_luhn(body + str(d)))
    if not valid:
        check = str((int(check) + draw(st.integers(1, 9))) % 10)
    return body + check


@settings(max_examples=200, deadline=None)
@given(luhn_numbers(), st.sampled_from(["", "my card is ", "it's "]))
def test_any_valid_card_spoken_or_written_is_redacted(number: str, before: str) -> None:
    grouped = " ".join(number[i : i + 4] for i in range(0, 16, 4))
    for said in (spoken(number), grouped, number, "-".join(grouped.split())):
        assert ALL.text(before + said) == before + "[card]"
        assert Redactor({"card"}).text(before + said) == before + "[card]"


@settings(max_examples=200, deadline=None)
@given(luhn_numbers(valid=False))
def test_no_invalid_card_is_redacted_as_a_card(number: str) -> None:
    grouped = " ".join(number[i : i + 4] for i in range(0, 16, 4))
    for said in (spoken(number), grouped, number):
        assert Redactor({"card"}).text(said) == said


@settings(max_examples=200, deadline=None)
@given(luhn_numbers())
def test_a_spoken_card_over_whisper_words_is_one_word(number: str) -> None:
    said = utterance("it is " + spoken(number) + " thanks")
    out, spans = ALL.utterance(said)
    assert [w["word"] for w in out["words"]] == [" it", " is", " [card]", " thanks"]
    assert spans == [(said["words"][2]["start"], said["words"][17]["end"])]
    assert out["text"] == "it is [card] thanks"


NUMBER_WORDS = {*UNITS, *TEENS, *TENS, *MULTIPLIERS, *HOMOPHONES, "hundred", "plus", "at", "dot"}


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEF .,;:!?'-()", max_size=200))
def test_text_without_numbers_or_emails_is_never_changed(text: str) -> None:
    assume(not NUMBER_WORDS & set(re.findall(r"[a-z]+", text.lower())))
    assert ALL.text(text) == text


SALAD = [
    *DIGIT_WORDS,
    *["oh", "o", "double", "triple", "forty", "eleven", "hundred", "and", "dash", "uh", "for", "to", "plus"],
    *["at", "dot", "com", "social", "ssn", "s", "n", "john", "example", "gmail", "x", ",", ".", "-", "@"],
    *["4111", "1111", "415", "555", "2671", "123", "45", "6789"],
]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(SALAD), min_size=1, max_size=30))
def test_words_and_text_always_agree(words: list[str]) -> None:
    """Whatever is said, the redacted utterance's text is its words' text, and what the plain text gives."""
    said = " ".join(words)
    out, spans = ALL.utterance(utterance(said))
    assert out["text"] == "".join(w["word"] for w in out["words"]).strip() == ALL.text(said)
    assert len(spans) == out["text"].count("[")
