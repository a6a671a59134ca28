"""A call's speech-to-text profile: the ``StreamingRequest`` body sent to ``POST /v2/live``, the
configured default, and what a call may change itself with ``stt.*`` stream parameters (pure)."""

from __future__ import annotations

import copy
import re
from collections.abc import Collection, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from bridge.audio import AudioFormat, native_gladia_format
from bridge.untrusted import loads

PARAM_PREFIX = "stt."


class SttProfile(BaseModel):
    """A Gladia ``StreamingRequest`` body: the audio fields are checked, the rest passes through.

    ``encoding = "native"`` (the default) sends the carrier's own audio whenever Gladia accepts it
    (mu-law, A-law, or L16 at a rate Gladia takes), with no transcoding; ``sample_rate`` and
    ``bit_depth`` then follow the carrier. An explicit encoding makes the bridge transcode to it.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    encoding: Literal["native", "wav/ulaw", "wav/alaw", "wav/pcm"] = "native"
    sample_rate: int = 8000
    bit_depth: int = 8
    channels: int = Field(1, ge=1, le=1)

    def audio_format(self, native: AudioFormat | None = None) -> AudioFormat | None:
        """The Gladia-side audio format for a call whose phone audio is ``native``.

        Returns None for a native profile when ``native`` is not known yet (start-up checks).

        Raises:
            ValueError: an explicit format the bridge cannot produce.
        """
        if self.encoding == "native":
            return native_gladia_format(native) if native is not None else None
        return AudioFormat.gladia(self.encoding, self.sample_rate, self.bit_depth)

    def request_body(self, fmt: AudioFormat | None = None) -> dict[str, Any]:
        body = self.model_dump(mode="json")
        if fmt is not None:
            body.update(
                encoding=fmt.encoding, sample_rate=fmt.sample_rate, bit_depth=fmt.bit_depth, channels=fmt.channels
            )
        return body


DEFAULT_PROFILE = SttProfile.model_validate(
    {
        "encoding": "native",
        "channels": 1,
        "endpointing": 0.3,
        "maximum_duration_without_endpointing": 15,
        "language_config": {"languages": ["en"], "code_switching": False},
    }
)


def deep_merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``extra`` into a copy of ``base``; nested tables merge, other values replace."""
    out = copy.deepcopy(dict(base))
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


MAX_PARAMETER_CHARS = 512
_LANGUAGE = re.compile(r"[a-z]{2,3}(-[A-Za-z0-9]{2,8})?")
_SCALAR = (str, int, float, bool)


def _per_call_value(path: str, raw: str) -> Any:
    """The value of one allowed ``stt.<path>`` parameter, bounded; raises ValueError saying why not."""
    if len(raw) > MAX_PARAMETER_CHARS:
        raise ValueError(f"longer than {MAX_PARAMETER_CHARS} characters")
    if path == "language":
        codes = [v.strip() for v in raw.split(",") if v.strip()]
        if not 1 <= len(codes) <= 8 or not all(_LANGUAGE.fullmatch(c) for c in codes):
            raise ValueError("not 1 to 8 language codes such as en or fr,en")
        return codes
    if path == "custom_vocabulary":
        words = [v.strip() for v in raw.split(",") if v.strip()]
        if not 1 <= len(words) <= 100 or any(len(w) > 64 for w in words):
            raise ValueError("not 1 to 100 comma-separated words of at most 64 characters")
        return words
    try:
        value: Any = loads(raw)  # a stream parameter: nested deep is a plain string, not a RecursionError
    except ValueError:
        value = raw
    if path == "encoding" and value not in ("native", "wav/ulaw", "wav/alaw", "wav/pcm"):
        raise ValueError("not one of native, wav/ulaw, wav/alaw, wav/pcm")
    if path == "sample_rate" and value not in (8000, 16000):
        raise ValueError("not 8000 or 16000 (other rates only in the configured profiles)")
    if path == "bit_depth" and value not in (8, 16):
        raise ValueError("not 8 or 16")
    if path == "endpointing" and not (isinstance(value, int | float) and 0.01 <= value <= 10):
        raise ValueError("not a number of seconds from 0.01 to 10")
    if isinstance(value, list):
        if len(value) > 32 or not all(isinstance(v, _SCALAR) for v in value):
            raise ValueError("a list of more than 32 items, or of lists or objects")
    elif not isinstance(value, _SCALAR):
        raise ValueError("an object: only numbers, strings, booleans and lists of them")
    return value


def stt_overrides(parameters: Mapping[str, str], allowed: Collection[str]) -> tuple[dict[str, Any], list[str]]:
    """Profile overrides from stream parameters named ``stt.<field>[.<field>...]``.

    Only the fields in ``allowed`` (``stt.per_call_parameters``) are taken, each with bounds: a caller
    who controls the stream parameters (anyone who can reach a TwiML bin or a SIP header) must not
    choose where Gladia posts transcripts, paid add-ons, a thousand languages or another account.
    Values are JSON when they parse (``0.2``, ``true``) and strings otherwise. Shortcuts:
    ``stt.language`` (one code or a comma list) and ``stt.custom_vocabulary`` (comma list).
    Returns the overrides and one line per refused parameter (name and why).
    """
    out: dict[str, Any] = {}
    refused: list[str] = []
    for name, raw in parameters.items():
        if not name.startswith(PARAM_PREFIX):
            continue
        path = name[len(PARAM_PREFIX) :]
        if path not in allowed:
            refused.append(f"{name[:64]}: not in stt.per_call_parameters")
            continue
        try:
            value = _per_call_value(path, raw)
        except ValueError as exc:
            refused.append(f"{name}: {exc}")
            continue
        if path == "language":
            out.setdefault("language_config", {})["languages"] = value
            continue
        if path == "custom_vocabulary":
            rt = out.setdefault("realtime_processing", {})
            rt["custom_vocabulary"] = True
            rt["custom_vocabulary_config"] = {"vocabulary": value}
            continue
        *parents, leaf = path.split(".")
        node = out
        for key in parents:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                refused.append(f"{name}: conflicts with another parameter")
                break
            node = child
        else:
            node[leaf] = value
    return out, refused
