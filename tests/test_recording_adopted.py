"""A call adopted from another process (fleet mode on one data directory) continues its recording after
what the file holds: the new owner's places count from the file's end, whatever its frame count."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bridge.recording.writer import ClosedInfo, RecordingWriter
from tests.support.recording_oracle import Reply, decode, ramp_signal

RATE = 8000


@pytest.mark.timeout(60)
@pytest.mark.parametrize("fmt", ["wav", "opus"])
def test_the_adopting_owner_appends_after_the_first_owners_audio(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"call.{fmt}"
    first, second = ramp_signal(0, RATE), ramp_signal(RATE, RATE // 2)
    for pcm, after_end in ((first, False), (second, True)):
        writer = RecordingWriter(flush_s=0.2)
        writer.start()
        writer.open("call", path, fmt, RATE, after_end=after_end)
        assert writer.append("call", pcm.tobytes(), 0)  # each owner counts from its own 0
        closed: Reply[ClosedInfo] = Reply()
        writer.close("call", closed)
        info = closed.wait()
        writer.stop()
    assert info["duration_s"] == pytest.approx(1.5, abs=0.03 if fmt == "opus" else 0)
    got = decode(path, RATE, "ffmpeg" if fmt == "opus" else "sox")
    if fmt == "wav":  # lossless: every frame where it belongs, none skipped as an overlap
        assert np.array_equal(got, np.concatenate([first, second]))
        assert info["skipped_frames"] == 0
    else:
        assert len(got) == pytest.approx(RATE * 1.5, abs=RATE * 0.03)
