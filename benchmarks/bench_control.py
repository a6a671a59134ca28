"""Benchmark of call control (not a test): prints one JSON line per figure.

    .venv/bin/python benchmarks/bench_control.py [--calls 20] [--rounds 5] [--rate 50] [--seconds 20]
                                                 [--warmup 1] [--gathers 10] [--bridge inline|process]

The bridge runs in this process (``create_app`` on a loopback port; ``--bridge process``: ``bridge
serve``, its own process and event loop) with its fakes on loopback: Gladia (no transcripts), the bot's
webhook, and Twilio's REST API. Inline, the figures include the harness (the phones streaming in real
time, the fakes) sharing the bridge's event loop: upper bounds of the bridge's own share. Twilio's side
of each call is played as Twilio documents it: every webhook signed with the official SDK's
``RequestValidator``, the media stream in real time (20 ms frames), each mark echoed when the phone has
played the audio before it.

* ``machine``: the CPU count and model, first.
* ``handover_ms`` (target p99 <= 100 ms): the bot answers ``call.started`` with a ``say`` and a
  ``transfer`` (``after: playback``); from the phone echoing the last mark of that audio to the carrier
  being handed the call. ``method: twiml`` (the bridge wrote the call's TwiML): to the stream's close
  frame reaching the phone, then ``/twilio/after-stream`` must answer the ``<Dial>``. ``method: rest``
  (the operator's TwiML: a stream without ``bridge.resume``): to the fake Twilio API receiving the call
  update ``POST /2010-04-01/Accounts/{AC}/Calls/{CA}.json``. ``--calls`` calls at once, ``--rounds``
  times after ``--warmup`` rounds not counted; each transfer is then answered
  (``DialCallStatus=completed``) so its call ends ``transferred``.
* ``callback_routes_ms`` (target p99 <= 20 ms at 50 requests a second): ``/twilio/after-stream`` with a
  desk entry (the ``<Dial>``) and without (``<Hangup/>``), ``/twilio/dial-status`` with ``no-answer``
  (the ``<Connect><Stream>`` back to the bridge) and ``completed`` (``<Hangup/>``), in turn, at
  ``--rate`` a second for ``--seconds``; signed requests with the real tokens of the transfers above.
  Send to full answer, by an aiohttp client on loopback; every answer's markup is checked. The desk
  entries are put in the bridge's own desk, so ``--bridge process`` leaves that route out.
* ``gather_ms`` (target <= 50 ms): each call runs ``--gathers`` gathers one after the other (4 digits or
  ``#``, alternately); from the phone sending the finishing key (Twilio's ``dtmf`` message) to the bot's
  webhook receiving ``dtmf.gathered``.

Every figure: median, p99, max and the count of samples, in milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from twilio.request_validator import RequestValidator

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bridge.app import create_app
from bridge.call.desk import DESK
from bridge.log import configure_logging
from bridge.loop import loopback_socket, serving
from bridge.settings import Settings
from bridge.tools.phone import TwilioPhone
from tests.support.bridge_process import start_bridge
from tests.support.fakes import FakeGladia, FakeWebhook
from tests.support.process import minimal_env

AUTH_TOKEN = "twilio-bench-auth-token"
ACCOUNT_SID = "AC" + "0" * 32
VALIDATOR = RequestValidator(AUTH_TOKEN)
CALLER = {"AccountSid": ACCOUNT_SID, "From": "+15550001", "To": "+15550002"}
TRANSFER = {"type": "transfer", "to": "+15550142", "caller_id": "+15550002", "after": "playback"}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def spread(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"samples": 0, "median": None, "p99": None, "max": None}
    return {
        "samples": len(values),
        "median": round(statistics.median(values), 2),
        "p99": round(pct(values, 0.99), 2),
        "max": round(max(values), 2),
    }


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = None
    with contextlib.suppress(OSError):
        load = round(os.getloadavg()[0], 2)
    return {
        "figure": "machine",
        "cpus": os.cpu_count(),
        "cpu": model or platform.processor(),
        "python": platform.python_version(),
        "load_1min": load,
    }


def call_sid(kind: int, round_: int, n: int) -> str:
    return f"CA{kind:02d}{round_:04d}{n:026d}"


class FakeTwilioApi:
    """Twilio's REST API, the one operation the bridge uses: the live call update (inline ``Twiml``)."""

    def __init__(self) -> None:
        self.updates: dict[str, tuple[float, str]] = {}  # call sid -> (monotonic time received, Twiml)
        self.refused = 0
        self.app = web.Application()
        self.app.router.add_post("/2010-04-01/Accounts/{account}/Calls/{call}.json", self._update)

    async def _update(self, request: web.Request) -> web.Response:
        at = time.monotonic()
        form = await request.post()
        basic = "Basic " + base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()
        if request.headers.get("Authorization") != basic or request.match_info["account"] != ACCOUNT_SID:
            self.refused += 1
            return web.json_response({"code": 20003, "message": "Authenticate", "status": 401}, status=401)
        sid = request.match_info["call"]
        self.updates[sid] = (at, str(form.get("Twiml", "")))
        return web.json_response({"sid": sid, "account_sid": ACCOUNT_SID, "status": "in-progress"})


