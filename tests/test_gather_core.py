"""The gather core without an event loop: keys and times in, one outcome out.

The rules are the carriers' own for their gather verbs, which bots already know: Twilio's ``<Gather>``
(https://www.twilio.com/docs/voice/twiml/gather: ends on ``numDigits`` keys, on ``finishOnKey``, ``#`` by
default and "" for none, which is not among the digits, or on ``timeout`` seconds without a key) and
Telnyx's TeXML ``<Gather>`` (https://developers.telnyx.com/docs/voice/programmable-voice/texml-verbs/gather:
the timeout starts once the nested verbs, the prompt, have been executed)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.reply.gather import MAX_DIGITS, Gathered, Gathering


def gathering(
    *,
    num_digits: int | None = 4,
    finish_on_key: str = "#",
    timeout_ms: int = 8000,
    inter_digit_timeout_ms: int = 3000,
    now: float = 100.0,
    waits_for_prompt: bool = False,
) -> Gathering:
    return Gathering(
        "g1",
        num_digits=num_digits,
        finish_on_key=finish_on_key,
        timeout_ms=timeout_ms,
        inter_digit_timeout_ms=inter_digit_timeout_ms,
        now=now,
        waits_for_prompt=waits_for_prompt,
    )


def test_it_ends_on_the_number_of_digits() -> None:
    """The fourth key of a four-digit gather ends it at once, with those four keys."""
    g = gathering()
    assert [g.key(d, 101.0 + i) for i, d in enumerate("123")] == [None, None, None]
    assert g.key("4", 104.0) == Gathered("g1", "1234", "num_digits")
    assert not g.running and g.next_due() is None


def test_the_finishing_key_ends_it_and_is_not_a_digit() -> None:
    g = gathering(num_digits=None)
    for i, d in enumerate("42*"):
        assert g.key(d, 101.0 + i) is None
    assert g.key("#", 104.0) == Gathered("g1", "42*", "finish_on_key")


def test_the_finishing_key_alone_gives_no_digits() -> None:
    assert gathering().key("#", 101.0) == Gathered("g1", "", "finish_on_key")


def test_another_finishing_key_and_none() -> None:
    """``finish_on_key: "*"`` ends on a star (``#`` is then a digit); ``""`` has no finishing key."""
    star = gathering(num_digits=None, finish_on_key="*")
    assert star.key("#", 101.0) is None
    assert star.key("*", 101.5) == Gathered("g1", "#", "finish_on_key")
    none = gathering(num_digits=2, finish_on_key="")
    assert none.key("#", 101.0) is None
    assert none.key("#", 101.5) == Gathered("g1", "##", "num_digits")


def test_no_key_at_all_times_out_after_timeout_ms() -> None:
    g = gathering(timeout_ms=5000, now=100.0)
    assert g.next_due() == pytest.approx(105.0)
    assert g.tick(104.999) is None
    assert g.tick(105.0) == Gathered("g1", "", "timeout")


def test_the_first_key_timeout_counts_from_the_end_of_the_prompt() -> None:
    """While the prompt plays, no clock runs (the caller must hear the question); its end starts it."""
    g = gathering(timeout_ms=5000, now=100.0, waits_for_prompt=True)
    assert g.next_due() is None and g.tick(200.0) is None
    g.prompt_done(210.0)
    assert g.next_due() == pytest.approx(215.0)
    g.prompt_done(212.0)  # only the first end counts
    assert g.next_due() == pytest.approx(215.0)
    assert g.tick(214.9) is None
    assert g.tick(215.0) == Gathered("g1", "", "timeout")


def test_a_key_during_the_prompt_starts_the_inter_digit_timeout() -> None:
    g = gathering(inter_digit_timeout_ms=3000, waits_for_prompt=True)
    assert g.key("7", 150.0) is None
    assert g.next_due() == pytest.approx(153.0)
    g.prompt_done(151.0)  # the prompt (interrupted by that key) ending changes nothing now
    assert g.next_due() == pytest.approx(153.0)


def test_after_a_key_the_inter_digit_timeout_applies() -> None:
    """Keys came, then none for ``inter_digit_timeout_ms``: it times out with the keys so far."""
    g = gathering(timeout_ms=8000, inter_digit_timeout_ms=2000, now=100.0)
    assert g.key("1", 107.0) is None  # before the first-key timeout (108.0)
    assert g.next_due() == pytest.approx(109.0)
    assert g.key("2", 108.5) is None
    assert g.next_due() == pytest.approx(110.5)
    assert g.tick(110.4) is None
    assert g.tick(110.5) == Gathered("g1", "12", "timeout")


def test_a_key_after_the_time_is_up_does_not_count() -> None:
    """A key that comes after the timeout's time (the timer fired late) is not one of the digits: the
    outcome is the timeout, with what came before it."""
    g = gathering(inter_digit_timeout_ms=2000, now=100.0)
    g.key("1", 101.0)
    assert g.key("2", 103.5) == Gathered("g1", "1", "timeout")
    assert g.key("3", 103.6) is None


def test_replaced_and_hangup_end_it_with_the_keys_so_far() -> None:
    g = gathering()
    g.key("9", 101.0)
    assert g.end("replaced", 102.0) == Gathered("g1", "9", "replaced")
    h = gathering(waits_for_prompt=True)
    assert h.end("hangup", 500.0) == Gathered("g1", "", "hangup")


def test_a_timeout_already_due_wins_over_the_end() -> None:
    """The time had come before the end did: it timed out (the timer was merely late)."""
    g = gathering(timeout_ms=1000, now=100.0)
    assert g.end("hangup", 101.5) == Gathered("g1", "", "timeout")


def test_exactly_one_outcome() -> None:
    g = gathering(num_digits=1)
    assert g.key("5", 101.0) == Gathered("g1", "5", "num_digits")
    assert g.key("6", 101.1) is None and g.key("#", 101.2) is None
    assert g.tick(1000.0) is None and g.end("hangup", 1000.0) is None and g.end("replaced", 1000.0) is None
    assert g.next_due() is None


def test_without_num_digits_it_holds_at_most_max_digits() -> None:
    """However many keys a carrier reports, one gather holds a bounded number: the largest num_digits."""
    g = gathering(num_digits=None)
    outcomes = [g.key("1", 101.0 + i * 0.1) for i in range(MAX_DIGITS)]
    assert outcomes[:-1] == [None] * (MAX_DIGITS - 1)
    assert outcomes[-1] == Gathered("g1", "1" * MAX_DIGITS, "num_digits")


def test_the_digits_stay_out_of_the_repr() -> None:
    """An outcome printed or logged by mistake shows no digits (a PIN, a card number)."""
    outcome = Gathered("g1", "4929123412341234", "finish_on_key")
    assert "4929" not in repr(outcome) and "g1" in repr(outcome)


KEYS = "0123456789*#ABCD"
Step = tuple[str, float, str]  # (what, after seconds, key)


@settings(max_examples=300, deadline=None)
@given(
    num_digits=st.one_of(st.none(), st.integers(1, 8)),
    finish_on_key=st.sampled_from(["#", "*", "1", ""]),
    waits=st.booleans(),
    steps=st.lists(
        st.tuples(
            st.sampled_from(["key", "tick", "prompt", "end"]),
            st.floats(0.0, 5.0, allow_nan=False),
            st.sampled_from(KEYS),
        ),
        max_size=40,
    ),
)
def test_exactly_one_outcome_whatever_comes(
    num_digits: int | None, finish_on_key: str, waits: bool, steps: list[Step]
) -> None:
    """Whatever keys, ticks, prompt ends and ends come in whatever order, a gather has exactly one
    outcome (the call's end always gives one), its digits are the keys it took in order without the
    finishing key, and nothing it reports is due before it ended."""
    if num_digits is None and not finish_on_key:
        finish_on_key = "#"  # the action's validation refuses a gather with no way to end but time
    g = gathering(
        num_digits=num_digits,
        finish_on_key=finish_on_key,
        timeout_ms=3000,
        inter_digit_timeout_ms=1500,
        now=0.0,
        waits_for_prompt=waits,
    )
    now, outcomes, taken = 0.0, [], ""
    for what, gap, key in steps:
        now += gap
        due = g.next_due()
        if what == "key":
            running = g.running
            outcome = g.key(key, now)
            if running and (due is None or now < due) and key != finish_on_key:
                taken += key
        elif what == "tick":
            outcome = g.tick(now)
        elif what == "prompt":
            g.prompt_done(now)
            outcome = None
        else:
            outcome = g.end("replaced", now)
        if outcome is not None:
            outcomes.append(outcome)
            assert outcome.reason != "timeout" or (due is not None and now >= due)
    final = g.end("hangup", now + 1.0)
    outcomes += [final] if final is not None else []
    assert len(outcomes) == 1
    assert outcomes[0].digits == taken
    assert outcomes[0].reason != "num_digits" or len(taken) == (num_digits or MAX_DIGITS)
