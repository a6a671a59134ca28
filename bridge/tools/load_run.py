"""The load driver of ``bridge loadtest`` (:func:`run`): starts the load Gladia and bot, the bridges under
test (or the reference forwarder), a Redis and a balancer in fleet mode, and the callers; measures the
bridges, Redis, the balancer and the harness over the steady middle of the run; stops everything it
started; returns the figures. What they mean is in :mod:`bridge.tools.loadtest`."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import multiprocessing as mp
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bridge.tools import procs
from bridge.tools.balancer import balancer
from bridge.tools.load_callers import callers
from bridge.tools.load_console import Consoles
from bridge.tools.load_frames import FINAL_EVERY, FRAME, TRACKS, free_port
from bridge.tools.load_redis import LoadRedis, commands_between
from bridge.tools.load_reference import reference_forwarder
from bridge.tools.load_report import pct, per_call_second
from bridge.tools.load_standin import addons_config, gladia_and_bot


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


@dataclass
class _Bridges:
    """The processes under test (``bridge serve`` instances, or the reference forwarder) and their data dirs."""

    procs: list[Any] = field(default_factory=list)
    data_dirs: list[str] = field(default_factory=list)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.pid is not None]

    def cpu_seconds(self) -> float:
        return sum(procs.cpu_seconds(pid) for pid in self.pids)

    def rss_bytes(self) -> int:
        return sum(procs.rss_bytes(pid) for pid in self.pids)

    def stop(self) -> None:
        """SIGTERM (each bridge drains its calls and outbox), then wait; SIGKILL what does not stop."""
        for p in self.procs:
            if isinstance(p, subprocess.Popen):
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
            elif p.is_alive():
                p.terminate()
        for p in self.procs:
            if isinstance(p, subprocess.Popen):
                try:
                    p.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(timeout=10)
            else:
                p.join(timeout=30)
                if p.is_alive():
                    p.kill()
                    p.join(timeout=10)
        self.procs.clear()
        for d in self.data_dirs:
            shutil.rmtree(d, ignore_errors=True)
        self.data_dirs.clear()


def _bridge_env(fake_port: int, workers: int, config: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BRIDGE_", "GLADIA_", "BOT_", "TWILIO_"))}
    env.update(
        GLADIA_API_URL=f"http://127.0.0.1:{fake_port}",
        GLADIA_API_KEY="load",
        BOT_WEBHOOK_URL=f"http://127.0.0.1:{fake_port}/hook",
        BOT_WEBHOOK_SECRET="whsec_" + base64.b64encode(os.urandom(24)).decode(),
        BRIDGE_LOG_LEVEL="info",
        BRIDGE_LOG_FORMAT="json",
        BRIDGE_WORKERS=str(workers),
    )
    if config:
        env["BRIDGE_CONFIG"] = config  # measure your own tunables (e.g. gladia.chunk_ms)
    return env


def _stop_process(proc: Any, timeout: float = 30) -> None:
    if proc.is_alive():
        proc.terminate()
    proc.join(timeout=timeout)
    if proc.is_alive():
        proc.kill()
        proc.join(timeout=10)


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
    *,
    instances: int = 1,
    fleet: bool = False,
    redis_url: str | None = None,
    appendfsync: str = "everysec",
    pin: bool = True,
    addons: bool = False,
    console: int | None = None,
) -> dict[str, Any]:
    """One load test; the figures :func:`main` prints. ``instances > 1`` or ``fleet``: fleet mode (see
    :func:`main`). ``pin``: the bridge and the harness on cores of their own where this machine allows
    (:func:`bridge.tools.procs.plan_pinning`). ``addons``: the bridges started here get a profile asking
    for translation and sentiment (:func:`addons_config`), and the load Gladia sends them after each final.
    ``console``: the bridges started here get an API token, and that many console-like clients
    (:mod:`bridge.tools.load_console`; 0: none, the token alone) follow them from the harness's cores.
    Every process started here is stopped before it returns, or raises (and its settings file removed);
    this thread's own affinity is restored."""
    fleet = fleet or instances > 1
    addons = addons and not reference  # the reference forwarder reads finals only
    ctx = mp.get_context("spawn")
    with contextlib.ExitStack() as cleanup:
        # First, so that every process and thread started from here on (the multiprocessing helpers too)
        # runs on the harness cores unless started for the bridge; undone last.
        plan = cleanup.enter_context(procs.pinned(procs.plan_pinning(pin, workers, instances, reference, bridge_url)))
        port_q, results, stop = ctx.Queue(), ctx.Queue(), ctx.Event()
        fake = ctx.Process(
            target=gladia_and_bot, args=(port_q, stop, results, reply and not reference, addons), daemon=True
        )
        fake.start()
        cleanup.callback(_stop_process, fake)
        fake_port = port_q.get(timeout=30)
        if addons and bridge_url is None:  # removed after the bridges stop (a stack)
            settings_dir = tempfile.mkdtemp(prefix="bridge-load-")
            cleanup.callback(shutil.rmtree, settings_dir, ignore_errors=True)
            given = Path(config).read_text() if config else None
            config = os.path.join(settings_dir, "addons.toml")
            Path(config).write_text(addons_config(given))
        bridges = _Bridges()
        token = ""  # the API's, with console clients
        redis: LoadRedis | None = None
        if fleet:
            redis = LoadRedis(redis_url, appendfsync)
            cleanup.callback(redis.close)  # after the bridges (a stack): they write their outbox on the way out
        cleanup.callback(bridges.stop)
        balancer_proc: Any = None
        balancer_q, balancer_stop = ctx.Queue(), ctx.Event()
        if reference:
            port = free_port()
            forwarder = ctx.Process(
                target=reference_forwarder,
                daemon=True,
                args=(port, f"http://127.0.0.1:{fake_port}", f"http://127.0.0.1:{fake_port}/hook"),
            )
            with procs.starting_on(plan.bridge):
                forwarder.start()
            bridges.procs.append(forwarder)
            bridge_url = f"http://127.0.0.1:{port}"
        elif bridge_url is None:
            env = _bridge_env(fake_port, workers, config)
            if console is not None:
                env["BRIDGE_API_TOKEN"] = token = base64.b64encode(os.urandom(24)).decode()
            secret = base64.b64encode(os.urandom(24)).decode()  # a restarted stream may reach another instance
            ports = []
            for i in range(instances):
                data_dir = tempfile.mkdtemp(prefix="bridge-load-")
                bridges.data_dirs.append(data_dir)
                own = dict(env, BRIDGE_DATA_DIR=data_dir)
                if redis is not None:
                    own.update(BRIDGE_REDIS_URL=redis.url, BRIDGE_INSTANCE_ID=f"load-{i + 1}", BRIDGE_SECRET=secret)
                ports.append(free_port())
                with procs.starting_on(plan.bridge):  # its workers, started later, inherit its cores
                    bridges.procs.append(
                        subprocess.Popen(
                            [sys.executable, "-m", "bridge", "serve", "--host", "127.0.0.1", "--port", str(ports[-1])],
                            env=own,
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL,
                        )
                    )
            for p in ports:
                asyncio.run(_wait_healthy(f"http://127.0.0.1:{p}"))
            if instances > 1:
                # The callers dial a balancer, as behind a load balancer; one instance is dialled directly.
                port = free_port()
                ready: Any = ctx.Queue()
                balancer_proc = ctx.Process(
                    target=balancer,
                    args=(port, [("127.0.0.1", p) for p in ports], ready, balancer_stop, balancer_q),
                    daemon=True,
                )
                balancer_proc.start()
                cleanup.callback(_stop_process, balancer_proc)
                ready.get(timeout=30)
            else:
                port = ports[0]
            bridge_url = f"http://127.0.0.1:{port}"
        asyncio.run(_wait_healthy(bridge_url))
        watchers = Consoles(ctx, bridge_url, token, console, min(10.0, seconds / 4)) if console else None
        if watchers is not None:
            cleanup.callback(watchers.finish)
        measured = bool(bridges.procs)
        rss_idle = bridges.rss_bytes()
        redis_run0 = redis.info() if redis is not None else None
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
            cleanup.callback(_stop_process, g)
            gens.append(g)
            first += n

        def others_cpu() -> tuple[float, float]:
            """The CPU seconds of the balancer and of Redis (its /proc when started here, else INFO cpu)."""
            bal = procs.cpu_seconds(balancer_proc.pid) if balancer_proc is not None else 0.0
            if redis is None:
                return bal, 0.0
            if redis.pid is not None:
                return bal, procs.cpu_seconds(redis.pid)
            info = redis.info()
            return bal, float(info["used_cpu_sys"]) + float(info["used_cpu_user"])

        def harness_cpu() -> tuple[float, float]:
            """The CPU seconds of the stand-in, and of the whole harness: the stand-in, the callers, the
            balancer, a Redis started here and this process (not its children: the bridges are)."""
            standin = procs.cpu_seconds(fake.pid) if fake.pid is not None else 0.0
            started = [g.pid for g in gens] + [balancer_proc.pid if balancer_proc is not None else None]
            started.append(redis.pid if redis is not None else None)
            rest = sum(procs.cpu_seconds(pid) for pid in started if pid is not None)
            return standin, standin + rest + procs.cpu_seconds(os.getpid(), tree=False)

        # Measure the bridges (and Redis, the balancer) over the steady middle of the run.
        window_start, window_end = go_at + ramp + min(2.0, seconds * 0.2), go_at + seconds * 0.9
        time.sleep(max(0.0, window_start - time.monotonic()))
        redis0 = redis.info() if redis is not None else None
        (bal0, rcpu0), (standin0, harness0) = others_cpu(), harness_cpu()
        cpu0, t0 = bridges.cpu_seconds(), time.monotonic()
        time.sleep(max(0.0, window_end - time.monotonic()))
        cpu1, t1 = bridges.cpu_seconds(), time.monotonic()
        (bal1, rcpu1), (standin1, harness1) = others_cpu(), harness_cpu()
        redis1 = redis.info() if redis is not None else None
        rss_busy = bridges.rss_bytes()
        caller_results = [results.get(timeout=seconds + 120) for _ in gens]
        for g in gens:
            g.join(timeout=30)
        time.sleep(1.0)  # let the last finals reach the sink
        watched = watchers.finish() if watchers is not None else None
        redis_run1 = redis.info() if redis is not None else None
        stop.set()
        fake_result = results.get(timeout=60)
        fake.join(timeout=30)
        connections: list[int] | None = None
        if balancer_proc is not None:
            balancer_stop.set()
            connections = balancer_q.get(timeout=30)
            balancer_proc.join(timeout=30)
        bridges.stop()
        redis_fsync = redis.appendfsync() if redis is not None else None
    frames_sent = sum(r["frames_sent"] for r in caller_results)
    gen_cpu = sum(r["cpu_s"] for r in caller_results)
    call_seconds = calls * (t1 - t0)
    frames_per_call = int(seconds / 0.02)
    channels = len(TRACKS[tracks])  # the Gladia session's, interleaved: finals count its bytes
    finals_expected = calls * -(-frames_per_call * FRAME * channels // FINAL_EVERY)
    elapsed = seconds + ramp
    generator_share = gen_cpu / (elapsed * generators)
    standin_share = (standin1 - standin0) / (t1 - t0)  # of one core: it is one event loop
    # Pinned, the harness shares its cores: each part below 0.8 of a core may still fill them together.
    harness_share = (harness1 - harness0) / ((t1 - t0) * len(plan.harness)) if plan.harness else None
    limited_by = [
        name
        for name, share in (("generator", generator_share), ("standin", standin_share), ("harness", harness_share))
        if share is not None and share > 0.8
    ]
    fleet_figures: dict[str, Any] = {
        "redis_server": None,
        "redis_appendfsync": None,
        "redis_ops_per_call_second": None,
        "redis_ops_per_call": None,
        "redis_commands_per_call_second": None,
        "redis_cpu_ms_per_call_second": None,
    }
    if redis0 is not None and redis1 is not None and redis_run0 is not None and redis_run1 is not None:
        ops = int(redis1["total_commands_processed"]) - int(redis0["total_commands_processed"])
        run_ops = int(redis_run1["total_commands_processed"]) - int(redis_run0["total_commands_processed"])
        fleet_figures = {
            "redis_server": "started" if redis_url is None else "given",
            "redis_appendfsync": redis_fsync,
            # total_commands_processed: a command run inside a script counts as well as the script
            "redis_ops_per_call_second": per_call_second(ops, call_seconds),
            "redis_ops_per_call": round(run_ops / calls, 1),  # the whole run: starts and ends included
            "redis_commands_per_call_second": {
                name: per_call_second(n, call_seconds) for name, n in commands_between(redis0, redis1).items()
            },
            "redis_cpu_ms_per_call_second": per_call_second(rcpu1 - rcpu0, call_seconds, 1000),
        }
    return {
        "under_test": "reference_forwarder" if reference else "bridge",
        "calls": calls,
        "tracks": tracks,
        "seconds": seconds,
        "workers": workers,
        "instances": instances,
        "fleet": fleet,
        "generators": generators,
        "cores": os.cpu_count(),
        "ramp_s": ramp,
        # the sum over the instances (with --instances N); the balancer and Redis are counted apart
        "bridge_cpu_ms_per_call_second": per_call_second(cpu1 - cpu0, call_seconds, 1000) if measured else None,
        "bridge_rss_kb_per_call": round((rss_busy - rss_idle) / 1024 / calls, 1) if measured else None,
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
        "finals_delivered": fake_result["webhook_finals"],  # distinct: a retried post counts once
        "finals_redelivered": fake_result["webhook_redelivered"],  # retries the bot saw (after webhook.timeout)
        "finals_expected": finals_expected,
        "final_every_s": FINAL_EVERY / (8000 * channels),  # of a call: 1 s with both parties talking
        "generator_cpu_share": round(generator_share, 3),
        "generator_saturated": generator_share > 0.8,
        "standin_cpu_share": round(standin_share, 3),  # the Gladia stand-in + bot, over the measured window
        "standin_saturated": standin_share > 0.8,
        "harness_cpu_share": round(harness_share, 3) if harness_share is not None else None,  # of its cores
        "limited_by": limited_by or None,  # not None: the figures describe the harness, not the bridge
        **plan.figures(),
        **fleet_figures,
        "balancer_cpu_ms_per_call_second": (
            per_call_second(bal1 - bal0, call_seconds, 1000) if balancer_proc is not None else None
        ),
        "balancer_connections": connections,  # per instance, in order (the health check through it included)
        **({"console_clients": console, "console": watched} if console is not None else {}),
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
        **(
            {
                "addons": True,
                # translation + sentiment messages the load Gladia sent (what the sessions' bodies asked for)
                "addon_messages_sent": fake_result["addon_messages_sent"],
                # distinct utterance.translation / .sentiment / .entities events the bot received
                "addon_events": fake_result["addon_events"],
                "addon_events_failed": fake_result["addon_events_failed"],  # stt.addon_failed
            }
            if addons
            else {}
        ),
    }
