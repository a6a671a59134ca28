"""SignalWire, Plivo and Exotel calls shaped as their documents show (their stream writers: the
SignalWire envelope and both_tracks, Plivo's customParameters and stop, ExoML's mu-law) played into
the real bridge: the exact bytes at Gladia, the parameters, DTMF and end of call at the bot."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import aiohttp

from bridge.tools.writers.exotel import ExotelStreamWriter
from bridge.tools.writers.plivo import PlivoStreamWriter
from bridge.tools.writers.signalwire import SignalWireStreamWriter
from tests.support.calls import BridgeFactory, caller_audio, wait_for
from tests.support.fakes import FakeGladia, FakeWebhook, expected_texts

CUSTOM = {"FirstName": "Jane", "stt.language": "fr"}


async def stream(url: str, messages: Iterable[str]) -> int | None:
    """Send every message on one phone socket, then read until the bridge closes it; its close code."""
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        for message in messages:
            await ws.send_str(message)
        async for _ in ws:
            pass
        return ws.close_code


async def check_call(
    hook: FakeWebhook, fake_gladia: FakeGladia, audio: bytes, carrier: str, parameters: dict[str, str]
) -> dict[str, Any]:
    """Gladia got ``audio`` unchanged as 8 kHz mu-law with the stt.language parameter applied; the bot
    got the call's parameters, numbers, the digit 5 and an end by stop without a gap. The summary."""
    await wait_for(lambda: bool(hook.events("call.ended")), timeout=20)
    (session,) = fake_gladia.sessions.values()
    assert (session.body["encoding"], session.body["sample_rate"]) == ("wav/ulaw", 8000)
    assert session.body["language_config"]["languages"] == ["fr"]
    assert bytes(session.audio) == audio
    assert [f["utterance"]["text"] for f in hook.events("utterance.final")] == expected_texts(audio, 8000)
    (started,) = hook.events("call.started")
    assert started["call"]["provider"] == carrier
    assert started["call"]["parameters"] == parameters
    assert (started["call"]["from"], started["call"]["to"]) == ("+15550100", "+15550199")
    assert [e["digit"] for e in hook.events("call.dtmf")] == ["5"]
    (ended,) = hook.events("call.ended")
    summary: dict[str, Any] = ended["summary"]
    assert summary["end_reason"] == "stop" and summary["phone_gaps"] == 0
    return summary


