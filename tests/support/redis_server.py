"""A real ``redis-server`` for the fleet tests, started on a free loopback port with AOF on
(``appendfsync always``), in the test's own directory: killable (SIGKILL) and restartable on the same
data, as the fleet's failure tests need.

Without the binary the fleet tests fail with a message saying how to install it, unless the developer
sets ``BRIDGE_SKIP_FLEET_TESTS=1`` on their own machine (ignored when ``CI`` is set; ``.ci/run``
installs ``redis-server``).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.process import free_port

INSTALL = "redis-server not found: install it (Debian: apt-get install redis-server; the fleet tests start their own)"


def redis_binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("BRIDGE_SKIP_FLEET_TESTS") == "1" and not os.environ.get("CI"):
            pytest.skip("BRIDGE_SKIP_FLEET_TESTS=1 and no redis-server")
        pytest.fail(INSTALL)
    return binary


class RedisServer:
    """One redis-server process; :meth:`kill` (SIGKILL) and :meth:`start` again keep its AOF."""

    def __init__(self, directory: Path) -> None:
        self.binary = redis_binary()
        self.directory = directory
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.directory),
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--daemonize",
                "no",
                "--protected-mode",
                "yes",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not answer on port {self.port}")

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final save (what the AOF keeps is what was fsynced)."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
            self.proc = None
