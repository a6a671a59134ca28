"""Each carrier's description (``bridge.adapters.CARRIERS``) against every use made of it: its route
answers and refuses a bad credential, its factory builds its adapter from its query options, its
authentication refuses and accepts, the player's writer for it produces frames its own adapter reads
back as the same audio (a consistency check only: the carriers' documented messages stay the oracle in
tests/test_adapter_*.py), and its capabilities and frame rules are what its adapter does."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import aiohttp
import jwt  # PyJWT: an independent signer of Vonage-style HS256 tokens
import pytest

from bridge.adapters import CARRIERS, make_adapter
from bridge.adapters.base import Audio, CallStarted, PhoneAdapter, PhoneEvent
from bridge.adapters.carrier import Carrier
from bridge.adapters.stream_auth import Secrets, Upgrade
from bridge.adapters.twilio import signature
from bridge.audio import AudioFormat
from bridge.errors import UnsupportedOperation
from bridge.tools.dialects import DIALECTS, TWO_TRACK_CARRIERS, Dialect, dialect, native
from tests.support.calls import BridgeFactory, caller_audio
from tests.support.fakes import FakeGladia

NAMES = list(CARRIERS)
# A value each query option accepts, and what the adapter then holds (attribute, value).
GOOD_OPTIONS: dict[str, tuple[str, str, object]] = {
    "rate": ("16000", "default_sample_rate", 16000),
    "sample_rate": ("16k", "default_sample_rate", 16000),
    "sampleRate": ("24000", "default_sample_rate", 24000),
    "mix": ("stereo", "default_mix", "stereo"),
    "tracks": ("both", "both_parties", True),
}
TWO_TRACK_QUERY = {"tracks": "both", "mix": "stereo"}  # what a two-track stream's route says, per option
TOKEN = "stream-token-0123456789"
TWILIO_TOKEN = "0123456789abcdef0123456789abcdef"
PUBLIC = "https://bridge.example.org"


def upgrade(carrier: str, headers: dict[str, str] | None = None, query: dict[str, str] | None = None) -> Upgrade:
    return Upgrade(f"wss://bridge.example.org/{carrier}/stream", f"/{carrier}/stream", headers or {}, query or {}, 1e9)


def test_one_description_per_carrier_built_by_its_module() -> None:
    assert NAMES == ["twilio", "signalwire", "telnyx", "plivo", "exotel", "vonage", "audiofork", "asterisk"]
    for name, carrier in CARRIERS.items():
        assert carrier.name == name and carrier.adapter.__module__ == f"bridge.adapters.{name}"
        assert carrier.factory({}, 8000).carrier == name
    assert set(DIALECTS) == set(CARRIERS)
    assert TWO_TRACK_CARRIERS == ("twilio", "signalwire", "telnyx", "plivo", "audiofork")
    assert {o for c in CARRIERS.values() for o in c.query_options} == set(GOOD_OPTIONS)


def test_the_descriptions_stay_pure() -> None:
    """Every carrier's description, its authentication included, loads no event loop, network library
    or logger (the HTTP edge logs a refusal; tests/test_layering.py has the rule)."""
    code = (
        "import sys, bridge.adapters; bad = [m for m in ('asyncio', 'aiohttp', 'structlog', 'websockets') "
        "if m in sys.modules]; print(','.join(bad)); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, f"bridge.adapters pulls in {result.stdout.strip()}"


@pytest.mark.parametrize("name", NAMES)
def test_the_factory_builds_the_adapter_from_its_query_options(name: str) -> None:
    carrier = CARRIERS[name]
    plain = carrier.factory({}, 8000)
    assert type(plain) is carrier.adapter and type(make_adapter(name)) is carrier.adapter
    for option in carrier.query_options:
        value, attribute, held = GOOD_OPTIONS[option]
        built = carrier.factory({option: value}, 8000)
        assert getattr(built, attribute) == held
        assert getattr(make_adapter(name, 8000, {option: value}), attribute) == held
        with pytest.raises(ValueError, match="'bogus'"):  # the message names the value refused
            carrier.factory({option: "bogus"}, 8000)
    carrier.factory({"unrelated": "x", "token": "t"}, 8000)  # options of no concern to it are left alone


@pytest.mark.parametrize("name", NAMES)
def test_authentication_refuses_a_bad_credential_and_accepts_a_good_one(name: str) -> None:
    carrier = CARRIERS[name]
    assert carrier.authenticate(upgrade(name), Secrets()) is None  # no secret set: no scheme to check
    if carrier.shared_token:
        secrets = Secrets(stream_tokens={name: TOKEN})
        refusal = carrier.authenticate(upgrade(name, {"Authorization": "Bearer nope"}), secrets)
        assert refusal is not None
        assert (refusal.event, refusal.body, dict(refusal.fields)) == (
            "phone.bad_token",
            "invalid or missing stream token\n",
            {"carrier": name},
        )
        assert carrier.authenticate(upgrade(name), secrets) == refusal
        assert carrier.authenticate(upgrade(name, {"Authorization": f"Bearer {TOKEN}"}), secrets) is None
        assert carrier.authenticate(upgrade(name, query={"token": TOKEN}), secrets) is None
        other = Secrets(stream_tokens={n: TOKEN for n in NAMES if n != name})
        assert carrier.authenticate(upgrade(name), other) is None  # another carrier's token is not its own
    else:
        secrets = Secrets(twilio_auth_token=TWILIO_TOKEN)
        for headers in ({}, {"X-Twilio-Signature": "bad"}):
            refusal = carrier.authenticate(upgrade(name, headers), secrets)
            assert refusal is not None
            assert (refusal.event, refusal.body, dict(refusal.fields)) == (
                "twilio.bad_signature",
                "invalid X-Twilio-Signature\n",
                {"path": f"/{name}/stream"},
            )
        good = {"X-Twilio-Signature": signature(TWILIO_TOKEN, upgrade(name).url)}
        assert carrier.authenticate(upgrade(name, good), secrets) is None


def test_vonage_also_accepts_a_jwt_signed_with_its_signature_secret() -> None:
    carrier, secret = CARRIERS["vonage"], "vonage-signature-secret-0123456789"
    now = 1e9
    good = jwt.encode({"exp": int(now) + 60}, secret, algorithm="HS256")
    bad = jwt.encode({"exp": int(now) + 60}, "another-secret-0123456789abcdefgh", algorithm="HS256")
    for secrets in (Secrets(vonage_signature_secret=secret), Secrets(secret, secret, {"vonage": TOKEN})):
        assert carrier.authenticate(upgrade("vonage", {"Authorization": f"Bearer {good}"}), secrets) is None
        assert carrier.authenticate(upgrade("vonage", {"Authorization": f"Bearer {bad}"}), secrets) is not None
    assert CARRIERS["telnyx"].authenticate(upgrade("telnyx"), Secrets(vonage_signature_secret=secret)) is None


def credentials(carrier: Carrier, good: bool) -> dict[str, str]:
    if carrier.shared_token:
        return {"Authorization": f"Bearer {TOKEN if good else 'nope'}"}
    url = f"wss://bridge.example.org/{carrier.name}/stream"
    return {"X-Twilio-Signature": signature(TWILIO_TOKEN, url) if good else "bad"}


@pytest.mark.parametrize("name", NAMES)
async def test_every_carrier_route_answers_and_checks_its_credential(
    name: str, make_bridge: BridgeFactory, fake_gladia: FakeGladia
) -> None:
    carrier = CARRIERS[name]
    environ = {"TWILIO_AUTH_TOKEN": TWILIO_TOKEN, "BRIDGE_PUBLIC_URL": PUBLIC}
    if carrier.shared_token:
        environ[carrier.token_variable] = TOKEN
    server: Any = await make_bridge(environ=environ)
    url = server.make_url(f"/{name}/stream")
    protocols = carrier.factory({}, 8000).subprotocols
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as err:
            await http.ws_connect(url, headers=credentials(carrier, good=False), protocols=protocols)
        assert err.value.status == 403
        ws = await http.ws_connect(url, headers=credentials(carrier, good=True), protocols=protocols)
        await ws.close()
    assert fake_gladia.sessions == {}


def read_back(play: Dialect, adapter: PhoneAdapter) -> tuple[CallStarted, dict[int, bytes]]:
    """The player's messages through the adapter: the start and each track's audio."""
    adapter.subprotocol = play.subprotocols[0] if play.subprotocols else None
    events: list[PhoneEvent] = []
    for message in play.messages:
        events += adapter.receive(message)
    events += adapter.close()
    (started,) = [e for e in events if isinstance(e, CallStarted)]
    tracks: dict[int, bytes] = {}
    for e in events:
        if isinstance(e, Audio):
            tracks[e.track] = tracks.get(e.track, b"") + e.payload
    return started, tracks


def same_audio(heard: bytes, sent: bytes, frame_bytes: int) -> bool:
    """The audio sent, its last frame perhaps padded with silence by the writer."""
    return heard[: len(sent)] == sent and len(heard) - len(sent) < frame_bytes


@pytest.mark.parametrize("rate", [None, 16000])
@pytest.mark.parametrize("name", NAMES)
def test_the_player_writer_round_trips_through_the_carrier_own_adapter(name: str, rate: int | None) -> None:
    carrier, ulaw = CARRIERS[name], caller_audio(0.5)
    play = dialect(name, ulaw, "CA" + "1" * 32, "MZ" + "2" * 32, {"From": "+15550100"}, rate)
    rules = carrier.frames
    assert play.audio_format == (AudioFormat("pcm16", rate) if rate and rules.l16 else rules.native_format)
    assert (play.frame_seconds, play.sends_stop) == (rules.frame_seconds, rules.sends_stop)
    started, tracks = read_back(play, carrier.factory({}, rate or 8000))
    assert started.audio_format == play.audio_format and started.channels == 1 and set(tracks) == {0}
    assert same_audio(tracks[0], play.native_audio, play.audio_format.bytes_for_ms(rules.frame_ms))
    assert (started.stream_sid == "MZ" + "2" * 32) == rules.own_stream_id  # the player's stream id


@pytest.mark.parametrize("name", NAMES)
def test_two_tracks_as_the_description_says(name: str) -> None:
    carrier = CARRIERS[name]
    caller, agent = caller_audio(0.3, seed=1), caller_audio(0.3, seed=2)
    if not carrier.capabilities.two_tracks:
        with pytest.raises(ValueError, match="streams one track"):
            dialect(name, caller, "c", "s", {}, outbound=agent)
        return
    play = dialect(name, caller, "CA" + "1" * 32, "MZ" + "2" * 32, {}, outbound=agent)
    assert play.messages_per_frame == (2 if carrier.frames.track_messages else 1)
    query = {o: TWO_TRACK_QUERY[o] for o in carrier.query_options if o in TWO_TRACK_QUERY}
    started, tracks = read_back(play, carrier.factory(query, 8000))
    assert started.channels == 2 and set(tracks) == {0, 1}
    frame = play.audio_format.bytes_for_ms(carrier.frames.frame_ms)
    assert same_audio(tracks[0], play.native_audio, frame)
    assert same_audio(tracks[1], native(agent, play.audio_format), frame)


@pytest.mark.parametrize("name", NAMES)
def test_capabilities_are_what_the_adapter_does(name: str) -> None:
    """A carrier declaring marks (clear) has an adapter that builds a mark (clear) once its stream started;
    one that does not refuses to."""
    carrier = CARRIERS[name]
    play = dialect(name, caller_audio(0.1), "CA" + "1" * 32, "MZ" + "2" * 32, {})
    adapter = carrier.factory({}, 8000)
    read_back(play, adapter)
    caps = carrier.capabilities
    assert (adapter.supports_marks, adapter.supports_clear) == (caps.marks, caps.clear)
    if caps.marks:
        assert adapter.mark_message("m1")
    else:
        with pytest.raises(UnsupportedOperation):
            adapter.mark_message("m1")
    if caps.clear:
        assert adapter.clear_message()
    else:
        with pytest.raises(UnsupportedOperation):
            adapter.clear_message()


@pytest.mark.parametrize("name", NAMES)
def test_frame_rules_name_the_ids_the_player_makes(name: str) -> None:
    """``bridge call`` numbers a call as the carrier does: Twilio's CA/MZ sids, other carriers' bare ids."""
    rules = CARRIERS[name].frames
    assert (rules.call_sid_prefix, rules.stream_sid_prefix) == (("CA", "MZ") if name == "twilio" else ("", ""))
    assert rules.twilio_like == (name in ("twilio", "signalwire"))
    play = dialect(name, caller_audio(0.1), "c", "s", {})
    assert (play.writer is not None) == rules.twilio_like
