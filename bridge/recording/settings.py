"""The ``recording`` settings section (call recordings: :mod:`bridge.recording.service`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

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
    # Fleet mode: recordings go to S3-compatible object storage in parts while the call runs
    # (bridge.recording.remote; credentials from the AWS environment: AWS_ACCESS_KEY_ID, ...).
    url: str | None = None  # BRIDGE_RECORDINGS_URL, s3://bucket/prefix
    s3_endpoint_url: str | None = None  # BRIDGE_RECORDINGS_S3_ENDPOINT: MinIO, Ceph... (None: AWS)
    part_s: float = Field(10.0, ge=1, le=300)  # audio per uploaded part: what a killed instance may lose
    upload_threads: int = Field(4, ge=1, le=32)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value:
            from bridge.recording.objects import parse_s3_url  # boto3 is imported only when it is used

            parse_s3_url(value)  # ValueError: says what is wrong
        return value or None

    @field_validator("s3_endpoint_url")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value or None

    def enabled_for(self, called: str | None) -> bool:
        """Whether a call to ``called`` is recorded: its number's entry, else ``enabled``."""
        if called and called in self.numbers:
            return self.numbers[called]
        return self.enabled
