"""The callers of ``bridge loadtest`` (``--generators`` processes, ``multiprocessing`` spawn): Twilio calls in
real time, each frame stamped with its send time; with ``--reply``, each caller plays back what comes
back like a Twilio phone (:class:`~bridge.tools.ear.TwilioEar`) and counts the underruns."""

from __future__ import annotations

import asyncio
import base64
import json
import resource
import time
from typing import Any

import aiohttp
from aiohttp import WSMsgType

from bridge.loop import run_loop
from bridge.tools.ear import TwilioEar
from bridge.tools.load_frames import FRAME, SEND_TIME, TRACKS


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
