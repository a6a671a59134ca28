"""The phone-facing endpoints: bad input isolation, TwiML, signatures, capacity, per-call profiles."""

from __future__ import annotations

import asyncio
import io
import json
import xml.etree.ElementTree as ET
from typing import Any

import aiohttp
import pytest
import structlog
from twilio.request_validator import RequestValidator

from bridge.audio import ALAW_8K, PCM16_8K, PCM16_16K, ULAW_8K, AudioFormat, make_transcoder
from bridge.log import processors as log_processors
from bridge.tools.writers.twilio import TwilioStreamWriter
from tests.support.calls import BridgeFactory, caller_audio, play_call, wait_for
from tests.support.fakes import FakeGladia, FakeWebhook, expected_texts
from tests.support.raw_ws import OP_PING, OP_TEXT, RawWebSocket


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
        "bad base64": ([w.connected(), w.start(), media_ok.replace('"payload": "', '"payload": "***')], 1007, "base64"),
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
    good_session = next(
        s for s in fake_gladia.sessions.values() if s.body["custom_metadata"]["call_sid"] == "CA" + "9" * 32
    )
    assert bytes(good_session.audio) == good_audio
    good_finals = [
        e["utterance"]["text"] for e in hook.events("utterance.final") if e["call"]["call_sid"] == "CA" + "9" * 32
    ]
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
            await ws.send_str(w.media(audio[i : i + 160]))
        await ws.send_str(w.dtmf("5"))
        await ws.send_str(w.stop())
        async for _ in ws:
            pass
        assert ws.close_code == 1000
    await wait_for(lambda: bool(hook.events("call.ended")))
    assert fake_gladia.all_audio() == audio
    assert [e["digit"] for e in hook.events("call.dtmf")] == ["5"]


@pytest.mark.parametrize(
    ("params", "fmt"),
    [
        ({"stt.encoding": "wav/pcm", "stt.bit_depth": "16", "stt.sample_rate": "16000"}, PCM16_16K),
        ({"stt.encoding": "wav/pcm", "stt.bit_depth": "16"}, PCM16_8K),
        ({"stt.encoding": "wav/alaw"}, ALAW_8K),
        ({"stt.encoding": "mp3"}, ULAW_8K),  # invalid: logged, the default profile is used
    ],
)
async def test_per_call_encoding_from_stream_parameters(
    make_bridge: BridgeFactory,
    fake_gladia: FakeGladia,
    webhook: tuple[FakeWebhook, str],
    params: dict[str, str],
    fmt: AudioFormat,
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
    expected = b"".join(transcoder.feed(audio[i : i + 160]) for i in range(0, len(audio), 160)) + transcoder.flush()
    assert bytes(session.audio) == expected
    assert [e["utterance"]["text"] for e in hook.events("utterance.final")] == expected_texts(
        expected, fmt.bytes_per_second
    )


async def test_profile_per_called_number(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str], tmp_path: Any
) -> None:
    """A [stt.numbers."<To>"] table applies to calls to that number."""
    hook, _ = webhook
    cfg = tmp_path / "bridge.toml"
    cfg.write_text(
        '[stt.numbers."+33100".language_config]\nlanguages = ["fr"]\n[stt.numbers."+33100"]\nendpointing = 0.1\n'
    )
    server = await make_bridge(environ={"BRIDGE_CONFIG": str(cfg)})
    await play_call(stream_url(server), caller_audio(0.5), parameters={"From": "+1", "To": "+33100"})
    await wait_for(lambda: bool(hook.events("call.ended")))
    (session,) = fake_gladia.sessions.values()
    assert session.body["language_config"]["languages"] == ["fr"] and session.body["endpointing"] == 0.1


