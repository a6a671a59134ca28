"""Which finals are new (pure, no event loop): after a reconnect, a new session, and a read-back."""

from __future__ import annotations

from bridge.stt.finals import FinalsTracker
from bridge.stt.protocol import Utterance


def utt(start: float, end: float, text: str = "x", channel: int = 0) -> Utterance:
    return Utterance(start=start, end=end, text=text, language="en", confidence=0.9, channel=channel, words=())


def test_a_final_sent_again_after_a_reconnect_is_dropped_and_counted() -> None:
    """The same id, or an end not after the last one, is a duplicate."""
    t = FinalsTracker()
    assert t.accept("s1", "00_1", utt(0.0, 1.0))
    assert not t.accept("s1", "00_1", utt(0.0, 1.0))
    assert not t.accept("s1", None, utt(0.5, 1.0))
    assert t.accept("s1", "00_2", utt(1.0, 2.0))
    assert t.duplicates == 2


def test_a_new_session_starts_its_times_and_ids_over() -> None:
    """After a lost session, the new one's first final (time 0, id 00_1 again) is new."""
    t = FinalsTracker()
    assert t.accept("s1", "00_1", utt(0.0, 3.0))
    t.new_session()
    assert t.accept("s2", "00_1", utt(0.0, 1.0))


def test_a_read_back_gives_only_the_finals_that_never_arrived() -> None:
    """Read back after the call: what ends after the last delivered final of that session, with text."""
    t = FinalsTracker()
    t.accept("s1", "00_1", utt(0.0, 1.0))
    missed = t.missed("s1", [utt(0.0, 1.0), utt(1.0, 2.0, ""), utt(2.0, 3.0), utt(3.0, 4.0)])
    assert [(i, u.end) for i, u in missed] == [(2, 3.0), (3, 4.0)]
    assert t.missed("s1", [utt(2.0, 3.0), utt(3.0, 4.0)]) == []  # not delivered twice


def test_two_parties_finals_overlapping_in_time_are_both_new() -> None:
    """Both parties as two channels: the agent's final (channel 1) ending before the caller's that came
    first is new, not a duplicate; repeats are still caught per channel, and in the read-back."""
    t = FinalsTracker()
    assert t.accept("s1", "00_1", utt(0.0, 4.0, channel=0))
    assert t.accept("s1", "01_1", utt(1.0, 3.0, channel=1))  # overlaps, ends earlier: the other party
    assert not t.accept("s1", None, utt(1.0, 3.0, channel=1))
    assert not t.accept("s1", None, utt(2.0, 3.5, channel=0))
    missed = t.missed("s1", [utt(0.0, 4.0), utt(1.0, 3.0, channel=1), utt(3.5, 5.0, channel=1), utt(4.0, 6.0)])
    assert [(i, u.channel) for i, u in missed] == [(2, 1), (3, 0)]
    assert t.duplicates == 2
