"""The shared transcript store on a real PostgreSQL (Debian's server, started on a loopback port for the
session: tests/support/postgres_server.py), and the SQLite store held to the same spec.

The first part runs the SQLite store's assertions (tests/test_transcripts.py, tests/test_transcript_addons.py)
against both stores, through the same public methods: what comes back must be the same dict. The second
part is the fleet's: two instances on one database (one killed mid-call by SIGKILL, the other finishing
the call), the server restarted under a writing store, a full queue, a server down at start-up, a batch
the server refuses in part. Each test has a database of its own.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from bridge.transcript_render import iso
from bridge.transcripts import FILENAME, TranscriptStore
from bridge.transcripts_pg import PgTranscriptStore
from tests.support.postgres_server import PostgresServer
from tests.test_transcript_addons import (
    ANALYSIS,
    ENTITIES,
    ES,
    FR,
    SENTIMENT,
    U1,
    U2,
    entities_item,
    expected_utterances,
    final,
    record_call,
    sentiment_item,
    translation_item,
)
from tests.test_transcripts import CALL, DAY, STARTED, UTTERANCES, fill, utt

pytestmark = pytest.mark.timeout(60)

Store = TranscriptStore | PgTranscriptStore
TABLES = ("calls", "utterances", "addons", "analyses")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """One PostgreSQL for the session (skips without the binaries on a developer's machine, fails under CI)."""
    server = PostgresServer()
    server.start()
    try:
        yield server
    finally:
        server.close()


def _admin_url(server: PostgresServer) -> str:
    return f"postgresql://{server.user}@127.0.0.1:{server.port}/postgres"


@pytest.fixture
def pg_url(pg_server: PostgresServer) -> Iterator[str]:
    """A fresh database of the session's server (started again if a test left it stopped)."""
    if pg_server.proc is None:
        pg_server.start()
    name = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(_admin_url(pg_server), autocommit=True) as db:
        db.execute(f"CREATE DATABASE {name}")
    yield f"postgresql://{pg_server.user}@127.0.0.1:{pg_server.port}/{name}"
    if pg_server.proc is None:
        pg_server.start()
    with psycopg.connect(_admin_url(pg_server), autocommit=True) as db:
        db.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@dataclass
class Backend:
    """A store kind: how to open one, and how to look at its tables behind its back."""

    kind: str
    open: Callable[..., Store]
    rows: Callable[[str], list[tuple[Any, ...]]]  # SQL -> rows


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":

        def sqlite_rows(sql: str) -> list[tuple[Any, ...]]:
            import sqlite3

            db = sqlite3.connect(tmp_path / FILENAME)
            try:
                return list(db.execute(sql))
            finally:
                db.close()

        return Backend("sqlite", lambda **o: TranscriptStore(tmp_path / FILENAME, **o), sqlite_rows)
    url: str = request.getfixturevalue("pg_url")

    def pg_rows(sql: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(url) as db:
            return db.execute(sql).fetchall()

    return Backend("postgres", lambda **o: PgTranscriptStore(url, **o), pg_rows)


def counts(backend: Backend) -> dict[str, int]:
    return {t: int(backend.rows(f"SELECT count(*) FROM {t}")[0][0]) for t in TABLES}


# -- one spec, both stores ---------------------------------------------------------------------------


def test_the_store_records_a_call_and_serves_it_back(backend: Backend) -> None:
    """tests/test_transcripts.py's: metadata, times, utterances in start order (a repeated id replaces
    the first), active until the end is recorded."""
    store = backend.open()
    try:
        store.call_started(CALL, STARTED)
        for u in UTTERANCES:
            store.utterance("call-1", u)
        store.utterance("call-1", {**UTTERANCES[0], "text": "Hello, I would like to check my balance."})
        assert store.flush(5)
        running = store.get("call-1")
        assert running is not None and running["active"] and running["ended_at"] is None
        store.call_ended("call-1", STARTED + 3730, "stop")
        assert store.flush(5)
        got = store.get("call-1")
        assert store.get("nope") is None
    finally:
        store.close()
    assert got is not None
    assert {k: got[k] for k in ("id", "provider", "call_sid", "stream_sid", "from", "to", "parameters")} == CALL
    assert got["started_at"] == "2026-05-28T20:26:40.000Z" and got["ended_at"] == "2026-05-28T21:28:50.000Z"
    assert got["end_reason"] == "stop" and got["active"] is False
    assert [u["id"] for u in got["utterances"]] == ["u1", "u2", "u3", "u4", "u5", "u6", "u7"]
    assert got["utterances"][0]["text"] == "Hello, I would like to check my balance."
    assert got["utterances"][2] == UTTERANCES[1]
    assert list(got) == [
        *("id", "provider", "call_sid", "stream_sid", "from", "to", "started_at", "ended_at", "end_reason"),
        *("active", "parameters", "utterances"),
    ]  # the SQLite store's key order too
    assert store.dropped == 0 and store.write_failures == 0 and store.committed == 1 + 8 + 1


def test_an_utterance_or_end_without_a_start_still_lands(backend: Backend) -> None:
    store = backend.open(clock=lambda: STARTED)
    try:
        store.utterance("orphan", utt("x", 0, 1.0, 2.0, "hello"))
        store.call_ended("late", STARTED + 5, "socket_closed")
        assert store.flush(5)
        orphan, late = store.get("orphan"), store.get("late")
    finally:
        store.close()
    assert orphan is not None and orphan["started_at"] == iso(STARTED) and len(orphan["utterances"]) == 1
    assert orphan["provider"] is None and orphan["parameters"] == {}
    assert late is not None and late["end_reason"] == "socket_closed" and late["utterances"] == []


def test_list_since_is_newest_first_and_bounded(backend: Backend) -> None:
    store = backend.open()
    try:
        fill(store, "old", STARTED - 100, STARTED - 90)  # type: ignore[arg-type]
        fill(store, "spanning", STARTED - 50, STARTED + 10, n=3)  # type: ignore[arg-type]
        fill(store, "new", STARTED + 20, None, n=1)  # type: ignore[arg-type]
        fill(store, "newest", STARTED + 30, STARTED + 40, n=0)  # type: ignore[arg-type]
        assert store.flush(5)
        listed = store.list_since(STARTED, 10)
        limited = store.list_since(STARTED, 2)
    finally:
        store.close()
    assert [c["id"] for c in listed] == ["newest", "new", "spanning"]
    assert [c["utterances"] for c in listed] == [0, 1, 3]
    assert listed[1]["active"] is True and listed[1]["ended_at"] is None
    assert [c["id"] for c in limited] == ["newest", "new"]
    assert set(listed[0]) == {
        "id",
        "provider",
        "call_sid",
        "stream_sid",
        "from",
        "to",
        "started_at",
        "ended_at",
        "end_reason",
        "active",
        "utterances",
    }


def test_list_since_finds_calls_by_number_and_by_what_was_said(backend: Backend) -> None:
    """``q`` keeps the calls whose caller or called number, or one utterance's text, holds it, letters in
    either case; ``%``, ``_`` and ``\\`` in ``q`` are themselves, never wildcards; the window still holds."""
    store = backend.open()
    said = {
        "balance": "I'd like to check my BALANCE, please.",
        "percent": "The rate is 100% fixed.",
        "under": "my user_name is bob",
        "slash": "a back\\slash",
        "plain": "Nothing to see here: 100 percent, username.",
    }
    try:
        for i, (name, text) in enumerate(said.items()):
            store.call_started({**CALL, "id": name, "from": f"+1555000{i}", "to": "+15559999"}, STARTED + i)
            store.utterance(name, utt(f"{name}-1", 0, 1.0, 2.0, "hello"))
            store.utterance(name, utt(f"{name}-2", 1, 3.0, 4.0, text))
        store.call_started({**CALL, "id": "old", "from": "+15550000"}, STARTED - 1000)
        store.utterance("old", utt("old-1", 0, 1.0, 2.0, "balance"))
        assert store.flush(5)

        def found(q: str | None) -> list[str]:
            return [c["id"] for c in store.list_since(STARTED, 100, q)]

        assert found("balance") == ["balance"] and found("Balance") == ["balance"]
        assert found("100%") == ["percent"] and found("%") == ["percent"] and found("_") == ["under"]
        assert found("user_name") == ["under"] and found("r_n") == ["under"]
        assert found("\\") == ["slash"] and found("k\\s") == ["slash"]
        assert found("+15550003") == ["slash"] and found("5550001") == ["percent"]
        assert found("9999") == list(reversed(said)) and found("hello") == list(reversed(said))
        assert found("nobody said this") == [] and found(None) == found("") == list(reversed(said))
        assert store.list_since(STARTED - 2000, 100, "balance")[-1]["id"] == "old"  # its window
        assert [c["utterances"] for c in store.list_since(STARTED, 100, "bob")] == [2]
    finally:
        store.close()


def test_purge_deletes_calls_past_retention_with_their_utterances(backend: Backend) -> None:
    store = backend.open()
    try:
        fill(store, "ended-long-ago", STARTED - 40 * DAY, STARTED - 40 * DAY + 60)  # type: ignore[arg-type]
        fill(store, "never-ended", STARTED - 31 * DAY, None)  # type: ignore[arg-type]
        fill(store, "long-call", STARTED - 30 * DAY - 60, STARTED - 29 * DAY)  # type: ignore[arg-type]
        fill(store, "recent", STARTED - DAY, STARTED - DAY + 60)  # type: ignore[arg-type]
        assert store.flush(5)
        gone = store.purge(STARTED - 30 * DAY)
        left = [c["id"] for c in store.list_since(0, 100)]
        again = store.purge(STARTED - 30 * DAY)
    finally:
        store.close()
    assert gone == 2 and again == 0
    assert left == ["recent", "long-call"]
    assert {r[0] for r in backend.rows("SELECT DISTINCT call_id FROM utterances")} == {"recent", "long-call"}


def test_the_purge_goes_in_batches(backend: Backend) -> None:
    """More expired calls than one purge batch: all go, in several transactions."""
    store = backend.open()
    store.PURGE_BATCH = 7
    try:
        for i in range(30):
            fill(store, f"c{i}", STARTED - 40 * DAY + i, STARTED - 40 * DAY + i + 1, n=1)  # type: ignore[arg-type]
        fill(store, "kept", STARTED, None, n=1)  # type: ignore[arg-type]
        assert store.flush(5)
        gone = store.purge(STARTED - DAY)
    finally:
        store.close()
    assert gone == 30
    assert counts(backend) == {"calls": 1, "utterances": 1, "addons": 0, "analyses": 0}


def test_writes_that_cannot_be_stored_are_dropped_not_raised(backend: Backend) -> None:
    store = backend.open()
    store.call_started({"provider": "twilio"}, STARTED)  # no id
    circular: dict[str, Any] = {"id": "c"}
    circular["self"] = circular
    store.utterance("call-1", circular)
    store.call_ended("call-1", "soon", "stop")  # type: ignore[arg-type]
    store.close()
    store.utterance("call-1", utt("late", 0, 1.0, 2.0, "after close"))
    assert store.dropped == 4


def test_addons_and_the_analysis_come_back_with_their_utterances(backend: Backend) -> None:
    """tests/test_transcript_addons.py's: translations, entities, sentiment with their finals; the same
    add-on again replaces the first; a later analysis replaces the first."""
    store = backend.open()
    try:
        record_call(store, "call-1", STARTED, STARTED + 60)  # type: ignore[arg-type]
        assert store.flush(5)
        got = store.get("call-1")
        store.addon("call-1", "utterance.translation", translation_item(U1, "fr", "Oui, votre nom ?"))
        later = {"status": "failed", "errors": {"summarization": "timeout"}}
        store.analysis("call-1", later)
        assert store.flush(5)
        again = store.get("call-1")
        listed = store.list_since(0)
    finally:
        store.close()
    assert got is not None and again is not None
    assert got["utterances"] == expected_utterances()
    assert got["analysis"] == ANALYSIS and "truncated" not in got
    assert again["utterances"][1]["translations"] == {"fr": "Oui, votre nom ?", "es": ES[U1["id"]]}
    assert again["analysis"] == later
    assert [c["utterances"] for c in listed] == [3]
    assert store.dropped == 0 and store.write_failures == 0


def test_an_id_said_again_by_a_new_session_takes_only_its_own_addons(backend: Backend) -> None:
    store = backend.open()
    first = final("00_00000000", 0, 1.0, 2.0, "First session words.")
    second = final("00_00000000", 0, 30.0, 31.0, "Second session words.")
    try:
        store.utterance("call-r", first)
        store.addon("call-r", "utterance.translation", translation_item(first, "fr", "Mots de la première session."))
        store.addon("call-r", "utterance.sentiment", sentiment_item(first, SENTIMENT))
        assert store.flush(5)
        store.utterance("call-r", second)
        store.addon("call-r", "utterance.entities", entities_item(second, ENTITIES))
        store.addon("call-r", "utterance.translation", translation_item(U1, "fr", FR[U1["id"]]))
        assert store.flush(5)
        got = store.get("call-r")
    finally:
        store.close()
    assert got is not None
    assert got["utterances"] == [{**second, "entities": entities_item(second, ENTITIES)["entities"]}]


def test_the_purge_deletes_addons_and_analyses_with_their_call(backend: Backend) -> None:
    store = backend.open()
    try:
        record_call(store, "expired", STARTED - 40 * DAY, STARTED - 40 * DAY + 60)  # type: ignore[arg-type]
        record_call(store, "kept", STARTED - DAY, STARTED - DAY + 60)  # type: ignore[arg-type]
        store.addon("orphan", "utterance.entities", entities_item(U2, ENTITIES))
        store.analysis("orphan-too", ANALYSIS)
        assert store.flush(5)
        gone = store.purge(STARTED - 30 * DAY)
        owners = {t: {r[0] for r in backend.rows(f"SELECT DISTINCT call_id FROM {t}")} for t in ("addons", "analyses")}
        gone_later = store.purge(time.time() + DAY)
    finally:
        store.close()
    assert gone == 1 and gone_later == 3
    assert owners == {"addons": {"kept", "orphan"}, "analyses": {"kept", "orphan-too"}}
    assert counts(backend) == {"calls": 0, "utterances": 0, "addons": 0, "analyses": 0}


def test_addons_and_analyses_that_cannot_be_kept_are_dropped_not_raised(backend: Backend) -> None:
    reports: list[str] = []
    store = backend.open(report=lambda event, _fields: reports.append(event))
    store.addon("c", "utterance.translation", {"utterance_id": "u", "text": "no language"})
    store.addon("c", "utterance.partial", {"utterance_id": "u"})
    store.analysis("c", {"summary": "no status"})
    circular: dict[str, Any] = {"status": "done"}
    circular["self"] = circular
    store.analysis("c", circular)
    store.close()
    store.addon("c", "utterance.entities", entities_item(U2, ENTITIES))
    store.analysis("c", ANALYSIS)
    assert store.dropped == 6
    assert reports.count("transcripts.dropping") == 1


def test_text_with_nul_is_kept_readable(backend: Backend) -> None:
    """A NUL in a carrier's field, which SQLite stores as given and PostgreSQL would refuse (the whole
    batch with it): PostgreSQL keeps U+FFFD in its place; inside an utterance (JSON) it is escaped and
    comes back exactly."""
    store = backend.open()
    try:
        store.call_started({**CALL, "id": "odd", "call_sid": "CA\x00x"}, STARTED)
        store.utterance("odd", utt("u1", 0, 1.0, 2.0, "nul \x00 in words"))
        store.call_ended("odd", STARTED + 9, "stop")
        assert store.flush(5)
        got = store.get("odd")
    finally:
        store.close()
    assert got is not None and got["end_reason"] == "stop" and len(got["utterances"]) == 1
    assert got["utterances"][0]["text"] == "nul \x00 in words"
    assert got["call_sid"] == ("CA\x00x" if backend.kind == "sqlite" else "CA\ufffdx")
    assert store.dropped == 0


def test_a_lone_surrogate_in_a_carriers_field_is_kept_readable(pg_url: str) -> None:
    """A lone surrogate (not UTF-8) in a call's field is kept with '?' in its place; the rest of the batch
    lands. (PostgreSQL only: the SQLite store's writer thread dies on it, UnicodeEncodeError; reported.)"""
    store = PgTranscriptStore(pg_url)
    try:
        store.call_started({**CALL, "id": "odd", "from": "+1\udc80", "parameters": {"k": "\udc81"}}, STARTED)
        store.call_ended("odd", STARTED + 9, "stop")
        assert store.flush(5)
        got = store.get("odd")
    finally:
        store.close()
    assert got is not None and got["from"] == "+1?" and got["parameters"] == {"k": "?"}
    assert got["end_reason"] == "stop" and store.dropped == 0


# -- the fleet: several instances, one database -----------------------------------------------------

INSTANCE_A = """
import os, signal, sys, time
from bridge.transcripts_pg import PgTranscriptStore

url, started = sys.argv[1], float(sys.argv[2])
store = PgTranscriptStore(url)
store.call_started({"id": "shared", "provider": "twilio", "call_sid": "CA-A", "from": "+1555", "to": "+1666",
                    "parameters": {"instance": "A"}}, started)
for i in range(3):
    store.utterance("shared", {"id": f"u{i}", "channel": i % 2, "speaker": "caller", "start": float(i),
                               "end": i + 0.5, "text": f"from A {i}", "words": []})
store.addon("shared", "utterance.translation", {"utterance_id": "u0", "language": "fr", "text": "de A 0"})
assert store.flush(10)
print("written", flush=True)
time.sleep(60)  # mid-call: killed here (SIGKILL), never closing the store, never recording the end
"""


def test_a_call_begun_on_an_instance_that_was_killed_is_completed_by_another(pg_url: str) -> None:
    """Instance A (its own process) records a call's start, three finals and a translation, and is
    SIGKILLed mid-call. Instance B carries the call on: a final A already wrote (sent again after the
    takeover), new finals, the analysis and the end. Read from B or from a third instance, the record is
    one call, A's finals and B's in start order, ended, listed by both."""
    a = subprocess.Popen(
        [sys.executable, "-c", INSTANCE_A, pg_url, str(STARTED)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert a.stdout is not None
        line = a.stdout.readline()
        assert line.strip() == "written", a.stderr.read() if a.stderr else ""
    finally:
        a.kill()
        a.communicate(timeout=10)  # reaps it and closes its pipes
    assert a.returncode == -9
    b = PgTranscriptStore(pg_url)
    c = PgTranscriptStore(pg_url)
    try:
        seen_by_b = b.get("shared")
        assert seen_by_b is not None and seen_by_b["active"] is True and len(seen_by_b["utterances"]) == 3
        # B took the call over: its own call object (a later start time: the earliest is kept)
        b.call_started({"id": "shared", "provider": "twilio", "call_sid": "CA-A", "from": "+1555", "to": "+1666",
                        "parameters": {"instance": "A"}}, STARTED + 30)  # fmt: skip
        b.utterance("shared", {"id": "u2", "channel": 0, "speaker": "caller", "start": 2.0, "end": 2.5,
                               "text": "from A 2", "words": []})  # fmt: skip
        for i in range(3, 6):
            b.utterance("shared", {"id": f"u{i}", "channel": i % 2, "speaker": "agent", "start": float(i),
                                   "end": i + 0.5, "text": f"from B {i}", "words": []})  # fmt: skip
        b.analysis("shared", ANALYSIS)
        b.call_ended("shared", STARTED + 60, "stop")
        assert b.flush(5)
        from_b, from_c = b.get("shared"), c.get("shared")
        listed_b, listed_c = b.list_since(STARTED - 1), c.list_since(STARTED - 1)
    finally:
        b.close()
        c.close()
    assert from_b == from_c and from_b is not None
    assert from_b["started_at"] == iso(STARTED) and from_b["ended_at"] == iso(STARTED + 60)
    assert from_b["active"] is False and from_b["end_reason"] == "stop" and from_b["parameters"] == {"instance": "A"}
    assert [u["text"] for u in from_b["utterances"]] == ["from A 0", "from A 1", "from A 2"] + [
        f"from B {i}" for i in range(3, 6)
    ]
    assert from_b["utterances"][0]["translations"] == {"fr": "de A 0"}
    assert from_b["analysis"] == ANALYSIS
    assert listed_b == listed_c and [(x["id"], x["utterances"], x["active"]) for x in listed_b] == [
        ("shared", 6, False)
    ]


def test_an_instance_lists_and_purges_calls_another_instance_wrote(pg_url: str) -> None:
    """Any instance answers for any call: B lists and reads A's calls; B's purge deletes A's expired rows
    (every table), A's reads then see them gone."""
    a, b = PgTranscriptStore(pg_url), PgTranscriptStore(pg_url)
    try:
        record_call(a, "a-old", STARTED - 40 * DAY, STARTED - 40 * DAY + 60)  # type: ignore[arg-type]
        record_call(a, "a-new", STARTED - DAY, STARTED - DAY + 60)  # type: ignore[arg-type]
        fill(b, "b-new", STARTED, STARTED + 30)  # type: ignore[arg-type]
        assert a.flush(5) and b.flush(5)
        listed = [x["id"] for x in b.list_since(0)]
        old = b.get("a-old")
        gone = b.purge(STARTED - 30 * DAY)
        after = a.get("a-old"), [x["id"] for x in a.list_since(0)]
    finally:
        a.close()
        b.close()
    assert listed == ["b-new", "a-new", "a-old"]
    assert old is not None and old["utterances"] == expected_utterances()
    assert gone == 1 and after == (None, ["b-new", "a-new"])
    with psycopg.connect(pg_url) as db:
        for table in TABLES:
            assert db.execute(f"SELECT count(*) FROM {table} WHERE call_id = 'a-old'").fetchone() == (0,)


def test_two_instances_opening_at_once_create_one_schema(pg_url: str) -> None:
    """Instances starting together on an empty database: the schema is created once (advisory lock),
    and its version is recorded."""
    stores = [PgTranscriptStore(pg_url) for _ in range(4)]
    try:
        for i, s in enumerate(stores):
            fill(s, f"c{i}", STARTED + i, None, n=1)  # type: ignore[arg-type]
        assert all(s.flush(5) for s in stores)
        assert len(stores[0].list_since(0)) == 4
    finally:
        for s in stores:
            s.close()
    with psycopg.connect(pg_url) as db:
        assert db.execute("SELECT component, version FROM bridge_schema").fetchall() == [("transcripts", 1)]


def _wait(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@pytest.mark.timeout(90)
def test_the_database_restarted_mid_call_loses_nothing_within_the_bound(pg_server: PostgresServer, pg_url: str) -> None:
    """The server stops under a call (fast shutdown: connections cut) and then dies outright (SIGKILL)
    and comes back: the call's writes return at once while it is down, stay queued, the store says
    degraded once per outage and recovered once, and every final is on record afterwards, in order;
    reads fail while it is down (the API answers 503) and work again on a new connection after."""
    reports: list[tuple[str, dict[str, Any]]] = []
    store = PgTranscriptStore(
        pg_url, max_queue=1000, retry_seconds=0.05, max_retry_seconds=0.3, commit_delay=0.02,
        report=lambda e, f: reports.append((e, f)),
    )  # fmt: skip
    try:
        store.call_started(CALL, STARTED)
        for i in range(10):
            store.utterance("call-1", utt(f"u{i:02}", 0, float(i), i + 0.5, f"word {i}"))
        assert store.flush(5)
        assert store.get("call-1") is not None  # the reader connection exists: it will be found dead
        for outage, stop in enumerate((pg_server.stop, pg_server.kill)):
            stop()
            t0 = time.monotonic()
            for i in range(10 + 20 * outage, 30 + 20 * outage):
                store.utterance("call-1", utt(f"u{i:02}", 0, float(i), i + 0.5, f"word {i}"))
            assert time.monotonic() - t0 < 0.05  # queued, never waited on the database
            assert _wait(lambda: store.degraded is not None, 10)
            with pytest.raises(psycopg.OperationalError):
                store.get("call-1")
            time.sleep(0.5)  # several reconnection attempts, with backoff
            assert store.queued > 0
            pg_server.start()
            assert store.flush(20)
            assert store.degraded is None
        store.call_ended("call-1", STARTED + 60, "stop")
        assert store.flush(5)
        got = store.get("call-1")
    finally:
        if pg_server.proc is None:
            pg_server.start()
        store.close()
    assert got is not None and got["end_reason"] == "stop"
    assert [u["id"] for u in got["utterances"]] == [f"u{i:02}" for i in range(50)]
    assert store.dropped == 0 and store.write_failures >= 2
    events = [e for e, _ in reports]
    assert events == ["transcripts.degraded", "transcripts.recovered"] * 2
    assert all(f["reason"] for e, f in reports if e == "transcripts.degraded")


@pytest.mark.timeout(90)
def test_a_full_queue_while_the_database_is_down_counts_what_it_drops(pg_server: PostgresServer, pg_url: str) -> None:
    """Down, the queue fills to its bound: the first writes are kept (in order), the rest dropped and
    counted, reported once as dropping; back up, the kept ones land and caught_up says how many went."""
    reports: list[tuple[str, dict[str, Any]]] = []
    store = PgTranscriptStore(
        pg_url, max_queue=5, retry_seconds=0.05, max_retry_seconds=0.2, report=lambda e, f: reports.append((e, f))
    )
    try:
        pg_server.stop()
        store.call_started(CALL, STARTED)
        for i in range(20):
            store.utterance("call-1", utt(f"u{i:02}", 0, float(i), i + 0.5, f"word {i}"))
        assert _wait(lambda: store.degraded is not None, 10)
        pg_server.start()
        assert store.flush(20)
        kept = store.get("call-1")
    finally:
        if pg_server.proc is None:
            pg_server.start()
        store.close()
    assert kept is not None
    n = len(kept["utterances"])
    assert [u["id"] for u in kept["utterances"]] == [f"u{i:02}" for i in range(n)]
    assert 4 <= n < 20 and store.dropped == 20 - n
    events = [e for e, _ in reports]
    assert events.count("transcripts.dropping") == 1 and events.count("transcripts.caught_up") == 1
    assert dict(reports)["transcripts.caught_up"] == {"dropped": store.dropped}
    assert "queue is full" in dict(reports)["transcripts.dropping"]["reason"]


@pytest.mark.timeout(60)
def test_a_store_opened_while_the_database_is_down_starts_degraded_and_recovers(
    pg_server: PostgresServer, pg_url: str
) -> None:
    """The bridge starts before its database (a pod before PostgreSQL's): the store opens, degraded; it
    connects (creating the schema) when the server comes, and says recovered without any write."""
    reports: list[str] = []
    pg_server.stop()
    store = PgTranscriptStore(
        pg_url, retry_seconds=0.05, max_retry_seconds=0.2, connect_timeout=1, report=lambda e, _f: reports.append(e)
    )
    try:
        assert store.degraded is not None and reports == ["transcripts.degraded"]
        pg_server.start()
        assert _wait(lambda: store.degraded is None, 15)
        assert reports == ["transcripts.degraded", "transcripts.recovered"]
        fill(store, "after", STARTED, STARTED + 1)  # type: ignore[arg-type]
        assert store.flush(5)
        got = store.get("after")
    finally:
        if pg_server.proc is None:
            pg_server.start()
        store.close()
    assert got is not None and len(got["utterances"]) == 2


def test_a_write_the_server_refuses_is_dropped_and_the_rest_of_its_batch_kept(pg_url: str) -> None:
    """A batch with one write the server refuses for its content (here a CHECK constraint an operator
    added): that write is dropped and counted, the others of the batch are committed, the queue moves on."""
    reports: list[str] = []
    store = PgTranscriptStore(pg_url, commit_delay=0.3, report=lambda e, _f: reports.append(e))
    try:
        assert store.flush(5)
        with psycopg.connect(pg_url, autocommit=True) as db:
            db.execute("ALTER TABLE calls ADD CONSTRAINT no_fax CHECK (provider IS DISTINCT FROM 'fax')")
        fill(store, "ok-1", STARTED, STARTED + 1)  # type: ignore[arg-type]
        store.call_started({**CALL, "id": "refused", "provider": "fax"}, STARTED)
        fill(store, "ok-2", STARTED + 2, STARTED + 3)  # type: ignore[arg-type]
        assert store.flush(5)
        listed = [x["id"] for x in store.list_since(0)]
    finally:
        store.close()
    assert listed == ["ok-2", "ok-1"]
    assert store.dropped == 1 and store.degraded is None
    assert reports.count("transcripts.dropping") == 1


@pytest.mark.timeout(60)
def test_a_read_after_a_restart_it_did_not_see_succeeds_on_a_new_connection(
    pg_server: PostgresServer, pg_url: str
) -> None:
    """The server restarted between two reads: the reader's connection is dead; the read is made again on
    a new connection and answers (the API does not answer 503 once for every instance after a restart)."""
    store = PgTranscriptStore(pg_url, retry_seconds=0.05, max_retry_seconds=0.2)
    try:
        fill(store, "c", STARTED, STARTED + 1)  # type: ignore[arg-type]
        assert store.flush(5)
        before = store.get("c")
        pg_server.stop()
        pg_server.start()
        after, listed = store.get("c"), store.list_since(0)
        assert store.purge(0) == 0
    finally:
        if pg_server.proc is None:
            pg_server.start()
        store.close()
    assert before == after and [x["id"] for x in listed] == ["c"]


@pytest.mark.timeout(60)
def test_a_table_dropped_under_a_running_store_is_made_again(pg_url: str) -> None:
    """An operator drops a table the store writes: its writes fail (degraded, kept in the queue), the
    writer's new connection makes the schema again, and what was queued lands (recovered)."""
    reports: list[str] = []
    store = PgTranscriptStore(pg_url, retry_seconds=0.05, max_retry_seconds=0.2, report=lambda e, _f: reports.append(e))
    try:
        fill(store, "before", STARTED, STARTED + 1)  # type: ignore[arg-type]
        assert store.flush(5)
        with psycopg.connect(pg_url, autocommit=True) as db:
            db.execute("DROP TABLE utterances")
        fill(store, "after", STARTED + 10, STARTED + 11)  # type: ignore[arg-type]
        assert store.flush(10)
        after = store.get("after")
    finally:
        store.close()
    assert after is not None and len(after["utterances"]) == 2
    assert reports == ["transcripts.degraded", "transcripts.recovered"] and store.dropped == 0


def test_the_urls_own_options_win(pg_url: str) -> None:
    """``?options=-c search_path=...`` in BRIDGE_DATABASE_URL (a schema of its own in a shared database)
    and ``application_name`` are kept: the tables are made and read there. A URL that is not one is
    refused at once."""
    with psycopg.connect(pg_url, autocommit=True) as db:
        db.execute("CREATE SCHEMA bridge_record")
    url = f"{pg_url}?options=-csearch_path%3Dbridge_record&application_name=bridge-test"
    store = PgTranscriptStore(url)
    try:
        fill(store, "c", STARTED, STARTED + 1)  # type: ignore[arg-type]
        assert store.flush(5)
        got = store.get("c")
    finally:
        store.close()
    assert got is not None and len(got["utterances"]) == 2
    with psycopg.connect(pg_url) as db:
        tables = db.execute("SELECT table_schema, table_name FROM information_schema.tables WHERE table_name = 'calls'")
        assert tables.fetchall() == [("bridge_record", "calls")]
    with pytest.raises(psycopg.ProgrammingError):
        PgTranscriptStore("not a connection string")
