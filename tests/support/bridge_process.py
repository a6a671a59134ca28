"""`bridge serve` as a real process on a free loopback port, its JSON log lines collected as they come."""

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

    def logs(self, event: str | None = None) -> list[dict[str, Any]]:
        """Parsed JSON log lines (those with this ``event``)."""
        out = []
        for line in self.lines:
            with contextlib.suppress(ValueError):
                data = json.loads(line)
                if isinstance(data, dict) and (event is None or data.get("event") == event):
                    out.append(data)
        return out

    async def stop(self, timeout: float = 30.0) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self.reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(self.reader, 5)
        return self.proc.returncode or 0


async def start_bridge(
    env: dict[str, str],
    *args: str,
    preexec_fn: Callable[[], None] | None = None,
    port: int | None = None,
    startup: float = 15.0,
) -> BridgeProcess:
    """Start ``bridge serve`` with ``env`` (nothing else of the test's environment) and wait (up to
    ``startup`` seconds: more with the embedded STT, which loads its model) for /healthz."""
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
        "--log-format",
        "json",
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
                async with http.get(bridge.base + "/healthz"):
                    return bridge
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.05)
    await bridge.stop()
    raise AssertionError("bridge did not start:\n" + "\n".join(bridge.lines[-20:]))
