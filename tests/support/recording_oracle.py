"""Independent readers for the recording tests: Debian's sox and ffmpeg decode what the writer wrote (not
soundfile, the writer's own library), and the comparisons they are held to.

Missing tools skip the test on a developer's machine (``apt-get install sox ffmpeg``) and fail under CI
(``CI`` set), where ``.ci/run`` installs them."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import wave
from pathlib import Path
from typing import Generic, TypeVar

import numpy as np
import pytest

T = TypeVar("T")
SAMPLES = Path(__file__).resolve().parents[2] / "bridge" / "samples"


def need(*tools: str) -> None:
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if not missing:
        return
    message = f"{', '.join(missing)} not installed (apt-get install sox ffmpeg)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def decode(path: Path, rate: int, tool: str) -> np.ndarray:
    """The file's audio as (frames, 2) int16 at ``rate``, decoded by ``tool`` ("sox" or "ffmpeg")."""
    need(tool)
    if tool == "sox":
        command = ["sox", str(path), "-t", "raw", "-e", "signed-integer", "-b", "16", "-L", "-"]
    else:
        command = ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-f", "s16le", "-ac", "2", "-ar", str(rate)]
        command.append("-")
    result = subprocess.run(command, capture_output=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert not result.stderr.strip(), result.stderr.decode(errors="replace")  # no warning either
    return np.frombuffer(result.stdout, dtype="<i2").reshape(-1, 2)


def soxi(path: Path, option: str) -> str:
    need("soxi")
    return subprocess.run(["soxi", option, str(path)], capture_output=True, text=True, timeout=30).stdout.strip()


def speech(seconds: float | None = None, rate: int = 8000) -> np.ndarray:
    """The shipped two-party call (8 kHz stereo speech, each side on its channel) as (frames, 2) int16;
    at 16 kHz by linear interpolation (a test signal, not a resampler)."""
    with wave.open(str(SAMPLES / "two_party_call.wav")) as w:
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2)
    data = data if seconds is None else data[: round(seconds * 8000)]
    if rate == 8000:
        return data
    x = np.arange(len(data) * rate // 8000) * 8000 / rate
    return np.stack([np.interp(x, np.arange(len(data)), data[:, c]) for c in range(2)], axis=1).astype("<i2")


def similarity(written: np.ndarray, decoded: np.ndarray, max_lag: int) -> list[tuple[float, int]]:
    """Per channel: the peak normalised cross-correlation within ``max_lag`` samples, and its lag (a side
    silent in ``written`` scores 1.0 if it decodes to near silence)."""
    n = min(len(written), len(decoded))
    out = []
    for ch in range(2):
        a, d = written[:n, ch].astype(np.float64), decoded[:n, ch].astype(np.float64)
        if not a.any():  # a silent side (the other party's turn): the decoder must be silent too
            out.append((1.0 if np.sqrt(np.mean(d**2)) < 50 else 0.0, 0))
            continue
        best = (-1.0, 0)
        for lag in range(-max_lag, max_lag + 1):
            x, y = (a[: n - lag], d[lag:]) if lag >= 0 else (a[-lag:], d[: n + lag])
            denom = np.sqrt(np.dot(x, x) * np.dot(y, y))
            if denom:
                best = max(best, (float(np.dot(x, y) / denom), lag))
        out.append(best)
    return out


def ramp_signal(start: int, frames: int) -> np.ndarray:
    """A signal whose every sample says where it is: frame i holds (i % 30011, -(i % 29989)), so a decoded
    file shows exactly which frames it kept (lossless formats only)."""
    i = np.arange(start, start + frames)
    return np.stack([i % 30011, -(i % 29989)], axis=1).astype("<i2")


class Reply(Generic[T]):
    """A callback for the writer thread (``on_closed``, ``on_done``) that a test can wait on."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._value: T | None = None

    def __call__(self, value: T) -> None:
        self._value = value
        self._event.set()

    def wait(self, timeout: float = 30.0) -> T:
        assert self._event.wait(timeout), "the writer thread never answered"
        assert self._value is not None
        return self._value
