"""The recording writer in a child process: SIGKILLed mid-call (the file, repaired on restart, holds all
but the last flush window, and the call's next owner continues it), and past ``ulimit -f`` (the writes
fail with EFBIG, the recording degrades and recovers, the appends never raise or block)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bridge.recording import formats
from bridge.recording.writer import RecordingWriter
from tests.support.recording_oracle import Reply, decode, need, ramp_signal, similarity, speech

ROOT = Path(__file__).resolve().parent.parent
RATE = 8000
CHUNK = 800  # 100 ms a append

SIGNAL = """
import numpy as np
from tests.support.recording_oracle import ramp_signal, speech
SPEECH = np.tile(speech(), (4, 1))
def signal(fmt, at, n):
    return ramp_signal(at, n) if fmt == "wav" else SPEECH[at : at + n]
"""

KILLED_CHILD = (
    SIGNAL
    + """
import sys, time
from bridge.recording.writer import RecordingWriter
path, fmt, flush_s = sys.argv[1], sys.argv[2], float(sys.argv[3])
w = RecordingWriter(flush_s=flush_s)
w.start()
w.open("c", path, fmt, 8000)
at = 0
while True:  # 5x real time, until killed
    w.append("c", signal(fmt, at, 800).tobytes())
    at += 800
    print(at, time.monotonic(), flush=True)
    time.sleep(0.02)
"""
)


def child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def expected(fmt: str, start: int, frames: int) -> np.ndarray:
    tiled = np.tile(speech(), (4, 1))
    return ramp_signal(start, frames) if fmt == "wav" else tiled[start : start + frames]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("fmt", ["wav", "opus"])
def test_sigkill_mid_call_then_restart(tmp_path: Path, fmt: str) -> None:
    need("ffmpeg", "sox")
    path, flush_s = tmp_path / f"call.{fmt}", 0.5
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_CHILD, str(path), fmt, str(flush_s)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
        cwd=ROOT,
    )
    assert child.stdout is not None
    progress: list[tuple[int, float]] = []
    try:
        while not progress or progress[-1][1] - progress[0][1] < 4.0:  # about 20 s of call audio
            line = child.stdout.readline()
            assert line, child.stderr.read() if child.stderr else ""
            at, when = line.split()
            progress.append((int(at), float(when)))
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        child.stdout.close()
        if child.stderr:
            child.stderr.close()
    killed_at = time.monotonic()
    # What was appended a flush window (plus scheduling slack) before the kill is on disk; Opus also
    # loses what its encoder held back for the next page (about 1 s of audio).
    slack = 1.0  # scheduling on a busy machine
    safe = max(at for at, when in progress if when <= killed_at - flush_s - slack)
    if fmt == "opus":
        safe -= RATE + RATE // 20
    written = progress[-1][0]

    w = RecordingWriter()
    w.start()
    repaired: Reply[list[str]] = Reply()
    w.recover(tmp_path, repaired)
    assert repaired.wait() == [str(path)]
    for tool in ("sox", "ffmpeg") if fmt == "wav" else ("ffmpeg",):
        decoded = decode(path, RATE, tool)
        assert safe <= len(decoded) <= written, tool
        kept = len(decoded)
        if fmt == "wav":
            assert np.array_equal(decoded, expected(fmt, 0, len(decoded)))
        else:
            assert min(c for c, _ in similarity(expected(fmt, 0, len(decoded)), decoded, 32)) > 0.9

    # The call goes on with a new owner, one second after the last audio the old one took.
    resume = written + RATE
    w.open("c", path, fmt, RATE, at=resume)
    w.append("c", expected(fmt, resume, 2 * RATE).tobytes())
    closed: Reply[dict[str, Any]] = Reply()
    w.close("c", closed)
    info = closed.wait()
    w.stop()
    decoded = decode(path, RATE, "ffmpeg")
    assert len(decoded) == resume + 2 * RATE == round(info["duration_s"] * RATE)
    # What the file kept, silence for what the kill lost and the hand-over, then the new owner's audio.
    want = np.concatenate(
        [expected(fmt, 0, kept), np.zeros((resume - kept, 2), "<i2"), expected(fmt, resume, 2 * RATE)]
    )
    if fmt == "wav":
        assert np.array_equal(decoded, want)
    else:
        assert min(c for c, _ in similarity(want, decoded, 32)) > 0.9


FULL_CHILD = (
    SIGNAL
    + """
