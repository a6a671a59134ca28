"""The phone-facing endpoints: bad input isolation, TwiML, signatures, capacity, per-call profiles."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from twilio.request_validator import RequestValidator

from bridge.adapters.twilio import TwilioStreamWriter
from bridge.audio import ALAW_8K, PCM16_8K, PCM16_16K, ULAW_8K, AudioFormat, make_transcoder
from tests.conftest import BridgeFactory, caller_audio, play_call, wait_for
from tests.fakes import FakeGladia, FakeWebhook, expected_texts


def stream_url(server: Any) -> str:
    return str(server.make_url("/twilio/stream"))


async def bad_call(url: str, messages: list[str | bytes], *, pause: float = 0.0) -> tuple[int | None, str]:
    """Send ``messages`` and return the close code and reason the bridge answered with."""
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        for m in messages:
            if ws.closed:
                break
            try:
                if isinstance(m, bytes):
                    await ws.send_bytes(m)
                else:
                    await ws.send_str(m)
            except ConnectionError:
                break
        if pause:
            await asyncio.sleep(pause)
        msg = await ws.receive(timeout=10)
        return ws.close_code, str(msg.extra or "")


async def test_bad_input_gets_clear_close_codes_and_leaves_other_calls_untouched(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    """While a good call streams, each kind of bad input is closed with its own code; the good
    call's audio and finals are unaffected."""
    hook, _ = webhook
    server = await make_bridge(server__start_timeout=1.0)
    url = stream_url(server)
    good_audio = caller_audio(3.0, seed=9)
    good = asyncio.create_task(play_call(url, good_audio, call_sid="CA" + "9" * 32, pace=0.002))
    w = TwilioStreamWriter("CA" + "2" * 32, "MZ" + "2" * 32)
    media_ok = w.media(b"\xff" * 160)
    cases: dict[str, tuple[list[str | bytes], int, str]] = {
        "malformed JSON": ([w.connected(), w.start(), "{not json"], 1007, "JSON"),
        "bad base64": ([w.connected(), w.start(), media_ok.replace('"payload": "', '"payload": "***')], 1007,
                       "base64"),
        "media before start": ([w.connected(), media_ok], 1008, "before 'start'"),
        "binary frame": ([b"\x00\x01\x02"], 1003, "binary"),
        "oversized": ([w.connected(), w.start(), json.dumps({"event": "media", "pad": "x" * 100_000})], 1009, ""),
    }
    results = await asyncio.gather(*(bad_call(url, msgs) for msgs, _, _ in cases.values()))
    for (name, (_, code, reason)), (got_code, got_reason) in zip(cases.items(), results, strict=True):
        assert got_code == code, name
        assert reason in got_reason, name
    no_start = await bad_call(url, [w.connected()], pause=1.3)
    assert no_start[0] == 1008 and "start" in no_start[1]

    assert await good == 1000
    await wait_for(lambda: any(e["call"]["call_sid"] == "CA" + "9" * 32 for e in hook.events("call.ended")))
    good_session = next(s for s in fake_gladia.sessions.values()
                        if s.body["custom_metadata"]["call_sid"] == "CA" + "9" * 32)
    assert bytes(good_session.audio) == good_audio
    good_finals = [e["utterance"]["text"] for e in hook.events("utterance.final")
                   if e["call"]["call_sid"] == "CA" + "9" * 32]
    assert good_finals == expected_texts(good_audio, 8000)
    ended = {e["call"]["call_sid"]: e["summary"]["end_reason"] for e in hook.events("call.ended")}
    assert ended["CA" + "9" * 32] == "stop"


async def test_unknown_events_do_not_end_the_call(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    """An event type Twilio may add later is logged and skipped; the call goes on."""
    hook, _ = webhook
    server = await make_bridge()
    w = TwilioStreamWriter("CA" + "3" * 32, "MZ" + "3" * 32)
    audio = caller_audio(1.0)
    async with aiohttp.ClientSession() as http, http.ws_connect(stream_url(server)) as ws:
        await ws.send_str(w.connected())
        await ws.send_str(w.start())
        await ws.send_str(json.dumps({"event": "brand_new", "streamSid": w.stream_sid}))
        for i in range(0, len(audio), 160):
            await ws.send_str(w.media(audio[i:i + 160]))
        await ws.send_str(w.dtmf("5"))
        await ws.send_str(w.stop())
        async for _ in ws:
            pass
        assert ws.close_code == 1000
    await wait_for(lambda: bool(hook.events("call.ended")))
    assert fake_gladia.all_audio() == audio
    assert [e["digit"] for e in hook.events("call.dtmf")] == ["5"]


@pytest.mark.parametrize(("params", "fmt"), [
    ({"stt.encoding": "wav/pcm", "stt.bit_depth": "16", "stt.sample_rate": "16000"}, PCM16_16K),
    ({"stt.encoding": "wav/pcm", "stt.bit_depth": "16"}, PCM16_8K),
    ({"stt.encoding": "wav/alaw"}, ALAW_8K),
    ({"stt.encoding": "mp3"}, ULAW_8K),  # invalid: logged, the default profile is used
])
async def test_per_call_encoding_from_stream_parameters(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str],
    params: dict[str, str], fmt: AudioFormat,
) -> None:
    """<Parameter name="stt.*"> picks the call's Gladia encoding; Gladia gets the transcoded bytes."""
    hook, _ = webhook
    audio = caller_audio(2.0)
    server = await make_bridge()
    await play_call(stream_url(server), audio, parameters={"From": "+1", "To": "+2", "stt.language": "fr", **params})
    await wait_for(lambda: bool(hook.events("call.ended")))
    (session,) = fake_gladia.sessions.values()
    assert session.body["encoding"] == fmt.encoding
    assert session.body["sample_rate"] == fmt.sample_rate and session.body["bit_depth"] == fmt.bit_depth
    if fmt != ULAW_8K:
        assert session.body["language_config"]["languages"] == ["fr"]
    transcoder = make_transcoder(ULAW_8K, fmt)
    expected = b"".join(transcoder.feed(audio[i:i + 160]) for i in range(0, len(audio), 160)) + transcoder.flush()
    assert bytes(session.audio) == expected
    assert [e["utterance"]["text"] for e in hook.events("utterance.final")] == expected_texts(
        expected, fmt.bytes_per_second)


