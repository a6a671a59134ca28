"""Under ``bridge serve --workers N`` any worker answers the bot API for any call of the machine (it
asks its siblings over their private sockets), and transcript reads cannot starve the reply loop's
threads."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import sqlite3
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bridge.app import create_app
from bridge.blocking import BlockingPool, PoolFull
from bridge.call.registry import CALLS
from bridge.http.transcripts import TRANSCRIPTS
from bridge.settings import Settings
from bridge.sibling_socket import install
from bridge.siblings import socket_path
from bridge.transcripts import FILENAME
from tests.support.bridge_process import BridgeProcess, start_bridge
from tests.support.calls import FAST, WEBHOOK_SECRET, BridgeFactory, wait_for
from tests.support.fakes import FakeGladia, FakeWebhook
from tests.support.phone import phone_call
from tests.support.process import minimal_env

TOKEN = "workers-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
UNKNOWN = "0" * 32  # a well-formed call id no worker has


async def _fresh(
    base: str, method: str, path: str, body: Any = None, **headers: str
) -> tuple[int, dict[str, str], bytes]:
    """One request on a new connection (SO_REUSEPORT picks a worker per connection)."""
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http,
        http.request(method, base + path, json=body, headers={**AUTH, **headers}) as resp,
    ):
        return resp.status, dict(resp.headers), await resp.read()


async def _all_workers_up(bridge: BridgeProcess, count: int) -> None:
    pids: set[int] = set()
    async with asyncio.timeout(30):
        while len(pids) < count:
            status, _, body = await _fresh(bridge.base, "GET", "/healthz")
            if status == 200:
                pids.add(json.loads(body)["worker"]["pid"])


@pytest.mark.timeout(120)
async def test_any_worker_answers_for_any_call(fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]) -> None:
    """With 3 workers and calls on all of them, 40 state reads, 40 actions, active-call lists and
    transcript reads, each on a fresh connection, all answer as the owner would: 200/202, the actions
    play on the owner's call (their playback.mark reaches the bot), an Idempotency-Key repeated on
    another connection answers the first answer and applies nothing twice, the list holds every call,
    and a live call's transcript read anywhere holds the final the bot was just sent."""
    hook, hook_url = webhook
    env = minimal_env(
        GLADIA_API_URL=fake_gladia.base_url,
        GLADIA_API_KEY="test-key",
        BOT_WEBHOOK_URL=hook_url,
        BOT_WEBHOOK_SECRET=WEBHOOK_SECRET,
        BRIDGE_API_TOKEN=TOKEN,
    )
    bridge = await start_bridge(env, "--workers", "3", startup=30)
    results: dict[str, Any] = {}
    calls = 6
    try:
        await _all_workers_up(bridge, 3)

        async def bot() -> None:
            await wait_for(lambda: len(hook.events("call.started")) == calls, timeout=20)
            ids = [e["call"]["id"] for e in hook.events("call.started")]
            results["ids"] = ids
            results["state"] = await asyncio.gather(
                *(_fresh(bridge.base, "GET", f"/v1/calls/{ids[i % calls]}") for i in range(40))
            )
            results["actions"] = await asyncio.gather(
                *(
                    _fresh(
                        bridge.base,
                        "POST",
                        f"/v1/calls/{ids[i % calls]}/actions",
                        {"actions": [{"type": "mark", "id": f"a{i}", "name": f"m{i}"}]},
                    )
                    for i in range(40)
                )
            )
            once = {"actions": [{"type": "mark", "id": "once", "name": "once"}]}
            path = f"/v1/calls/{ids[0]}/actions"
            results["keyed"] = [
                await _fresh(bridge.base, "POST", path, once, **{"Idempotency-Key": "k-1"}) for _ in range(6)
            ]
            results["lists"] = await asyncio.gather(*(_fresh(bridge.base, "GET", "/v1/calls") for _ in range(6)))
            results["unknown"] = await _fresh(bridge.base, "GET", f"/v1/calls/{UNKNOWN}")
            results["unknown actions"] = await _fresh(
                bridge.base, "POST", f"/v1/calls/{UNKNOWN}/actions", {"actions": [{"type": "stop"}]}
            )
            # a final just sent to the bot is in the transcript, whichever worker serves the read
            fresh: list[tuple[str, str, int]] = []
            seen = len(hook.events("utterance.final"))
            async with asyncio.timeout(30):
                while len(fresh) < 12:
                    finals = hook.events("utterance.final")
                    for event in finals[seen:]:
                        call_id, utterance_id = event["call"]["id"], event["utterance"]["id"]
                        status, _, body = await _fresh(bridge.base, "GET", f"/v1/calls/{call_id}/transcript")
                        got = [u["id"] for u in json.loads(body)["utterances"]] if status == 200 else []
                        fresh.append((call_id, utterance_id, status if utterance_id in got else -status))
                    seen = len(finals)
                    await asyncio.sleep(0.005)
            results["transcripts"] = fresh
            marks = {f"m{i}" for i in range(40)} | {"once"}
            with contextlib.suppress(TimeoutError):  # the assertions below say what is missing
                await wait_for(lambda: marks <= {e["name"] for e in hook.events("playback.mark")}, timeout=15)

        task = asyncio.create_task(bot())
        url = bridge.ws + "/twilio/stream"
        await asyncio.gather(
            *(phone_call(url, b"", until=lambda _: task.done(), max_seconds=90) for _ in range(calls)),
            return_exceptions=False,
        )
        await task
        await wait_for(lambda: len(hook.events("call.ended")) == calls, timeout=20)
    finally:
        assert await bridge.stop() == 0
    ids: list[str] = results["ids"]
    assert [s for s, _, _ in results["state"]] == [200] * 40
    assert [json.loads(b)["id"] for _, _, b in results["state"]] == [ids[i % calls] for i in range(40)]
    assert [s for s, _, _ in results["actions"]] == [202] * 40
    assert [json.loads(b)["actions"][0]["id"] for _, _, b in results["actions"]] == [f"a{i}" for i in range(40)]
    mark_calls = {e["name"]: e["call"]["id"] for e in hook.events("playback.mark")}
    assert all(mark_calls[f"m{i}"] == ids[i % calls] for i in range(40))  # played on the owner's call
    keyed = results["keyed"]
    assert {s for s, _, _ in keyed} == {202} and len({b for _, _, b in keyed}) == 1
    assert [e["name"] for e in hook.events("playback.mark")].count("once") == 1  # applied once
    for status, _, body in results["lists"]:
        assert status == 200 and sorted(c["id"] for c in json.loads(body)["calls"]) == sorted(ids)
    assert results["unknown"][0] == 404 and results["unknown actions"][0] == 404  # no worker has it
    assert all(status == 200 for _, _, status in results["transcripts"]), results["transcripts"]


