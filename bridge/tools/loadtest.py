"""``bridge loadtest``: how many calls a bridge carries, what each costs, and the delay it adds.

Three kinds of processes, all on this machine and loopback only:

* a **load Gladia + bot** process: a Gladia live v2 server that acknowledges every chunk and sends a
  final every 2 s of audio, and a webhook sink;
* the **bridge** under test (``bridge serve``, started here unless ``--bridge-url`` is given), at
  INFO logging with every feature on (resume buffer, acknowledgments, signing, outbox);
* ``--generators`` **caller** processes playing N Twilio calls in real time (20 ms frames), their starts
  spread evenly over the first 2 s (one final period), as real calls are not in lockstep.

Each phone frame carries its send time (``time.monotonic``, the same clock in every process) in its
first bytes, so the fake Gladia measures the forward latency of every frame, and each final carries
the time it was sent, so the sink measures final -> webhook latency. Prints one JSON line.

``--reply``: the bot answers every final with 2 s of audio (a ``play`` of an inline WAV), and each
caller plays what comes back like a Twilio phone (real-time playback, mark echoes): the line adds the
seconds of reply audio played and the **underruns**, gaps over 40 ms inside a reply that a paced
listener would hear. Compare its CPU with a run without ``--reply``, side by side.
"""

from __future__ import annotations

import asyncio
import base64
import json
import multiprocessing as mp
import os
import resource
import signal
import socket
import struct
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import WSMsgType, web

from bridge.loop import run_loop
from bridge.tools.ear import TwilioEar

FRAME = 160  # 20 ms of mu-law
FINAL_EVERY = 16000  # bytes: a final every 2 s of audio
_TS = struct.Struct("<d")
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- the load Gladia and the bot -------------------------------------------------------------------


@dataclass
class _Stats:
    frames: int = 0
    forward: list[float] = field(default_factory=list)
    finals_sent: int = 0
    webhook: list[float] = field(default_factory=list)
    webhook_finals: int = 0
    sessions: int = 0


def _reply_wav(seconds: float = 2.0) -> str:
    """A 2 s, 440 Hz mu-law WAV at 8 kHz, base64: what the load bot plays back for every final."""
    from bridge.audio import encode_from_pcm16

    n = int(8000 * seconds)
    pcm = b"".join(
        struct.pack("<h", int(8000 * __import__("math").sin(6.283185307 * 440 * i / 8000))) for i in range(n)
    )
    data = encode_from_pcm16(pcm, "ulaw")
    fmt = struct.pack("<HHIIHH", 7, 1, 8000, 8000, 1, 8)
    wav = b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt
    return base64.b64encode(wav + b"data" + struct.pack("<I", len(data)) + data).decode()


