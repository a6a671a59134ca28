"""Helpers for tests that run the bridge as a real process: the repo root, a free loopback port, an
environment with no bridge setting in it."""

from __future__ import annotations

import os
import socket
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def minimal_env(**extra: str) -> dict[str, str]:
    """The test's environment without any bridge setting, plus ``extra``; data goes to a fresh temp dir."""
    import tempfile

    env = {k: v for k, v in os.environ.items() if not k.startswith(("BRIDGE_", "GLADIA_", "BOT_", "TWILIO_"))}
    env["BRIDGE_DATA_DIR"] = tempfile.mkdtemp(prefix="bridge-test-")
    env.update(extra)
    return env
