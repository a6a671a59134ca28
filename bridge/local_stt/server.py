"""The local Gladia-compatible live server (aiohttp): REST routes, the session WebSocket, decoding.

Routes, as Gladia's live v2: ``POST /v2/live`` (201 ``{id, created_at, url}``), the session WebSocket
at the returned ``url`` (``/v2/live?token=...``), ``GET /v2/live/{id}`` and ``DELETE /v2/live/{id}``.

Recognition runs in a thread pool (faster-whisper releases the GIL), one ordered decode task per
session, so the event loop only moves bytes and runs the VAD. A session with several channels
recognises them all in that one task, one utterance at a time (finals first, then partials of the
channels whose partial is the oldest). Sessions are admitted up to
``max_sessions`` (by default what this machine's cores can recognise in real time with the model); more
get 429. A session asking for a language the model does not know (any but English on tiny.en) gets 422.
A session whose socket drops stays resumable for ``grace_seconds``; messages produced meanwhile are
kept and sent when the client reconnects.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import os
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiohttp import WSMsgType, web

from bridge.local_stt.engine import Recognizer, SileroVad, WhisperRecognizer
from bridge.local_stt.languages import SessionLanguages, refusals
from bridge.local_stt.live import LiveSession, now_iso
from bridge.local_stt.models import ModelName
from bridge.local_stt.request import error_body, parse_request
from bridge.untrusted import loads

log = structlog.get_logger("bridge.local_stt")

MAX_FRAME = 1024 * 1024  # Gladia closes with 1009 on larger frames; so do we
PARTIAL_INTERVAL = 1.0


def default_max_sessions(model: ModelName = "tiny.en") -> int:
    """Sessions this machine recognises in real time: about four per core with tiny.en, two with base, which
    takes 2.1x the CPU per second of audio (finals only, one language: benchmarks/bench_local_stt.py --model,
    CPU 0.14 and 0.30 s per second of a session; a language detected costs base about 15% more)."""
    per_core = 4 if model == "tiny.en" else 2
    return max(2, per_core * (os.cpu_count() or 1))


@dataclass
class ServerOptions:
    api_key: str | None = None
    model: ModelName = "tiny.en"
    max_sessions: int = 0  # 0: default_max_sessions(model)
    grace_seconds: float = 60.0
    workers: int = field(default_factory=lambda: max(1, min(4, os.cpu_count() or 1)))
    beam_size: int = 5
    history_prompt: bool = False  # each channel's previous finals as Whisper's prompt (off: see local_stt.context)

    def __post_init__(self) -> None:
        if self.max_sessions <= 0:
            self.max_sessions = default_max_sessions(self.model)


@dataclass
class _Runtime:
    live: LiveSession
    languages: SessionLanguages
    ws: web.WebSocketResponse | None = None
    outbox: list[dict[str, Any]] = field(default_factory=list)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    decoder: asyncio.Task[None] | None = None
    expiry: asyncio.TimerHandle | None = None
    closed: asyncio.Event = field(default_factory=asyncio.Event)


class LocalSttServer:
    """Owns the recogniser, the VAD, the sessions and the aiohttp application."""

    def __init__(self, options: ServerOptions | None = None, recognizer: Recognizer | None = None) -> None:
        self.options = options or ServerOptions()
        self.recognizer = recognizer
        self.vad: SileroVad | None = None
        self.pool = ThreadPoolExecutor(max_workers=self.options.workers, thread_name_prefix="stt-decode")
        self.sessions: dict[str, _Runtime] = {}
        self.app = web.Application(client_max_size=1024 * 1024)
        self.app.router.add_post("/v2/live", self._create)
        self.app.router.add_get("/v2/live", self._socket)
        self.app.router.add_get("/v2/live/{id}", self._get)
        self.app.router.add_delete("/v2/live/{id}", self._delete)
        self.app.cleanup_ctx.append(self._lifetime)

    async def _lifetime(self, app: web.Application) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        if self.recognizer is None:
            self.recognizer = await loop.run_in_executor(
                None,
                lambda: WhisperRecognizer(
                    self.options.model, cpu_threads=1, workers=self.options.workers, beam_size=self.options.beam_size
                ),
            )
        self.vad = await loop.run_in_executor(None, SileroVad)
        log.info(
            "stt_server.ready",
            engine=self.recognizer.name,
            max_sessions=self.options.max_sessions,
            workers=self.options.workers,
        )
        yield
        for rt in list(self.sessions.values()):
            if rt.decoder is not None:
                rt.decoder.cancel()
            if rt.ws is not None and not rt.ws.closed:
                await rt.ws.close(code=1001)
        self.pool.shutdown(wait=False, cancel_futures=True)

    # -- REST ------------------------------------------------------------------------------------

    def _auth(self, request: web.Request) -> web.Response | None:
        if self.options.api_key is not None and request.headers.get("x-gladia-key") != self.options.api_key:
            return web.json_response(error_body(401, "gladia key not found", request.path), status=401)
        return None

    @property
    def active_sessions(self) -> int:
        return sum(1 for rt in self.sessions.values() if rt.live.state != "done")

    async def _create(self, request: web.Request) -> web.Response:
        if (denied := self._auth(request)) is not None:
            return denied
        parsed = parse_request(await request.read(), request.path)
        if isinstance(parsed, tuple):
            status, body = parsed
            return web.json_response(body, status=status)
        assert self.recognizer is not None and self.vad is not None
        languages = SessionLanguages.of(parsed.language_config)
        if refused := refusals(languages.listed, self.recognizer.languages, self.recognizer.name):
            return web.json_response(error_body(422, "Invalid parameter values", request.path, refused), status=422)
        if self.active_sessions >= self.options.max_sessions:
            log.warning("stt_server.at_capacity", max_sessions=self.options.max_sessions)
            return web.json_response(
                error_body(
                    429,
                    f"Too many concurrent sessions: this server recognises {self.options.max_sessions} in real time",
                    request.path,
                ),
                status=429,
            )
        sid, token = str(uuid.uuid4()), str(uuid.uuid4())
        live = LiveSession(sid, token, parsed, self.vad.stream, history_prompt=self.options.history_prompt)
        rt = _Runtime(live, languages)
        self.sessions[sid] = rt
        rt.decoder = asyncio.create_task(self._decode_loop(rt), name=f"stt-decode-{sid[:8]}")
        self._arm_expiry(rt)
        proto = request.headers.get("X-Forwarded-Proto", request.scheme).split(",")[0].strip()
        scheme = "wss" if proto in ("https", "wss") else "ws"
        url = f"{scheme}://{request.host}/v2/live?token={token}"
        log.info(
            "stt_server.session_created",
            session_id=sid,
            encoding=parsed.encoding,
            sample_rate=parsed.sample_rate,
            bit_depth=parsed.bit_depth,
            channels=parsed.channels,
            languages=list(languages.listed),
        )
        return web.json_response({"id": sid, "created_at": rt.live.created_at, "url": url}, status=201)

    async def _get(self, request: web.Request) -> web.Response:
        if (denied := self._auth(request)) is not None:
            return denied
        rt = self.sessions.get(request.match_info["id"])
        if rt is None:
            return web.json_response(error_body(404, "session not found", request.path), status=404)
        return web.json_response(rt.live.result())

    async def _delete(self, request: web.Request) -> web.Response:
        if (denied := self._auth(request)) is not None:
            return denied
        rt = self.sessions.get(request.match_info["id"])
        if rt is None:
            return web.json_response(error_body(404, "session not found", request.path), status=404)
        if rt.live.state != "done":
            return web.json_response(
                error_body(403, "a live session cannot be deleted before it ends", request.path), status=403
            )
        del self.sessions[rt.live.id]
        return web.Response(status=202)

    # -- the session socket ---------------------------------------------------------------------------

    async def _socket(self, request: web.Request) -> web.StreamResponse:
        token = request.query.get("token", "")
        rt = next((r for r in self.sessions.values() if r.live.token == token), None)
        if rt is None:
            return web.json_response(error_body(404, "session not found", request.path), status=404)
        if rt.live.state == "done":
            return web.json_response(
                error_body(403, "session has ended and cannot be resumed", request.path), status=403
            )
        ws = web.WebSocketResponse(max_msg_size=MAX_FRAME)
        await ws.prepare(request)
        if rt.ws is not None and not rt.ws.closed:
            await rt.ws.close(code=4001, message=b"replaced by a new connection")
        if rt.expiry is not None:
            rt.expiry.cancel()
            rt.expiry = None
        rt.ws = ws
        live = rt.live
        log.info("stt_server.connected", session_id=live.id, connection=live.connections + 1)
        await self._send(rt, live.connected())
        pending, rt.outbox = rt.outbox, []
        await self._send(rt, pending)
        async for msg in ws:
            if msg.type is WSMsgType.BINARY:
                await self._audio(rt, msg.data)
            elif msg.type is WSMsgType.TEXT:
                try:
                    data = loads(msg.data)  # nested deep: a ValueError, not a RecursionError
                    kind = data.get("type") if isinstance(data, dict) else None
                except ValueError:
                    kind = None
                if kind == "audio_chunk":
                    try:
                        chunk = base64.b64decode(data["data"]["chunk"], validate=True)
                    except (KeyError, TypeError, binascii.Error, ValueError):
                        await self._error(rt, "audio_chunk.data.chunk must be base64 audio")
                        continue
                    await self._audio(rt, chunk)
                elif kind == "stop_recording":
                    if live.state != "stopping":
                        await self._send(rt, live.stop())
                        rt.wake.set()
                else:
                    await self._error(rt, "unknown message: expected audio_chunk or stop_recording")
            else:
                break
        if rt.ws is ws:
            rt.ws = None
            if live.state not in ("done", "stopping"):
                live.state = "disconnected"
                log.info("stt_server.disconnected", session_id=live.id, close_code=ws.close_code)
            self._arm_expiry(rt)
        return ws

    async def _audio(self, rt: _Runtime, data: bytes) -> None:
        live = rt.live
        if live.state in ("stopping", "done"):
            return  # Gladia accepts no audio after stop_recording
        await self._send(rt, live.receive_audio(data))
        if live.to_decode or live.request.messages.receive_partial_transcripts:
            rt.wake.set()

    async def _error(self, rt: _Runtime, message: str) -> None:
        if rt.live.request.messages.receive_errors:
            await self._send(rt, [rt.live.envelope("error", error={"message": message}, data=None)])

    async def _send(self, rt: _Runtime, messages: list[dict[str, Any]]) -> None:
        for m in messages:
            text = json.dumps(m)
            if m["type"] not in ("audio_chunk",):
                rt.live.messages_log.append(text)
            ws = rt.ws
            if ws is None or ws.closed:
                rt.outbox.append(m)
                continue
            try:
                await ws.send_str(text)
            except ConnectionError:
                rt.outbox.append(m)

    def _arm_expiry(self, rt: _Runtime) -> None:
        """A session with no socket is finished after the grace period (results stay readable)."""
        if rt.expiry is not None:
            rt.expiry.cancel()
        if rt.live.state in ("done", "stopping"):
            return

        def expire() -> None:
            if rt.ws is None and rt.live.state not in ("done", "stopping"):
                log.info("stt_server.session_expired", session_id=rt.live.id)
                rt.live.stop()
                rt.wake.set()

        rt.expiry = asyncio.get_running_loop().call_later(self.options.grace_seconds, expire)

    async def _decode_loop(self, rt: _Runtime) -> None:
        live = rt.live
        loop = asyncio.get_running_loop()
        assert self.recognizer is not None
        recognizer = self.recognizer
        try:
            while True:
                await rt.wake.wait()
                rt.wake.clear()
                while live.to_decode:
                    utt = live.to_decode.popleft()
                    prompt = live.context.prompt(utt.channel)
                    language, among = rt.languages.ask()
                    rec = await loop.run_in_executor(
                        self.pool, recognizer.transcribe, utt.audio, language, prompt, among
                    )
                    if rec.text:
                        rt.languages.heard(rec.language, rec.language_probability)
                    final = live.final_message(utt, rec)
                    if final is not None:
                        await self._send(rt, [final])
                if live.state == "stopping":
                    await self._send(rt, live.end_messages())
                    live.state = "done"
                    live.completed_at = now_iso()
                    log.info(
                        "stt_server.session_done",
                        session_id=live.id,
                        audio_seconds=round(live.duration, 2),
                        finals=len(live.finals),
                        duplicate_bytes=live.duplicate_bytes,
                    )
                    if rt.ws is not None and not rt.ws.closed:
                        await rt.ws.close(code=1000)
                    return
                await self._partial(rt, loop, recognizer)
        finally:
            rt.closed.set()

    async def _partial(self, rt: _Runtime, loop: asyncio.AbstractEventLoop, recognizer: Recognizer) -> None:
        """A partial transcript of each channel's utterance in progress that is due one, the least
        recently served channel first; stops as soon as a final is waiting."""
        live = rt.live
        if not live.request.messages.receive_partial_transcripts:
            return
        for channel in sorted(live.channels, key=lambda ch: ch.last_partial_at):
            if live.to_decode:
                return  # finals first
            segmenter = channel.segmenter
            current = segmenter.current()
            if current is None or segmenter.now - channel.last_partial_at < PARTIAL_INTERVAL:
                continue
            channel.last_partial_at = segmenter.now
            audio_start, audio = current
            index = segmenter.utterances  # the utterance in progress
            prompt = live.context.prompt(channel.index)
            language, among = rt.languages.ask()
            rec = await loop.run_in_executor(self.pool, recognizer.transcribe, audio, language, prompt, among)
            if segmenter.utterances != index:
                continue  # the utterance ended while decoding: its final is on the way, a partial would be stale
            message = live.partial_message(channel.index, index, audio_start, rec)
            if message is not None:
                await self._send(rt, [message])


async def run_server(host: str, port: int, options: ServerOptions) -> None:
    """``bridge stt-server``: serve until SIGTERM/SIGINT."""
    import signal

    server = LocalSttServer(options)
    runner = web.AppRunner(server.app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    log.info("stt_server.listening", host=host, port=port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        with contextlib.suppress(Exception):
            await runner.cleanup()
