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

``--tracks both``: every call is a two-party call (``<Start><Stream track="both_tracks">``): each
20 ms an inbound and an outbound media message with the same ``timestamp``, which the bridge
interleaves into one two-channel Gladia session. The figures keep their meaning: a frame is one
frame of the caller's track (the fake Gladia measures latency on channel 0 only), and a call-second
is a second of the call. Finals come per 2 s of the session's stream, so a two-track call gets one
every second (both parties talking): ``final_every_s`` says which, ``finals_expected`` counts them.
The CPU ratio to a one-track run at the same load is ``benchmarks/bench_two_tracks.py``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import multiprocessing as mp
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bridge.tools.load_peers import (
    FINAL_EVERY,
    FRAME,
    TRACKS,
    callers,
    free_port,
    gladia_and_bot,
    pct,
    reference_forwarder,
)

_CLK_TCK = os.sysconf("SC_CLK_TCK")


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
    tracks: str = "inbound",
) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    port_q, results, stop = ctx.Queue(), ctx.Queue(), ctx.Event()
    fake = ctx.Process(target=gladia_and_bot, args=(port_q, stop, results, reply and not reference), daemon=True)
    fake.start()
    fake_port = port_q.get(timeout=30)
    proc: Any = None
    if reference:
        port = free_port()
        proc = ctx.Process(
            target=reference_forwarder,
            daemon=True,
            args=(port, f"http://127.0.0.1:{fake_port}", f"http://127.0.0.1:{fake_port}/hook"),
        )
        proc.start()
        bridge_url = f"http://127.0.0.1:{port}"
    elif bridge_url is None:
        port = free_port()
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
            target=callers,
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
                tracks,
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
    channels = len(TRACKS[tracks])  # the Gladia session's, interleaved: finals count its bytes
    finals_expected = calls * -(-frames_per_call * FRAME * channels // FINAL_EVERY)
    elapsed = seconds + ramp
    return {
        "under_test": "reference_forwarder" if reference else "bridge",
        "calls": calls,
        "tracks": tracks,
        "seconds": seconds,
        "workers": workers,
        "generators": generators,
        "cores": os.cpu_count(),
        "ramp_s": ramp,
        "bridge_cpu_ms_per_call_second": round((cpu1 - cpu0) * 1000 / call_seconds, 3) if pid else None,
        "bridge_rss_kb_per_call": round((rss_busy - rss_idle) / 1024 / calls, 1) if pid else None,
        "forward_latency_ms": {
            "p50": round(pct(fake_result["forward"], 0.5) * 1000, 2),
            "p99": round(pct(fake_result["forward"], 0.99) * 1000, 2),
            "max": round(max(fake_result["forward"], default=float("nan")) * 1000, 2),
        },
        "final_to_webhook_ms": {
            "p50": round(pct(fake_result["webhook"], 0.5) * 1000, 2),
            "p99": round(pct(fake_result["webhook"], 0.99) * 1000, 2),
        },
        "frames_sent": frames_sent,  # of the caller's track; each track sends as many
        "media_messages_sent": frames_sent * channels,
        "frames_lost": frames_sent - fake_result["frames"],
        "failed_calls": sum(r["failed_calls"] for r in caller_results),
        "finals_delivered": fake_result["webhook_finals"],
        "finals_expected": finals_expected,
        "final_every_s": FINAL_EVERY / (8000 * channels),  # of a call: 1 s with both parties talking
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
    tracks: str = "inbound",
) -> int:
    if tracks == "both" and (reference or reply):
        why = (
            "--reference forwards one track"
            if reference
            else "--reply: a both_tracks stream is one-way (Twilio plays nothing back on it)"
        )
        print(f"bridge loadtest: --tracks both: {why}", file=sys.stderr)
        return 2
    result = run(calls, seconds, generators, workers, bridge_url, config, reference, reply, tracks)
    print(json.dumps(result))
    return 0 if result["frames_lost"] == 0 and result["failed_calls"] == 0 else 1
