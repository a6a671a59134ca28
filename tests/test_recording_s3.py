"""Recordings in fleet mode: parts in S3-compatible object storage (moto's server, started by the tests on a
loopback port) listed in the shared record (a real PostgreSQL), so any instance serves any call's recording.

* A call carried by A is uploaded in parts while it runs; B serves it whole (read back by sox, not by the
  writer), with ranges; B lists it; B's retention deletes its rows and its objects; A keeps no spool file.
* A is killed (SIGKILL) mid-call: B takes the call over, ends it on record (``instance_lost``), and serves
  the recording as far as A had uploaded it: all but the last part (plus the flush and settle windows).
* Object storage down mid-call: the call and its events carry on, ``/healthz`` says why, and the parts go
  up when it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from multidict import CIMultiDict

from bridge.audio import encode_from_pcm16
from bridge.errors import ConfigError
from bridge.http.transcripts import TRANSCRIPTS
from bridge.settings import Settings
from bridge.transcripts_pg import PgTranscriptStore
from tests.support.bridge_process import BridgeProcess, start_bridge
from tests.support.calls import WEBHOOK_SECRET, BridgeFactory, wait_for
from tests.support.fakes import FakeGladia, FakeWebhook
from tests.support.phone import phone_call
from tests.support.process import minimal_env
from tests.support.proxy import TcpProxy
from tests.support.recording_oracle import decode, similarity, speech
from tests.support.redis_server import RedisServer
from tests.support.s3_server import S3Server
from tests.test_transcripts_pg import pg_server, pg_url  # noqa: F401 (the fixtures)

pytestmark = pytest.mark.timeout(120)

TOKEN = "api-token-for-the-fleet-recordings"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BUCKET, PREFIX = "recordings", "calls"
SECRET = "the-fleet-shares-this-secret"
RATE = 8000


def recording_env(s3: S3Server, database_url: str, data_dir: Path) -> dict[str, str]:
    return {
        "BRIDGE_API_TOKEN": TOKEN,
        "BRIDGE_DATABASE_URL": database_url,
        "BRIDGE_DATA_DIR": str(data_dir),
        "BRIDGE_RECORDINGS": "on",
        "BRIDGE_RECORDINGS_URL": f"s3://{BUCKET}/{PREFIX}",
        "BRIDGE_RECORDINGS_S3_ENDPOINT": s3.endpoint_url,
    }


FAST = {"recording__part_s": 1.0, "recording__flush_s": 0.5}


def caller_ulaw(seconds: float) -> bytes:
    return encode_from_pcm16(speech(seconds)[:, 0].tobytes(), "ulaw")


async def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, CIMultiDict[str], bytes]:
    async with aiohttp.ClientSession() as http, http.get(url, headers={**AUTH, **(headers or {})}) as resp:
        return resp.status, resp.headers.copy(), await resp.read()


def objects_of(s3: S3Server, call_id: str) -> list[tuple[str, int]]:
    found = s3.client().list_objects_v2(Bucket=BUCKET, Prefix=f"{PREFIX}/{call_id}/")
    return [(o["Key"], o["Size"]) for o in found.get("Contents", [])]


def caller_channel_matches(body: bytes, tmp: Path, seconds: float) -> np.ndarray:
    """The recording decoded by sox; its caller channel is the caller's audio (within 5 ms)."""
    path = tmp / "fetched.wav"
    path.write_bytes(body)
    decoded = decode(path, RATE, "sox")
    sent = speech(seconds)
    n = min(len(decoded), len(sent))
    assert n > RATE
    sent_caller = np.stack([sent[:n, 0], np.zeros(n, dtype="<i2")], axis=1)  # only channel 0 is compared
    (score, lag), _ = similarity(sent_caller, decoded[:n], max_lag=40)
    assert score > 0.9, (score, lag)
    return decoded