async def test_plivo_custom_parameters_dtmf_and_stop_reach_the_bot(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    """Plivo with extra_headers and start.customParameters, a DTMF mid-call and a final stop: every
    mu-law byte at Gladia, stt.language applied, both kinds of parameters at the bot, end by stop."""
    hook, _ = webhook
    server: Any = await make_bridge()
    ulaw = caller_audio(2.0, seed=51)
    w = PlivoStreamWriter(
        "plivo-call-1",
        "20170ada-f610-433b-8758-c02a2aab3662",
        parameters={"From": "+15550100", "To": "+15550199"},
        custom_parameters=CUSTOM,
        send_stop=True,
    )
    half = len(ulaw) // 2
    messages = [
        w.start(),
        *(w.media(ulaw[i : i + 160]) for i in range(0, half, 160)),
        w.dtmf("5"),
        *(w.media(ulaw[i : i + 160]) for i in range(half, len(ulaw), 160)),
        w.stop(),
    ]
    assert await stream(str(server.make_url("/plivo/stream")), messages) == 1000
    await check_call(hook, fake_gladia, ulaw, "plivo", {"From": "+15550100", "To": "+15550199", **CUSTOM})


async def test_exotel_exoml_mulaw_stream_reaches_gladia_unchanged(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    """An ExoML <StartStream> in its default mu-law, 100 ms per message, custom parameters and a DTMF:
    Gladia gets the mu-law bytes as they came (wav/ulaw 8 kHz), the bot the parameters and numbers."""
    hook, _ = webhook
    server: Any = await make_bridge()
    ulaw = caller_audio(2.0, seed=52)
    w = ExotelStreamWriter("exotel-call-1", "b6d2a1c2e3f4", "+15550100", "+15550199", parameters=CUSTOM, ulaw=True)
    half = len(ulaw) // 2
    messages = [
        w.connected(),
        w.start(),
        *(w.media(ulaw[i : i + 800]) for i in range(0, half, 800)),
        w.dtmf("5"),
        *(w.media(ulaw[i : i + 800]) for i in range(half, len(ulaw), 800)),
        w.stop(),
    ]
    assert await stream(str(server.make_url("/exotel/stream")), messages) == 1000
    await check_call(hook, fake_gladia, ulaw, "exotel", CUSTOM)


async def test_signalwire_wrapped_call_with_dtmf_and_clear_ack_has_no_gap(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    """SignalWire's documented envelope throughout, a DTMF (numbered on the envelope only) and a clear
    acknowledgement mid-call: every byte at Gladia, the parameters at the bot, and no phone gap."""
    hook, _ = webhook
    server: Any = await make_bridge()
    ulaw = caller_audio(2.0, seed=53)
    params = {"From": "+15550100", "To": "+15550199", **CUSTOM}
    w = SignalWireStreamWriter(
        "76ac3c36-56da-4a3e-a0d6-b5f8df6da9ad", "7d56cc11-536d-4a45-b4fb-ed3d55be843b", parameters=params, wrapped=True
    )
    half = len(ulaw) // 2
    messages = [
        w.connected(),
        w.start(),
        *(w.media(ulaw[i : i + 160]) for i in range(0, half, 160)),
        w.dtmf("5"),
        w.clear(),
        *(w.media(ulaw[i : i + 160]) for i in range(half, len(ulaw), 160)),
        w.stop(),
    ]
    assert await stream(str(server.make_url("/signalwire/stream")), messages) == 1000
    await check_call(hook, fake_gladia, ulaw, "signalwire", params)


async def test_signalwire_both_tracks_are_two_channels_for_gladia(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    """A both_tracks stream (mediaFormat.channels 2) carries both parties: Gladia gets one session of
    two interleaved channels, the inbound track's bytes exactly on channel 0 and the outbound track's
    on channel 1; the call says so in call.started."""
    hook, _ = webhook
    server: Any = await make_bridge()
    ulaw = caller_audio(2.0, seed=54)
    params = {"From": "+15550100", "To": "+15550199", **CUSTOM}
    w = SignalWireStreamWriter(
        "c0ffee00-1111-2222-3333-444455556666",
        "4b2ca3ed-0c28-4c1e-a0d2-5b4d0f1f2a11",
        parameters=params,
        wrapped=True,
        channels=2,
    )
    frames = [ulaw[i : i + 160] for i in range(0, len(ulaw), 160)]
    messages = [w.connected(), w.start()]
    for frame in frames:
        messages += [w.media(frame), w.media(b"\x7f" * 160, track="outbound")]
    messages.append(w.stop())
    assert await stream(str(server.make_url("/signalwire/stream")), messages) == 1000
    await wait_for(lambda: bool(hook.events("call.ended")), timeout=20)
    (session,) = fake_gladia.sessions.values()
    assert (session.body["encoding"], session.body["sample_rate"], session.body["channels"]) == ("wav/ulaw", 8000, 2)
    audio = bytes(session.audio)
    caller, other = audio[0::2], audio[1::2]
    assert caller[: len(ulaw)] == ulaw and set(caller[len(ulaw) :]) <= {0xFF}  # then at most silence
    assert other.count(0x7F) == len(ulaw) and set(other) <= {0x7F, 0xFF}
    (started,) = hook.events("call.started")
    assert started["stt"]["channels"] == 2 and started["speakers"] == ["caller", "agent"]
    (ended,) = hook.events("call.ended")
    assert ended["summary"]["phone_bytes"] == 2 * len(ulaw) and ended["summary"]["end_reason"] == "stop"
