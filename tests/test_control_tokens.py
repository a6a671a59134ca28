"""Signed URL tokens: the format checked with the standard library's own HMAC and base64 (not the module's
helpers), every single-character change refused, the expiry boundary, another secret, the 4096-character
cap, payloads signed correctly but of the wrong shape, and property-based round trips and junk."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.control.tokens import sign, verify

SECRET = b"k" * 32
OTHER = b"j" * 32
EXP = 1_900_000_000
FIELDS = {"use": "announce", "call": "CA0123456789abcdef", "action": "a-1"}
ALPHABET = string.ascii_letters + string.digits + "-_."


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(secret: bytes, payload: object) -> str:
    """A token for any JSON payload, built from the documented format with the standard library."""
    body = b64url(json.dumps(payload).encode())
    return body + "." + b64url(hmac.new(secret, body.encode(), hashlib.sha256).digest()[:16])


def test_round_trip() -> None:
    assert verify(SECRET, sign(SECRET, FIELDS, EXP), now=EXP - 60) == FIELDS


def test_format_is_url_safe_json_and_a_truncated_hmac_over_it() -> None:
    token = sign(SECRET, FIELDS, EXP)
    assert re.fullmatch(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+", token)
    body, mac = token.split(".")
    raw_mac = base64.urlsafe_b64decode(mac + "=" * (-len(mac) % 4))
    assert len(raw_mac) >= 16
    full = hmac.new(SECRET, body.encode(), hashlib.sha256).digest()
    assert raw_mac == full[: len(raw_mac)]
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    # The expiry sits inside the signed JSON, beside the fields.
    assert EXP in payload.values() and FIELDS in payload.values()


def test_a_forged_token_in_the_documented_shape_is_accepted() -> None:
    """The reader's view of the format matches the writer's (independently built token)."""
    body = b64url(json.dumps({"exp": EXP, "f": {"a": "b"}}, separators=(",", ":"), sort_keys=True).encode())
    token = body + "." + b64url(hmac.new(SECRET, body.encode(), hashlib.sha256).digest()[:16])
    assert verify(SECRET, token, now=EXP - 1) == {"a": "b"}


def test_every_single_character_change_is_refused() -> None:
    token = sign(SECRET, FIELDS, EXP)
    for i, ch in enumerate(token):
        for other in ALPHABET:
            if other != ch:
                tampered = token[:i] + other + token[i + 1 :]
                assert verify(SECRET, tampered, now=EXP - 60) is None, (i, other)


def test_truncated_extended_and_split_tokens_are_refused() -> None:
    token = sign(SECRET, FIELDS, EXP)
    body, mac = token.split(".")
    for bad in (token[:-1], token + "A", token + "=", token + ".", body, "." + mac, f"{body}..{mac}", mac + "." + body):
        assert verify(SECRET, bad, now=EXP - 60) is None, bad


def test_expiry_boundary() -> None:
    token = sign(SECRET, FIELDS, EXP)
    assert verify(SECRET, token, now=EXP - 0.001) == FIELDS
    assert verify(SECRET, token, now=EXP) is None
    assert verify(SECRET, token, now=EXP + 3600) is None
    assert verify(SECRET, token, now=float("nan")) is None


def test_another_secret_is_refused_both_ways() -> None:
    assert verify(OTHER, sign(SECRET, FIELDS, EXP), now=0) is None
    assert verify(SECRET, sign(OTHER, FIELDS, EXP), now=0) is None


def test_the_expiry_cannot_be_stretched_without_the_secret() -> None:
    token = sign(SECRET, FIELDS, EXP)
    _, mac = token.split(".")
    later = b64url(json.dumps({"exp": EXP + 10**6, "f": FIELDS}, separators=(",", ":"), sort_keys=True).encode())
    assert verify(SECRET, later + "." + mac, now=EXP + 10) is None


@pytest.mark.parametrize(
    "payload",
    [
        [EXP, FIELDS],
        {"exp": EXP},
        {"f": FIELDS},
        {"exp": str(EXP), "f": FIELDS},
        {"exp": True, "f": FIELDS},
        {"exp": float(EXP), "f": FIELDS},
        {"exp": EXP, "f": {"a": 1}},
        {"exp": EXP, "f": {"a": None}},
        {"exp": EXP, "f": {"a": ["b"]}},
        {"exp": EXP, "f": ["a", "b"]},
        {"exp": EXP, "f": "a=b"},
        "just a string",
        None,
    ],
)
def test_correctly_signed_payloads_of_the_wrong_shape_are_refused(payload: object) -> None:
    assert verify(SECRET, forge(SECRET, payload), now=0) is None


def test_correctly_signed_bytes_that_are_not_json_are_refused() -> None:
    for raw in (b"\xff\xfe", b"{", b"[" * 100_000):
        body = b64url(raw)
        token = body + "." + b64url(hmac.new(SECRET, body.encode(), hashlib.sha256).digest()[:16])
        assert verify(SECRET, token[:4096] if len(token) > 4096 else token, now=0) is None


def test_tokens_over_4096_characters_are_refused_even_when_valid() -> None:
    sizes = {n: sign(SECRET, {"blob": "x" * n}, EXP) for n in range(3000, 3040)}
    longest_ok = max(n for n, t in sizes.items() if len(t) <= 4096)
    assert verify(SECRET, sizes[longest_ok], now=0) == {"blob": "x" * longest_ok}
    too_long = sizes[longest_ok + 1]
    assert len(too_long) > 4096
    assert verify(SECRET, too_long, now=0) is None


@settings(max_examples=200, deadline=None)
@given(
    fields=st.dictionaries(st.text(max_size=20), st.text(max_size=40), max_size=6),
    expires_at=st.integers(min_value=1, max_value=2**40),
    secret=st.binary(min_size=1, max_size=64),
)
def test_round_trip_any_fields(fields: dict[str, str], expires_at: int, secret: bytes) -> None:
    token = sign(secret, fields, expires_at)
    assert re.fullmatch(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+", token)
    assert verify(secret, token, now=expires_at - 1) == fields
    assert verify(secret, token, now=expires_at) is None
    assert verify(secret + b"!", token, now=expires_at - 1) is None


@settings(max_examples=300, deadline=None)
@given(junk=st.one_of(st.text(max_size=200), st.text(alphabet=ALPHABET, max_size=200)))
def test_junk_is_refused_without_raising(junk: str) -> None:
    assert verify(SECRET, junk, now=0) is None
