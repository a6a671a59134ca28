"""Validation of Gladia's ``StreamingRequest`` (the ``POST /v2/live`` body), answered like Gladia.

Gladia answers a malformed body (not JSON, not an object, unknown property, wrong type) with 400 and
``validation_errors``, and a well-formed body with values it cannot accept (out of range, not in an
enum) with 422. Error bodies have ``timestamp``, ``path``, ``request_id``, ``statusCode`` and ``message``.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bridge.stt_profile import ADDON_SWITCHES, requested_addons
from bridge.untrusted import loads

# Whisper's language codes (Gladia's TranscriptionLanguageCode list is the same ISO-639-1 style set).
LANGUAGES = frozenset(
    {
        "af",
        "am",
        "ar",
        "as",
        "az",
        "ba",
        "be",
        "bg",
        "bn",
        "bo",
        "br",
        "bs",
        "ca",
        "cs",
        "cy",
        "da",
        "de",
        "el",
        "en",
        "es",
        "et",
        "eu",
        "fa",
        "fi",
        "fo",
        "fr",
        "gl",
        "gu",
        "ha",
        "haw",
        "he",
        "hi",
        "hr",
        "ht",
        "hu",
        "hy",
        "id",
        "is",
        "it",
        "ja",
        "jw",
        "ka",
        "kk",
        "km",
        "kn",
        "ko",
        "la",
        "lb",
        "ln",
        "lo",
        "lt",
        "lv",
        "mg",
        "mi",
        "mk",
        "ml",
        "mn",
        "mr",
        "ms",
        "mt",
        "my",
        "ne",
        "nl",
        "nn",
        "no",
        "oc",
        "pa",
        "pl",
        "ps",
        "pt",
        "ro",
        "ru",
        "sa",
        "sd",
        "si",
        "sk",
        "sl",
        "sn",
        "so",
        "sq",
        "sr",
        "su",
        "sv",
        "sw",
        "ta",
        "te",
        "tg",
        "th",
        "tk",
        "tl",
        "tr",
        "tt",
        "uk",
        "ur",
        "uz",
        "vi",
        "yi",
        "yo",
        "yue",
        "zh",
    }
)


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class LanguageConfig(_Open):
    languages: list[str] = []
    code_switching: bool = False

    @field_validator("languages")
    @classmethod
    def _codes(cls, value: list[str]) -> list[str]:
        bad = [v for v in value if v not in LANGUAGES]
        if bad:
            raise ValueError(f"language_config.languages: unknown language code(s) {bad}")
        return value


class PreProcessing(_Open):
    audio_enhancer: bool = False
    speech_threshold: float = Field(0.6, ge=0, le=1)


class MessagesConfig(_Open):
    receive_partial_transcripts: bool = False
    receive_final_transcripts: bool = True
    receive_speech_events: bool = True
    receive_pre_processing_events: bool = True
    receive_realtime_processing_events: bool = True
    receive_post_processing_events: bool = True
    receive_acknowledgments: bool = True
    receive_errors: bool = True
    receive_lifecycle_events: bool = False


class StreamingRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    encoding: Literal["wav/pcm", "wav/alaw", "wav/ulaw"] = "wav/pcm"
    bit_depth: Literal[8, 16, 24, 32] = 16
    sample_rate: Literal[8000, 16000, 32000, 44100, 48000] = 16000
    channels: int = Field(1, ge=1, le=8)
    custom_metadata: dict[str, Any] | None = None
    model: Literal["solaria-1"] = "solaria-1"
    endpointing: float = Field(0.05, ge=0.01, le=10)
    maximum_duration_without_endpointing: float = Field(5, ge=5, le=60)
    language_config: LanguageConfig | None = None
    pre_processing: PreProcessing | None = None
    realtime_processing: dict[str, Any] | None = None
    post_processing: dict[str, Any] | None = None
    messages_config: MessagesConfig | None = None
    callback: bool = False
    callback_config: dict[str, Any] | None = None

    @property
    def messages(self) -> MessagesConfig:
        return self.messages_config or MessagesConfig()

    @property
    def sample_width(self) -> int:
        """Bytes per sample: G.711 is always one byte (a declared bit_depth is not used for it)."""
        return 1 if self.encoding in ("wav/ulaw", "wav/alaw") else self.bit_depth // 8


# pydantic error types that mean "the value is of the right kind but not acceptable" -> 422
_VALUE_ERRORS = frozenset(
    {
        "literal_error",
        "enum",
        "greater_than",
        "greater_than_equal",
        "less_than",
        "less_than_equal",
        "value_error",
    }
)


def error_body(status: int, message: str, path: str, validation_errors: list[str] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "timestamp": datetime.now(tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "path": path,
        "request_id": "G-" + uuid.uuid4().hex[:8],
        "statusCode": status,
        "message": message,
    }
    if validation_errors is not None:
        body["validation_errors"] = validation_errors
    return body


def parse_request(raw: bytes, path: str = "/v2/live") -> StreamingRequest | tuple[int, dict[str, Any]]:
    """Validate a ``POST /v2/live`` body: the request, or ``(status, Gladia error body)``."""
    try:
        data = loads(raw) if raw.strip() else {}  # nested deep: a ValueError, not a RecursionError
    except ValueError:
        return 400, error_body(400, "Body is not valid JSON", path, ["body must be a JSON object"])
    if not isinstance(data, dict):
        return 400, error_body(400, "Body must be a JSON object", path, ["body must be a JSON object"])
    refused = unsupported_addons(data)
    try:
        request = StreamingRequest.model_validate(data)
    except ValidationError as exc:
        errors = []
        status = 422
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "body"
            if err["type"] == "extra_forbidden":
                errors.append(f"property {loc} should not exist")
                status = 400
            else:
                errors.append(f"{loc}: {err['msg']}")
                if err["type"] not in _VALUE_ERRORS:
                    status = 400
        message = "Bad request: invalid body" if status == 400 else "Invalid parameter values"
        return status, error_body(status, message, path, errors + refused)
    if refused:
        return 422, error_body(422, "Invalid parameter values", path, refused)
    return request


def unsupported_addons(body: dict[str, Any]) -> list[str]:
    """One validation error per Gladia add-on the body switches on: the local engine does none of them,
    and a session that accepted one would never send its messages (the client would wait for a
    translation or a summary that cannot come). Worded like Gladia's own ("<field> must ..."), which
    the official SDK reads into ``HttpError.invalid_parameters``."""
    return [
        f"{section}.{switch} must be false: not supported by this server (the local engine does no {addon})"
        for addon in requested_addons(body)
        for section, switch in [ADDON_SWITCHES[addon]]
    ]
