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

``--addons``: Gladia's add-ons on every call. The bridges started here get a default STT profile asking
for live translation to French and Spanish and for sentiment analysis (``[stt.default.realtime_processing]``,
added to the ``--config`` file if one is given, unless that file sets it itself), and the load Gladia
answers what each session's body asks for as Gladia does: after each final, a ``translation`` message per
target language and a ``sentiment_analysis`` message, linked to the final by its id. The line adds
``addon_messages_sent`` (by the load Gladia), ``addon_events`` (the distinct ``utterance.translation``,
``utterance.sentiment`` and ``utterance.entities`` events the bot received) and ``addon_events_failed``
(``stt.addon_failed``). The CPU ratio to a run without, side by side, is ``benchmarks/bench_addons.py``.

``--console N``: the bridges get an API token, and N clients in one harness process ask of them what the
console page asks while it is open (:mod:`bridge.tools.load_console`: ``GET /v1/events`` with the live
list's types, ``GET /v1/calls`` every 10 s, the past calls every 60 s); the line adds ``console``, what they
got. ``--console 0`` sets the token alone: compare it with ``--console 20``, side by side
(``benchmarks/bench_console.py``).

**Fleet mode** (``--instances N``, N > 1; or ``--fleet`` for a single instance in fleet mode, to compare
with single mode): the bridges share a Redis, a ``redis-server`` started here on a free loopback port in
a temporary directory (AOF, ``--appendfsync everysec`` unless ``--redis-appendfsync`` says otherwise),
or the one ``--redis-url`` names; each has its own ``BRIDGE_INSTANCE_ID`` and data dir, and the same
Gladia, bot and ``BRIDGE_SECRET``. N > 1 bridges sit behind :mod:`bridge.tools.balancer`, a loopback TCP
balancer (round robin per connection) that the callers dial; one instance is dialled directly. The
bridge's CPU per call-second is then the sum over the instances; the balancer's and Redis's are
reported apart (``/proc``; ``INFO cpu`` for a Redis not started here), and so are the Redis commands
per call-second (``INFO stats`` ``total_commands_processed`` over the same window: a command a script
runs counts as well as the script; by name in ``redis_commands_per_call_second``).

**Is the harness the limit?** ``generator_cpu_share`` is the callers' CPU over the run, per caller process,
as a share of one core; ``standin_cpu_share`` is the Gladia stand-in's (one process, one event loop) over
the measured window. Over 0.8 of a core, ``generator_saturated`` / ``standin_saturated`` are true and
``limited_by`` names them (``"generator"``, ``"standin"``; and ``"harness"`` when pinned and
``harness_cpu_share``, the whole harness's CPU as a share of its cores, is over 0.8): the latencies then
describe the harness, not the bridge, and one line on stderr says so. ``limited_by`` is null otherwise.

**Pinning** (unless ``--no-pin``; :mod:`bridge.tools.procs`): the bridge under test (every ``bridge serve``
instance and its workers, or the reference forwarder) runs on cores of its own and the harness (the
stand-in, the callers, the balancer, a Redis started here, this process) on the others, so they do not
take CPU from each other: the harness gets half the cores (at least one), the bridge the rest and, where
there are enough, a core per process (``--workers`` x ``--instances``); 2 cores: the bridge on core 0,
the harness on core 1. ``"pinning": {"bridge": [0], "harness": [1]}``. With fewer cores than the bridge's
processes plus one, its processes share all cores but the harness's one, and ``pinning_note`` says so.
``"pinning": null`` and ``pinning_note`` says why: ``--no-pin``, one core, ``--bridge-url``, or no
``os.sched_setaffinity`` (not Linux).

This module is the command (:func:`main`); the driver is :mod:`bridge.tools.load_run`, its report
:mod:`bridge.tools.load_report`, the processes it starts :mod:`bridge.tools.load_standin`,
:mod:`bridge.tools.load_callers`, :mod:`bridge.tools.load_reference`, :mod:`bridge.tools.load_redis` and
:mod:`bridge.tools.balancer`, and what they share :mod:`bridge.tools.load_frames`.
"""

from __future__ import annotations

import json
import shutil
import signal
import sys
from pathlib import Path

from bridge.tools.load_redis import REDIS_MISSING
from bridge.tools.load_report import limits
from bridge.tools.load_run import run
from bridge.tools.load_standin import addons_config


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
    *,
    instances: int = 1,
    fleet: bool = False,
    redis_url: str | None = None,
    appendfsync: str = "everysec",
    pin: bool = True,
    addons: bool = False,
    console: int | None = None,
) -> int:
    """``bridge loadtest``: prints the JSON line of :func:`run`; 0 when no frame was lost and no call failed,
    1 otherwise, 2 for arguments that do not go together (one line on stderr).

    Fleet mode (``--instances N`` with N > 1, or ``--fleet`` for one instance): the bridges share a Redis,
    one started here (``redis-server`` on a free loopback port, AOF with ``appendfsync`` as given) unless
    ``redis_url`` names one; N > 1 bridges are dialled through :mod:`bridge.tools.balancer`.

    ``pin`` (default; ``--no-pin`` turns it off): the bridge and the harness on cores of their own. When
    the harness was the limit (``limited_by``), one line on stderr says so.

    ``addons``: Gladia's translation (two languages) and sentiment on every call (see the module); refused
    with ``--reference``, and with a ``--config`` file that cannot take the profile.

    ``console``: the bridges get an API token and that many console-like clients follow them
    (:mod:`bridge.tools.load_console`); the line adds ``console`` (what they counted).
    """
    if tracks == "both" and (reference or reply):
        why = (
            "--reference forwards one track"
            if reference
            else "--reply: a both_tracks stream is one-way (Twilio plays nothing back on it)"
        )
        print(f"bridge loadtest: --tracks both: {why}", file=sys.stderr)
        return 2
    fleet = fleet or instances > 1
    problem = None
    if addons and reference:
        problem = "--addons: the reference forwarder reads finals only"
    elif addons and config and bridge_url is None:
        problem = _addons_config_problem(config)
    elif instances < 1:
        problem = "--instances must be at least 1"
    elif console is not None and (console < 0 or reference or bridge_url):
        problem = "--console takes N >= 0 clients of a bridge started here (not with --reference or --bridge-url)"
    elif fleet and (reference or bridge_url):
        other = "--reference" if reference else "--bridge-url"
        problem = f"fleet mode (--instances, --fleet) starts its own bridges: not with {other}"
    elif redis_url and not fleet:
        problem = "--redis-url is for fleet mode: add --fleet or --instances N"
    elif fleet and redis_url is None and shutil.which("redis-server") is None:
        problem = REDIS_MISSING
    if problem:
        print(f"bridge loadtest: {problem}", file=sys.stderr)
        return 2
    # SIGTERM unwinds run() like Ctrl-C, so the bridges, Redis and the balancer it started are stopped too.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    result = run(
        calls,
        seconds,
        generators,
        workers,
        bridge_url,
        config,
        reference,
        reply,
        tracks,
        instances=instances,
        fleet=fleet,
        redis_url=redis_url,
        appendfsync=appendfsync,
        pin=pin,
        addons=addons,
        console=console,
    )
    print(json.dumps(result), flush=True)
    if result["limited_by"]:
        print(f"bridge loadtest: {limits(result)}", file=sys.stderr)
    return 0 if result["frames_lost"] == 0 and result["failed_calls"] == 0 else 1


def _addons_config_problem(config: str) -> str | None:
    """Why ``--config`` cannot carry ``--addons``' profile (one line), or None when it can."""
    try:
        addons_config(Path(config).read_text())
    except OSError as exc:
        return f"--config {config}: {exc.strerror or exc}"
    except ValueError as exc:
        return f"--addons: --config {config}: {str(exc).splitlines()[0]}"
    return None