async def test_voice_webhook_returns_twiml_for_the_stream(make_bridge: BridgeFactory) -> None:
    """POST /twilio/voice answers <Connect><Stream> to this bridge with From/To parameters."""
    server = await make_bridge()
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            server.make_url("/twilio/voice"),
            data={"From": "+15550001", "To": "+15550002", "CallSid": "CA1"},
            headers={"X-Forwarded-Proto": "https"},
        ) as resp,
    ):
        assert resp.status == 200
        assert resp.content_type == "text/xml"
        body = await resp.text()
    host = f"{server.host}:{server.port}"
    assert f'<Stream url="wss://{host}/twilio/stream">' in body
    assert '<Parameter name="From" value="+15550001"/>' in body and '<Parameter name="To" value="+15550002"/>' in body


async def test_fork_mode_is_chosen_per_number_or_per_request_and_signed_like_the_rest(
    make_bridge: BridgeFactory, tmp_path: Any
) -> None:
    """Fork mode: the called number's entry in twilio.numbers, or ?mode=fork&dial= on the voice URL
    (the query is part of what Twilio signs); a bad number or a fork with nowhere to go is a 422."""
    token = "0123456789abcdef0123456789abcdef"
    public = "https://bridge.example.org"
    cfg = tmp_path / "bridge.toml"
    cfg.write_text('[twilio.numbers."+15550002"]\nmode = "fork"\ndial = "+15550142"\n')
    server = await make_bridge(
        environ={"TWILIO_AUTH_TOKEN": token, "BRIDGE_PUBLIC_URL": public, "BRIDGE_CONFIG": str(cfg)}
    )
    validator = RequestValidator(token)

    async def voice(path: str, form: dict[str, str], sign_as: str | None = None) -> tuple[int, str]:
        sig = validator.compute_signature(public + (sign_as or path), form)
        async with (
            aiohttp.ClientSession() as http,
            http.post(server.make_url(path), data=form, headers={"X-Twilio-Signature": sig}) as resp,
        ):
            return resp.status, await resp.text()

    by_number = await voice("/twilio/voice", {"From": "+15550001", "To": "+15550002", "CallSid": "CA1"})
    assert by_number[0] == 200
    assert '<Start><Stream url="wss://bridge.example.org/twilio/stream" track="both_tracks">' in by_number[1]
    assert by_number[1].endswith("<Dial><Number>+15550142</Number></Dial></Response>")
    other = await voice("/twilio/voice", {"From": "+15550001", "To": "+15550003", "CallSid": "CA2"})
    assert other[0] == 200 and "<Connect action=" in other[1]  # the default mode for other numbers
    asked = await voice("/twilio/voice?mode=fork&dial=%2B15550177", {"To": "+15550003", "CallSid": "CA3"})
    assert asked[0] == 200 and "<Dial><Number>+15550177</Number></Dial>" in asked[1]
    # the same request with the dial number changed after signing: refused
    tampered = await voice(
        "/twilio/voice?mode=fork&dial=%2B19005550000",
        {"To": "+15550003", "CallSid": "CA3"},
        sign_as="/twilio/voice?mode=fork&dial=%2B15550177",
    )
    assert tampered[0] == 403
    assert (await voice("/twilio/voice?mode=fork&dial=evil", {"To": "+1"}))[0] == 422
    assert (await voice("/twilio/voice?mode=fork", {"To": "+15550003"}))[0] == 422  # nowhere to go
    assert (await voice("/twilio/voice?mode=shout", {"To": "+15550003"}))[0] == 422


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
        for headers in (
            {},
            {"X-Twilio-Signature": "bad"},
            {"X-Twilio-Signature": validator.compute_signature(public + "/twilio/voice", {})},
        ):
            async with http.post(server.make_url("/twilio/voice"), data=form, headers=headers) as resp:
                assert resp.status == 403
        # a signature captured for another host, replayed with that Host header: refused
        other = validator.compute_signature("https://other.example.org/twilio/voice", form)
        async with http.post(
            server.make_url("/twilio/voice"),
            data=form,
            headers={"X-Twilio-Signature": other, "Host": "other.example.org"},
        ) as resp:
            assert resp.status == 403
        good = validator.compute_signature(public + "/twilio/voice", form)
        async with http.post(server.make_url("/twilio/voice"), data=form, headers={"X-Twilio-Signature": good}) as resp:
            assert resp.status == 200
        for headers in ({}, {"X-Twilio-Signature": "bad"}):
            with pytest.raises(aiohttp.WSServerHandshakeError) as err:
                await http.ws_connect(stream_url(server), headers=headers)
            assert err.value.status == 403
    assert fake_gladia.sessions == {} and hook.requests == []
    wss = "wss://bridge.example.org/twilio/stream"
    code = await play_call(
        stream_url(server), caller_audio(0.5), headers={"X-Twilio-Signature": validator.compute_signature(wss, {})}
    )
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


