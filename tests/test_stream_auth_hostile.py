"""Every carrier's authentication against what a hostile or sloppy client can put in an upgrade:
whatever the headers and query hold (bad base64, non-ASCII, a JWT of garbage, megabyte values, empty
values), the answer is a refusal, never an exception (which would be a 500 and a traceback per try)."""

from __future__ import annotations

import base64
import random

import pytest

from bridge.adapters import CARRIERS
from bridge.adapters.stream_auth import Secrets, Upgrade

SECRETS = Secrets(
    twilio_auth_token="twilio-secret",
    vonage_signature_secret="vonage-secret",
    stream_tokens={name: f"{name}-token" for name in CARRIERS},
)

HOSTILE_VALUES = [
    "",
    " ",
    "Basic",
    "Basic !!!not-base64!!!",
    "Basic " + base64.b64encode(b"no-colon").decode(),
    "Basic " + base64.b64encode("\u00e9\u00e8:pw".encode("latin1")).decode(),
    "Basic \u00e9\u00e8\u00ea",
    "Bearer",
    "Bearer \u0000\u0001",
    "Bearer eyJhbGciOiJIUzI1NiJ9.e30.",
    "Bearer a.b.c",
    "Bearer " + "A" * 1_000_000,
    "\ud800",
    "x" * 100_000,
]
HEADERS = ["Authorization", "X-Twilio-Signature", "X-Stream-Token", "X-Telnyx-Streaming-Auth-Token"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("carrier", sorted(CARRIERS))
def test_hostile_credentials_are_refused_never_raised(carrier: str) -> None:
    authenticate = CARRIERS[carrier].authenticate
    rng = random.Random(f"stream-auth-{carrier}")
    cases: list[tuple[dict[str, str], dict[str, str]]] = [({h: v}, {}) for h in HEADERS for v in HOSTILE_VALUES]
    cases += [({}, {"token": v}) for v in HOSTILE_VALUES]
    for _ in range(200):  # mixtures, seeded
        headers = {h: rng.choice(HOSTILE_VALUES) for h in rng.sample(HEADERS, rng.randint(1, len(HEADERS)))}
        cases.append((headers, {"token": rng.choice(HOSTILE_VALUES)} if rng.random() < 0.5 else {}))
    for headers, query in cases:
        upgrade = Upgrade(f"https://bridge.example/{carrier}/stream", f"/{carrier}/stream", headers, query, 0.0)
        refusal = authenticate(upgrade, SECRETS)
        assert refusal is not None, (carrier, headers, query)
        assert refusal.body.endswith("\n") and refusal.event