import json, resource, sys, time
from bridge.recording.writer import RecordingWriter
path, fmt, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))  # ulimit -f: no file may grow past it
changes = []
w = RecordingWriter(flush_s=0.1, retry_s=0.3, on_change=lambda s, r: changes.append([s, r]))
w.start()
w.open("big", path, fmt, 8000)
w.open("small", path + ".small." + fmt, fmt, 8000)
out = {"appends": 0, "slowest_append_s": 0.0}
def feed(seconds, start):
    for at in range(start, start + seconds * 8000, 800):
        t0 = time.monotonic()
        w.append("big", signal(fmt, at, 800).tobytes())
        if at < 4000:
            w.append("small", signal(fmt, at, 800).tobytes())
        out["slowest_append_s"] = max(out["slowest_append_s"], time.monotonic() - t0)
        out["appends"] += 1
        time.sleep(0.005)
def wait_for(state):
    deadline = time.monotonic() + 20
    while w.status().state != state and time.monotonic() < deadline:
        time.sleep(0.02)
    return w.status()
feed(int(sys.argv[4]), 0)
out["degraded"] = wait_for("degraded").__repr__()
st = w.status()
out["state"], out["reason"], out["dropped"] = st.state, st.reason, st.dropped_bytes
out["failed"] = st.failed_recordings
resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))  # the disk has room again
out["after"] = wait_for("ok").state
feed(2, int(sys.argv[4]) * 8000)
infos = {}
for cid in ("big", "small"):
    w.close(cid, lambda i, cid=cid: infos.__setitem__(cid, i))
w.stop()
out["infos"], out["changes"] = infos, changes
print(json.dumps(out))
"""
)


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("fmt", "limit", "seconds"), [("wav", 64_000, 4), ("opus", 6_000, 6)])
def test_past_ulimit_f_the_recording_degrades_and_recovers(tmp_path: Path, fmt: str, limit: int, seconds: int) -> None:
    need("ffmpeg")
    path = tmp_path / f"call.{fmt}"
    result = subprocess.run(
        [sys.executable, "-c", FULL_CHILD, str(path), fmt, str(limit), str(seconds)],
        capture_output=True,
        text=True,
        timeout=90,
        env=child_env(),
        cwd=ROOT,
    )
    assert result.returncode == 0 and not result.stderr, result.stderr  # nothing escaped the writer
    out = json.loads(result.stdout)
    assert out["state"] == "degraded" and "EFBIG" in out["reason"], out
    assert out["failed"] == 1 and out["dropped"] > 0  # the small recording never failed
    assert out["after"] == "ok"
    assert out["slowest_append_s"] < 0.05  # the loop side never waited on the disk
    assert out["changes"][0][0] == "degraded" and out["changes"][-1] == ["ok", "recovered"]
    big, small = out["infos"]["big"], out["infos"]["small"]
    total = (seconds + 2) * RATE
    assert big["duration_s"] == total / RATE and big["degraded"] and big["dropped_bytes"] > 0
    assert not small["degraded"] and small["dropped_bytes"] == 0
    assert formats.repair(path).was_clean
    decoded = decode(path, RATE, "ffmpeg")
    assert len(decoded) == total  # the lost span is silence: what followed stays in time
    if fmt == "wav":
        assert os.path.getsize(path) == 44 + total * 4
        silent = np.flatnonzero(~decoded.any(axis=1))
        silent = silent[silent > 0]  # frame 0 of the ramp is (0, 0)
        lost_from = int(silent[0]) if len(silent) else total
        assert lost_from >= (limit - 44) // 4 - CHUNK  # everything up to the limit is there
        assert np.array_equal(decoded[:lost_from], expected(fmt, 0, lost_from))
        assert np.array_equal(decoded[-RATE:], expected(fmt, total - RATE, RATE))
        assert np.array_equal(decode(path, RATE, "sox"), decoded)
