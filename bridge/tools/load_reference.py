"""``bridge loadtest --reference``: the least a Twilio -> Gladia -> webhook forwarder on aiohttp does, run in
its own process under the same load as the bridge, so the bridge's figures read as a ratio."""

from __future__ import annotations

import asyncio
import base64
import json

import aiohttp
import orjson
from aiohttp import web

from bridge.loop import run_loop


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
