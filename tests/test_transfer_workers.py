"""A Twilio call transferred under ``bridge serve --workers 2`` (a real multi-process bridge, SO_REUSEPORT):
each of Twilio's requests after the bot's ``transfer`` is sent to the worker that does *not* hold the
call, and still answered right.

A connection is pinned to a worker by asking ``/healthz`` on it first (keep-alive: the next request,
a WebSocket upgrade included, goes over the same connection, to the same worker). The call's stream
is on one worker; the transfer is posted by REST on a fresh connection (any worker); the ``<Connect
action>`` fetch, the ``<Dial action>`` report, the person's answer and the returning ``<Connect><Stream>``
go to the other worker, which finds the desk's entry, forwards the outcome, and relays the returning
stream to the worker where the call waits: the same call id, one Gladia session, ``transfer.failed``.
The ``<Dial action>`` report is also repeated on fresh connections (any worker): always the same
answer. Signatures are computed with the official ``twilio`` SDK's ``RequestValidator``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from twilio.request_validator import RequestValidator

from bridge.app import create_app
from bridge.call.registry import CALLS
from bridge.settings import Settings
from bridge.sibling_socket import install
from bridge.siblings import socket_path
from bridge.tools.writers.twilio import TwilioStreamWriter
from tests.support.bridge_process import BridgeProcess, start_bridge
from tests.support.calls import FAST, WEBHOOK_SECRET, caller_audio, wait_for
from tests.support.fakes import FakeGladia, FakeWebhook
from tests.support.process import free_port, minimal_env

CALL_SID = "CA" + "2" * 32

AUTH_TOKEN = "twilio-test-auth-token"
API_TOKEN = "bot-api-token-0123456789"
ACCOUNT_SID = "AC" + "0" * 32
VALIDATOR = RequestValidator(AUTH_TOKEN)


def caller(call_sid: str) -> dict[str, str]:
    """Twilio's form for the caller's call."""
    return {"CallSid": call_sid, "AccountSid": ACCOUNT_SID, "From": "+15550001", "To": "+15550002"}


@dataclass
class PublicTwilio:
    """Twilio's side, given the bridge's public URL (``public``): it signs that URL, whichever process
    (worker, instance) the request is sent to (``base``)."""

    public: str

    def _target(self, base: str, url: str) -> str:
        assert url.startswith(self.public), url
        return base + url[len(self.public) :]

    async def post(self, http: aiohttp.ClientSession, base: str, url: str, form: dict[str, str]) -> tuple[int, str]:
        signature = VALIDATOR.compute_signature(url, form)
        async with http.post(self._target(base, url), data=form, headers={"X-Twilio-Signature": signature}) as resp:
            return resp.status, await resp.text()

    async def voice(self, http: aiohttp.ClientSession, base: str, call_sid: str) -> dict[str, str]:
        """``/twilio/voice``: the stream's parameters (the resume token among them)."""
        status, text = await self.post(http, base, self.public + "/twilio/voice", caller(call_sid))
        assert status == 200, text
        twiml = ET.fromstring(text)
        (connect,) = twiml.iter("Connect")
        assert connect.attrib["action"] == self.public + "/twilio/after-stream"
        return {p.attrib["name"]: p.attrib["value"] for p in twiml.iter("Parameter")}

    async def stream(
        self,
        http: aiohttp.ClientSession,
        base: str,
        call_sid: str,
        stream_sid: str,
        parameters: dict[str, str],
        received: list[dict[str, Any]],
        *,
        seconds: float,
        stop: bool = False,
        drop: bool = False,
    ) -> int | None:
        """One media stream: ``seconds`` of audio at 4x real time, the bridge's marks echoed, until the
        bridge closes it (``stop``: Twilio's stop after the audio; ``drop``: the socket closed after the
        audio, without a stop). Returns the close code."""
        scheme, rest = self.public.split("://", 1)
        public_url = ("wss" if scheme == "https" else "ws") + f"://{rest}/twilio/stream"
        signature = VALIDATOR.compute_signature(public_url, {})
        url = base.replace("http", "ws", 1) + "/twilio/stream"
        writer = TwilioStreamWriter(call_sid, stream_sid, account_sid=ACCOUNT_SID, parameters=parameters)
        audio = caller_audio(seconds, seed=int(stream_sid[-1], 16))
        async with http.ws_connect(url, headers={"X-Twilio-Signature": signature}) as ws:
            await ws.send_str(writer.connected())
            await ws.send_str(writer.start())

            async def listen() -> None:
                async for msg in ws:
                    if msg.type == aiohttp.WSMsgType.TEXT:
                        data = json.loads(msg.data)
                        received.append(data)
                        if data.get("event") == "mark":
                            await ws.send_str(writer.mark(data["mark"]["name"]))

            listener = asyncio.create_task(listen())
            for i in range(0, len(audio), 160):
                if ws.closed or listener.done():
                    break
                await ws.send_str(writer.media(audio[i : i + 160]))
                await asyncio.sleep(0.005)
            if stop and not ws.closed:
                await ws.send_str(writer.stop())
            if drop:
                await ws.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(listener, 20)
            return ws.close_code


