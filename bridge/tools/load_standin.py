"""The load Gladia and bot of ``bridge loadtest`` (one process, ``multiprocessing`` spawn): a Gladia live v2
server that acknowledges every chunk and sends a final every :data:`~bridge.tools.load_frames.FINAL_EVERY`
bytes, measuring the forward latency of each caller frame; and the webhook sink, measuring final -> webhook
latency (and answering each final with a reply to play, with ``--reply``)."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import struct
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from bridge.loop import run_loop
from bridge.tools.load_frames import FINAL_EVERY, FirstChannel, free_port


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
