"""``bridge wait-calls`` (the Kubernetes preStop hook) against a running bridge, a bridge with
workers (faked), and nothing listening."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import aiohttp
from aiohttp import web

from bridge.tools.wait_calls import wait_calls
from bridge.tools.writers.twilio import TwilioStreamWriter
from tests.support.bridge_process import run_bridge
from tests.support.calls import BridgeFactory, caller_audio, wait_for
from tests.support.fakes import FakeGladia
from tests.support.process import free_port, minimal_env


async def test_waits_while_a_call_runs_and_returns_once_it_ended(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia
) -> None:
    """With a call running the wait goes on; once the call has ended it returns "idle" within about
    one poll."""
    server: Any = await make_bridge()
    base = str(server.make_url("")).rstrip("/")
    w = TwilioStreamWriter("CA" + "7" * 32, "MZ" + "7" * 32)
    audio = caller_audio(0.5)
    async with aiohttp.ClientSession() as http, http.ws_connect(base.replace("http", "ws") + "/twilio/stream") as ws:
        await ws.send_str(w.connected())
        await ws.send_str(w.start())
        for i in range(0, len(audio), 160):
            await ws.send_str(w.media(audio[i : i + 160]))
        await wait_for(lambda: any(len(s.audio) == len(audio) for s in fake_gladia.sessions.values()))
        waiting = asyncio.create_task(wait_calls(base, 20, interval=0.05))
        await asyncio.sleep(0.5)
        assert not waiting.done()
        await ws.send_str(w.stop())
        await ws.receive(timeout=10)
    waited = await asyncio.wait_for(waiting, 15)
    assert (waited.outcome, waited.calls) == ("idle", 0)
    assert waited.line().startswith(f"wait-calls: no calls at {base} after ")


async def test_gives_up_at_the_timeout_with_the_calls_still_running(make_bridge: BridgeFactory) -> None:
    """A call that outlives the bound: the wait returns "timeout" with the count, in about the bound."""
    server: Any = await make_bridge()
    base = str(server.make_url("")).rstrip("/")
    w = TwilioStreamWriter("CA" + "8" * 32, "MZ" + "8" * 32)
    async with aiohttp.ClientSession() as http, http.ws_connect(base.replace("http", "ws") + "/twilio/stream") as ws:
        await ws.send_str(w.connected())
        await ws.send_str(w.start())
        loop = asyncio.get_running_loop()
        started = loop.time()
        waited = await asyncio.wait_for(wait_calls(base, 0.5, interval=0.05), 10)
        assert loop.time() - started < 3.0
    assert (waited.outcome, waited.calls) == ("timeout", 1)
    assert "1 call(s) still running" in waited.line()


async def test_settle_holds_even_without_calls(make_bridge: BridgeFactory) -> None:
    """--settle: with no call at all the wait still lasts that long (load balancers catching up)."""
    server: Any = await make_bridge()
    waited = await asyncio.wait_for(wait_calls(str(server.make_url("")), 10, settle=0.3, interval=0.05), 10)
    assert waited.outcome == "idle" and waited.seconds >= 0.3


async def test_sums_the_calls_of_every_worker(aiohttp_server: Any) -> None:
    """Under `bridge serve --workers 2` each /healthz answer comes from one worker: the wait adds up
    both workers' calls and is idle only when both have none."""
    calls = {0: 0, 1: 2}
    answers = itertools.cycle([0, 1])

    async def healthz(_request: web.Request) -> web.Response:
        index = next(answers)
        body = {"status": "ok", "active_calls": calls[index], "suspended_calls": 0, "worker": {"index": index, "of": 2}}
        return web.json_response(body)

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    server = await aiohttp_server(app, host="127.0.0.1")
    waited = await asyncio.wait_for(wait_calls(str(server.make_url("")), 0.3, interval=0.05), 10)
    assert (waited.outcome, waited.calls) == ("timeout", 2)
    calls[1] = 0
    waited = await asyncio.wait_for(wait_calls(str(server.make_url("")), 5, interval=0.05), 10)
    assert (waited.outcome, waited.calls) == ("idle", 0)


async def _command(*args: str) -> tuple[int | None, list[str]]:
    done = await run_bridge("wait-calls", *args, env=minimal_env(), timeout=20)
    assert not done.err, done.err.decode()
    return done.returncode, done.out.decode().splitlines()


async def test_command_prints_one_line_and_exits_0(make_bridge: BridgeFactory) -> None:
    """`bridge wait-calls` exits 0 with one line: at an idle bridge, and at once where nothing listens."""
    server: Any = await make_bridge()
    base = str(server.make_url("")).rstrip("/")
    code, lines = await _command("--timeout", "30", "--url", base)
    assert code == 0 and len(lines) == 1 and lines[0].startswith(f"wait-calls: no calls at {base} after "), lines
    url = f"http://127.0.0.1:{free_port()}"
    code, lines = await _command("--timeout", "30", "--url", url)
    assert (code, lines) == (0, [f"wait-calls: nothing listening at {url}: no calls to wait for"])
