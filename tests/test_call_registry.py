"""The call registry (:mod:`bridge.call.registry`): what it finds by id, and how many ended ids it keeps."""

from __future__ import annotations

from typing import cast

from bridge.call.lifetime import Call
from bridge.call.registry import CallRegistry


def test_a_live_call_is_found_by_its_id_and_an_unknown_id_is_not() -> None:
    """``find`` returns a live call by id and None for an id it does not hold."""
    calls = CallRegistry()
    call = cast(Call, object())  # a stand-in: the registry only keeps it
    calls.live["c1"] = call
    assert calls.find("c1") is call
    assert calls.find("c2") is None


def test_ended_ids_are_remembered_up_to_the_bound_oldest_forgotten_first() -> None:
    """Past ``max_ended`` ended ids, the oldest is forgotten (the bot API then answers 404, not 409)."""
    calls = CallRegistry(max_ended=2)
    for call_id in ("a", "b", "c"):
        calls.call_ended(call_id)
    assert not calls.has_ended("a")
    assert calls.has_ended("b") and calls.has_ended("c")


def test_a_new_registry_holds_nothing_and_takes_new_calls() -> None:
    """A fresh registry: no stream, no call, nothing suspended, not draining."""
    calls = CallRegistry(max_suspended=3)
    assert not calls.streams and not calls.live and len(calls.suspended) == 0
    assert calls.suspended.limit == 3 and not calls.draining
