"""The one retry policy (pure): doubling from the initial delay, a ceiling, jitter around it."""

from __future__ import annotations

import pytest

from bridge.backoff import Backoff


def test_doubles_up_to_the_ceiling_without_jitter() -> None:
    b = Backoff(0.5, 4.0, jitter=0.0)
    assert [b.delay(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


@pytest.mark.parametrize("draw", [0.8, 1.2])
def test_jitter_stays_within_its_bounds(draw: float) -> None:
    """The factor is drawn in [1 - jitter, 1 + jitter] (here the random source returns its bound)."""
    b = Backoff(1.0, 10.0, jitter=0.2, uniform=lambda lo, hi: lo if draw < 1 else hi)
    assert b.delay(2) == pytest.approx(2.0 * draw)