@dataclass
class Phone(TwilioPhone):
    """A Twilio phone that notes when it echoes each mark (seconds after ``t0``)."""

    echoed: list[float] = field(default_factory=list)

    async def send(self, message: str) -> None:
        if message.startswith('{"event": "mark"'):
            self.echoed.append(self.now)
        await super().send(message)

    async def press(self, digit: str) -> float:
        """Send a key (Twilio's ``dtmf`` message); returns when it left (monotonic)."""
        at = time.monotonic()
        await self.send(self.writer.dtmf(digit))
        return at


@dataclass
class Bench:
    base: str
    app: web.Application | None  # None: the bridge runs in its own process
    http: aiohttp.ClientSession
    hook: FakeWebhook
    api: FakeTwilioApi

    async def post(self, url: str, form: dict[str, str]) -> tuple[int, str]:
        headers = {"X-Twilio-Signature": VALIDATOR.compute_signature(url, form)}
        async with self.http.post(url, data=form, headers=headers) as resp:
            return resp.status, await resp.text()

    async def twiml(self, url: str, form: dict[str, str]) -> ET.Element:
        status, text = await self.post(url, form)
        if status != 200:
            raise RuntimeError(f"{url}: HTTP {status} {text[:200]}")
        return ET.fromstring(text)

    @contextlib.asynccontextmanager
    async def dial(self, sid: str, parameters: dict[str, str]) -> AsyncIterator[Phone]:
        """Twilio opening the call's media stream (signed), then streaming until the block ends."""
        url = self.base.replace("http", "ws", 1) + "/twilio/stream"
        headers = {"X-Twilio-Signature": VALIDATOR.compute_signature(url, {})}
        async with Phone.dial(
            url, call_sid=sid, stream_sid="MZ" + sid[2:], parameters=parameters, headers=headers
        ) as phone:
            yield phone

    def ended(self, sids: set[str]) -> list[dict[str, Any]]:
        return [e for e in self.hook.events("call.ended") if e["call"]["call_sid"] in sids]


