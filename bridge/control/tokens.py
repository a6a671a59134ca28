"""Short-lived signed tokens for the URLs the bridge hands carriers (pure).

A transfer gives a carrier URLs to come back to: the briefing audio the person who answers hears, the
dial-status callback that says whether they answered. Those routes must answer only the carrier holding
the URL, only for the call it was made for, and only for a few minutes. A token carries its fields
and its expiry, signed together: ``base64url(JSON) "." base64url(HMAC-SHA256)[:16 bytes]``, all
URL-safe, no padding, so it sits in a path or a query value unescaped.

The MAC covers the encoded JSON text exactly as sent, expiry included: no field can be changed, added or
dropped, and the expiry cannot be stretched. The MAC is compared as text in constant time, so a second
spelling of the same bytes (base64 padding bits) is refused too. Put a field naming the token's purpose
in ``fields`` (say ``{"use": "announce", ...}``) so a token made for one route is useless on another.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Mapping

MAX_TOKEN_CHARS = 4096
MAC_BYTES = 16  # 128 bits of HMAC-SHA256: forging one is out of reach for a token that lives minutes
_B64URL = re.compile(r"[A-Za-z0-9_-]+")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes | None:
    if not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        return None
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: bytes, body: str) -> str:
    return _b64(hmac.new(secret, body.encode("ascii"), hashlib.sha256).digest()[:MAC_BYTES])


def sign(secret: bytes, fields: Mapping[str, str], expires_at: int) -> str:
    """A token for ``fields`` valid until ``expires_at`` (Unix seconds, exclusive)."""
    payload = {"exp": int(expires_at), "f": dict(fields)}
    body = _b64(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode("utf-8"))
    return f"{body}.{_mac(secret, body)}"


def verify(secret: bytes, token: str, now: float) -> dict[str, str] | None:
    """The fields of ``token`` when it was signed with ``secret`` and ``now`` is before its expiry;
    None when it is malformed, over 4096 characters, signed with another secret, altered, expired, or
    carries anything but a mapping of strings to strings."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS:
        return None
    body, dot, mac = token.partition(".")
    if not dot or not _B64URL.fullmatch(body) or not _B64URL.fullmatch(mac):
        return None
    if not hmac.compare_digest(_mac(secret, body), mac):
        return None
    raw = _unb64(body)
    if raw is None:
        return None
    try:
        payload = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    if not isinstance(payload, dict):
        return None
    expires_at, fields = payload.get("exp"), payload.get("f")
    if not isinstance(expires_at, int) or isinstance(expires_at, bool) or not now < expires_at:
        return None
    if not isinstance(fields, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in fields.items()):
        return None
    return dict(fields)
