"""Small real servers the tests run on 127.0.0.1, with fault switches.

``FakeGladia`` speaks Gladia's live v2 protocol (POST /v2/live, the session WebSocket, GET/DELETE
/v2/live/{id}). Instead of recognising speech it "transcribes" fixed-size segments of the audio
it has *kept*: each final's text carries the CRC-32 of its segment, so a single byte lost or
duplicated anywhere changes the transcript. It keeps acknowledged audio only: bytes received but
not yet acknowledged when a socket drops are discarded, as a server that resumes from the
acknowledged offset would, so a client that resends from the wrong offset is caught.

It also plays the add-ons a session's POST body asks for (realtime translation, entities, sentiment
after each final; summary and chapters after the recording; all in ``GET /v2/live/{id}``'s result),
every message built from the official SDK's types: tests/support/fake_gladia_addons.py says what they
hold, and the ``addon_errors`` / ``*_addons*`` / ``summary_*`` switches below how they go wrong.

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

from bridge.stt.addons import POST_ADDONS, requested_addons
from tests.support import fake_gladia_addons as addons_of
from tests.support.gladia_addons import end_recording, live_response


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
    # add-ons (tests/support/fake_gladia_addons.py says what they contain)
    messages: list[str] = field(default_factory=list)  # every final and add-on message made, as JSON (GET)
    addons_sent: list[dict[str, Any]] = field(default_factory=list)  # every add-on message made, once each
    addons_lost: list[dict[str, Any]] = field(default_factory=list)  # made but never sent (lose_addons_at)
    addons_repeated: int = 0  # add-on messages sent again on a resumed connection
    last_addons: list[dict[str, Any]] = field(default_factory=list)  # those of the last final sent with them
    post_sent: list[dict[str, Any]] = field(default_factory=list)  # post-processing messages sent
    stop_time: float | None = None  # monotonic time of the first stop_recording
    recording_over: bool = False  # post-processing has begun: no new socket, only GET

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
        self.said: dict[int, str] = {}  # final k's text instead of its segment's name (e.g. a card number)
        # (seconds of session audio, server message): sent once the session has acknowledged that much
        # audio, e.g. speech_start / speech_end events and partial transcripts for barge-in tests
        self.script: list[tuple[float, dict[str, Any]]] = []
        self.init_down_until = 0.0  # monotonic time before which every POST fails (cycling 503/502/429/500)
        # add-ons: realtime ones follow each final as the POST body asks (realtime_processing), and
        # post-processing ones (post_processing.summarization / chapterization) follow the last final
        # (the summary_* and drop_before_summary switches act on sessions that ask for those only)
        self.addon_errors: set[str] = set()  # add-ons whose messages fail (error set, data null)
        self.repeat_addons_on_resume = False  # on a reconnection, first resend the last final's add-ons
        self.lose_addons_at = 0  # >0: abort the socket right after final k, before its add-ons (GET has them)
        self.summary_delay = 0.0  # seconds from stop_recording to the post-processing results
        self.drop_before_summary = False  # abort the socket after the last final; results by GET only
        self.summary_never = False  # end_recording, then nothing: GET says "processing" forever
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

    def done(self, session: FakeSession) -> bool:
        """Whether the session is post-processed (GET: ``done``). After a stop that went into the
        post-processing of add-ons, that is ``summary_delay`` seconds after the stop (never with
        ``summary_never``), even when the socket is gone."""
        if not session.ended and session.recording_over and not self.summary_never:
            assert session.stop_time is not None
            session.ended = time.monotonic() >= session.stop_time + self.summary_delay
        return session.ended

    async def _get(self, request: web.Request) -> web.Response:
        session = self.sessions.get(request.match_info["id"])
        if session is None:
            return self._error(404, "not found")
        utterances = self.utterances(session)
        result = None
        if self.done(session):
            duration = len(session.audio) / session.bytes_per_second
            result = addons_of.session_result(
                session.body, utterances, len(utterances), duration, self.result_messages(session), self.addon_errors
            )
        custom = session.body.get("custom_metadata")
        status = "done" if session.ended else "processing"
        return web.json_response(
            live_response(session.id, status, custom if isinstance(custom, dict) else None, result)
        )

    def result_messages(self, session: FakeSession) -> list[str]:
        """``result.messages``: every final and add-on message the session made, sent or not, then those
        of the finals it never got to send (``crash_after_stop``): the server's record is whole."""
        messages = list(session.messages)
        seg = self.segment_bytes(session)
        for k in range(session.finals_sent, -(-len(session.audio) // seg)):
            final = self.final_message(session, k, bytes(session.audio[k * seg : (k + 1) * seg]))
            addons = addons_of.realtime_messages(session.body, session.id, final["data"], self.addon_errors)
            messages += [json.dumps(m) for m in (final, *addons)]
        return messages

    @staticmethod
    def channel_of(session: FakeSession, k: int) -> int:
        """Final ``k``'s channel: on a session of two channels (both parties) they take turns."""
        return k % max(1, int(session.body.get("channels", 1)))

    def utterances(self, session: FakeSession) -> list[dict[str, Any]]:
        """The session's utterances as its result has them: one per segment of the kept audio."""
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
                    "channel": self.channel_of(session, k),
                    "language": "en",
                    "text": " " + self.said.get(k, segment_text(k, segment)),
                    "words": [],
                }
            )
        return utterances

    async def _delete(self, request: web.Request) -> web.Response:
        if self.sessions.pop(request.match_info["id"], None) is None:
            return self._error(404, "not found")
        return web.Response(status=202)

    # -- the session socket ---------------------------------------------------------------------

    async def _socket(self, request: web.Request) -> web.StreamResponse:
        token = request.query.get("token")
        session = next((s for s in self.sessions.values() if s.token == token), None)
        if session is None or session.ended or session.recording_over:
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
        if session.connections > 1 and self.repeat_addons_on_resume and session.last_addons:
            for message in session.last_addons:  # a server repeating what may have been in flight
                await ws.send_json(message)
            session.addons_repeated += len(session.last_addons)
        async for msg in ws:
            if session.recording_over:
                continue  # summary_never: the recording is over, the socket stays open until the client goes
            if msg.type is WSMsgType.BINARY:
                dropped = await self._audio(ws, request, session, msg.data)
                if dropped:
                    return ws
            elif msg.type is WSMsgType.TEXT:
                data = json.loads(msg.data)
                if data.get("type") == "stop_recording":
                    session.stop_received += 1
                    if session.stop_time is None:
                        session.stop_time = time.monotonic()
                    if self.crash_after_stop:
                        if await self._ack(ws, session, request):
                            return ws
                        session.ended = True  # post-processed, but the socket dies before the last finals
                        assert request.transport is not None
                        request.transport.close()
                        return ws
                    if await self._finish(ws, request, session):
                        continue  # summary_never
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
        if session.chunks_since_ack >= self.ack_every and await self._ack(ws, session, request):
            return True  # lose_addons_at
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

    async def _ack(self, ws: web.WebSocketResponse, session: FakeSession, request: web.Request) -> bool:
        """Keep and acknowledge the audio received, then send the finals (and add-ons) it completes.
        Returns True when the socket was dropped meanwhile (``lose_addons_at``)."""
        start = len(session.audio)
        session.audio += session.unacked
        session.unacked.clear()
        session.chunks_since_ack = 0
        end = len(session.audio)
        if end == start:
            return False
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
            if await self._final(ws, request, session, k, bytes(session.audio[k * seg : (k + 1) * seg])):
                return True
        while self.script and self.script[0][0] * bps <= len(session.audio):
            _, message = self.script.pop(0)
            await ws.send_json({"session_id": session.id, "created_at": "2026-01-01T00:00:00.000Z", **message})
        return False

    async def _final(
        self, ws: web.WebSocketResponse, request: web.Request, session: FakeSession, k: int, segment: bytes
    ) -> bool:
        """Send final ``k``, then the realtime add-on messages the session asked for. Returns True when
        the socket was dropped between the two (``lose_addons_at``)."""
        final = await self._send_final(ws, session, k, segment)
        session.finals_sent += 1
        session.messages.append(json.dumps(final))
        addons = addons_of.realtime_messages(session.body, session.id, final["data"], self.addon_errors)
        session.addons_sent += addons
        session.messages += [json.dumps(m) for m in addons]
        if addons and self.lose_addons_at > 0 and k == self.lose_addons_at:
            session.addons_lost += addons
            await self._drop(request, ws, session, None)
            return True
        for message in addons:
            await ws.send_json(message)
        if addons:
            session.last_addons = addons
        return False

    async def _send_final(
        self, ws: web.WebSocketResponse, session: FakeSession, k: int, segment: bytes
    ) -> dict[str, Any]:
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
        final = self.final_message(session, k, segment)
        await ws.send_json(final)
        return final

    def final_message(self, session: FakeSession, k: int, segment: bytes) -> dict[str, Any]:
        """The ``transcript`` message of final ``k`` (``segment``: its audio)."""
        seg = self.segment_bytes(session)
        bps = session.bytes_per_second
        start, end = k * seg / bps, (k * seg + len(segment)) / bps
        text = self.said.get(k, segment_text(k, segment))
        channel = self.channel_of(session, k)
        return {
            "type": "transcript",
            "session_id": session.id,
            "created_at": "2026-01-01T00:00:00.000Z",
            "data": {
                "id": f"{channel:02d}_{k:08d}",
                "is_final": True,
                "utterance": {
                    "start": start,
                    "end": end,
                    "confidence": 0.9,
                    "channel": channel,
                    "language": "en",
                    "text": " " + text,
                    "words": [{"word": " " + w, "start": start, "end": end, "confidence": 0.9} for w in text.split()],
                },
            },
        }

    async def _finish(self, ws: web.WebSocketResponse, request: web.Request, session: FakeSession) -> bool:
        """The end of the recording: acknowledge, the last finals, post-processing, close 1000. Returns
        True when the socket stays open (``summary_never``)."""
        if await self._ack(ws, session, request):
            return False
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
        if k * seg < len(session.audio) and await self._final(ws, request, session, k, bytes(session.audio[k * seg :])):
            return False
        if POST_ADDONS.intersection(requested_addons(session.body)):
            return await self._post_process(ws, request, session)
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
        return False

    async def _post_process(self, ws: web.WebSocketResponse, request: web.Request, session: FakeSession) -> bool:
        """After the last final of a session that asked for summarization or chapterization: see the
        ``summary_*`` and ``drop_before_summary`` switches. True: the socket stays open."""
        session.recording_over = True
        duration = len(session.audio) / session.bytes_per_second
        if self.drop_before_summary:  # an abort (no close frame); no reconnection is accepted any more
            session.closes.append(None)
            assert request.transport is not None
            request.transport.close()
            return False
        await ws.send_json(end_recording(session.id, duration))
        if self.summary_never:
            return True
        await asyncio.sleep(self.summary_delay)
        if ws.closed or request.transport is None or request.transport.is_closing():
            return False  # the client went away meanwhile: the results are for GET
        if addons_of.wants(session.body, "receive_post_processing_events"):
            utterances = self.utterances(session)
            for message in addons_of.post_messages(
                session.body, session.id, utterances, session.finals_sent, duration, self.addon_errors
            ):
                await ws.send_json(message)
                session.post_sent.append(message)
        await ws.send_json({"type": "end_session", "session_id": session.id, "created_at": "2026-01-01T00:00:00.000Z"})
        session.ended = True
        session.closes.append(1000)
        await ws.close(code=1000)
        return False


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
