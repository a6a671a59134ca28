"""``bridge demo``: a whole call through the bridge on this machine, nothing to configure.

Starts the local Gladia-compatible STT server, the bridge and a small bot webhook receiver on free
loopback ports, plays the sample call shipped with the package as a real-time Twilio stream, prints
each utterance as the bot receives it (signature verified), then a summary with the latency from the
end of each utterance's speech to its webhook.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

from aiohttp import web
from standardwebhooks.webhooks import Webhook

from bridge.app import create_app, drain_calls
from bridge.local_stt.server import LocalSttServer, ServerOptions
from bridge.loop import serving
from bridge.settings import Settings
from bridge.tools.player import play_call
from bridge.tools.speech import normalised_words, sample_call, word_error_rate


@dataclass
class DemoResult:
    utterances: list[dict[str, Any]] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    wer: float = 1.0


async def run_demo(out: TextIO = sys.stdout, realtime: bool = True) -> DemoResult:
    ulaw, sentences = sample_call()
    secret = "whsec_" + base64.b64encode(os.urandom(24)).decode()
    verifier = Webhook(secret)
    result = DemoResult()
    ended = asyncio.Event()
    frame_times: list[float] = []

    async def hook(request: web.Request) -> web.Response:
        body = await request.text()
        verifier.verify(body, dict(request.headers))  # raises on a bad signature
        event = json.loads(body)
        result.events.append(event["type"])
        if event["type"] == "utterance.final":
            utt = event["utterance"]
            frame = min(int(utt["end"] / 0.02), len(frame_times) - 1)
            latency = time.monotonic() - frame_times[frame] if frame >= 0 else float("nan")
            result.utterances.append(utt)
            result.latencies.append(latency)
            out.write(
                f"  bot heard [{utt['start']:6.2f}s-{utt['end']:6.2f}s] {utt['text']!r}"
                f"   (+{latency * 1000:.0f} ms after end of speech)\n"
            )
            out.flush()
        elif event["type"] == "call.ended":
            result.summary = event["summary"]
            ended.set()
        return web.Response(status=204)

    hook_app = web.Application()
    hook_app.router.add_post("/hook", hook)
    out.write("starting the local speech-to-text server (Whisper tiny.en, offline)...\n")
    data_dir = tempfile.mkdtemp(prefix="bridge-demo-")  # the demo's outbox, not yours
    stt = LocalSttServer(ServerOptions())
    async with serving(stt.app) as stt_url, serving(hook_app) as hook_url:
        settings = Settings.load(
            environ={
                "GLADIA_API_URL": stt_url,
                "BOT_WEBHOOK_URL": hook_url + "/hook",
                "BOT_WEBHOOK_SECRET": secret,
                "BRIDGE_DATA_DIR": data_dir,
            }
        )
        bridge_app = create_app(settings)
        async with serving(bridge_app) as bridge_url:
            stream = bridge_url.replace("http://", "ws://") + "/twilio/stream"
            out.write(f"bridge on {bridge_url}, STT on {stt_url}, bot webhook on {hook_url}/hook\n")
            out.write(f"playing the sample call ({len(ulaw) / 8000:.1f} s, {len(sentences)} sentences) into {stream}\n")
            report = await play_call(stream, ulaw, realtime=realtime, on_frame=lambda i, t: frame_times.append(t))
            await asyncio.wait_for(ended.wait(), timeout=60)
            await drain_calls(bridge_app)
    heard = " ".join(u["text"] for u in result.utterances)
    result.wer = word_error_rate(normalised_words(" ".join(sentences)), normalised_words(heard))
    lat = sorted(result.latencies)
    out.write("\nsummary\n")
    out.write(
        f"  call closed with code {report.close_code}; {len(result.utterances)} utterances delivered "
        f"({len(sentences)} sentences spoken); word error rate {result.wer:.0%}\n"
    )
    if lat:
        out.write(
            f"  end of speech -> webhook: median {lat[len(lat) // 2] * 1000:.0f} ms, max {lat[-1] * 1000:.0f} ms\n"
        )
    out.write(f"  events: {', '.join(result.events)}\n")
    return result