@pytest.mark.timeout(90)
async def test_a_call_carried_by_a_is_uploaded_in_parts_and_served_by_b(
    make_bridge: BridgeFactory,
    fake_gladia: FakeGladia,
    webhook: tuple[FakeWebhook, str],
    pg_url: str,  # noqa: F811
    s3_server: S3Server,
    tmp_path: Path,
) -> None:
    hook, _ = webhook
    fake_gladia.segment_seconds = 3600.0
    s3_server.create_bucket(BUCKET)
    a = await make_bridge(recording_env(s3_server, pg_url, tmp_path / "a"), **FAST)
    b = await make_bridge(recording_env(s3_server, pg_url, tmp_path / "b"), **FAST)
    seen_mid_call: list[int] = []

    async def watch() -> None:  # parts in the bucket while the call still runs
        await wait_for(lambda: bool(hook.events("call.started")), timeout=10)
        call_id = hook.events("call.started")[0]["call"]["id"]
        while not hook.events("call.ended"):
            seen_mid_call.append(len(await asyncio.to_thread(objects_of, s3_server, call_id)))
            await asyncio.sleep(0.2)

    watcher = asyncio.create_task(watch())
    await phone_call(str(a.make_url("/twilio/stream")), caller_ulaw(5.0), until=lambda c: c.now > 5.2)
    await wait_for(lambda: bool(hook.events("recording.completed")), timeout=20)
    await watcher
    assert max(seen_mid_call) >= 1, seen_mid_call  # uploaded during the call, not at its end
    completed = hook.events("recording.completed")[0]
    call_id = completed["call"]["id"]
    assert not list((tmp_path / "a" / "recordings").glob("*")), "A kept its spool file"

    url = str(b.make_url(f"/v1/calls/{call_id}/recording"))
    status, headers, body = await fetch(url)
    assert status == 200 and headers["Content-Type"] == "audio/wav" and headers["Accept-Ranges"] == "bytes"
    decoded = caller_channel_matches(body, tmp_path, 5.0)
    assert abs(len(decoded) / RATE - 5.2) < 0.6, len(decoded) / RATE
    assert len(objects_of(s3_server, call_id)) >= 2  # parts, not one object

    size = len(body)
    etag = headers["ETag"]
    status, headers, part = await fetch(url, {"Range": "bytes=1000-1999"})
    assert status == 206 and part == body[1000:2000] and headers["Content-Range"] == f"bytes 1000-1999/{size}"
    status, _, part = await fetch(url, {"Range": "bytes=-100"})
    assert status == 206 and part == body[-100:]
    status, _, part = await fetch(url, {"Range": f"bytes={size - 10}-"})
    assert status == 206 and part == body[-10:]
    status, headers, _ = await fetch(url, {"Range": f"bytes={size}-"})
    assert status == 416 and headers["Content-Range"] == f"bytes */{size}"
    assert (await fetch(url, {"Range": "bytes=0-1,5-6"}))[0] == 416
    status, _, whole = await fetch(url, {"Range": "bytes=0-9", "If-Range": '"another-version"'})
    assert status == 200 and whole == body
    status, _, part = await fetch(url, {"Range": "bytes=0-9", "If-Range": etag})
    assert status == 206 and part == body[:10]
    assert (await fetch(str(b.make_url("/v1/calls/..%2F..%2Fetc/recording"))))[0] == 404
    assert (await fetch(str(b.make_url(f"/v1/calls/{'x' * 300}/recording"))))[0] == 404
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        assert resp.status == 401  # no token

    async with aiohttp.ClientSession(headers=AUTH) as http, http.get(b.make_url("/v1/calls?since=0")) as resp:
        listing = await resp.json()
    (call,) = listing["calls"]
    assert call["recording"]["format"] == "wav" and call["recording"]["bytes"] == size
    assert call["recording"]["duration_s"] == pytest.approx((size - 44) / 4 / RATE, abs=0.001)

    store = b.app[TRANSCRIPTS]
    assert isinstance(store, PgTranscriptStore)
    assert await asyncio.to_thread(store.purge, time.time() + 60) == 1  # retention: rows and objects
    assert objects_of(s3_server, call_id) == []
    assert (await fetch(url))[0] == 404


async def test_an_opus_recording_in_parts_decodes_as_one_stream(
    make_bridge: BridgeFactory,
    fake_gladia: FakeGladia,
    webhook: tuple[FakeWebhook, str],
    pg_url: str,  # noqa: F811
    s3_server: S3Server,
    tmp_path: Path,
) -> None:
    """Ogg/Opus parts are cut at page boundaries: joined, ffmpeg decodes them end to end, the whole call."""
    hook, _ = webhook
    fake_gladia.segment_seconds = 3600.0
    s3_server.create_bucket(BUCKET)
    env = {**recording_env(s3_server, pg_url, tmp_path / "a"), "BRIDGE_RECORDING_FORMAT": "opus"}
    a = await make_bridge(env, **FAST)
    await phone_call(str(a.make_url("/twilio/stream")), caller_ulaw(4.0), until=lambda c: c.now > 4.2)
    await wait_for(lambda: bool(hook.events("recording.completed")), timeout=20)
    call_id = hook.events("recording.completed")[0]["call"]["id"]
    assert len(objects_of(s3_server, call_id)) >= 2
    status, headers, body = await fetch(str(a.make_url(f"/v1/calls/{call_id}/recording")))
    assert status == 200 and headers["Content-Type"] == "audio/ogg" and body[:4] == b"OggS"
    path = tmp_path / "fetched.opus"
    path.write_bytes(body)
    decoded = decode(path, RATE, "ffmpeg")
    assert abs(len(decoded) / RATE - 4.2) < 0.6, len(decoded) / RATE
    sent = speech(4.0)
    n = min(len(decoded), len(sent))
    (score, _), _ = similarity(np.stack([sent[:n, 0], np.zeros(n, dtype="<i2")], axis=1), decoded[:n], max_lag=80)
    assert score > 0.6, score  # a lossy codec at 12 kb/s: the same speech, not the same samples


