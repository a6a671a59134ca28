"""Every carrier end to end through the bridge: its simulator's stream in, the exact audio at Gladia
in the call's declared encoding, the finals at the bot with call.provider set; shared-secret auth."""

from __future__ import annotations

import base64
from typing import Any

import aiohttp
import pytest

from bridge.audio import ULAW_8K, AudioFormat, make_transcoder, native_gladia_format
from bridge.tools.dialects import dialect
from bridge.tools.player import play_call
from tests.support.calls import BridgeFactory, caller_audio, wait_for
from tests.support.fakes import FakeGladia, FakeWebhook, expected_texts

CASES = [
    ("twilio", None),
    ("signalwire", None),
    ("signalwire", 16000),
    ("signalwire", 24000),
    ("telnyx", None),
    ("telnyx", 16000),
    ("plivo", None),
    ("plivo", 16000),
    ("exotel", None),
    ("exotel", 16000),
    ("vonage", None),
    ("vonage", 8000),
    ("audiofork", None),
    ("audiofork", 16000),
    ("asterisk", None),
    ("asterisk", 16000),
]


@pytest.mark.parametrize(("carrier", "rate"), CASES)
async def test_carrier_call_reaches_gladia_and_the_bot(
    make_bridge: BridgeFactory,
    fake_gladia: FakeGladia,
    webhook: tuple[FakeWebhook, str],
    carrier: str,
    rate: int | None,
) -> None:
    hook, _ = webhook
    ulaw = caller_audio(2.5, seed=hash(carrier) % 1000)
    server: Any = await make_bridge()
    call_sid = f"{carrier}-call-1"
    play = dialect(carrier, ulaw, call_sid, "s", {"From": "+1", "To": "+2"}, rate)
    report = await play_call(
        str(server.make_url(f"/{carrier}/stream")),
        ulaw,
        carrier=carrier,
        sample_rate=rate,
        realtime=False,
        call_sid=call_sid,
        parameters={"From": "+1", "To": "+2"},
    )
    assert report.close_code == 1000
    await wait_for(lambda: bool(hook.events("call.ended")), timeout=20)

    (session,) = fake_gladia.sessions.values()
    gladia_fmt = native_gladia_format(play.audio_format)
    assert (session.body["encoding"], session.body["sample_rate"]) == (gladia_fmt.encoding, gladia_fmt.sample_rate)
    transcoder = make_transcoder(play.audio_format, gladia_fmt)
    frame = play.audio_format.bytes_for_ms(play.frame_seconds * 1000)
    audio = play.native_audio
    expected = b"".join(transcoder.feed(audio[i : i + frame]) for i in range(0, len(audio), frame)) + transcoder.flush()
    if gladia_fmt == play.audio_format:
        assert expected == play.native_audio  # passthrough: the carrier's own bytes
    assert bytes(session.audio) == expected
    finals = hook.events("utterance.final")
    assert [f["utterance"]["text"] for f in finals] == expected_texts(expected, gladia_fmt.bytes_per_second)
    assert {f["call"]["provider"] for f in finals} == {carrier}
    ended = hook.events("call.ended")[0]
    assert ended["call"]["provider"] == carrier and ended["call"]["call_sid"] == call_sid
    assert ended["summary"]["end_reason"] == ("stop" if play.sends_stop else "hangup")
    started = hook.events("call.started")[0]
    assert started["call"]["from"] == "+1" and started["call"]["to"] == "+2"


async def test_declared_encoding_is_honoured_for_any_carrier(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    """A profile declaring wav/ulaw turns Vonage's 16 kHz L16 into 8 kHz mu-law for Gladia."""
    hook, _ = webhook
    server: Any = await make_bridge(environ={"BRIDGE_CONFIG": str(_profile_file())})
    ulaw = caller_audio(1.5)
    await play_call(str(server.make_url("/vonage/stream")), ulaw, carrier="vonage", realtime=False)
    await wait_for(lambda: bool(hook.events("call.ended")))
    (session,) = fake_gladia.sessions.values()
    assert (session.body["encoding"], session.body["sample_rate"], session.body["bit_depth"]) == ("wav/ulaw", 8000, 8)
    up = make_transcoder(ULAW_8K, AudioFormat("pcm16", 16000))
    pcm16k = up.feed(ulaw) + up.flush()  # what the simulated Vonage call carries
    expected = make_transcoder(AudioFormat("pcm16", 16000), ULAW_8K)
    want = b"".join(expected.feed(pcm16k[i : i + 640]) for i in range(0, len(pcm16k), 640)) + expected.flush()
    assert bytes(session.audio) == want


def _profile_file() -> Any:
    import tempfile
    from pathlib import Path

    path = Path(tempfile.mkdtemp()) / "bridge.toml"
    path.write_text('[stt.default]\nencoding = "wav/ulaw"\nsample_rate = 8000\nbit_depth = 8\n')
    return path


@pytest.mark.parametrize("carrier", ["signalwire", "telnyx", "plivo", "exotel", "vonage", "audiofork", "asterisk"])
async def test_shared_secret_is_required_when_configured(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, carrier: str
) -> None:
    """With <CARRIER>_STREAM_TOKEN set: no or a wrong token -> 403 before any audio; Bearer, Basic
    (token as password), X-Stream-Token or ?token= let the stream in."""
    server: Any = await make_bridge(environ={f"{carrier.upper()}_STREAM_TOKEN": "s3cret-token"})
    url = server.make_url(f"/{carrier}/stream")
    async with aiohttp.ClientSession() as http:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-Stream-Token": "nope"}):
            with pytest.raises(aiohttp.WSServerHandshakeError) as err:
                await http.ws_connect(url, headers=headers)
            assert err.value.status == 403
        basic = "Basic " + base64.b64encode(b"key:s3cret-token").decode()
        for headers, query in (
            ({"Authorization": "Bearer s3cret-token"}, ""),
            ({"Authorization": basic}, ""),
            ({"X-Stream-Token": "s3cret-token"}, ""),
            ({}, "?token=s3cret-token"),
        ):
            ws = await http.ws_connect(str(url) + query, headers=headers)
            await ws.close()
    assert fake_gladia.sessions == {}