@pytest.mark.parametrize(("attack", "code"), [("oversized", 1009), ("invalid_utf8", 1007)])
async def test_websocket_protocol_errors_end_the_call_as_a_protocol_error(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str], attack: str, code: int
) -> None:
    """Attack: after start, a message over the size limit (1009) or a text frame that is not UTF-8
    (1007). The call ends at once as protocol_error with that code; it is not kept suspended as a
    dropped stream that another stream could adopt."""
    hook, _ = webhook
    server: Any = await make_bridge(server__stream_restart_grace=30.0)
    w = TwilioStreamWriter("CA" + "e" * 32, "MZ" + "e" * 32)
    ws = await RawWebSocket.connect(server.port, "/twilio/stream")
    ws.send_text(w.connected())
    ws.send_text(w.start())
    ws.send_text(w.media(b"\xff" * 160))
    if attack == "oversized":
        ws.send_text(json.dumps({"event": "media", "pad": "x" * 100_000}))
    else:
        ws.send(OP_TEXT, b'{"event": "media", "bad": "\xff\xfe"}')
    assert await ws.close_code(timeout=10) == code
    ws.writer.close()
    await wait_for(lambda: bool(hook.events("call.ended")), timeout=5)
    assert hook.events("call.ended")[0]["summary"]["end_reason"] == "protocol_error"