async def _process(
    name: str,
    s3: S3Server,
    database_url: str,
    redis: RedisServer,
    hook_url: str,
    gladia: FakeGladia,
    tmp: Path,
) -> BridgeProcess:
    config = tmp / f"{name}.toml"
    config.write_text("[fleet]\nlease_ttl = 1.5\nrenew_interval = 0.5\n[recording]\npart_s = 1.0\nflush_s = 0.5\n")
    env = minimal_env(
        GLADIA_API_URL=gladia.base_url,
        GLADIA_API_KEY="test-key",
        BOT_WEBHOOK_URL=hook_url,
        BOT_WEBHOOK_SECRET=WEBHOOK_SECRET,
        BRIDGE_REDIS_URL=redis.url,
        BRIDGE_INSTANCE_ID=name,
        BRIDGE_SECRET=SECRET,
        BRIDGE_CONFIG=str(config),
        **recording_env(s3, database_url, tmp / name),
    )
    return await start_bridge(env)


async def test_an_instance_killed_mid_call_leaves_a_recording_another_completes(
    make_bridge: BridgeFactory,
    fake_gladia: FakeGladia,
    webhook: tuple[FakeWebhook, str],
    redis_server: RedisServer,
    pg_url: str,  # noqa: F811
    s3_server: S3Server,
    tmp_path: Path,
) -> None:
    hook, hook_url = webhook
    fake_gladia.segment_seconds = 3600.0
    s3_server.create_bucket(BUCKET)
    a = await _process("A", s3_server, pg_url, redis_server, hook_url, fake_gladia, tmp_path)
    b = await make_bridge(
        {
            **recording_env(s3_server, pg_url, tmp_path / "B"),
            "BRIDGE_REDIS_URL": redis_server.url,
            "BRIDGE_INSTANCE_ID": "B",
            "BRIDGE_SECRET": SECRET,
        },
        fleet__lease_ttl=1.5,
        fleet__renew_interval=0.5,
        **FAST,
    )
    caller = asyncio.create_task(
        phone_call(f"{a.ws}/twilio/stream", caller_ulaw(12.0), until=lambda c: c.now > 12.0, max_seconds=14)
    )
    try:
        await wait_for(lambda: bool(hook.events("call.started")), timeout=10)
        call_id = hook.events("call.started")[0]["call"]["id"]
        started = time.monotonic()
        async with aiohttp.ClientSession(headers=AUTH) as http, http.get(f"{a.base}/v1/calls") as resp:
            (live,) = (await resp.json())["calls"]
        assert live["id"] == call_id and live["instance"] == "A"  # fleet mode: who holds the call
        await wait_for(lambda: len(objects_of(s3_server, call_id)) >= 4, timeout=15)
        await asyncio.sleep(1.0)
        a.proc.send_signal(signal.SIGKILL)  # mid-call
        await a.proc.wait()
        killed_after = time.monotonic() - started
    finally:
        caller.cancel()
        with contextlib.suppress(BaseException):
            await caller
        await a.stop()
    await wait_for(lambda: bool(hook.events("call.ended")), timeout=20)
    assert hook.events("call.ended")[-1]["summary"]["end_reason"] == "instance_lost"

    url = str(b.make_url(f"/v1/calls/{call_id}/recording"))
    got: list[Any] = []

    async def served() -> bool:
        got[:] = [await fetch(url)]
        return bool(got[0][0] == 200)

    async with asyncio.timeout(15):  # B's end of the call reaches the record within its commit window
        while not await served():
            await asyncio.sleep(0.1)
    body = got[0][2]
    decoded = caller_channel_matches(body, tmp_path, 12.0)
    kept = len(decoded) / RATE
    # Lost: what A had not cut (one part, 1 s), the writer's flush window (0.5 s) and the timeline's settle
    # time (1 s) before it; plus the time between call.started and the first audio. Never more than was said.
    assert killed_after - 3.5 <= kept <= killed_after + 0.5, (kept, killed_after)
    async with (
        aiohttp.ClientSession(headers=AUTH) as http,
        http.get(b.make_url(f"/v1/calls/{call_id}/transcript")) as resp,
    ):
        record = await resp.json()
    assert record["active"] is False and record["end_reason"] == "instance_lost"


