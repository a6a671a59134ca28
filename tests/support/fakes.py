"""Small real servers the tests run on 127.0.0.1, with fault switches.

``FakeGladia`` speaks Gladia's live v2 protocol (POST /v2/live, the session WebSocket, GET/DELETE
/v2/live/{id}). Instead of recognising speech it "transcribes" fixed-size segments of the audio
it has *kept*: each final's text carries the CRC-32 of its segment, so a single byte lost or
duplicated anywhere changes the transcript. It keeps acknowledged audio only: bytes received but
not yet acknowledged when a socket drops are discarded, as a server that resumes from the
acknowledged offset would, so a client that resends from the wrong offset is caught.

``FakeWebhook`` records every request it gets and can fail, slow down or time out on demand.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web


def segment_text(index: int, segment: bytes) -> str:
    return f"segment {index} crc {zlib.crc32(segment):08x}"


def expected_texts(audio: bytes, segment_bytes: int) -> list[str]:
    """The finals FakeGladia gives for ``audio`` received intact."""
    return [segment_text(i, audio[o : o + segment_bytes]) for i, o in enumerate(range(0, len(audio), segment_bytes))]


@dataclass
class FakeSession:
    id: str
    token: str
    body: dict[str, Any]
    bytes_per_second: int
    audio: bytearray = field(default_factory=bytearray)  # kept (acknowledged) audio
    unacked: bytearray = field(default_factory=bytearray)
    chunks_since_ack: int = 0
    connections: int = 0
    received_bytes: int = 0  # every byte that arrived, including discarded ones
    finals_sent: int = 0
    stop_received: int = 0
    ended: bool = False
    closes: list[int | None] = field(default_factory=list)
    next_drop_at: int = 0
    arrivals: list[float] = field(default_factory=list)  # monotonic time of each audio message
    open_sockets: int = 0
    most_open_sockets: int = 0  # the most sockets connected to this session at once

    def longest_silence(self) -> float:
        """The longest wait between two audio messages (seconds): how long the bridge stalled."""
        return max((b - a for a, b in zip(self.arrivals, self.arrivals[1:], strict=False)), default=0.0)


class FakeGladia:
    def __init__(self, api_key: str | None = "test-key", segment_seconds: float = 1.0) -> None:
        self.api_key = api_key
        self.segment_seconds = segment_seconds
        # fault switches
        self.init_failures: list[int] = []  # statuses for the next POSTs
        self.handshake_failures: list[int] = []  # statuses for the next WebSocket handshakes
        self.drops: list[tuple[int, int | None]] = []  # (session bytes received, close code or None=abort)
        self.drop_every_bytes = 0  # per session: drop the socket each time this many more bytes arrived
        self.ack_every = 1  # acknowledge every N chunks
        self.inclusive_ranges = False  # send byte_range ends inclusive (asyncapi reading)
        self.repeat_finals_on_resume = False
        self.lose_session_after_drops = False  # refuse reconnects with 403 after a drop
        self.crash_after_stop = False  # on stop_recording: cut the socket before the last finals
        self.huge_message_bytes = 0  # once, before the first final: a transcript message this big
        # (seconds of session audio, server message): sent once the session has acknowledged that much
        # audio, e.g. speech_start / speech_end events and partial transcripts for barge-in tests
        self.script: list[tuple[float, dict[str, Any]]] = []
        self.init_down_until = 0.0  # monotonic time before which every POST fails (cycling 503/502/429/500)
        # records
        self.sessions: dict[str, FakeSession] = {}
        self.init_refused = 0
        self.init_headers: list[dict[str, str]] = []
        self.app = web.Application()
        self.app.router.add_post("/v2/live", self._init)
        self.app.router.add_get("/v2/live", self._socket)
        self.app.router.add_get("/v2/live/{id}", self._get)
        self.app.router.add_delete("/v2/live/{id}", self._delete)
        self.base_url = ""

    # -- helpers for tests -----------------------------------------------------------------

    def all_audio(self) -> bytes:
        """The audio of every session, in creation order."""
        return b"".join(bytes(s.audio) for s in self.sessions.values())

    def segment_bytes(self, session: FakeSession) -> int:
        return int(session.bytes_per_second * self.segment_seconds)

    # -- REST ---------------------------------------------------------------------------------

    def _error(self, status: int, message: str) -> web.Response:
        return web.json_response(
            {
                "timestamp": "2026-01-01T00:00:00.000Z",
                "path": "/v2/live",
                "request_id": "G-fake",
                "statusCode": status,
                "message": message,
            },
            status=status,
        )

    async def _init(self, request: web.Request) -> web.Response:
        self.init_headers.append(dict(request.headers))
        if self.api_key is not None and request.headers.get("x-gladia-key") != self.api_key:
            return self._error(401, "gladia key not found")
        if self.init_failures:
            status = self.init_failures.pop(0)
            return self._error(status, "injected failure")
        if time.monotonic() < self.init_down_until:
            self.init_refused += 1
            return self._error((503, 502, 429, 500)[self.init_refused % 4], "injected outage")
        body = await request.json()
        depth = body.get("bit_depth", 16) // 8
        rate = body.get("sample_rate", 16000)
        sid, token = str(uuid.uuid4()), str(uuid.uuid4())
        self.sessions[sid] = FakeSession(sid, token, body, rate * depth * int(body.get("channels", 1)))
        host = request.host
        return web.json_response(
            {"id": sid, "created_at": "2026-01-01T00:00:00.000Z", "url": f"ws://{host}/v2/live?token={token}"},
            status=201,
        )

    async def _get(self, request: web.Request) -> web.Response:
        session = self.sessions.get(request.match_info["id"])
        if session is None:
            return self._error(404, "not found")
        seg = self.segment_bytes(session)
        bps = session.bytes_per_second
        utterances = []
        for k, offset in enumerate(range(0, len(session.audio), seg)):
            segment = bytes(session.audio[offset : offset + seg])
            start, end = offset / bps, (offset + len(segment)) / bps
            utterances.append(
                {
                    "start": start,
                    "end": end,
                    "confidence": 0.9,
                    "channel": 0,
                    "language": "en",
                    "text": " " + segment_text(k, segment),
                    "words": [],
                }
            )
        return web.json_response(
            {
                "id": session.id,
                "status": "done" if session.ended else "processing",
                "kind": "live",
                "version": 2,
                "request_id": "G-fake",
                "created_at": "2026-01-01T00:00:00.000Z",
                "result": {"transcription": {"utterances": utterances}} if session.ended else None,
            }
        )

    async def _delete(self, request: web.Request) -> web.Response:
        if self.sessions.pop(request.match_info["id"], None) is None:
            return self._error(404, "not found")
        return web.Response(status=202)

    # -- the session socket ---------------------------------------------------------------------

    async def _socket(self, request: web.Request) -> web.StreamResponse:
        token = request.query.get("token")
        session = next((s for s in self.sessions.values() if s.token == token), None)
        if session is None or session.ended:
            return web.Response(status=404, text="session not found")
        if self.handshake_failures:
            return web.Response(status=self.handshake_failures.pop(0), text="injected failure")
        ws = web.WebSocketResponse(max_msg_size=1024 * 1024)
        await ws.prepare(request)
        session.open_sockets += 1
        session.most_open_sockets = max(session.most_open_sockets, session.open_sockets)
        try:
            return await self._serve_socket(request, ws, session)
        finally:
            session.open_sockets -= 1

    async def _serve_socket(
        self, request: web.Request, ws: web.WebSocketResponse, session: FakeSession
    ) -> web.WebSocketResponse:
        session.connections += 1
        if session.connections > 1 and self.repeat_finals_on_resume and session.finals_sent:
            last = session.finals_sent - 1
            seg = self.segment_bytes(session)
            await self._send_final(ws, session, last, bytes(session.audio[last * seg : (last + 1) * seg]))
        async for msg in ws:
            if msg.type is WSMsgType.BINARY:
                dropped = await self._audio(ws, request, session, msg.data)
                if dropped:
                    return ws
            elif msg.type is WSMsgType.TEXT:
                data = json.loads(msg.data)
                if data.get("type") == "stop_recording":
                    session.stop_received += 1
                    if self.crash_after_stop:
                        await self._ack(ws, session)
                        session.ended = True  # post-processed, but the socket dies before the last finals
                        assert request.transport is not None
                        request.transport.close()
                        return ws
                    await self._finish(ws, session)
                    return ws
                if data.get("type") == "audio_chunk":
                    import base64

                    dropped = await self._audio(ws, request, session, base64.b64decode(data["data"]["chunk"]))
                    if dropped:
                        return ws
        # the client went away: what was not acknowledged is not kept
        session.unacked.clear()
        session.closes.append(ws.close_code)
        return ws

    async def _audio(self, ws: web.WebSocketResponse, request: web.Request, session: FakeSession, data: bytes) -> bool:
        session.arrivals.append(time.monotonic())
        session.unacked += data
        session.received_bytes += len(data)
        session.chunks_since_ack += 1
        if session.chunks_since_ack >= self.ack_every:
            await self._ack(ws, session)
        held = len(session.audio) + len(session.unacked)
        if self.drop_every_bytes:
            if session.next_drop_at == 0:
                session.next_drop_at = self.drop_every_bytes
            if held >= session.next_drop_at:
                session.next_drop_at += self.drop_every_bytes
                await self._drop(request, ws, session, (1011, None, 4500)[session.connections % 3])
                return True
        for i, (threshold, code) in enumerate(self.drops):
            if held >= threshold:
                del self.drops[i]
                await self._drop(request, ws, session, code)
                return True
        return False

    async def _drop(
        self, request: web.Request, ws: web.WebSocketResponse, session: FakeSession, code: int | None
    ) -> None:
        """Lose the connection: what was not acknowledged is discarded, as a resuming server would."""
        session.unacked.clear()
        session.chunks_since_ack = 0
        session.closes.append(code)
        if self.lose_session_after_drops:
            self.handshake_failures.append(403)
        if code is None:
            assert request.transport is not None
            request.transport.close()
        else:
            await ws.close(code=code, message=b"injected drop")

    async def _ack(self, ws: web.WebSocketResponse, session: FakeSession) -> None:
        start = len(session.audio)
        session.audio += session.unacked
        session.unacked.clear()
        session.chunks_since_ack = 0
        end = len(session.audio)
        if end == start:
            return
        bps = session.bytes_per_second
        await ws.send_json(
            {
                "type": "audio_chunk",
                "session_id": session.id,
                "created_at": "2026-01-01T00:00:00.000Z",
                "acknowledged": True,
                "error": None,
                "data": {
                    "byte_range": [start, end - 1 if self.inclusive_ranges else end],
                    "time_range": [start / bps, end / bps],
                },
            }
        )
        seg = self.segment_bytes(session)
        while (session.finals_sent + 1) * seg <= len(session.audio):
            k = session.finals_sent
            await self._send_final(ws, session, k, bytes(session.audio[k * seg : (k + 1) * seg]))
            session.finals_sent += 1
        while self.script and self.script[0][0] * bps <= len(session.audio):
            _, message = self.script.pop(0)
            await ws.send_json({"session_id": session.id, "created_at": "2026-01-01T00:00:00.000Z", **message})

    async def _send_final(self, ws: web.WebSocketResponse, session: FakeSession, k: int, segment: bytes) -> None:
        if self.huge_message_bytes:
            size, self.huge_message_bytes = self.huge_message_bytes, 0
            await ws.send_json(
                {
                    "type": "transcript",
                    "session_id": session.id,
                    "data": {
                        "id": "huge",
                        "is_final": True,
                        "utterance": {"start": 0.0, "end": 0.01, "text": "x" * size, "words": [], "language": "en"},
                    },
                }
            )
        seg = self.segment_bytes(session)
        bps = session.bytes_per_second
        start, end = k * seg / bps, (k * seg + len(segment)) / bps
        text = segment_text(k, segment)
        await ws.send_json(
            {
                "type": "transcript",
                "session_id": session.id,
                "created_at": "2026-01-01T00:00:00.000Z",
                "data": {
                    "id": f"00_{k:08d}",
                    "is_final": True,
                    "utterance": {
                        "start": start,
                        "end": end,
                        "confidence": 0.9,
                        "channel": 0,
                        "language": "en",
                        "text": " " + text,
                        "words": [
                            {"word": " " + w, "start": start, "end": end, "confidence": 0.9} for w in text.split()
                        ],
                    },
                },
            }
        )

    async def _finish(self, ws: web.WebSocketResponse, session: FakeSession) -> None:
        await self._ack(ws, session)
        bps = session.bytes_per_second
        await ws.send_json(
            {
                "type": "stop_recording",
                "session_id": session.id,
                "acknowledged": True,
                "error": None,
                "created_at": "2026-01-01T00:00:00.000Z",
                "data": {"recording_duration": len(session.audio) / bps, "recording_left_to_process": 0},
            }
        )
        seg = self.segment_bytes(session)
        k = session.finals_sent
        if k * seg < len(session.audio):
            await self._send_final(ws, session, k, bytes(session.audio[k * seg :]))
            session.finals_sent += 1
        await ws.send_json(
            {
                "type": "post_final_transcript",
                "session_id": session.id,
                "created_at": "2026-01-01T00:00:00.000Z",
                "data": {"metadata": {}},
            }
        )
        await ws.send_json({"type": "end_session", "session_id": session.id, "created_at": "2026-01-01T00:00:00.000Z"})
        session.ended = True
        session.closes.append(1000)
        await ws.close(code=1000)


@dataclass
class WebhookRequest:
    headers: dict[str, str]
    body: bytes
    status: int

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class VirtualClock:
    """A clock for the bridge's webhook retries whose ``sleep`` returns at once and moves time on:
    a minute of backoff passes in milliseconds, while ages and outages still read as a minute.
    ``time()`` is wall time, ``monotonic()`` the same offset on the monotonic clock."""

    def __init__(self) -> None:
        self.offset = 0.0
        self.slept = 0.0

    def time(self) -> float:
        return time.time() + self.offset

    def monotonic(self) -> float:
        return time.monotonic() + self.offset

    async def sleep(self, seconds: float) -> None:
        self.offset += seconds
        self.slept += seconds
        await asyncio.sleep(0)


class FakeWebhook:
    def __init__(self) -> None:
        self.requests: list[WebhookRequest] = []
        self.fail_statuses: list[int] = []  # statuses for the next requests
        self.delays: list[float] = []  # seconds to wait before answering the next requests
        self.outage_until = 0.0  # clock() time before which requests fail: 500, 503, or stall
        self.clock: Callable[[], float] = time.monotonic
        self.outage_stall = 3.0  # seconds a stalled answer takes (longer than the bridge's timeout)
        self.location: str | None = None  # a Location header on every answer (for 3xx statuses)
        # the bot's answer body to an event (a JSON value, e.g. {"actions": [...]}), by what it is given
        self.answer: Callable[[dict[str, Any]], Any] | None = None
        self.app = web.Application()
        self.app.router.add_post("/hook", self._hook)
        self.received = asyncio.Event()

    @property
    def delivered(self) -> list[WebhookRequest]:
        """Requests answered 2xx, first delivery per webhook-id only (what a deduplicating bot keeps)."""
        seen: set[str] = set()
        out = []
        for r in self.requests:
            if 200 <= r.status < 300 and r.headers["webhook-id"] not in seen:
                seen.add(r.headers["webhook-id"])
                out.append(r)
        return out

    def events(self, type_: str | None = None) -> list[Any]:
        return [r.json for r in self.delivered if type_ is None or r.json["type"] == type_]

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self.delays:
            await asyncio.sleep(self.delays.pop(0))
        status = self.fail_statuses.pop(0) if self.fail_statuses else 204
        if self.clock() < self.outage_until:
            mode = len(self.requests) % 3
            if mode == 2:
                await asyncio.sleep(self.outage_stall)  # the client has given up by now
            status = (500, 503, 500)[mode]
        self.requests.append(WebhookRequest({k.lower(): v for k, v in request.headers.items()}, body, status))
        self.received.set()
        headers = {"Location": self.location} if self.location else None
        answer = self.answer(json.loads(body)) if self.answer is not None and status < 300 else None
        if answer is not None:
            return web.json_response(answer, status=200 if status == 204 else status, headers=headers)
        return web.Response(status=status, headers=headers)
