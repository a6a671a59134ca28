"""The Redis of a fleet-mode ``bridge loadtest``: a ``redis-server`` started here (or one given by URL), its
counters, and the commands run between two reads of them."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from typing import Any

import redis

from bridge.tools.load_frames import free_port

REDIS_MISSING = (
    "redis-server not found: fleet mode needs it (Debian/Ubuntu: apt-get install redis-server), "
    "or pass --redis-url redis://HOST:PORT/0"
)


class LoadRedis:
    """The Redis of a fleet-mode load test: a ``redis-server`` started here (free loopback port, a
    temporary directory, AOF on with the given ``appendfsync``), or one at ``url``, left as it is.

    :meth:`info` reads its counters; :attr:`pid` is the started server's (None for a given URL).
    """

    def __init__(self, url: str | None = None, appendfsync: str = "everysec") -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.directory: str | None = None
        if url is not None:
            self.url = url
            return
        binary = shutil.which("redis-server")
        if binary is None:
            raise FileNotFoundError(REDIS_MISSING)
        self.directory = tempfile.mkdtemp(prefix="bridge-load-redis-")
        port = free_port()
        self.url = f"redis://127.0.0.1:{port}/0"
        # The flags of tests/support/redis_server.py, but appendfsync as asked (everysec by default:
        # what a load test of the bridge, not of the disk, wants; `always` fsyncs every write).
        self.proc = subprocess.Popen(
            [
                *(binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", self.directory, "--save", ""),
                *("--appendonly", "yes", "--appendfsync", appendfsync, "--daemonize", "no", "--protected-mode", "yes"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.close()
                    raise RuntimeError(f"redis-server did not answer on port {port}") from None
                time.sleep(0.05)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def info(self) -> dict[str, Any]:
        """``INFO stats``, ``INFO cpu`` and ``INFO commandstats`` in one dict (redis-py's parsing)."""
        with redis.Redis.from_url(self.url, socket_timeout=10) as client:
            info: dict[str, Any] = {}
            for section in ("stats", "cpu", "commandstats"):
                info.update(client.info(section))
            return info

    def appendfsync(self) -> str | None:
        """The server's ``appendfsync`` (``no`` when AOF is off); None when ``CONFIG`` is not allowed."""
        try:
            with redis.Redis.from_url(self.url, socket_timeout=10, decode_responses=True) as client:
                config: dict[str, str] = client.config_get("append*")
        except redis.RedisError:
            return None
        return config.get("appendfsync") if config.get("appendonly") == "yes" else "no"

    def close(self) -> None:
        """Stop the server started here (SIGTERM: it writes its AOF and exits) and remove its directory."""
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
            self.proc = None
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None


def commands_between(before: dict[str, Any], after: dict[str, Any]) -> dict[str, int]:
    """Commands by name between two :meth:`LoadRedis.info` reads (``INFO commandstats``), busiest first;
    a command run inside a script counts under its own name as well as the script's ``evalsha``."""
    counts = {
        key.removeprefix("cmdstat_"): int(value["calls"]) - int(before.get(key, {}).get("calls", 0))
        for key, value in after.items()
        if key.startswith("cmdstat_") and isinstance(value, dict)
    }
    return dict(sorted(((k, v) for k, v in counts.items() if v > 0), key=lambda kv: -kv[1]))