def _gladia_and_bot(port_queue: Any, stop: Any, results: Any, reply: bool = False) -> None:
    stats = _Stats()
    answer = json.dumps({"actions": [{"type": "play", "audio": _reply_wav(), "interrupt": "none"}]}) if reply else ""

    async def create(request: web.Request) -> web.Response:
        stats.sessions += 1
        token = uuid.uuid4().hex
        return web.json_response(
            {"id": token, "created_at": "2026-01-01T00:00:00Z", "url": f"ws://{request.host}/v2/live?token={token}"},
            status=201,
        )

    async def session(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=2**20)
        await ws.prepare(request)
        sid = request.query.get("token", "")
        received = 0
        finals = 0
        async for msg in ws:
            if msg.type is WSMsgType.BINARY:
                data: bytes = msg.data
                now = time.monotonic()
                start = received
                received += len(data)
                offset = (-start) % FRAME  # first frame boundary inside this chunk
                while offset + _TS.size <= len(data):
                    stats.forward.append(now - _TS.unpack_from(data, offset)[0])
                    stats.frames += 1
                    offset += FRAME
                await ws.send_str(
                    json.dumps(
                        {
                            "type": "audio_chunk",
                            "session_id": sid,
                            "acknowledged": True,
                            "error": None,
                            "created_at": "",
                            "data": {"byte_range": [start, received], "time_range": [start / 8000, received / 8000]},
                        }
                    )
                )
                while (finals + 1) * FINAL_EVERY <= received:
                    finals += 1
                    await _final(ws, sid, finals)
            elif msg.type is WSMsgType.TEXT and "stop_recording" in msg.data:
                if received > finals * FINAL_EVERY:
                    finals += 1
                    await _final(ws, sid, finals, end=received / 8000)
                await ws.send_str(json.dumps({"type": "end_session", "session_id": sid, "created_at": ""}))
                await ws.close(code=1000)
        return ws

    async def _final(ws: web.WebSocketResponse, sid: str, n: int, end: float | None = None) -> None:
        stats.finals_sent += 1
        end = end if end is not None else n * FINAL_EVERY / 8000
        text = f"t={time.monotonic():.6f}"
        await ws.send_str(
            json.dumps(
                {
                    "type": "transcript",
                    "session_id": sid,
                    "created_at": "",
                    "data": {
                        "id": f"00_{n:08d}",
                        "is_final": True,
                        "utterance": {
                            "start": end - 2.0,
                            "end": end,
                            "confidence": 1.0,
                            "channel": 0,
                            "text": text,
                            "language": "en",
                            "words": [],
                        },
                    },
                }
            )
        )

    async def hook(request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("type") == "utterance.final":
            sent = float(body["utterance"]["text"].split("=")[1])
            stats.webhook.append(time.monotonic() - sent)
            stats.webhook_finals += 1
            if answer:
                return web.Response(text=answer, content_type="application/json")
        return web.Response(status=204)

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/v2/live", create)
        app.router.add_get("/v2/live", session)
        app.router.add_post("/hook", hook)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        port = _free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        port_queue.put(port)
        while not stop.is_set():
            await asyncio.sleep(0.1)
        results.put(
            {
                "frames": stats.frames,
                "forward": stats.forward,
                "finals_sent": stats.finals_sent,
                "webhook": stats.webhook,
                "webhook_finals": stats.webhook_finals,
                "sessions": stats.sessions,
            }
        )
        await runner.cleanup()

    run_loop(main())


# -- callers --------------------------------------------------------------------------------------------


def _callers(
    url: str,
    calls: int,
    seconds: float,
    first: int,
    go_at: float,
    ramp: float,
    total: int,
    results: Any,
    reply: bool = False,
) -> None:
    frames_per_call = int(seconds / 0.02)
    silence = b"\xff" * FRAME
    heard = {"reply_seconds_heard": 0.0, "underruns": 0, "marks_echoed": 0}

    async def listen(ws: aiohttp.ClientWebSocketResponse, ear: TwilioEar, echoes: list[str]) -> None:
        """Play back like a phone: real-time playback clock, marks due when reached, and a gap over
        40 ms between two pieces of audio with no mark between them (inside one reply) is an underrun."""
        after_mark = True
        async for msg in ws:
            if msg.type is not WSMsgType.TEXT:
                continue
            now = time.monotonic()
            head = msg.data[:40]
            if '"media"' in head:
                if not after_mark and now > ear.finished_at() + 0.04:
                    heard["underruns"] += 1
                after_mark = False
            elif '"mark"' in head:
                after_mark = True
            echoes.extend(ear.receive(msg.data, now))
        heard["reply_seconds_heard"] += len(ear.heard()) / 8000
        heard["marks_echoed"] += len(ear.marks)

    async def one(n: int) -> tuple[int, int | None]:
        sid = f"MZ{first + n:032d}"
        # Calls start evenly spread over the ramp (one final period): real calls are not in lockstep, and
        # in lockstep every call's final would land in the same millisecond, every 2 s.
        await asyncio.sleep(max(0.0, go_at + (first + n) * ramp / total - time.monotonic()))
        sent = 0
        async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
            await ws.send_str(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
            await ws.send_str(
                json.dumps(
                    {
                        "event": "start",
                        "sequenceNumber": "1",
                        "streamSid": sid,
                        "start": {
                            "streamSid": sid,
                            "accountSid": "AC0",
                            "callSid": f"CA{first + n:032d}",
                            "tracks": ["inbound"],
                            "customParameters": {},
                            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                        },
                    }
                )
            )
            head = f'{{"event":"media","streamSid":"{sid}","media":{{"track":"inbound","payload":"'
            echoes: list[str] = []
            ear = TwilioEar()
            listener = asyncio.create_task(listen(ws, ear, echoes)) if reply else None
            t0 = time.monotonic()
            for i in range(frames_per_call):
                delay = t0 + i * 0.02 - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                frame = _TS.pack(time.monotonic()) + silence[_TS.size :]
                await ws.send_str(head + base64.b64encode(frame).decode() + '"}}')
                sent += 1
                if listener is not None:
                    echoes.extend(ear.due(time.monotonic()))
                    while echoes:
                        name = echoes.pop(0)
                        await ws.send_str(f'{{"event":"mark","streamSid":"{sid}","mark":{{"name":"{name}"}}}}')
            await ws.send_str(json.dumps({"event": "stop", "streamSid": sid, "stop": {}}))
            if listener is not None:
                await listener
            else:
                async for _ in ws:
                    pass
            return sent, ws.close_code

    async def main() -> None:
        outcomes = await asyncio.gather(*(one(n) for n in range(calls)), return_exceptions=True)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        ok = [o for o in outcomes if isinstance(o, tuple)]
        results.put(
            {
                "frames_sent": sum(o[0] for o in ok),
                "failed_calls": len(outcomes) - len(ok),
                "cpu_s": usage.ru_utime + usage.ru_stime,
                **heard,
            }
        )

    run_loop(main())


# -- the reference forwarder -------------------------------------------------------------------------


def _reference_forwarder(port: int, gladia_url: str, hook_url: str) -> None:
    """``--reference``: the least any Twilio -> Gladia -> webhook forwarder on aiohttp does, measured under
    the same load so the bridge's figures read as a ratio on any machine: parse the stream, open a session,
    send each frame as it comes, read the acknowledgments, post each final. No resume buffer, no outbox,
    no signing, no retries, no logging, no validation beyond what the load needs."""

    async def stream(request: web.Request) -> web.WebSocketResponse:
        phone = web.WebSocketResponse()
        await phone.prepare(request)
        http: aiohttp.ClientSession = request.app["http"]
        gladia: aiohttp.ClientWebSocketResponse | None = None
        reader: asyncio.Task[None] | None = None

        async def read_gladia(ws: aiohttp.ClientWebSocketResponse) -> None:
            async for msg in ws:
                event = orjson.loads(msg.data)
                if event["type"] == "transcript" and event["data"]["is_final"]:
                    async with http.post(
                        hook_url,
                        json={"type": "utterance.final", "utterance": {"text": event["data"]["utterance"]["text"]}},
                    ) as resp:
                        await resp.read()

        async for msg in phone:
            event = orjson.loads(msg.data)
            if event["event"] == "media" and gladia is not None:
                await gladia.send_bytes(base64.b64decode(event["media"]["payload"]))
            elif event["event"] == "start":
                async with http.post(
                    gladia_url + "/v2/live",
                    json={"encoding": "wav/ulaw", "sample_rate": 8000, "bit_depth": 8, "channels": 1},
                ) as resp:
                    session = await resp.json()
                gladia = await http.ws_connect(session["url"])
                reader = asyncio.create_task(read_gladia(gladia))
            elif event["event"] == "stop" and gladia is not None and reader is not None:
                await gladia.send_str(json.dumps({"type": "stop_recording"}))
                await reader
                break
        return phone

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/twilio/stream", stream)
        app.router.add_get("/healthz", healthz)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:  # a socket per call
            app["http"] = http
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            await asyncio.Event().wait()

    run_loop(main())


# -- measuring the bridge ----------------------------------------------------------------------------------


def _process_tree(pid: int) -> list[int]:
    pids = [pid]
    try:
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            pids.extend(_process_tree(int(child)))
    except OSError:
        pass
    return pids


def _cpu_seconds(pid: int) -> float:
    total = 0.0
    for p in _process_tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / _CLK_TCK
    return total


def _rss_bytes(pid: int) -> int:
    total = 0
    for p in _process_tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


async def _wait_healthy(base: str) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(600):
            try:
                async with http.get(base + "/healthz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError(f"bridge at {base} did not become healthy")


def run(
    calls: int,
    seconds: float,
    generators: int,
    workers: int,
    bridge_url: str | None,
    config: str | None = None,
    reference: bool = False,
    reply: bool = False,
) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    port_q, results, stop = ctx.Queue(), ctx.Queue(), ctx.Event()
    fake = ctx.Process(target=_gladia_and_bot, args=(port_q, stop, results, reply and not reference), daemon=True)
    fake.start()
    fake_port = port_q.get(timeout=30)
    proc: Any = None
    if reference:
        port = _free_port()
        proc = ctx.Process(
            target=_reference_forwarder,
            daemon=True,
            args=(port, f"http://127.0.0.1:{fake_port}", f"http://127.0.0.1:{fake_port}/hook"),
        )
        proc.start()
        bridge_url = f"http://127.0.0.1:{port}"
    elif bridge_url is None:
        port = _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BRIDGE_", "GLADIA_", "BOT_", "TWILIO_"))}
        env.update(
            GLADIA_API_URL=f"http://127.0.0.1:{fake_port}",
            GLADIA_API_KEY="load",
            BOT_WEBHOOK_URL=f"http://127.0.0.1:{fake_port}/hook",
            BOT_WEBHOOK_SECRET="whsec_" + base64.b64encode(os.urandom(24)).decode(),
            BRIDGE_DATA_DIR=tempfile.mkdtemp(prefix="bridge-load-"),
            BRIDGE_LOG_LEVEL="info",
            BRIDGE_LOG_FORMAT="json",
            BRIDGE_WORKERS=str(workers),
        )
        if config:
            env["BRIDGE_CONFIG"] = config  # measure your own tunables (e.g. gladia.chunk_ms)
        proc = __import__("subprocess").Popen(
            [sys.executable, "-m", "bridge", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=__import__("subprocess").DEVNULL,
            stderr=__import__("subprocess").DEVNULL,
        )
        bridge_url = f"http://127.0.0.1:{port}"
    asyncio.run(_wait_healthy(bridge_url))
    pid = proc.pid if proc is not None else None
    rss_idle = _rss_bytes(pid) if pid else 0
    go_at = time.monotonic() + 2.0
    ramp = min(FINAL_EVERY / 8000, seconds / 4)
    per = [calls // generators + (1 if i < calls % generators else 0) for i in range(generators)]
    gens = []
    first = 0
    for n in per:
        g = ctx.Process(
            target=_callers,
            args=(
                bridge_url.replace("http", "ws") + "/twilio/stream",
                n,
                seconds,
                first,
                go_at,
                ramp,
                calls,
                results,
                reply and not reference,
            ),
            daemon=True,
        )
        g.start()
        gens.append(g)
        first += n
    # Measure the bridge over the steady middle of the run.
    window_start, window_end = go_at + ramp + min(2.0, seconds * 0.2), go_at + seconds * 0.9
    time.sleep(max(0.0, window_start - time.monotonic()))
    cpu0, t0 = (_cpu_seconds(pid) if pid else 0.0), time.monotonic()
    time.sleep(max(0.0, window_end - time.monotonic()))
    cpu1, t1 = (_cpu_seconds(pid) if pid else 0.0), time.monotonic()
    rss_busy = _rss_bytes(pid) if pid else 0
    caller_results = [results.get(timeout=seconds + 120) for _ in gens]
    for g in gens:
        g.join(timeout=30)
    time.sleep(1.0)  # let the last finals reach the sink
    stop.set()
    fake_result = results.get(timeout=60)
    fake.join(timeout=30)
    if reference:
        proc.terminate()
        proc.join(timeout=30)
    elif proc is not None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    frames_sent = sum(r["frames_sent"] for r in caller_results)
    gen_cpu = sum(r["cpu_s"] for r in caller_results)
    call_seconds = calls * (t1 - t0)
    frames_per_call = int(seconds / 0.02)
    finals_expected = calls * -(-frames_per_call * FRAME // FINAL_EVERY)
    elapsed = seconds + ramp
    return {
        "under_test": "reference_forwarder" if reference else "bridge",
        "calls": calls,
        "seconds": seconds,
        "workers": workers,
        "generators": generators,
        "cores": os.cpu_count(),
        "ramp_s": ramp,
        "bridge_cpu_ms_per_call_second": round((cpu1 - cpu0) * 1000 / call_seconds, 3) if pid else None,
        "bridge_rss_kb_per_call": round((rss_busy - rss_idle) / 1024 / calls, 1) if pid else None,
        "forward_latency_ms": {
            "p50": round(_pct(fake_result["forward"], 0.5) * 1000, 2),
            "p99": round(_pct(fake_result["forward"], 0.99) * 1000, 2),
            "max": round(max(fake_result["forward"], default=float("nan")) * 1000, 2),
        },
        "final_to_webhook_ms": {
            "p50": round(_pct(fake_result["webhook"], 0.5) * 1000, 2),
            "p99": round(_pct(fake_result["webhook"], 0.99) * 1000, 2),
        },
        "frames_sent": frames_sent,
        "frames_lost": frames_sent - fake_result["frames"],
        "failed_calls": sum(r["failed_calls"] for r in caller_results),
        "finals_delivered": fake_result["webhook_finals"],
        "finals_expected": finals_expected,
        "generator_cpu_share": round(gen_cpu / (elapsed * generators), 3),
        "generator_saturated": gen_cpu / (elapsed * generators) > 0.8,
        **(
            {
                "reply": True,
                "reply_seconds_heard": round(sum(r["reply_seconds_heard"] for r in caller_results), 1),
                "reply_underruns": sum(r["underruns"] for r in caller_results),
                "reply_marks_echoed": sum(r["marks_echoed"] for r in caller_results),
            }
            if reply and not reference
            else {}
        ),
    }


def main(
    calls: int,
    seconds: float,
    generators: int,
    workers: int,
    bridge_url: str | None,
    config: str | None = None,
    reference: bool = False,
    reply: bool = False,
) -> int:
    result = run(calls, seconds, generators, workers, bridge_url, config, reference, reply)
    print(json.dumps(result))
    return 0 if result["frames_lost"] == 0 and result["failed_calls"] == 0 else 1
