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
import re
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, TextIO

from aiohttp import web
from standardwebhooks.webhooks import Webhook

from bridge.app import create_app, drain_calls
from bridge.local_stt.server import LocalSttServer, ServerOptions
from bridge.settings import Settings
from bridge.simulator import play_call
from bridge.wav import read_wav, to_ulaw_8k


def sample_call() -> tuple[bytes, list[str]]:
    """The shipped sample call (8 kHz mu-law) and the sentences spoken in it."""
    folder = resources.files("bridge") / "samples"
    wav = read_wav((folder / "demo_call.wav").read_bytes())
    text = (folder / "demo_call.txt").read_text()
    return to_ulaw_8k(wav), [line for line in text.splitlines() if line.strip()]


def loopback_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    """Run ``app`` on a free loopback port; yields its base URL."""
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    sock = loopback_socket()
    site = web.SockSite(runner, sock)
    await site.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        await runner.cleanup()


_DIGIT_NAMES = {name: str(i) for i, name in enumerate(
    ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])}


def normalised_words(text: str) -> list[str]:
    """Words for scoring: lower case, punctuation dropped, and numbers as single digits on both
    sides, so "four five six", "4, 5, 6" and "456" all score as ``4 5 6`` (Whisper writes spoken
    digits either way, and that choice is not a recognition error)."""
    out: list[str] = []
    for word in re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split():
        if word in _DIGIT_NAMES:
            out.append(_DIGIT_NAMES[word])
        elif word.isdigit():
            out.extend(word)
        else:
            out.append(word)
    return out


def word_error_rate(reference: list[str], hypothesis: list[str]) -> float:
    """Levenshtein distance over words / reference length."""
    prev = list(range(len(hypothesis) + 1))
    for i, r in enumerate(reference, 1):
        cur = [i] + [0] * len(hypothesis)
        for j, h in enumerate(hypothesis, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1] / max(1, len(reference))


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
            out.write(f"  bot heard [{utt['start']:6.2f}s-{utt['end']:6.2f}s] {utt['text']!r}"
                      f"   (+{latency * 1000:.0f} ms after end of speech)\n")
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
        settings = Settings.load(environ={"GLADIA_API_URL": stt_url, "BOT_WEBHOOK_URL": hook_url + "/hook",
                                          "BOT_WEBHOOK_SECRET": secret, "BRIDGE_DATA_DIR": data_dir})
        bridge_app = create_app(settings)
        async with serving(bridge_app) as bridge_url:
            stream = bridge_url.replace("http://", "ws://") + "/twilio/stream"
            out.write(f"bridge on {bridge_url}, STT on {stt_url}, bot webhook on {hook_url}/hook\n")
            out.write(f"playing the sample call ({len(ulaw) / 8000:.1f} s, {len(sentences)} sentences) "
                      f"into {stream}\n")
            report = await play_call(stream, ulaw, realtime=realtime,
                                     on_frame=lambda i, t: frame_times.append(t))
            await asyncio.wait_for(ended.wait(), timeout=60)
            await drain_calls(bridge_app)
    heard = " ".join(u["text"] for u in result.utterances)
    result.wer = word_error_rate(normalised_words(" ".join(sentences)), normalised_words(heard))
    lat = sorted(result.latencies)
    out.write("\nsummary\n")
    out.write(f"  call closed with code {report.close_code}; {len(result.utterances)} utterances delivered "
              f"({len(sentences)} sentences spoken); word error rate {result.wer:.0%}\n")
    if lat:
        out.write(f"  end of speech -> webhook: median {lat[len(lat) // 2] * 1000:.0f} ms, "
                  f"max {lat[-1] * 1000:.0f} ms\n")
    out.write(f"  events: {', '.join(result.events)}\n")
    return result