@pytest.mark.timeout(60)
async def test_transcript_reads_on_a_locked_store_do_not_delay_a_dtmf(
    make_bridge: BridgeFactory, webhook: tuple[FakeWebhook, str], tmp_path: Any
) -> None:
    """The transcript file locked by another process, 40 transcript reads are waiting on it; a
    ``dtmf`` action posted meanwhile still starts playing at once (its tones are made on a thread the
    reads cannot take). Reads beyond the bound answer 503 with Retry-After; the others are served once
    the lock goes."""
    hook, _ = webhook
    server = await make_bridge({"BRIDGE_API_TOKEN": TOKEN})
    results: dict[str, Any] = {}

    async def bot(http: aiohttp.ClientSession) -> None:
        await wait_for(lambda: bool(server.app[CALLS].live), timeout=10)
        call_id = next(iter(server.app[CALLS].live))
        store = server.app[TRANSCRIPTS]
        assert store is not None
        assert await asyncio.to_thread(store.flush, 5)
        blocker = sqlite3.connect(tmp_path / "data" / FILENAME, isolation_level=None)
        try:
            blocker.execute("BEGIN EXCLUSIVE")
            # a final waiting for the lock: every read first waits for this process's writes
            store.utterance(call_id, {"id": "u-locked", "channel": 0, "start": 0.0, "end": 0.5, "text": "hi"})

            async def read() -> tuple[int, str | None]:
                async with http.get(server.make_url(f"/v1/calls/{call_id}/transcript"), headers=AUTH) as resp:
                    await resp.read()
                    return resp.status, resp.headers.get("Retry-After")

            reads = [asyncio.create_task(read()) for _ in range(40)]
            await asyncio.sleep(0.3)  # the reads are all waiting on the store
            t0 = time.monotonic()
            body = {"actions": [{"type": "dtmf", "id": "tones", "digits": "1"}]}
            async with http.post(server.make_url(f"/v1/calls/{call_id}/actions"), json=body, headers=AUTH) as resp:
                assert resp.status == 202
            with contextlib.suppress(TimeoutError):  # asserted below, with the delay
                await wait_for(lambda: bool(hook.events("playback.started")), timeout=4)
            results["delay"] = time.monotonic() - t0
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        results["reads"] = await asyncio.wait_for(asyncio.gather(*reads), 30)

    async with aiohttp.ClientSession() as http:
        task = asyncio.create_task(bot(http))
        await phone_call(str(server.make_url("/twilio/stream")), b"", until=lambda _: task.done(), max_seconds=50)
        await task
    assert results["delay"] < 1.0, f"the dtmf's first audio came {results['delay']:.2f} s after it was posted"
    statuses = [s for s, _ in results["reads"]]
    assert set(statuses) <= {200, 503} and 200 in statuses
    assert all(retry == "1" for s, retry in results["reads"] if s == 503)


