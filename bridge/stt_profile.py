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
# Gladia's add-ons (paid per use), what ``stt.per_call_addons`` names: name -> (section, switch) in the
# StreamingRequest body. Held here, not in ``bridge.stt``, so that the settings can check names against
# it without a cycle (``bridge.stt`` imports the settings); ``bridge.stt.addons`` reads their messages.
ADDON_SWITCHES: dict[str, tuple[str, str]] = {
    "translation": ("realtime_processing", "translation"),
    "named_entity_recognition": ("realtime_processing", "named_entity_recognition"),
    "sentiment_analysis": ("realtime_processing", "sentiment_analysis"),
    "summarization": ("post_processing", "summarization"),
    "chapterization": ("post_processing", "chapterization"),
}
MAX_TARGET_LANGUAGES = 4  # of a per-call ``stt.translation``: each one is a paid translation of every final
SUMMARY_TYPES = ("general", "bullet_points", "concise")  # Gladia's summarization_config.type


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


def requested_addons(body: Mapping[str, Any]) -> tuple[str, ...]:
    """The add-ons a ``StreamingRequest`` body switches on (``True`` only), in ``ADDON_SWITCHES`` order."""
    out = []
    for name, (section, switch) in ADDON_SWITCHES.items():
        part = body.get(section)
        if isinstance(part, Mapping) and part.get(switch) is True:
            out.append(name)
    return tuple(out)


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


def _addon_overrides(addon: str, raw: str) -> dict[str, Any]:
    """The overrides of one per-call add-on shortcut (``stt.<add-on>``); raises ValueError saying why not."""
    value = raw.strip().lower()
    if len(raw) > MAX_PARAMETER_CHARS:
        raise ValueError(f"longer than {MAX_PARAMETER_CHARS} characters")
    section, switch = ADDON_SWITCHES[addon]
    if addon == "translation":
        codes = [v.strip() for v in raw.split(",") if v.strip()]
        if not 1 <= len(codes) <= MAX_TARGET_LANGUAGES or not all(_LANGUAGE.fullmatch(c) for c in codes):
            raise ValueError(f"not 1 to {MAX_TARGET_LANGUAGES} language codes such as fr or fr,es")
        return {section: {switch: True, "translation_config": {"target_languages": codes}}}
    if addon == "summarization" and value in SUMMARY_TYPES:
        return {section: {switch: True, "summarization_config": {"type": value}}}
    if value not in ("true", "false"):
        kinds = ", ".join(SUMMARY_TYPES) if addon == "summarization" else ""
        raise ValueError(f"not true or false{' or one of ' + kinds if kinds else ''}")
    return {section: {switch: value == "true"}}


def _addon_refusal(addon: str, addons: Collection[str], embedded: bool) -> str | None:
    """Why a call may not switch ``addon`` on or off itself, or None when it may."""
    if embedded:
        return f"the embedded engine does not do {addon}"
    return None if addon in addons else "not in stt.per_call_addons"


def stt_overrides(
    parameters: Mapping[str, str], allowed: Collection[str], addons: Collection[str] = (), embedded: bool = False
) -> tuple[dict[str, Any], list[str]]:
    """Profile overrides from stream parameters named ``stt.<field>[.<field>...]``.

    Only the fields in ``allowed`` (``stt.per_call_parameters``) are taken, each with bounds: a caller
    who controls the stream parameters (anyone who can reach a TwiML bin or a SIP header) must not
    choose where Gladia posts transcripts, paid add-ons, a thousand languages or another account.
    Values are JSON when they parse (``0.2``, ``true``) and strings otherwise. Shortcuts:
    ``stt.language`` (one code or a comma list) and ``stt.custom_vocabulary`` (comma list).

    Gladia's add-ons are paid per use, so a call switches one on or off only when it is in ``addons``
    (``stt.per_call_addons``), with the shortcuts ``stt.translation`` ("fr" or "fr,es": up to
    :data:`MAX_TARGET_LANGUAGES` target languages), ``stt.named_entity_recognition``,
    ``stt.sentiment_analysis``, ``stt.chapterization`` ("true"/"false") and ``stt.summarization``
    ("true", "false" or a summary type of :data:`SUMMARY_TYPES`); an add-on switched on through an
    allowed dotted field (``realtime_processing.translation``) is held to the same rule. With
    ``embedded`` (the bridge's local engine, which does none of them) every add-on request is refused.

    Returns the overrides and one line per refused parameter (name and why).
    """
    out: dict[str, Any] = {}
    refused: list[str] = []
    for name, raw in parameters.items():
        if not name.startswith(PARAM_PREFIX):
            continue
        path = name[len(PARAM_PREFIX) :]
        if path in ADDON_SWITCHES:
            try:
                if (why := _addon_refusal(path, addons, embedded)) is not None:
                    raise ValueError(why)
                out = deep_merge(out, _addon_overrides(path, raw))
            except ValueError as exc:
                refused.append(f"{name}: {exc}")
            continue
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
    for addon in requested_addons(out):  # switched on through a dotted field the operator allowed
        if (why := _addon_refusal(addon, addons, embedded)) is None:
            continue
        section, switch = ADDON_SWITCHES[addon]
        refused.append(f"{PARAM_PREFIX}{section}.{switch}: {why}")
        part = out[section]
        del part[switch]
        part.pop(f"{switch}_config", None)
        if not part:
            del out[section]
    return out, refused


def embedded_refusals(default: SttProfile, numbers: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """What the configured profiles ask of Gladia that the embedded engine does not do: one line per
    add-on switched on in ``[stt.default]`` or an ``[stt.numbers]`` table, naming its key. Called at
    ``bridge serve``'s start when no Gladia server is configured: a paid-for add-on that silently never
    comes would be worse than not starting."""
    tables: list[tuple[str, Mapping[str, Any]]] = [("stt.default", default.request_body())]
    tables += [(f"stt.numbers.{number!r}", table) for number, table in numbers.items()]
    return [
        f"{where}.{'.'.join(ADDON_SWITCHES[addon])}: the embedded engine does not do {addon}; "
        "set GLADIA_API_KEY (and GLADIA_API_URL) to use Gladia's"
        for where, table in tables
        for addon in requested_addons(table)
    ]
