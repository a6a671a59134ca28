"""The processes a load test runs besides the bridge (``bridge loadtest``): the load Gladia and bot,
the callers, and the reference forwarder, each in its own process (``multiprocessing`` spawn); and, in
fleet mode, the ``redis-server`` the bridges share (:class:`LoadRedis`). The balancer in front of
several bridges is :mod:`bridge.tools.balancer`."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import resource
import shutil
import socket
import struct
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
import redis
from aiohttp import WSMsgType, web

from bridge.loop import run_loop
from bridge.tools.ear import TwilioEar

FRAME = 160  # 20 ms of mu-law
FINAL_EVERY = 16000  # bytes of a session's stream: a final every 2 s of one track, every 1 s of two
TRACKS = {"inbound": ["inbound"], "both": ["inbound", "outbound"]}  # --tracks -> Twilio's start.tracks
SEND_TIME = struct.Struct("<d")  # the first bytes of every load frame: when it was sent (time.monotonic)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- the load Gladia and the bot -------------------------------------------------------------------


class FirstChannel:
    """The send times in a Gladia session's stream, one per frame of channel 0 (the caller's track),
    from the chunks as they come.

    Mu-law is a byte a sample, so a two-channel stream is L0 R0 L1 R1 ...: which byte of a chunk is
    channel 0 follows the running byte offset (its parity for two channels). A timestamp cut between
    two chunks is put back together, so no frame goes uncounted whatever size the chunks are.
    """

    def __init__(self, channels: int = 1) -> None:
        self.channels = channels
        self.received = 0  # bytes of the session's stream
        self._position = 0  # bytes of channel 0
        self._stamp = bytearray()  # the start of a timestamp cut at the end of the last chunk

    def feed(self, data: bytes) -> list[float]:
        """The send times of the channel-0 frames whose timestamp ends in ``data``."""
        first = data if self.channels == 1 else data[(-self.received) % self.channels :: self.channels]
        self.received += len(data)
        pos = self._position
        self._position += len(first)
        stamps = []
        i = 0
        while i < len(first):
            into = (pos + i) % FRAME
            if into >= SEND_TIME.size:
                i += FRAME - into  # to the next frame boundary
                continue
            take = min(SEND_TIME.size - into, len(first) - i)
            if take == SEND_TIME.size:
                stamps.append(SEND_TIME.unpack_from(first, i)[0])
            else:
                self._stamp += first[i : i + take]
                if len(self._stamp) == SEND_TIME.size:
                    stamps.append(SEND_TIME.unpack(self._stamp)[0])
                    self._stamp.clear()
            i += take
        return stamps


@dataclass
class StandinStats:
    frames: int = 0
    forward: list[float] = field(default_factory=list)
    finals_sent: int = 0
    webhook: list[float] = field(default_factory=list)  # final -> webhook latency, at its first arrival
    webhook_finals: int = 0  # distinct finals the bot received
    webhook_redelivered: int = 0  # posts of a final it already had (retries after webhook.timeout)
    sessions: int = 0
    _seen: set[str] = field(default_factory=set)

    def final_arrived(self, key: str, latency: float) -> None:
        """A final posted to the bot, ``key`` its ``webhook-id`` (the same on every retry): counted
        once, its latency from its first arrival; the bot behind a slow answer dedupes the rest."""
        if key in self._seen:
            self.webhook_redelivered += 1
            return
        self._seen.add(key)
        self.webhook.append(latency)
        self.webhook_finals += 1


def reply_wav(seconds: float = 2.0) -> str:
    """A 2 s, 440 Hz mu-law WAV at 8 kHz, base64: what the load bot plays back for every final."""
    from bridge.audio import encode_from_pcm16

    n = int(8000 * seconds)
    pcm = b"".join(struct.pack("<h", int(8000 * math.sin(6.283185307 * 440 * i / 8000))) for i in range(n))
    data = encode_from_pcm16(pcm, "ulaw")
    fmt = struct.pack("<HHIIHH", 7, 1, 8000, 8000, 1, 8)
    wav = b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt
    return base64.b64encode(wav + b"data" + struct.pack("<I", len(data)) + data).decode()


def gladia_and_bot(port_queue: Any, stop: Any, results: Any, reply: bool = False) -> None:
    stats = StandinStats()
    answer = json.dumps({"actions": [{"type": "play", "audio": reply_wav(), "interrupt": "none"}]}) if reply else ""
    session_channels: dict[str, int] = {}  # session token -> "channels" of its POST body

    async def create(request: web.Request) -> web.Response:
        stats.sessions += 1
        token = uuid.uuid4().hex
        session_channels[token] = int((await request.json()).get("channels", 1))
        return web.json_response(
            {"id": token, "created_at": "2026-01-01T00:00:00Z", "url": f"ws://{request.host}/v2/live?token={token}"},
            status=201,
        )

    async def session(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=2**20)
        await ws.prepare(request)
        sid = request.query.get("token", "")
        # Two channels (both parties): forward latency is measured on channel 0 only, so a frame is
        # still one frame of the caller; acknowledgments and finals count the interleaved bytes, so a
        # final comes every 1 s of a two-track call (both parties talking), every 2 s of one track.
        stream = FirstChannel(session_channels.get(sid, 1))
        rate = 8000 * stream.channels  # bytes per second of the session's stream
        finals = 0
        async for msg in ws:
            if msg.type is WSMsgType.BINARY:
                data: bytes = msg.data
                now = time.monotonic()
                start = stream.received
                stamps = stream.feed(data)
                received = stream.received
                stats.forward.extend(now - t for t in stamps)
                stats.frames += len(stamps)
                await ws.send_str(
                    json.dumps(
                        {
                            "type": "audio_chunk",
                            "session_id": sid,
                            "acknowledged": True,
                            "error": None,
                            "created_at": "",
                            "data": {"byte_range": [start, received], "time_range": [start / rate, received / rate]},
                        }
                    )
                )
                while (finals + 1) * FINAL_EVERY <= received:
                    finals += 1
                    await _final(ws, sid, finals, stream.channels)
            elif msg.type is WSMsgType.TEXT and "stop_recording" in msg.data:
                if stream.received > finals * FINAL_EVERY:
                    finals += 1
                    await _final(ws, sid, finals, stream.channels, end=stream.received / rate)
                await ws.send_str(json.dumps({"type": "end_session", "session_id": sid, "created_at": ""}))
                await ws.close(code=1000)
        return ws

    async def _final(ws: web.WebSocketResponse, sid: str, n: int, channels: int, end: float | None = None) -> None:
        """Final ``n`` of a session: the parties take turns (channel 0, 1, 0, ... on two channels)."""
        stats.finals_sent += 1
        period = FINAL_EVERY / (8000 * channels)  # seconds of the call per final
        end = end if end is not None else n * period
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
                            "start": end - period,
                            "end": end,
                            "confidence": 1.0,
                            "channel": (n - 1) % channels,
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
            text = body["utterance"]["text"]
            sent = float(text.split("=")[1])
            # the reference forwarder neither retries nor sends a webhook-id: its text is unique
            stats.final_arrived(request.headers.get("webhook-id", text), time.monotonic() - sent)
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
        port = free_port()
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
                "webhook_redelivered": stats.webhook_redelivered,
                "sessions": stats.sessions,
            }
        )
        await runner.cleanup()

    run_loop(main())


# -- callers --------------------------------------------------------------------------------------------


def callers(
    url: str,
    calls: int,
    seconds: float,
    first: int,
    go_at: float,
    ramp: float,
    total: int,
    results: Any,
    reply: bool = False,
    tracks: str = "inbound",
) -> None:
    """``calls`` Twilio calls in real time. ``tracks="both"``: a ``<Start><Stream track="both_tracks">``
    stream, each 20 ms an inbound and an outbound media message with the same ``timestamp``, both
    carrying the same timestamped frame (one base64 encoding per 20 ms, as for one track)."""
    frames_per_call = int(seconds / 0.02)
    names = TRACKS[tracks]
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
                            "tracks": names,
                            "customParameters": {},
                            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                        },
                    }
                )
            )
            head = f'{{"event":"media","streamSid":"{sid}","media":{{"track":"inbound","payload":"'
            # both tracks: Twilio's fields in its order, the timestamp in ms since the stream started
            heads = [f'{{"event":"media","streamSid":"{sid}","media":{{"track":"{t}","chunk":"' for t in names]
            echoes: list[str] = []
            ear = TwilioEar()
            listener = asyncio.create_task(listen(ws, ear, echoes)) if reply else None
            t0 = time.monotonic()
            for i in range(frames_per_call):
                delay = t0 + i * 0.02 - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                frame = SEND_TIME.pack(time.monotonic()) + silence[SEND_TIME.size :]
                payload = base64.b64encode(frame).decode()
                if len(names) == 1:
                    await ws.send_str(head + payload + '"}}')
                else:
                    for h in heads:
                        await ws.send_str(f'{h}{i + 1}","timestamp":"{i * 20}","payload":"{payload}"}}}}')
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
                "frames_sent": sum(o[0] for o in ok),  # inbound frames (each track sends as many)
                "failed_calls": len(outcomes) - len(ok),
                "cpu_s": usage.ru_utime + usage.ru_stime,
                **heard,
            }
        )

    run_loop(main())


# -- the reference forwarder -------------------------------------------------------------------------


def reference_forwarder(port: int, gladia_url: str, hook_url: str) -> None:
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


# -- the fleet's Redis --------------------------------------------------------------------------------

REDIS_MISSING = (
    "redis-server not found: fleet mode needs it (Debian/Ubuntu: apt-get install redis-server), "
    "or pass --redis-url redis://HOST:PORT/0"
)


class LoadRedis:
    """The Redis of a fleet-mode load test: a ``redis-server`` started here (free loopback port, a
    temporary directory, AOF on with the given ``appendfsync``), or one at ``url``, left as it is.

    :meth:`info` reads its counters; :attr:`pid` is the started server's (None for a given URL).
    """

    def __init__(self, url: str | None = None, appendfsync: str = "everysec") -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.directory: str | None = None
        if url is not None:
            self.url = url
            return
        binary = shutil.which("redis-server")
        if binary is None:
            raise FileNotFoundError(REDIS_MISSING)
        self.directory = tempfile.mkdtemp(prefix="bridge-load-redis-")
        port = free_port()
        self.url = f"redis://127.0.0.1:{port}/0"
        # The flags of tests/support/redis_server.py, but appendfsync as asked (everysec by default:
        # what a load test of the bridge, not of the disk, wants; `always` fsyncs every write).
        self.proc = subprocess.Popen(
            [
                *(binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", self.directory, "--save", ""),
                *("--appendonly", "yes", "--appendfsync", appendfsync, "--daemonize", "no", "--protected-mode", "yes"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.close()
                    raise RuntimeError(f"redis-server did not answer on port {port}") from None
                time.sleep(0.05)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def info(self) -> dict[str, Any]:
        """``INFO stats``, ``INFO cpu`` and ``INFO commandstats`` in one dict (redis-py's parsing)."""
        with redis.Redis.from_url(self.url, socket_timeout=10) as client:
            info: dict[str, Any] = {}
            for section in ("stats", "cpu", "commandstats"):
                info.update(client.info(section))
            return info

    def appendfsync(self) -> str | None:
        """The server's ``appendfsync`` (``no`` when AOF is off); None when ``CONFIG`` is not allowed."""
        try:
            with redis.Redis.from_url(self.url, socket_timeout=10, decode_responses=True) as client:
                config: dict[str, str] = client.config_get("append*")
        except redis.RedisError:
            return None
        return config.get("appendfsync") if config.get("appendonly") == "yes" else "no"

    def close(self) -> None:
        """Stop the server started here (SIGTERM: it writes its AOF and exits) and remove its directory."""
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
            self.proc = None
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None


def commands_between(before: dict[str, Any], after: dict[str, Any]) -> dict[str, int]:
    """Commands by name between two :meth:`LoadRedis.info` reads (``INFO commandstats``), busiest first;
    a command run inside a script counts under its own name as well as the script's ``evalsha``."""
    counts = {
        key.removeprefix("cmdstat_"): int(value["calls"]) - int(before.get(key, {}).get("calls", 0))
        for key, value in after.items()
        if key.startswith("cmdstat_") and isinstance(value, dict)
    }
    return dict(sorted(((k, v) for k, v in counts.items() if v > 0), key=lambda kv: -kv[1]))