@pytest.mark.timeout(60)
async def test_a_stalled_sibling_bounds_the_wait_and_nothing_is_forwarded_twice(
    aiohttp_server: Any, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    """Workers 0 and 1 of 3 (real apps, in this process) and a worker 2 whose socket accepts and never
    answers: worker 0 still answers at once for worker 1's call; for an unknown call it answers 503 with
    Retry-After after the forwarding timeout, never hangs; a worker whose socket is gone holds no call
    (404); and a request on a worker's internal socket is answered there, never forwarded again."""
    run_dir = Path(tempfile.mkdtemp(prefix="bw-"))  # short: unix socket paths are bounded
    env = {
        "BRIDGE_DATA_DIR": str(run_dir / "data"),
        "GLADIA_API_URL": fake_gladia.base_url,
        "GLADIA_API_KEY": "test-key",
        "BOT_WEBHOOK_URL": webhook[1],
        "BOT_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "BRIDGE_API_TOKEN": TOKEN,
    }
    settings = Settings.load(environ=env, overrides=FAST)
    stalled: list[asyncio.StreamWriter] = []

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stalled.append(writer)
        await reader.read()  # until the asker gives up and closes

    silent = await asyncio.start_unix_server(never_answer, path=str(socket_path(run_dir, 2)))
    servers = []
    for i in (0, 1):
        app = create_app(settings, (i, 3))
        install(app, run_dir, i, 3, timeout=1.0)
        servers.append(await aiohttp_server(app, host="127.0.0.1"))
    w0, w1 = servers
    results: dict[str, Any] = {}

    async def timed(base: str, path: str) -> tuple[int, str | None, float]:
        t0 = time.monotonic()
        status, headers, _ = await _fresh(base, "GET", path)
        return status, headers.get("Retry-After"), time.monotonic() - t0

    async def bot() -> None:
        await wait_for(lambda: bool(w1.app[CALLS].live), timeout=10)
        call_id = next(iter(w1.app[CALLS].live))
        base0 = str(w0.make_url("")).rstrip("/")
        results["owned elsewhere"] = await timed(base0, f"/v1/calls/{call_id}")
        results["unknown"] = await timed(base0, f"/v1/calls/{UNKNOWN}")
        connections = len(stalled)
        async with (
            aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(socket_path(run_dir, 1)))) as http,
            http.get(f"http://worker/v1/calls/{UNKNOWN}", headers=AUTH) as resp,
        ):
            results["internal"] = resp.status, len(stalled) - connections
        silent.close()
        socket_path(run_dir, 2).unlink()  # worker 2 is gone
        results["gone"] = await timed(base0, f"/v1/calls/{UNKNOWN}")

    try:
        task = asyncio.create_task(bot())
        await phone_call(str(w1.make_url("/twilio/stream")), b"", until=lambda _: task.done(), max_seconds=30)
        await task
    finally:
        silent.close()
        for writer in stalled:
            writer.close()
        shutil.rmtree(run_dir, ignore_errors=True)
    status, _, took = results["owned elsewhere"]
    assert status == 200 and took < 0.5  # the owner answered: the stalled worker is not waited for
    status, retry, took = results["unknown"]
    assert status == 503 and retry == "1" and 0.9 < took < 2.5  # bounded by the forwarding timeout
    assert results["internal"] == (404, 0)  # answered by worker 1 itself, nobody else asked
    status, _, took = results["gone"]
    assert status == 404 and took < 0.5


@pytest.mark.timeout(10)
async def test_the_blocking_pool_refuses_beyond_its_bound_until_the_work_itself_ends() -> None:
    """One thread and one waiting place: a third submission is refused at once; a caller that gives up
    does not free its place before its work has ended on the thread; upkeep (unbounded) is never refused."""
    pool = BlockingPool(threads=1, max_waiting=1)
    gate = threading.Event()
    try:
        running = asyncio.create_task(pool.run(gate.wait, 5.0))
        waiting = asyncio.create_task(pool.run(lambda: "second"))
        await asyncio.sleep(0.05)
        with pytest.raises(PoolFull):
            await pool.run(lambda: "third")
        running.cancel()  # the client went away; its read still holds the thread
        with pytest.raises(asyncio.CancelledError):
            await running
        with pytest.raises(PoolFull):
            await pool.run(lambda: "third")
        upkeep = asyncio.create_task(pool.run(lambda: "purge", bounded=False))
        gate.set()
        assert await waiting == "second" and await upkeep == "purge"
        assert await pool.run(lambda: "later") == "later" and pool.admitted == 0 and pool.refused == 2
    finally:
        gate.set()
        pool.close()
