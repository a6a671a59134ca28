"""The local engine's prompt (bridge.local_stt.context): the session's vocabulary as Gladia's API carries
it, each channel's own previous finals, and the bounds on both."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.local_stt.context import MAX_HISTORY_CHARS, MAX_WORD_CHARS, MAX_WORDS, CallContext, vocabulary


def _realtime(entries: Any, on: Any = True) -> dict[str, Any]:
    return {"custom_vocabulary": on, "custom_vocabulary_config": {"vocabulary": entries}}


def test_the_vocabulary_is_read_as_gladia_carries_it() -> None:
    entries = ["Gladia", {"value": "  Twilio   Media\nStreams ", "intensity": 0.4}, {"value": ""}, 12, None, {"x": 1}]
    assert vocabulary(_realtime(entries)) == ("Gladia", "Twilio Media Streams")


@pytest.mark.parametrize(
    "realtime",
    [
        None,
        {},
        _realtime(["Gladia"], on=False),  # switched off
        _realtime(["Gladia"], on="yes"),
        {"custom_vocabulary": True},
        {"custom_vocabulary": True, "custom_vocabulary_config": []},
        _realtime("Gladia"),
        "realtime",
    ],
)
def test_no_vocabulary_unless_switched_on_and_listed(realtime: Any) -> None:
    assert vocabulary(realtime) == ()


def test_the_vocabulary_is_bounded() -> None:
    words = vocabulary(_realtime(["w" * 1000] * (MAX_WORDS + 500)))
    assert len(words) == MAX_WORDS and all(len(w) == MAX_WORD_CHARS for w in words)


def test_no_prompt_before_anything_is_known() -> None:
    assert CallContext(2, history=True).prompt(0) is None and CallContext(2).prompt(1) is None


def test_without_history_the_prompt_is_the_vocabulary_alone() -> None:
    context = CallContext(1, ("Gladia",))
    context.heard(0, "I'd like to pay my bill.")
    assert context.prompt(0) == "Gladia."
    context = CallContext(1)
    context.heard(0, "I'd like to pay my bill.")
    assert context.prompt(0) is None


def test_each_channel_keeps_its_own_history_after_the_vocabulary() -> None:
    context = CallContext(2, ("Gladia", "Twilio"), history=True)
    assert context.prompt(0) == context.prompt(1) == "Gladia, Twilio."
    context.heard(0, " I'd like to pay  my bill.")
    context.heard(1, "Sure, what is your account number?")
    context.heard(0, "It is 4 5 6")  # a final without an end gets one: the next piece is a new sentence
    assert context.prompt(0) == "Gladia, Twilio. I'd like to pay my bill. It is 4 5 6."
    assert context.prompt(1) == "Gladia, Twilio. Sure, what is your account number?"


def test_the_history_keeps_its_last_characters_cut_at_a_word() -> None:
    context = CallContext(1, history=True)
    for n in range(100):
        context.heard(0, f"sentence number {n} is here.")
    prompt = context.prompt(0)
    assert prompt is not None and len(prompt) <= MAX_HISTORY_CHARS
    assert prompt.endswith("sentence number 99 is here.")
    assert prompt.split()[0] in {"sentence", "number", "is", "here."} or prompt.split()[0].isdigit()
    context.heard(0, "x" * (MAX_HISTORY_CHARS * 3))  # one word longer than the bound: nothing of it is kept
    assert context.prompt(0) is None
