"""Telnyx's webhook signatures, checked (pure): Ed25519 over ``"{telnyx-timestamp}|{body}"``, the signature in
``telnyx-signature-ed25519`` (base64, 64 bytes), the account's public key (base64, 32 bytes: Mission Control,
Keys & Credentials), the timestamp within 300 s of now (team-telnyx/telnyx-python ``lib/webhook_verification.py``
and ``resources/webhooks.py`` ``unwrap``, whose rules these are: the tests check the fake carrier's
signatures with that SDK).

The bridge's Telnyx callbacks (an outbound call's status and detection, a transfer's dial report) already
carry a token the bridge signed in their URL; with ``TELNYX_PUBLIC_KEY`` set they must also be signed by
Telnyx, so a leaked URL alone cannot speak for the carrier.
"""

from __future__ import annotations

import base64
import binascii

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

TOLERANCE_S = 300  # the SDK's window around now
SIGNATURE_HEADER = "telnyx-signature-ed25519"
TIMESTAMP_HEADER = "telnyx-timestamp"


def public_key(text: str) -> Ed25519PublicKey:
    """The account's public key from its base64 text.

    Raises:
        ValueError: not base64 of 32 bytes (the message says which).
    """
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not base64") from None
    if len(raw) != 32:
        raise ValueError(f"an Ed25519 public key is 32 bytes, this is {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


def signed_by_telnyx(
    key: Ed25519PublicKey, body: bytes, signature: str | None, timestamp: str | None, now: float
) -> bool:
    """Whether ``body`` came with a valid Telnyx signature made within :data:`TOLERANCE_S` of ``now``."""
    if not signature or not timestamp or len(signature) > 200 or len(timestamp) > 20:
        return False
    try:
        sent = int(timestamp)
        raw = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        return False
    if abs(now - sent) > TOLERANCE_S or len(raw) != 64:
        return False
    try:
        key.verify(raw, timestamp.encode("ascii") + b"|" + body)
    except InvalidSignature:
        return False
    return True
