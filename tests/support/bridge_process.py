"""The bridge as a real process, for the tests (and benchmarks) that need one: `bridge serve` on a free
loopback port with its log lines collected as they come (:func:`start_bridge`, :class:`BridgeProcess`:
wait for it, signal it, stop it, every wait bounded), and a one-shot command run to its end
(:func:`run_bridge`: `bridge call`, `bridge outbox`, `bridge wait-calls`, `bridge serve` that must
refuse to start)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from tests.support.process import ROOT, free_port


@dataclass
class BridgeProcess:
    proc: asyncio.subprocess.Process
    port: int
    lines: list[str] = field(default_factory=list)
    reader: asyncio.Task[None] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    @property
    def text(self) -> str:
        """Everything it wrote (stdout and stderr) so far, one line a log line."""
        return "\n".join(self.lines)

    def logs(self, event: str | None = None) -> list[dict[str, Any]]:
        """Parsed JSON log lines (those with this ``event``)."""
        out = []
        for line in self.lines:
            with contextlib.suppress(ValueError):
                data = json.loads(line)
                if isinstance(data, dict) and (event is None or data.get("event") == event):
                    out.append(data)
        return out

    def send_signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    async def wait(self, timeout: float = 30.0) -> int:
        """Its exit code once it exits by itself (or after a signal the test sent), its output read to the
        end. Not within ``timeout`` seconds: killed, and :class:`TimeoutError` raised."""
        try:
            await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            await self.kill()
            raise
        await self._drain()
        return self.proc.returncode if self.proc.returncode is not None else 0

    async def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (it drains its calls and outbox), then its exit code; killed if not gone in ``timeout``."""
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        await self._drain()
        return self.proc.returncode or 0

    async def kill(self) -> None:
        """SIGKILL (nothing drained, nothing flushed) and wait for it."""
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        await self._drain()

    async def _drain(self) -> None:
        if self.reader is not None:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self.reader, 5)


async def start_bridge(
    env: dict[str, str],
    *args: str,
    preexec_fn: Callable[[], None] | None = None,
    port: int | None = None,
    startup: float = 15.0,
    log_format: str | None = "json",
    healthy_only: bool = False,
) -> BridgeProcess:
    """Start ``bridge serve`` with ``env`` (nothing else of the test's environment) and ``args`` and wait
    (up to ``startup`` seconds: more with the embedded STT, which loads its model) for /healthz to answer
    (with 200 when ``healthy_only``). ``log_format`` None: no ``--log-format`` flag (the bridge's own
    choice). Raises AssertionError, the process stopped and its last lines in the message, when it does not
    come up."""
    port = port or free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *(("--log-format", log_format) if log_format is not None else ()),
        *args,
        env=env,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        preexec_fn=preexec_fn,
    )
    bridge = BridgeProcess(proc, port)

    async def read() -> None:
        assert proc.stdout is not None
        async for raw in proc.stdout:
            bridge.lines.append(raw.decode(errors="replace").rstrip("\n"))

    bridge.reader = asyncio.create_task(read())
    async with aiohttp.ClientSession() as http:
        for _ in range(int(startup / 0.05)):
            if proc.returncode is not None:
                break
            try:
                async with http.get(bridge.base + "/healthz") as resp:
                    if resp.status == 200 or not healthy_only:
                        return bridge
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.05)
    await bridge.stop()
    raise AssertionError("bridge did not start:\n" + "\n".join(bridge.lines[-20:]))


@dataclass(frozen=True)
class Finished:
    """A command that ran to its end: its exit code and what it wrote."""

    returncode: int
    out: bytes
    err: bytes  # empty when ``stderr_to_out``


async def run_bridge(
    *args: str, env: dict[str, str] | None, timeout: float = 30.0, stderr_to_out: bool = False
) -> Finished:
    """``python -m bridge ARGS`` run to its end with ``env`` (None: the test's own environment). Not done
    within ``timeout`` seconds: killed, and :class:`TimeoutError` raised."""
    return await run_python("-m", "bridge", *args, env=env, timeout=timeout, stderr_to_out=stderr_to_out)


async def run_python(
    *args: str, env: dict[str, str] | None, timeout: float = 30.0, stderr_to_out: bool = False
) -> Finished:
    """``python ARGS`` (this interpreter, in the repository) run to its end; see :func:`run_bridge`."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        env=env,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT if stderr_to_out else asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return Finished(proc.returncode if proc.returncode is not None else 0, out, err or b"")