@contextlib.asynccontextmanager
async def bridge(mode: str) -> AsyncIterator[Bench]:
    """The bridge (``inline``: in this process; ``process``: ``bridge serve``, its own process and event
    loop) and its fakes on loopback."""
    gladia, hook, api = FakeGladia(segment_seconds=3600.0), FakeWebhook(), FakeTwilioApi()
    async with serving(gladia.app) as gladia_url, serving(hook.app) as hook_url, serving(api.app) as api_url:
        gladia.base_url = gladia_url
        sock = loopback_socket()
        port = sock.getsockname()[1]
        base = f"http://127.0.0.1:{port}"
        env = {
            "GLADIA_API_URL": gladia_url,
            "GLADIA_API_KEY": "test-key",
            "BOT_WEBHOOK_URL": hook_url + "/hook",
            "BRIDGE_DATA_DIR": tempfile.mkdtemp(prefix="bench-control-"),
            "BRIDGE_PUBLIC_URL": base,
            "BRIDGE_SECRET": "s" * 32,
            "BRIDGE_TRANSFER_TO": "+1555",
            "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
            "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
            "TWILIO_API_URL": api_url,
        }
        if mode == "process":
            sock.close()
            process = await start_bridge(minimal_env(**env, BRIDGE_LOG_LEVEL="warning"), port=port)
            try:
                async with aiohttp.ClientSession() as http:
                    yield Bench(base, None, http, hook, api)
            finally:
                await process.stop()
            return
        app = create_app(Settings.load(environ=env))
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        try:
            async with aiohttp.ClientSession() as http:
                yield Bench(base, app, http, hook, api)
        finally:
            await runner.cleanup()


# -- handover ------------------------------------------------------------------------------------


@dataclass
class Handovers:
    twiml: list[float] = field(default_factory=list)
    rest: list[float] = field(default_factory=list)
    dials: int = 0  # after-stream answers that were the <Dial>
    closes_1000: int = 0
    dial_actions: list[str] = field(default_factory=list)  # the <Dial action> URLs (real dial-status tokens)
    dial_answer: str = ""  # one after-stream answer, as served
    failures: list[str] = field(default_factory=list)


async def markup_call(bench: Bench, sid: str, out: Handovers) -> None:
    voice = await bench.twiml(bench.base + "/twilio/voice", CALLER | {"CallSid": sid})
    parameters = {p.attrib["name"]: p.attrib["value"] for p in voice.iter("Parameter")}
    async with bench.dial(sid, parameters) as phone:
        await phone.wait(lambda: phone.closed, 30)
    closed = phone.closed_by_bridge_at
    last = max((t for t in phone.echoed if closed is not None and t <= closed), default=None)
    if closed is None or last is None:
        out.failures.append(f"{sid}: closed={closed} marks={len(phone.echoed)}")
        return
    out.closes_1000 += phone.ws.close_code == 1000
    out.twiml.append((closed - last) * 1000)
    status, text = await bench.post(bench.base + "/twilio/after-stream", CALLER | {"CallSid": sid})
    dials = list(ET.fromstring(text).iter("Dial")) if status == 200 else []
    if not dials:
        out.failures.append(f"{sid}: after-stream answered {status} {text[:120]}")
        return
    out.dials += 1
    out.dial_answer = text
    out.dial_actions.append(dials[0].attrib["action"])
    await bench.twiml(dials[0].attrib["action"], CALLER | {"CallSid": sid, "DialCallStatus": "completed"})


async def rest_call(bench: Bench, sid: str, out: Handovers) -> None:
    parameters = {"From": CALLER["From"], "To": CALLER["To"]}  # the operator's TwiML: no bridge.resume
    async with bench.dial(sid, parameters) as phone:
        await phone.wait(lambda: sid in bench.api.updates, 30)
        # Twilio ends the stream once the call runs the new TwiML: its stop, as the block ends
    at, twiml = bench.api.updates.get(sid, (0.0, ""))
    got = at - phone.t0
    last = max((t for t in phone.echoed if t <= got), default=None)
    if not twiml or last is None:
        out.failures.append(f"{sid}: no call update after a mark (marks={len(phone.echoed)})")
        return
    out.rest.append((got - last) * 1000)
    dials = list(ET.fromstring(twiml).iter("Dial"))
    if not dials:
        out.failures.append(f"{sid}: the call update's Twiml has no <Dial>: {twiml[:120]}")
        return
    out.dial_actions.append(dials[0].attrib["action"])
    await bench.twiml(dials[0].attrib["action"], CALLER | {"CallSid": sid, "DialCallStatus": "completed"})


