"""The pure core stays pure: adapters, audio, the Gladia wire format and the replay buffer import no
event loop, no network library and no logger (rule 1 of the house style)."""

from __future__ import annotations

import subprocess
import sys

import pytest

PURE = ["bridge.adapters.twilio", "bridge.adapters.base", "bridge.audio", "bridge.stt.protocol", "bridge.stt.replay"]
FORBIDDEN = ["asyncio", "aiohttp", "structlog", "websockets"]


@pytest.mark.parametrize("module", PURE)
def test_pure_module_imports_no_io(module: str) -> None:
    code = (f"import sys, {module}; bad = [m for m in {FORBIDDEN!r} if m in sys.modules]; "
            "print(','.join(bad)); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, f"{module} pulls in {result.stdout.strip()}"
