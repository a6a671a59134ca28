"""Checks for what peers send before it is trusted (pure): JSON nesting, secrets, bounded reads.

* :func:`json_too_deep` refuses JSON nested deeper than :data:`MAX_JSON_DEPTH` *before* it is
  parsed: Python's parser recurses once per bracket and raises ``RecursionError`` (not a
  ``ValueError``) around a thousand levels, which a 2 KB body reaches; no message the bridge reads
  needs more than a few levels. :func:`loads` is ``json.loads`` with that check, raising
  ``ValueError`` only.
* :func:`same_secret` compares a secret a peer gave with ours in constant time, whatever the peer's
  bytes (a header that is not UTF-8 arrives as a string with surrogate escapes, which a plain
  ``.encode()`` refuses, and ``hmac.compare_digest`` refuses a non-ASCII ``str``).
* :func:`read_bounded` reads a whole HTTP body up to a bound (``StreamReader.read(n)`` returns what
  is buffered, not ``n`` bytes: an answer that arrives in two writes was read as its first part).
"""

from __future__ import annotations

import hmac
import json
from typing import Any, Protocol

import numpy as np

MAX_JSON_DEPTH = 32  # arrays and objects inside each other; more is refused unparsed

_BACKSLASH, _QUOTE = ord("\\"), ord('"')
_OPENING, _CLOSING = (ord("["), ord("{")), (ord("]"), ord("}"))


def json_too_deep(data: str | bytes | bytearray, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether ``data`` holds arrays/objects nested more than ``limit`` deep (brackets inside strings
    do not count; a closing bracket with no opening one counts as nothing, which is not JSON anyway).

    Time is linear in the size and never a Python loop per byte: a body with few opening brackets
    (every real message) is answered by two counts; any other by a handful of vectorised passes
    (about the cost of parsing it, e.g. 8 MiB of brackets in tens of ms), so no input can stall
    the event loop longer than its own parse would.
    """
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False  # fewer opening brackets than the bound: cannot be deeper
    a = np.frombuffer(raw, dtype=np.uint8)
    inside = np.zeros(a.size, dtype=bool)
    quotes = np.flatnonzero(a == _QUOTE)
    if quotes.size:
        # A quote is escaped when an odd run of backslashes comes right before it.
        backslashes = np.flatnonzero(a == _BACKSLASH)
        if backslashes.size:
            run = np.zeros(a.size + 1, dtype=np.int32)  # run[i + 1]: backslashes ending at i
            run_starts = backslashes[np.diff(backslashes, prepend=-2) != 1]
            run_ends = backslashes[np.diff(backslashes, append=a.size + 1) != 1]
            run[run_ends + 1] = run_ends - run_starts + 1
            quotes = quotes[run[quotes] % 2 == 0]
        # Inside a string: from an opening quote to its closing one (both included).
        opening, closing = quotes[0::2], quotes[1::2]
        edges = np.zeros(a.size + 1, dtype=np.int8)
        edges[opening] = 1
        edges[closing + 1] -= 1
        inside = np.cumsum(edges[:-1], dtype=np.int8).astype(bool)
    step = ((a == _OPENING[0]) | (a == _OPENING[1])).astype(np.int32)
    step -= (a == _CLOSING[0]) | (a == _CLOSING[1])
    step[inside] = 0
    return bool(np.cumsum(step, dtype=np.int32).max() > limit)


def loads(data: str | bytes | bytearray, limit: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads`` for a peer's JSON: nested deeper than ``limit`` is refused before parsing.

    Raises:
        ValueError: not JSON (``UnicodeDecodeError`` included), or nested too deep.
    """
    if json_too_deep(data, limit):
        raise ValueError(f"JSON nested deeper than {limit} levels (or brackets that do not pair up)")
    try:
        return json.loads(data)
    except RecursionError as exc:  # not expected past the check; never more than a ValueError
        raise ValueError("JSON nested too deep") from exc


def same_secret(given: str | bytes, expected: str | bytes) -> bool:
    """Constant-time comparison of a peer's secret with ours, for any bytes the peer sent and any text
    they decoded to (undecodable bytes as escapes, a lone surrogate from a percent-encoded query: both
    sides encode the same way, so equal text stays equal and nothing raises)."""
    a = given.encode("utf-8", "surrogatepass") if isinstance(given, str) else given
    b = expected.encode("utf-8", "surrogatepass") if isinstance(expected, str) else expected
    return hmac.compare_digest(a, b)


class _Readable(Protocol):
    async def read(self, n: int = -1) -> bytes: ...


async def read_bounded(content: _Readable, limit: int) -> tuple[bytes, bool]:
    """The whole body of ``content`` (e.g. an aiohttp response's ``.content``), up to ``limit`` bytes.

    Returns ``(body, truncated)``: at most ``limit`` bytes, and whether there was more (what is left
    is not read). Each read asks for at most what the bound still allows, plus one byte to know."""
    body = bytearray()
    while len(body) <= limit:
        block = await content.read(limit + 1 - len(body))
        if not block:
            break
        body += block
    return bytes(body[:limit]), len(body) > limit