async def handover(bench: Bench, calls: int, rounds: int, warmup: int) -> tuple[list[dict[str, Any]], Handovers]:
    def answer(event: dict[str, Any]) -> Any:
        if event["type"] == "call.started":
            return {"actions": [{"type": "say", "text": "Please hold."}, TRANSFER]}
        return None

    bench.hook.answer = answer
    out = Handovers()
    sids: set[str] = set()
    for r in range(warmup + rounds):
        kept = out if r >= warmup else Handovers()  # the first rounds warm the bridge and the phones up
        for kind, call in ((1, markup_call), (2, rest_call)):
            batch = {call_sid(kind, r, n) for n in range(calls)}
            sids |= batch
            await asyncio.gather(*(call(bench, sid, kept) for sid in sorted(batch)))
        out.failures += kept.failures if kept is not out else []
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(15):
            while len(bench.ended(sids)) < len(sids):
                await asyncio.sleep(0.05)
    reasons = [e["summary"]["end_reason"] for e in bench.ended(sids)]
    common = {
        "figure": "handover_ms",
        "calls_at_once": calls,
        "rounds": rounds,
        "warmup_rounds": warmup,
        "target_p99": 100,
        "ended_transferred": reasons.count("transferred"),
        "calls": len(sids),
    }
    lines = [
        common
        | {"method": "twiml", "to": "close frame"}
        | spread(out.twiml)
        # each after-stream answer that was the <Dial>, each close code 1000
        | {"dial_answers": out.dials, "close_1000": out.closes_1000},
        common | {"method": "rest", "to": "call update received"} | spread(out.rest) | {"refused": bench.api.refused},
    ]
    if out.failures:
        lines[0]["failures"] = out.failures[:5] + ([f"... {len(out.failures)} in all"] if len(out.failures) > 5 else [])
    return lines, out


# -- callback routes -----------------------------------------------------------------------------

ROUTES = ("after-stream desk", "after-stream none", "dial-status no-answer", "dial-status completed")
EXPECTED = {"after-stream desk": "Dial", "after-stream none": "Hangup", "dial-status no-answer": "Connect"}


async def callback_routes(bench: Bench, dials: Handovers, rate: float, seconds: float) -> dict[str, Any]:
    total = int(rate * seconds)
    # a desk entry is left as a transfer leaves it (the answer served in the runs above), in the bridge's
    # own desk: only when the bridge runs in this process
    routes = ROUTES if bench.app is not None else ROUTES[1:]
    requests: list[tuple[str, str, dict[str, str]]] = []
    for i in range(total):
        route = routes[i % len(routes)]
        sid = call_sid(3, 0, i)
        if route.startswith("after-stream"):
            if route == "after-stream desk" and bench.app is not None:
                await bench.app[DESK].put("twilio", sid, dials.dial_answer)
            requests.append((route, bench.base + "/twilio/after-stream", CALLER | {"CallSid": sid}))
        else:
            status = route.split()[1]
            url = dials.dial_actions[i % len(dials.dial_actions)]
            requests.append((route, url, CALLER | {"CallSid": sid, "DialCallStatus": status}))
    signed = [(r, u, f, {"X-Twilio-Signature": VALIDATOR.compute_signature(u, f)}) for r, u, f in requests]
    times: dict[str, list[float]] = {r: [] for r in routes}
    wrong: list[str] = []

    async def one(route: str, url: str, form: dict[str, str], headers: dict[str, str]) -> None:
        t = time.perf_counter()
        async with bench.http.post(url, data=form, headers=headers) as resp:
            text = await resp.text()
        times[route].append((time.perf_counter() - t) * 1000)
        tags = [el.tag for el in ET.fromstring(text)] if resp.status == 200 else [str(resp.status)]
        if EXPECTED.get(route, "Hangup") not in tags:
            wrong.append(f"{route}: {tags}")

    tasks = []
    start = time.monotonic()
    for i, request in enumerate(signed):
        await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
        tasks.append(asyncio.create_task(one(*request)))
    await asyncio.gather(*tasks)
    sent_over = time.monotonic() - start
    everything = [t for ts in times.values() for t in ts]
    return (
        {"figure": "callback_routes_ms", "rate_per_s": round(total / sent_over, 1), "target_p99": 20}
        | spread(everything)
        | {"wrong_answers": len(wrong), "by_route": {r: spread(ts) for r, ts in times.items()}}
        | ({"wrong": wrong[:5]} if wrong else {})
    )


