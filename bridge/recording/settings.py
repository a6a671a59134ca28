"""The ``recording`` settings section (call recordings: :mod:`bridge.recording.service`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from bridge.setting_sections import StrictModel


class RecordingSettings(StrictModel):
    """Call recordings in ``<data_dir>/recordings/<call id>.wav`` (or ``.opus``): channel 0 the caller, 1
    the other party or what the bridge played. Off unless the operator asks (nothing kept unasked)."""

    enabled: bool = False  # BRIDGE_RECORDINGS=on|off
    format: Literal["wav", "opus"] = "wav"  # BRIDGE_RECORDING_FORMAT; wav: ~0.1 ms CPU per call-second, opus ~1.5
    flush_s: float = Field(5.0, gt=0, le=60)  # at most this much of a recording is lost to a SIGKILL
    settle_s: float = Field(1.0, ge=0.2, le=10)  # audio kept in memory before it is written (late clears land)
    max_queued_mb: float = Field(32.0, gt=0, le=4096)  # audio waiting for the disk; beyond, dropped and counted
    retry_s: float = Field(10.0, gt=0, le=600)  # a failed recording (disk full) is tried again this often
    # per called number, on or off (overrides `enabled`), e.g. { "+15550100" = true, "+15550199" = false }
    numbers: dict[str, bool] = Field(default_factory=dict)

    def enabled_for(self, called: str | None) -> bool:
        """Whether a call to ``called`` is recorded: its number's entry, else ``enabled``."""
        if called and called in self.numbers:
            return self.numbers[called]
        return self.enabled