async def pinned(base: str, worker: int) -> aiohttp.ClientSession:
    """A client session whose one keep-alive connection is served by worker ``worker``."""
    async with asyncio.timeout(20):
        while True:
            http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1))
            async with http.get(base + "/healthz") as resp:
                body = await resp.json()
            if body["worker"]["index"] == worker:
                return http
            await http.close()


async def fresh(twilio: PublicTwilio, base: str, url: str, form: dict[str, str]) -> tuple[int, str]:
    """A request on a new connection (SO_REUSEPORT picks the worker)."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
        return await twilio.post(http, base, url, form)


async def _bridge(fake_gladia: FakeGladia, hook_url: str) -> BridgeProcess:
    port = free_port()
    env = minimal_env(
        GLADIA_API_URL=fake_gladia.base_url,
        GLADIA_API_KEY="test-key",
        BOT_WEBHOOK_URL=hook_url,
        BOT_WEBHOOK_SECRET=WEBHOOK_SECRET,
        BRIDGE_API_TOKEN=API_TOKEN,
        TWILIO_AUTH_TOKEN=AUTH_TOKEN,
        BRIDGE_PUBLIC_URL=f"http://127.0.0.1:{port}",
        # no BRIDGE_SECRET: the workers of one `bridge serve` share the key of resume tokens and transfer links
        BRIDGE_TRANSFER_TO="+1555,pbx.example.com",
    )
    bridge = await start_bridge(env, "--workers", "2", port=port, startup=30)
    seen: set[int] = set()
    async with asyncio.timeout(30):
        while len(seen) < 2:
            http = await pinned(bridge.base, len(seen))
            await http.close()
            seen.add(len(seen))
    return bridge


async def _transferred(
    twilio: PublicTwilio, bridge: BridgeProcess, hook: FakeWebhook, call_sid: str, on: int, action: dict[str, Any]
) -> tuple[str, ET.Element]:
    """/twilio/voice, the call's stream pinned to worker ``on``, the transfer posted by REST on a fresh
    connection, the stream closed by the bridge, the ``<Connect action>`` fetch sent to the other worker
    (and repeated on fresh connections: the desk's answer is taken once). Returns the call id and the
    ``<Dial>`` markup."""
    base, other = bridge.base, 1 - on
    async with aiohttp.ClientSession() as http:
        parameters = await twilio.voice(http, base, call_sid)
    stream_http = await pinned(base, on)
    try:
        streaming = asyncio.create_task(
            twilio.stream(stream_http, base, call_sid, "MZ" + "1" * 32, parameters, [], seconds=20.0)
        )
        await wait_for(lambda: any(e["call"]["call_sid"] == call_sid for e in hook.events("call.started")), 15)
        call_id = next(e["call"]["id"] for e in hook.events("call.started") if e["call"]["call_sid"] == call_sid)
        async with (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http,
            http.post(
                f"{base}/v1/calls/{call_id}/actions",
                json={"actions": [action]},
                headers={"Authorization": f"Bearer {API_TOKEN}"},
            ) as resp,
        ):
            assert resp.status == 202, await resp.text()
            assert (await resp.json())["actions"][0]["status"] != "failed"
        assert await asyncio.wait_for(streaming, 20) == 1000  # the bridge closed the stream
    finally:
        await stream_http.close()
    http = await pinned(base, other)
    try:
        status, text = await twilio.post(http, base, twilio.public + "/twilio/after-stream", caller(call_sid))
    finally:
        await http.close()
    assert status == 200, text
    for _ in range(3):  # taken once, whichever worker the next fetch reaches
        status, again = await fresh(twilio, base, twilio.public + "/twilio/after-stream", caller(call_sid))
        assert status == 200 and [el.tag for el in ET.fromstring(again)] == ["Hangup"]
    return call_id, ET.fromstring(text)


@pytest.mark.timeout(120)
async def test_nobody_answers_and_the_caller_comes_back_through_another_worker(
    fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    """Two calls, one on each worker; for each, Twilio's requests after the transfer go to the other
    worker; the returning stream too, relayed to the call's worker: same call, same Gladia session."""
    hook, hook_url = webhook
    bridge = await _bridge(fake_gladia, hook_url)
    twilio = PublicTwilio(bridge.base)
    ids: dict[str, str] = {}
    try:
        for on in (0, 1):
            call_sid = f"CA{on}" + "4" * 31
            action = {"type": "transfer", "id": f"t{on}", "to": "sip:agent@pbx.example.com", "after": "now"}
            call_id, twiml = await _transferred(twilio, bridge, hook, call_sid, on, action)
            ids[call_sid] = call_id
            (sip,) = twiml.iter("Sip")
            assert sip.text == "sip:agent@pbx.example.com"
            (dial,) = twiml.iter("Dial")
            form = caller(call_sid) | {"DialCallStatus": "no-answer"}
            answers = [await fresh(twilio, bridge.base, dial.attrib["action"], form) for _ in range(4)]
            assert len({text for _, text in answers}) == 1  # the same markup, whichever worker answered
            back = ET.fromstring(answers[0][1])
            (stream,) = back.iter("Stream")
            assert stream.attrib["url"] == bridge.ws + "/twilio/stream"
            returned = {p.attrib["name"]: p.attrib["value"] for p in back.iter("Parameter")}
            http = await pinned(bridge.base, 1 - on)
            try:
                received: list[dict[str, Any]] = []
                close = await twilio.stream(
                    http, bridge.base, call_sid, "MZ" + "2" * 32, returned, received, seconds=2.0, stop=True
                )
            finally:
                await http.close()
            assert close == 1000
            await wait_for(partial(_ended_calls, hook, on + 1), timeout=20)
    finally:
        assert await bridge.stop() == 0
    assert len(bridge.logs("siblings.stream_relayed")) == 2  # each returning stream went through a sibling
    for call_sid, call_id in ids.items():
        events = [e for e in hook.events() if e["call"]["call_sid"] == call_sid]
        assert {e["call"]["id"] for e in events} == {call_id}  # the same call
        types = [e["type"] for e in events]
        assert types.index("transfer.started") < types.index("call.stream_restarted") < types.index("transfer.failed")
        (failed,) = [e for e in events if e["type"] == "transfer.failed"]
        assert failed["status"] == "no-answer"
        (ended,) = [e for e in events if e["type"] == "call.ended"]
        assert ended["summary"]["end_reason"] == "stop" and ended["summary"]["phone_streams"] == 2
        assert ended["summary"]["stt_sessions"] == 1
    assert len(fake_gladia.sessions) == 2  # one Gladia session per call, carried on after the return


@pytest.mark.timeout(120)
async def test_the_dial_result_reaches_the_worker_that_holds_the_call(
    fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    """The person answers (Twilio's ``<Number statusCallback>`` to the other worker): the call ends
    ``transferred`` with ``transfer.completed``; nobody answers a ``hangup`` transfer (``busy`` to the
    other worker): ``transfer.failed`` and ``transfer_failed``. Both well before the ring timeout."""
    hook, hook_url = webhook
    bridge = await _bridge(fake_gladia, hook_url)
    twilio = PublicTwilio(bridge.base)
    try:
        answered_sid, busy_sid = "CA0" + "8" * 31, "CA1" + "8" * 31
        action = {"type": "transfer", "id": "ta", "to": "+15550142", "after": "now"}
        _, twiml = await _transferred(twilio, bridge, hook, answered_sid, 0, action)
        (number,) = twiml.iter("Number")
        http = await pinned(bridge.base, 1)
        try:
            person = {"CallSid": "CA" + "9" * 32, "AccountSid": ACCOUNT_SID, "CallStatus": "in-progress"}
            status, _ = await twilio.post(http, bridge.base, number.attrib["statusCallback"], person)
        finally:
            await http.close()
        assert status == 200
        await wait_for(lambda: len(hook.events("call.ended")) == 1, timeout=10)

        action = {"type": "transfer", "id": "tb", "to": "+15550142", "after": "now", "on_no_answer": "hangup"}
        _, twiml = await _transferred(twilio, bridge, hook, busy_sid, 1, action)
        (dial,) = twiml.iter("Dial")
        http = await pinned(bridge.base, 0)
        try:
            form = caller(busy_sid) | {"DialCallStatus": "busy"}
            status, text = await twilio.post(http, bridge.base, dial.attrib["action"], form)
        finally:
            await http.close()
        assert status == 200 and [el.tag for el in ET.fromstring(text)] == ["Hangup"]
        await wait_for(lambda: len(hook.events("call.ended")) == 2, timeout=10)
    finally:
        assert await bridge.stop() == 0
    ended = {e["call"]["call_sid"]: e["summary"]["end_reason"] for e in hook.events("call.ended")}
    assert ended == {answered_sid: "transferred", busy_sid: "transfer_failed"}
    (completed,) = hook.events("transfer.completed")
    assert completed["action_id"] == "ta" and completed["call"]["call_sid"] == answered_sid
    (failed,) = hook.events("transfer.failed")
    assert failed["action_id"] == "tb" and failed["status"] == "busy"


# -- the relay itself, with the workers in this process -------------------------------------------------


@contextlib.asynccontextmanager
async def _workers_here(
    aiohttp_server: Any, fake_gladia: FakeGladia, hook_url: str, fake_sibling: web.Application | None = None
) -> AsyncIterator[list[Any]]:
    """Worker 0 (and worker 1, unless ``fake_sibling`` serves worker 1's internal socket) of 2, real
    apps in this process, each on its own port, sharing a run dir."""
    run_dir = Path(tempfile.mkdtemp(prefix="bw-"))  # short: unix socket paths are bounded
    env = {
        "BRIDGE_DATA_DIR": str(run_dir / "data"),
        "GLADIA_API_URL": fake_gladia.base_url,
        "GLADIA_API_KEY": "test-key",
        "BOT_WEBHOOK_URL": hook_url,
        "BOT_WEBHOOK_SECRET": WEBHOOK_SECRET,
    }
    settings = Settings.load(environ=env, overrides=FAST)
    runner = None
    try:
        servers = []
        if fake_sibling is not None:
            runner = web.AppRunner(fake_sibling)
            await runner.setup()
            await web.UnixSite(runner, str(socket_path(run_dir, 1))).start()
        for i in (0,) if fake_sibling is not None else (0, 1):
            app = create_app(settings, (i, 2))
            install(app, run_dir, i, 2, timeout=2.0)
            servers.append(await aiohttp_server(app, host="127.0.0.1"))
        yield servers
    finally:
        if runner is not None:
            await runner.cleanup()
        shutil.rmtree(run_dir, ignore_errors=True)


def _base(server: Any) -> str:
    return str(server.make_url("")).rstrip("/")


@pytest.mark.timeout(60)
async def test_a_stream_restarted_on_another_worker_carries_on_the_call(
    aiohttp_server: Any, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    """A plain restart (no transfer): the stream drops on worker 1 without a stop; Twilio's new stream
    reaches worker 0, which relays it to worker 1: the same call and Gladia session, both parts of
    the audio in it, ``call.stream_restarted``, the call ends with the stop sent on worker 0."""
    hook, hook_url = webhook
    async with _workers_here(aiohttp_server, fake_gladia, hook_url) as (w0, w1):
        twilio = PublicTwilio(_base(w0))
        call_sid = "CA" + "3" * 32
        async with aiohttp.ClientSession() as http:
            parameters = await twilio.voice(http, _base(w0), call_sid)
            await twilio.stream(http, _base(w1), call_sid, "MZ" + "1" * 32, parameters, [], seconds=1.0, drop=True)
            await wait_for(lambda: len(w1.app[CALLS].suspended) == 1)
            close = await twilio.stream(
                http, _base(w0), call_sid, "MZ" + "2" * 32, parameters, [], seconds=1.0, stop=True
            )
            assert close == 1000
            await wait_for(lambda: bool(hook.events("call.ended")), timeout=15)
        assert not w0.app[CALLS].live and not w0.app[CALLS].suspended  # worker 0 only relayed
    events = hook.events()
    assert len({e["call"]["id"] for e in events}) == 1
    assert [e["type"] for e in events].count("call.stream_restarted") == 1
    (ended,) = hook.events("call.ended")
    assert ended["summary"]["end_reason"] == "stop" and ended["summary"]["phone_streams"] == 2
    (session,) = fake_gladia.sessions.values()
    assert bytes(session.audio) == caller_audio(1.0, seed=1) + caller_audio(1.0, seed=2)


@pytest.mark.timeout(60)
async def test_a_sibling_gone_mid_relay_closes_the_carriers_socket_with_1011(
    aiohttp_server: Any, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    """Worker 1 (a fake on its internal socket) says it holds the call, takes the relayed stream, gets
    the messages worker 0 had already read (connected, start) replayed first, sends one message to the
    carrier, then vanishes (its connection aborted, no close frame): the carrier got that message, and
    its socket is closed with 1011."""
    hook, hook_url = webhook
    replayed: list[dict[str, Any]] = []

    async def suspended(request: web.Request) -> web.Response:
        return web.Response(status=200 if request.query.get("call_sid") == CALL_SID else 404)

    async def stream(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            replayed.append(json.loads(msg.data))
            if replayed[-1]["event"] == "media":
                await ws.send_str(json.dumps({"event": "clear", "streamSid": "MZ" + "2" * 32}))
                await asyncio.sleep(0.1)
                assert request.transport is not None
                request.transport.abort()  # worker 1 is gone
                break
        return ws

    fake = web.Application()
    fake.router.add_get("/internal/suspended", suspended)
    fake.router.add_get("/twilio/stream", stream)
    async with _workers_here(aiohttp_server, fake_gladia, hook_url, fake_sibling=fake) as (w0,):
        twilio = PublicTwilio(_base(w0))
        received: list[dict[str, Any]] = []
        async with aiohttp.ClientSession() as http:
            parameters = await twilio.voice(http, _base(w0), CALL_SID)
            close = await twilio.stream(http, _base(w0), CALL_SID, "MZ" + "2" * 32, parameters, received, seconds=2.0)
        assert close == 1011
        assert not hook.events()  # no call here: worker 0 only relayed
    assert [m["event"] for m in replayed[:3]] == ["connected", "start", "media"]
    assert replayed[1]["start"]["callSid"] == CALL_SID
    assert replayed[1]["start"]["customParameters"] == parameters  # replayed as the carrier sent it
    assert {"event": "clear", "streamSid": "MZ" + "2" * 32} in received


def _ended_calls(hook: FakeWebhook, count: int) -> bool:
    return len(hook.events("call.ended")) == count