@pytest.mark.timeout(90)
async def test_object_storage_down_mid_call_delays_the_parts_never_the_call(
    make_bridge: BridgeFactory,
    fake_gladia: FakeGladia,
    webhook: tuple[FakeWebhook, str],
    pg_url: str,  # noqa: F811
    s3_server: S3Server,
    tmp_path: Path,
) -> None:
    """The bucket answers 503 (through a proxy) for a while mid-call: the call, its finals and call.ended are
    on time, /healthz says the uploads fail, and once storage is back every part goes up: the recording is
    whole, and recording.completed follows."""
    hook, _ = webhook
    s3_server.create_bucket(BUCKET)
    proxy = TcpProxy(int(s3_server.endpoint_url.rsplit(":", 1)[1]))
    await proxy.start()
    env = recording_env(s3_server, pg_url, tmp_path / "a")
    env["BRIDGE_RECORDINGS_S3_ENDPOINT"] = f"http://127.0.0.1:{proxy.port}"
    a = await make_bridge(env, **FAST)
    health: list[dict[str, Any]] = []
    try:
        call = asyncio.create_task(
            phone_call(str(a.make_url("/twilio/stream")), caller_ulaw(6.0), until=lambda c: c.now > 6.2)
        )
        await wait_for(lambda: bool(hook.events("call.started")), timeout=10)
        proxy.answer = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        proxy.cut()
        async with aiohttp.ClientSession() as http:
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                async with http.get(a.make_url("/healthz")) as resp:
                    body = await resp.json()
                if "upload:" in str(body):
                    health.append(body)
                    break
                await asyncio.sleep(0.2)
        assert not call.done()  # storage is down and the call carries on
        await asyncio.sleep(1.0)
        proxy.answer = None  # storage is back before the call ends
        await call
        await wait_for(lambda: bool(hook.events("recording.completed")), timeout=20)
        call_id = hook.events("recording.completed")[0]["call"]["id"]
        url = str(a.make_url(f"/v1/calls/{call_id}/recording"))
        status, _, body = await fetch(url)
        proxy.answer = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        proxy.cut()
        unreadable, headers, _ = await fetch(url)  # storage down for a reader: a clear 502 before any byte
        assert unreadable == 502 and headers["Retry-After"] == "1"
    finally:
        await proxy.close()
    assert health, "no /healthz answer said the uploads were failing"
    assert health[0]["status"] != "ok" and health[0]["recordings"]["uploads"]["failures"] >= 1
    assert len(hook.events("utterance.final")) >= 1
    assert status == 200
    decoded = caller_channel_matches(body, tmp_path, 6.0)
    assert abs(len(decoded) / RATE - 6.2) < 0.6  # nothing lost to the outage


def test_the_settings_of_recordings_in_object_storage(tmp_path: Path) -> None:
    settings = Settings.load({"BRIDGE_RECORDINGS_URL": "s3://bucket/some/prefix", "BRIDGE_RECORDINGS": "on"})
    assert settings.recording.url == "s3://bucket/some/prefix" and settings.recording.part_s == 10.0
    with pytest.raises(ConfigError, match=r"recording\.url \(from BRIDGE_RECORDINGS_URL\)"):
        Settings.load({"BRIDGE_RECORDINGS_URL": "https://bucket.example/prefix"})
    with pytest.raises(ConfigError, match="needs BRIDGE_TRANSCRIPTS on"):
        Settings.load({"BRIDGE_RECORDINGS_URL": "s3://bucket/p", "BRIDGE_TRANSCRIPTS": "false"})
    with pytest.raises(ConfigError, match=r"recording\.s3_endpoint_url"):
        Settings.load({"BRIDGE_RECORDINGS_URL": "s3://bucket/p", "BRIDGE_RECORDINGS_S3_ENDPOINT": "ftp://x"})