# -- gather --------------------------------------------------------------------------------------


async def gather(bench: Bench, calls: int, per_call: int) -> dict[str, Any]:
    arrived: dict[str, list[tuple[float, dict[str, Any]]]] = {}  # call sid -> dtmf.gathered (when, event)
    started: set[str] = set()
    count = 0

    def answer(event: dict[str, Any]) -> Any:
        nonlocal count
        sid = event["call"]["call_sid"]
        if event["type"] == "dtmf.gathered":
            arrived.setdefault(sid, []).append((time.monotonic(), event))
        elif event["type"] == "call.started":
            started.add(sid)
        else:
            return None
        count += 1
        action = {"type": "gather", "id": f"g{count}", "num_digits": 4, "finish_on_key": "#", "timeout_ms": 20000}
        return {"actions": [action]}

    bench.hook.answer = answer
    samples: list[float] = []
    reasons: list[str] = []
    missed = 0

    def more_than(sid: str, n: int) -> Callable[[], bool]:
        return lambda: len(arrived.get(sid, [])) > n

    async def call(sid: str) -> None:
        nonlocal missed
        async with bench.dial(sid, {"From": CALLER["From"], "To": CALLER["To"]}) as phone:
            await phone.wait(lambda: sid in started, 10)
            for k in range(per_call):
                await phone.wait(lambda: False, 0.2)  # the bot's answer (the next gather) is applied meanwhile
                for digit in "123":
                    await phone.press(digit)
                    await phone.wait(lambda: False, 0.06)
                pressed = await phone.press("4" if k % 2 else "#")
                if not await phone.wait(more_than(sid, k), 5):
                    missed += per_call - k
                    return
                at, event = arrived[sid][k]
                samples.append((at - pressed) * 1000)
                reasons.append(event["reason"])

    await asyncio.gather(*(call(call_sid(4, 0, n)) for n in range(calls)))
    return (
        {"figure": "gather_ms", "calls_at_once": calls, "gathers_per_call": per_call, "target": 50}
        | spread(samples)
        | {"missed": missed, "reasons": {r: reasons.count(r) for r in sorted(set(reasons))}}
    )


async def main(args: argparse.Namespace) -> None:
    configure_logging("warning", "json")
    print(json.dumps(machine()), flush=True)

    def show(line: dict[str, Any]) -> None:
        print(json.dumps({"figure": line.pop("figure"), "bridge": args.bridge} | line), flush=True)

    async with bridge(args.bridge) as bench:
        lines, dials = await handover(bench, args.calls, args.rounds, args.warmup)
        for line in lines:
            show(line)
        if dials.dial_actions and dials.dial_answer:
            show(await callback_routes(bench, dials, args.rate, args.seconds))
        show(await gather(bench, args.calls, args.gathers))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20, help="calls at once (handover, gather)")
    parser.add_argument("--rounds", type=int, default=5, help="handover rounds, each method")
    parser.add_argument("--warmup", type=int, default=1, help="handover rounds first, not counted")
    parser.add_argument("--rate", type=float, default=50.0, help="callback requests a second")
    parser.add_argument("--seconds", type=float, default=20.0, help="callback requests for this long")
    parser.add_argument("--gathers", type=int, default=10, help="gathers one after the other, each call")
    parser.add_argument(
        "--bridge", choices=("inline", "process"), default="inline", help="in this process, or bridge serve"
    )
    asyncio.run(main(parser.parse_args()))
