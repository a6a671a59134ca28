"""How each carrier proves itself on the upgrade, as its documents describe: Telnyx's raw token header,
Vonage's verbatim custom value and its signed JWT; and the FreeSWITCH fork's rate and mix from the
route (they travel in the fork command, never on the wire)."""

from __future__ import annotations

import json
import time
from typing import Any

import aiohttp
import jwt  # PyJWT, here as an independent signer of Vonage-style HS256 tokens
import pytest

from bridge.adapters.stream_auth import stream_token_valid
from bridge.adapters.vonage import vonage_jwt_valid
from tests.support.calls import BridgeFactory, wait_for
from tests.support.fakes import FakeGladia, FakeWebhook

SECRET = "vonage-signature-secret-0123456789"


def test_telnyx_streaming_auth_token_header_is_accepted_raw() -> None:
    """Telnyx's stream_auth_token arrives raw in x-telnyx-streaming-auth-token (any header case)."""
    assert stream_token_valid("tx-token", {"X-Telnyx-Streaming-Auth-Token": "tx-token"}, None)
    assert not stream_token_valid("tx-token", {"X-Telnyx-Streaming-Auth-Token": "Bearer tx-token"}, None)
    assert not stream_token_valid("tx-token", {"X-Telnyx-Streaming-Auth-Token": "other"}, None)


@pytest.mark.parametrize("value", ["ApiKey X9Z-secret", "Bearer X9Z-secret", "Token X9Z-secret"])
def test_vonage_custom_authorization_value_with_any_scheme(value: str) -> None:
    """Vonage sends a custom authorization value verbatim: the token after any scheme, or the whole
    value configured as the token, lets it in."""
    assert stream_token_valid("X9Z-secret", {"Authorization": value}, None)
    assert stream_token_valid(value, {"Authorization": value}, None)
    assert not stream_token_valid("X9Z-secret", {"Authorization": value + "x"}, None)


def test_vonage_signed_jwt_is_verified_with_the_signature_secret() -> None:
    """A JWT signed HS256 with the signature secret (by PyJWT) is accepted until it expires; another
    secret, another algorithm, a tampered payload or an expired token is refused."""
    now = time.time()
    good = jwt.encode({"iat": int(now), "exp": int(now) + 300, "application_id": "app"}, SECRET, algorithm="HS256")
    assert vonage_jwt_valid(SECRET, f"Bearer {good}", now)
    assert not vonage_jwt_valid("another-secret", f"Bearer {good}", now)
    assert not vonage_jwt_valid(SECRET, f"Bearer {good}", now + 301)
    none_alg = jwt.encode({"exp": int(now) + 300}, "", algorithm="none")
    assert not vonage_jwt_valid(SECRET, f"Bearer {none_alg}", now)
    head, _, sig = good.split(".")
    forged_body = jwt.encode({"exp": int(now) + 9999}, "x" * 32, algorithm="HS256").split(".")[1]
    assert not vonage_jwt_valid(SECRET, f"Bearer {head}.{forged_body}.{sig}", now)
    assert not vonage_jwt_valid(SECRET, f"Basic {good}", now) and not vonage_jwt_valid(SECRET, None, now)


async def test_upgrades_with_the_documented_credentials(make_bridge: BridgeFactory, fake_gladia: FakeGladia) -> None:
    """Over real sockets: Telnyx with its header, Vonage with a signed JWT (no static token set) or a
    custom ApiKey value; wrong ones get 403 before any audio."""
    server: Any = await make_bridge(
        environ={"TELNYX_STREAM_TOKEN": "tx-token", "VONAGE_STREAM_TOKEN": "X9Z", "VONAGE_SIGNATURE_SECRET": SECRET}
    )
    token = jwt.encode({"exp": int(time.time()) + 60}, SECRET, algorithm="HS256")
    async with aiohttp.ClientSession() as http:
        for carrier, headers in (
            ("telnyx", {"X-Telnyx-Streaming-Auth-Token": "tx-token"}),
            ("vonage", {"Authorization": f"Bearer {token}"}),
            ("vonage", {"Authorization": "ApiKey X9Z"}),
        ):
            ws = await http.ws_connect(server.make_url(f"/{carrier}/stream"), headers=headers)
            await ws.close()
        bad = jwt.encode({"exp": int(time.time()) + 60}, "not-the-signature-secret-0123456789", algorithm="HS256")
        for carrier, headers in (
            ("telnyx", {"X-Telnyx-Streaming-Auth-Token": "nope"}),
            ("vonage", {"Authorization": f"Bearer {bad}"}),
        ):
            with pytest.raises(aiohttp.WSServerHandshakeError) as err:
                await http.ws_connect(server.make_url(f"/{carrier}/stream"), headers=headers)
            assert err.value.status == 403
    assert fake_gladia.sessions == {}


@pytest.mark.parametrize(("query", "rate"), [("?rate=16000", 16000), ("?rate=16k", 16000), ("", 8000)])
async def test_fork_rate_comes_from_the_route(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str], query: str, rate: int
) -> None:
    """mod_audio_fork's README metadata ({to, from, callid}) has no rate: the route's ?rate= says it
    (16k forks were declared 8 kHz to Gladia), else carriers.audiofork_sample_rate."""
    hook, _ = webhook
    server: Any = await make_bridge()
    pcm = b"\x01\x02" * (rate // 50) * 10  # 200 ms
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(str(server.make_url("/audiofork/stream")) + query, protocols=("audio.drachtio.org",)) as ws,
    ):
        await ws.send_str(json.dumps({"to": "+15550002", "from": "+15550001", "callid": "fs-uuid-1"}))
        for i in range(0, len(pcm), rate // 50 * 2):
            await ws.send_bytes(pcm[i : i + rate // 50 * 2])
    await wait_for(lambda: bool(hook.events("call.ended")))
    (session,) = fake_gladia.sessions.values()
    assert session.body["sample_rate"] == rate and bytes(session.audio) == pcm


async def test_a_bad_fork_rate_or_mix_is_refused_with_400(make_bridge: BridgeFactory) -> None:
    """?rate= and ?mix= are checked before the upgrade: 400 with a message naming the accepted values."""
    server: Any = await make_bridge()
    async with aiohttp.ClientSession() as http:
        for query in ("?rate=11025", "?rate=fast", "?mix=quad"):
            async with http.get(str(server.make_url("/audiofork/stream")) + query) as resp:
                assert resp.status == 400 and ("one of" in await resp.text())
