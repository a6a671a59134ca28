"""How a carrier proves itself on the WebSocket upgrade (pure): what the upgrade shows, the secrets
the settings hold, the refusal the HTTP edge answers with, and the shared stream-token check most
carriers use. Carriers with a scheme of their own (Twilio's signature, Vonage's JWT) add it in their
adapter module."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from bridge.untrusted import same_secret


@dataclass(frozen=True, slots=True)
class Upgrade:
    """What a stream's upgrade request shows, whatever its method: the URL as the carrier signed it
    (the public base and the path, no query), the path, headers, query, and the time it arrived."""

    url: str
    path: str
    headers: Mapping[str, str]
    query: Mapping[str, str]
    now: float


@dataclass(frozen=True, slots=True)
class Secrets:
    """The settings' secrets a carrier may check an upgrade with (plain strings, None when unset)."""

    twilio_auth_token: str | None = None
    vonage_signature_secret: str | None = None
    stream_tokens: Mapping[str, str] = field(default_factory=dict)  # carrier -> <NAME>_STREAM_TOKEN


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why an upgrade is refused: the log event and its fields, and the 403 body."""

    event: str
    body: str
    fields: Mapping[str, str]


Authenticate = Callable[[Upgrade, Secrets], Refusal | None]  # None: let the stream in

# Headers some carriers put their shared secret in, raw (Telnyx's stream_auth_token, as independent
# integrations read it: Telnyx documents it only as "sent as part of the WebSocket connection").
_TOKEN_HEADERS = ("X-Stream-Token", "X-Telnyx-Streaming-Auth-Token")


def stream_token_valid(expected: str, headers: Mapping[str, str], query_token: str | None) -> bool:
    """A carrier's shared secret, compared in constant time, from: ``Authorization`` with any scheme
    (``Bearer <token>``, Vonage's custom ``ApiKey <token>``; the whole header value also counts, as
    Vonage sends a custom value verbatim), HTTP Basic (the password), an ``X-Stream-Token`` or
    ``X-Telnyx-Streaming-Auth-Token`` header, or ``?token=``."""
    candidates = [headers.get(name, "") for name in _TOKEN_HEADERS] + [query_token or ""]
    auth = (headers.get("Authorization") or "").strip()
    scheme, _, value = auth.partition(" ")
    candidates.append(auth)
    if scheme.lower() == "basic":
        password = _basic_password(value)
        if password is not None:
            candidates.append(password)
    elif value:
        candidates.append(value.strip())
    return any(same_secret(c, expected) for c in candidates if c)  # any bytes: a wrong token, not a 500


def _basic_password(credentials: str) -> str | None:
    """The password of HTTP Basic credentials (base64 of ``user:password``, latin-1), None if malformed."""
    try:
        decoded = base64.b64decode(credentials.encode("ascii"), validate=True).decode("latin1")
    except (ValueError, binascii.Error):
        return None
    _, colon, password = decoded.partition(":")
    return password if colon else None


def bad_token(carrier: str) -> Refusal:
    return Refusal("phone.bad_token", "invalid or missing stream token\n", {"carrier": carrier})


def check_stream_token(
    carrier: str, upgrade: Upgrade, secrets: Secrets, signed: Callable[[], bool] | None = None
) -> Refusal | None:
    """The carrier's shared token when one is set; ``signed``: its own signed-request check, when its
    secret is set, which lets the stream in too. Nothing set: the stream comes in."""
    expected = secrets.stream_tokens.get(carrier)
    if expected is None and signed is None:
        return None
    ok = expected is not None and stream_token_valid(expected, upgrade.headers, upgrade.query.get("token"))
    if not ok and signed is not None:
        ok = signed()
    return None if ok else bad_token(carrier)


def stream_token(carrier: str) -> Authenticate:
    """The authentication of a carrier proven by its shared token alone."""

    def authenticate(upgrade: Upgrade, secrets: Secrets) -> Refusal | None:
        return check_stream_token(carrier, upgrade, secrets)

    return authenticate
