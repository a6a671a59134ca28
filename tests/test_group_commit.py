"""The writer thread shared by the outbox and the transcript store (bridge.group_commit.GroupWriter): a
store that fails is retried with the batch kept in order, each change of state is told once, what does
not fit is refused and counted, and close is bounded. A store of a few lines stands in for SQLite."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable

import pytest

from bridge.group_commit import GroupWriter

pytestmark = pytest.mark.timeout(30)


class FlakyStore:
    """Commits into a list; fails while ``failing`` is set (as a full disk would)."""

    def __init__(self) -> None:
        self.rows: list[int] = []
        self.failing = threading.Event()
        self.attempts = 0

    def commit(self, batch: list[int]) -> None:
        self.attempts += 1
        if self.failing.is_set():
            raise sqlite3.OperationalError("database or disk is full")
        self.rows.extend(batch)


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.005)


def test_a_failing_store_keeps_the_batch_reports_once_and_recovers() -> None:
    store = FlakyStore()
    told: list[str] = []
    writer: GroupWriter[int] = GroupWriter(
        store.commit,
        name="test-writer",
        bound=5,
        commit_delay=0.0,
        max_batch=3,
        retry_seconds=0.02,
        on_state_change=lambda reason: told.append(f"state:{reason}"),
        on_failure=lambda: told.append("failure"),
        on_committed=lambda waiting: told.append(f"committed:{waiting}"),
    )
    store.failing.set()
    accepted = [writer.put(i) for i in range(8)]
    assert accepted == [True] * 5 + [False] * 3 and writer.dropped == 3  # the bound: refused, counted
    writer.start()
    try:
        wait_until(lambda: writer.write_failures >= 3)
        assert writer.degraded == "OperationalError: database or disk is full"
        assert writer.queued == 5 and not store.rows
        store.failing.clear()
        assert writer.flush(5)
    finally:
        assert writer.close(5)
    assert store.rows == [0, 1, 2, 3, 4]  # in order, none lost while failing
    assert writer.degraded is None and writer.committed == 5 and writer.dropped == 3
    states = [t for t in told if t.startswith("state:")]
    assert states == ["state:OperationalError: database or disk is full", "state:None"]  # once each
    assert told.count("failure") == writer.write_failures
    after = told.index("state:None")
    assert told[after + 1] == "committed:2"  # the first batch after recovery (3 of 5), then the rest
    assert told[-1] == "committed:0"


def test_close_counts_what_is_left_and_refuses_more() -> None:
    """A store that never recovers: close waits at most its timeout, then counts what is still queued
    as dropped; changes after close are refused and counted too."""
    store = FlakyStore()
    store.failing.set()
    writer: GroupWriter[int] = GroupWriter(
        store.commit, name="test-writer", bound=100, commit_delay=0.0, max_batch=10, retry_seconds=0.05
    )
    writer.start()
    for i in range(4):
        assert writer.put(i)
    wait_until(lambda: writer.degraded is not None)
    t0 = time.monotonic()
    assert writer.close(0.2)  # the thread stops (it is between retries, not in a commit)
    assert time.monotonic() - t0 < 2.0
    assert writer.closing and writer.dropped == 4 and not store.rows
    assert not writer.put(99) and writer.dropped == 5


def test_an_idle_writer_says_so_and_a_writer_never_started_closes() -> None:
    store = FlakyStore()
    idle = threading.Event()
    writer: GroupWriter[int] = GroupWriter(
        store.commit,
        name="test-writer",
        bound=10,
        commit_delay=0.01,
        max_batch=10,
        retry_seconds=0.05,
        on_idle=idle.set,
    )
    writer.start()
    assert writer.put(1) and writer.flush(5)
    assert idle.wait(5)
    assert writer.close(1) and store.rows == [1] and writer.committed == 1
    unstarted: GroupWriter[int] = GroupWriter(
        store.commit, name="test-writer", bound=10, commit_delay=0.0, max_batch=10, retry_seconds=0.05
    )
    assert unstarted.put(2)
    assert unstarted.close(0.05) and unstarted.dropped == 1
