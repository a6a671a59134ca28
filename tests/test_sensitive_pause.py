"""The sensitive pause's pure core (bridge.reply.sensitive): holders, the maximum, what it covers."""

from __future__ import annotations

import pytest

from bridge.reply.sensitive import EDGE_S, MAX_SPANS, SensitivePause


def test_a_pause_runs_while_any_holder_holds_it() -> None:
    p = SensitivePause(max_s=120)
    assert p.hold("configure", now=100.0, at=10.0) and p.active
    assert not p.hold("gather", now=101.0, at=11.0)  # already running
    assert p.release("configure", now=102.0, at=12.0) is None and p.active  # the gather still holds it
    assert p.release("gather", now=105.0, at=15.0) == pytest.approx(5.0) and not p.active
    assert p.release("gather", now=106.0, at=16.0) is None  # nothing to end
    assert p.pauses == 1 and p.spans == [(10.0, 15.0)] and p.paused_s(200.0) == pytest.approx(5.0)


def test_the_maximum_is_due_from_the_start_and_ending_all_counts_a_timeout() -> None:
    p = SensitivePause(max_s=120)
    assert p.due() is None
    p.hold("configure", now=50.0, at=3.0)
    assert p.due() == pytest.approx(170.0)
    assert p.paused_s(60.0) == pytest.approx(10.0)  # the running pause counts
    assert p.end_all(170.0, 123.0, timed_out=True) == pytest.approx(120.0)
    assert p.timed_out == 1 and not p.active and p.due() is None and not p.holders
    assert p.end_all(171.0, 124.0) is None


@pytest.mark.parametrize(
    ("start", "end", "covered"),
    [
        (1.0, 4.0, False),  # well before
        (1.0, 10.0 - EDGE_S + 0.1, True),  # ends on the edge before the pause: said as it began
        (9.0, 12.0, True),  # across the start
        (12.0, 14.0, True),  # inside
        (19.0, 22.0, True),  # across the end
        (20.5, 23.0, False),  # after
    ],
)
def test_an_utterance_is_covered_when_it_touches_a_past_pause(start: float, end: float, covered: bool) -> None:
    p = SensitivePause(max_s=120)
    p.hold("configure", now=0.0, at=10.0)
    p.release("configure", now=10.0, at=20.0)
    assert p.covers(start, end) is covered


def test_the_running_pause_covers_everything_from_its_start() -> None:
    p = SensitivePause(max_s=120)
    p.hold("gather", now=0.0, at=30.0)
    assert p.covers(31.0, 32.0) and p.covers(25.0, 29.8) and not p.covers(20.0, 29.0)


def test_spans_are_bounded_and_the_forgotten_counted() -> None:
    p = SensitivePause(max_s=120)
    for i in range(MAX_SPANS + 5):
        p.hold("configure", now=float(i), at=float(i))
        p.release("configure", now=i + 0.5, at=i + 0.5)
    assert len(p.spans) == MAX_SPANS and p.forgotten == 5 and p.pauses == MAX_SPANS + 5
