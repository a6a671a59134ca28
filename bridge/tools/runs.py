"""What the side-by-side benchmarks share: the machine they ran on, and one ``bridge loadtest`` run as a
process with the load average before it (shared machines are noisy: the figures are read as ratios)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any


def cpu_model() -> str:
    """The CPU model, from /proc/cpuinfo."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def machine() -> str:
    """The CPU model and the cores this process may use."""
    return f"{cpu_model()}, {os.cpu_count()} cores"


def loadtest_run(args: list[str], cwd: Path | None = None) -> dict[str, Any]:
    """``bridge loadtest <args>`` as a process: its JSON line (even when it lost frames: that is a figure),
    with ``load_before``, the 1-minute load average when it started."""
    load = os.getloadavg()[0]
    proc = subprocess.run(
        [sys.executable, "-m", "bridge", "loadtest", *args], cwd=cwd, capture_output=True, text=True, check=False
    )
    lines = proc.stdout.strip().splitlines()
    if not lines:
        raise RuntimeError(f"bridge loadtest {' '.join(args)} printed nothing: {proc.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    result["load_before"] = load
    return result
