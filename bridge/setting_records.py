"""The settings of what a bridge keeps of its calls: the ``[transcripts]`` section (the record in the transcript
store, its retention, and what is redacted from it). One frozen pydantic model per section, like
:mod:`bridge.setting_sections`; ``bridge.settings`` assembles them."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator

from bridge.setting_sections import StrictModel


class TranscriptSettings(StrictModel):
    """Transcripts on record: each call's finals in ``<data_dir>/transcripts.sqlite3`` (bridge.transcripts)."""

    enabled: bool = True  # BRIDGE_TRANSCRIPTS: false keeps nothing; /v1/calls/{id}/transcript answers 404
    retention_days: float = Field(30.0, gt=0)  # BRIDGE_TRANSCRIPT_RETENTION_DAYS: older calls are purged
    purge_interval: float = Field(3600.0, gt=0)  # seconds between purges (one runs at start-up)
    max_queue: int = Field(10000, ge=1)  # writes waiting for the disk; beyond, dropped, counted and logged
    # BRIDGE_DATABASE_URL (postgresql://...; a secret: it may hold a password): the record in PostgreSQL, shared
    # by a fleet, instead of the SQLite file (bridge.record_store)
    database_url: SecretStr | None = None
    busy_timeout: float = Field(5.0, gt=0)  # seconds a write waits for another worker's lock
    # BRIDGE_REDACT=card,ssn,phone,email: found and replaced ([card] ...) in what is kept (the store, the
    # transcript API, transcript.completed); BRIDGE_REDACT_EVENTS=true: in the live bot events too
    redact: frozenset[str] = frozenset()
    redact_events: bool = False

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and urlsplit(value.get_secret_value()).scheme not in ("postgresql", "postgres"):
            raise ValueError("must be a postgresql:// URL")
        return value

    @field_validator("redact", mode="before")
    @classmethod
    def _redact(cls, value: Any) -> Any:
        from bridge.redaction import parse_kinds

        if isinstance(value, str):
            return parse_kinds(value)
        return parse_kinds(",".join(value)) if isinstance(value, list | tuple | set | frozenset) else value