async def test_a_client_that_pings_then_resets_is_a_dropped_stream_not_a_crash(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    """Attack: a ping, then a TCP reset while the bridge answers it. The call is a dropped stream
    (suspended, then ended after the grace), logged without a traceback, never call.crashed."""
    hook, _ = webhook
    server: Any = await make_bridge(server__stream_restart_grace=0.3)
    w = TwilioStreamWriter("CA" + "d" * 32, "MZ" + "d" * 32)
    with structlog.testing.capture_logs() as logs:
        for _ in range(5):
            ws = await RawWebSocket.connect(server.port, "/twilio/stream")
            ws.send_text(w.connected())
            ws.send_text(w.start())
            ws.send_text(w.media(b"\xff" * 160))
            for _ in range(20):
                ws.send(OP_PING, b"x" * 100)
            ws.reset()
        await wait_for(lambda: len(hook.events("call.ended")) == 5, timeout=10)
    assert {e["summary"]["end_reason"] for e in hook.events("call.ended")} == {"stream_lost"}
    assert not [line for line in logs if line["event"] == "call.crashed" or "exc_info" in line], logs


async def test_stream_parameters_set_only_the_allowed_stt_fields_within_bounds(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    """Attack: stt.* stream parameters asking Gladia to post the transcript to another URL, paid
    add-ons, another API key or region, a thousand languages, a 48 kHz encoding, a 20,000-deep JSON
    value. Only the allowed fields within bounds reach POST /v2/live (here the language); the rest is
    refused with one log line, and the call goes on normally."""
    hook, _ = webhook
    server = await make_bridge()
    params = {
        "From": "+1",
        "To": "+2",
        "stt.language": "fr",
        "stt.endpointing": "0.5",
        "stt.callback_config.url": "https://attacker.example/collect",
        "stt.callback": "true",
        "stt.translation": "true",
        "stt.realtime_processing.translation": "true",
        "stt.api_key": "stolen",
        "stt.region": "eu-west",
        "stt.custom_vocabulary": ",".join(f"w{i}" for i in range(1000)),
        "stt.sample_rate": "48000",
        "stt.maximum_duration_without_endpointing": "[" * 20_000 + "]" * 20_000,
    }
    audio = caller_audio(1.0)
    with structlog.testing.capture_logs() as logs:
        assert await play_call(stream_url(server), audio, parameters=params) == 1000
        await wait_for(lambda: bool(hook.events("call.ended")))
    (session,) = fake_gladia.sessions.values()
    body = session.body
    assert body["language_config"]["languages"] == ["fr"] and body["endpointing"] == 0.5
    assert not {"callback_config", "callback", "translation", "api_key", "region"} & set(body)
    assert "translation" not in body.get("realtime_processing", {}) and "custom_vocabulary" not in body.get(
        "realtime_processing", {}
    )
    assert body["sample_rate"] == 8000 and body["maximum_duration_without_endpointing"] != "["
    (refused,) = [line for line in logs if line["event"] == "call.stt_parameters_refused"]
    assert refused["count"] == 9
    assert not [line for line in logs if line["event"] == "call.crashed"]
    assert bytes(session.audio) == audio


async def test_twiml_stays_well_formed_whatever_the_form_fields_hold(make_bridge: BridgeFactory) -> None:
    """Attack: control characters and markup in the voice webhook's fields (a caller name can hold
    anything). The TwiML still parses as XML, with the characters XML cannot carry removed."""
    server = await make_bridge()
    form = {"CallSid": "CA\x001", "From": "+1\x07\x1b[31m555", "To": "+2", "CallerName": 'Bob"/><Hangup/>\x0c\ufffe'}
    async with aiohttp.ClientSession() as http, http.post(server.make_url("/twilio/voice"), data=form) as resp:
        twiml = ET.fromstring(await resp.text())
    params = {p.attrib["name"]: p.attrib["value"] for p in twiml.iter("Parameter")}
    assert params["From"] == "+1[31m555" and params["CallerName"] == 'Bob"/><Hangup/>'
    # no verb but the bridge's own: <Connect action> (what follows the stream is /twilio/after-stream's answer)
    assert [el.tag for el in twiml.iter()] == ["Response", "Connect", "Stream"] + ["Parameter"] * len(params)


async def test_sequence_gaps_are_logged_in_aggregate(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    """Attack: 500 media messages, each skipping a sequence number (it was one log line per gap). The
    log has one line for the first gap (then one per 10 s); the summary counts all 500."""
    hook, _ = webhook
    server = await make_bridge()
    w = TwilioStreamWriter("CA" + "5" * 32, "MZ" + "5" * 32)
    with structlog.testing.capture_logs() as logs:
        async with aiohttp.ClientSession() as http, http.ws_connect(stream_url(server)) as ws:
            await ws.send_str(w.connected())
            await ws.send_str(w.start())
            for _ in range(500):
                w._next()  # the message with this number never comes
                await ws.send_str(w.media(b"\xff" * 160))
            await ws.send_str(w.stop())
            async for _ in ws:
                pass
        await wait_for(lambda: bool(hook.events("call.ended")))
    assert len([line for line in logs if line["event"] == "call.sequence_gap"]) == 1
    assert hook.events("call.ended")[0]["summary"]["phone_gaps"] == 500


def test_tracebacks_in_the_log_carry_no_local_variables() -> None:
    """An error's log line (the bridge's JSON processor chain) has the traceback, frames and lines,
    but not the local variables: they hold phone numbers, stream parameters and bodies."""
    out = io.StringIO()
    log = structlog.wrap_logger(structlog.PrintLogger(out), processors=log_processors(use_console=False))

    def handler(caller: str) -> None:
        parameters = {"From": caller, "secret_note": "do-not-log-me"}
        raise ValueError(f"bad parameters ({len(parameters)})")

    try:
        handler("+15551234567")
    except ValueError:
        log.exception("call.crashed")
    line = json.loads(out.getvalue().strip().splitlines()[-1])
    assert line["event"] == "call.crashed" and line["exception"][0]["exc_type"] == "ValueError"
    assert "+15551234567" not in json.dumps(line) and "do-not-log-me" not in json.dumps(line)
    assert any(frame["name"] == "handler" for frame in line["exception"][0]["frames"])
