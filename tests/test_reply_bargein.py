"""Barge-in without an event loop: pause on speech, confirm on words, resume after quiet, echo ignored."""

from __future__ import annotations

import pytest

from bridge.reply.bargein import BargeIn, BargeInPolicy, is_echo, words_of
from bridge.reply.playout import PlaybackInterrupted, Playout, Segment, SendClear


def playing(text: str = "Your balance is one thousand two hundred dollars.") -> tuple[Playout, BargeIn]:
    playout = Playout(bytes_per_ms=8.0, frame_bytes=160, silence_byte=0xFF)
    playout.add(Segment("a1", b"\x11" * 8 * 3000, text=text), now=0.0)
    for i in range(1, 51):
        playout.tick(i * 0.02)
    return playout, BargeIn(playout, BargeInPolicy())


def test_speech_pauses_and_two_words_confirm() -> None:
    playout, barge = playing()
    assert barge.speech_started(1.0) == [SendClear()] and playout.paused
    assert barge.words("stop", 1.2) == []  # one word is not enough
    out = barge.words("stop please", 1.4)
    (ended,) = [o for o in out if isinstance(o, PlaybackInterrupted)]
    assert ended.reason == "speech" and ended.played_ms == 1000 and not playout.playing


def test_quiet_after_a_false_start_resumes() -> None:
    playout, barge = playing()
    barge.speech_started(1.0)
    barge.speech_ended(1.3)
    assert barge.tick(3.2) == [] and barge.next_due() == pytest.approx(3.3)
    assert barge.tick(3.31) != [] and not playout.paused and barge.counters.resumed == 1


def test_speech_right_after_playback_starts_is_echo() -> None:
    playout, barge = playing()
    playout.interrupt(1.0, "stop")
    playout.add(Segment("a2", b"\x11" * 8 * 2000, text="Goodbye."), now=2.0)
    assert barge.speech_started(2.1) == [] and barge.counters.echo_ignored == 1 and not playout.paused


def test_the_bots_own_words_coming_back_do_not_interrupt_it() -> None:
    """A speakerphone: the caller's line carries the sentence already heard. Paused by the speech,
    the words match what was just played (not what is left of it), so nothing is confirmed."""
    playout, barge = playing()
    barge.speech_started(1.0)
    assert barge.words("your balance is one thousand", 1.5) == []
    assert barge.counters.echo_ignored == 1 and playout.paused and playout.playing
    assert barge.words("I want to speak to someone", 1.8) != []  # the caller's own words do


def test_echo_is_most_of_the_words_not_one() -> None:
    played = "Your balance is one thousand two hundred dollars."
    assert is_echo(words_of("balance is one thousand"), played)
    assert not is_echo(words_of("what is my balance today"), played)
    assert not is_echo(words_of("balance"), played)  # a single word is never taken as echo
