"""Parsing helpers shared by the JSON dialects (pure)."""

from __future__ import annotations

import binascii
from collections.abc import Mapping
from typing import Any

import orjson  # about 3x faster than json on the per-frame path

from bridge.errors import PhoneProtocolError


def json_object(message: str | bytes, dialect: str) -> dict[str, Any]:
    """A text message as a JSON object, or PhoneProtocolError (1003 for binary, 1007 for bad JSON)."""
    if isinstance(message, bytes):
        raise PhoneProtocolError(f"binary frame on a {dialect} stream ({dialect} sends JSON text)", 1003)
    try:
        msg = orjson.loads(message)
    except (ValueError, RecursionError):
        raise PhoneProtocolError("message is not valid JSON") from None
    if not isinstance(msg, dict):
        raise PhoneProtocolError("message is not a JSON object")
    return msg


def require(obj: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    value = obj.get(key)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise PhoneProtocolError(f"{where}.{key} missing or not a {kind.__name__}")
    return value


def int_field(obj: Mapping[str, Any], key: str, where: str) -> int | None:
    """An integer sent as a number or a string holding one; None when absent."""
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise PhoneProtocolError(f"{where}.{key} is not an integer")
    try:
        return int(value)
    except ValueError:
        raise PhoneProtocolError(f"{where}.{key} is not an integer") from None


def b64_payload(payload: Any, where: str) -> bytes:
    if not isinstance(payload, str):
        raise PhoneProtocolError(f"{where} missing or not a string")
    try:
        return binascii.a2b_base64(payload, strict_mode=True)
    except (binascii.Error, ValueError):
        raise PhoneProtocolError(f"{where} is not valid base64") from None


def string_map(value: Any, where: str) -> dict[str, str]:
    """An object of parameters; non-string scalar values are turned into strings."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise PhoneProtocolError(f"{where} is not an object")
    out = {}
    for k, v in value.items():
        if isinstance(v, (dict, list)):
            raise PhoneProtocolError(f"{where}.{k} is not a scalar")
        out[str(k)] = "" if v is None else str(v)
    return out


def count(counters: dict[str, int], key: str) -> None:
    counters[key] = counters.get(key, 0) + 1


class SequenceCheck:
    """Counts every message of a stream (``sequenceNumber`` and the like) and reports skips.

    Returns the expected and received numbers when a number was skipped, so the adapter can emit a
    Gap event; messages without a number are not checked.
    """

    def __init__(self, key: str) -> None:
        self.key = key
        self.next: int | None = None
        self.gaps = 0

    def check(self, msg: Mapping[str, Any]) -> tuple[int, int] | None:
        raw = msg.get(self.key)
        if type(raw) is str and raw.isascii() and raw.isdigit():  # the usual form ("sequenceNumber": "42")
            seq: int | None = int(raw)
        else:
            seq = int_field(msg, self.key, "message")
        if seq is None:
            return None
        expected, self.next = self.next, seq + 1
        if expected is not None and seq != expected:
            self.gaps += 1
            return expected, seq
        return None