async def test_profile_per_called_number(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str], tmp_path: Any
) -> None:
    """A [stt.numbers."<To>"] table applies to calls to that number."""
    hook, _ = webhook
    cfg = tmp_path / "bridge.toml"
    cfg.write_text('[stt.numbers."+33100".language_config]\nlanguages = ["fr"]\n'
                   '[stt.numbers."+33100"]\nendpointing = 0.1\n')
    server = await make_bridge(environ={"BRIDGE_CONFIG": str(cfg)})
    await play_call(stream_url(server), caller_audio(0.5), parameters={"From": "+1", "To": "+33100"})
    await wait_for(lambda: bool(hook.events("call.ended")))
    (session,) = fake_gladia.sessions.values()
    assert session.body["language_config"]["languages"] == ["fr"] and session.body["endpointing"] == 0.1


async def test_voice_webhook_returns_twiml_for_the_stream(make_bridge: BridgeFactory) -> None:
    """POST /twilio/voice answers <Connect><Stream> to this bridge with From/To parameters."""
    server = await make_bridge()
    async with aiohttp.ClientSession() as http, http.post(server.make_url("/twilio/voice"),
                         data={"From": "+15550001", "To": "+15550002", "CallSid": "CA1"},
                         headers={"X-Forwarded-Proto": "https"}) as resp:
        assert resp.status == 200
        assert resp.content_type == "text/xml"
        body = await resp.text()
    host = f"{server.host}:{server.port}"
    assert f'<Stream url="wss://{host}/twilio/stream">' in body
    assert '<Parameter name="From" value="+15550001"/>' in body and '<Parameter name="To" value="+15550002"/>' in body


async def test_public_url_is_used_in_twiml(make_bridge: BridgeFactory) -> None:
    server = await make_bridge(environ={"BRIDGE_PUBLIC_URL": "https://bridge.example.org"})
    async with aiohttp.ClientSession() as http, http.post(server.make_url("/twilio/voice"), data={}) as resp:
        assert '<Stream url="wss://bridge.example.org/twilio/stream">' in await resp.text()


async def test_twilio_signatures_are_enforced_on_both_endpoints(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    """With TWILIO_AUTH_TOKEN set, a missing or bad X-Twilio-Signature gets 403 before any audio
    reaches Gladia; a valid one (as the official validator computes it) is let in."""
    hook, _ = webhook
    token = "0123456789abcdef0123456789abcdef"
    public = "https://bridge.example.org"
    server = await make_bridge(environ={"TWILIO_AUTH_TOKEN": token, "BRIDGE_PUBLIC_URL": public})
    validator = RequestValidator(token)
    form = {"From": "+15550001", "To": "+15550002", "CallSid": "CA1"}
    async with aiohttp.ClientSession() as http:
        for headers in ({}, {"X-Twilio-Signature": "bad"},
                        {"X-Twilio-Signature": validator.compute_signature(public + "/twilio/voice", {})}):
            async with http.post(server.make_url("/twilio/voice"), data=form, headers=headers) as resp:
                assert resp.status == 403
        good = validator.compute_signature(public + "/twilio/voice", form)
        async with http.post(server.make_url("/twilio/voice"), data=form,
                             headers={"X-Twilio-Signature": good}) as resp:
            assert resp.status == 200
        for headers in ({}, {"X-Twilio-Signature": "bad"}):
            with pytest.raises(aiohttp.WSServerHandshakeError) as err:
                await http.ws_connect(stream_url(server), headers=headers)
            assert err.value.status == 403
    assert fake_gladia.sessions == {} and hook.requests == []
    wss = "wss://bridge.example.org/twilio/stream"
    code = await play_call(stream_url(server), caller_audio(0.5),
                           headers={"X-Twilio-Signature": validator.compute_signature(wss, {})})
    assert code == 1000
    assert len(fake_gladia.sessions) == 1


async def test_calls_beyond_the_limit_are_refused_cleanly(
    make_bridge: BridgeFactory, webhook: tuple[FakeWebhook, str]
) -> None:
    """With max_calls reached, a new stream gets HTTP 503 before the upgrade; /healthz counts calls."""
    server = await make_bridge(server__max_calls=1)
    w = TwilioStreamWriter("CA" + "4" * 32, "MZ" + "4" * 32)
    async with aiohttp.ClientSession() as http, http.ws_connect(stream_url(server)) as ws:
        await ws.send_str(w.connected())
        await ws.send_str(w.start())
        await wait_for(lambda: True)
        async with http.get(server.make_url("/healthz")) as resp:
            health = await resp.json()
        assert health["status"] == "ok" and health["active_calls"] == 1
        assert health["outbox"]["dead"] == 0 and health["outbox"]["pending"] in (0, 1)
        with pytest.raises(aiohttp.WSServerHandshakeError) as err:
            await http.ws_connect(stream_url(server))
        assert err.value.status == 503
        await ws.send_str(w.stop())
        async for _ in ws:
            pass


async def test_unknown_carrier_route_is_404(make_bridge: BridgeFactory) -> None:
    server = await make_bridge()
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as err:
            await http.ws_connect(server.make_url("/nosuchcarrier/stream"))
        assert err.value.status == 404
