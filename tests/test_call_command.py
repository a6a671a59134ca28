"""`bridge call`: a WAV file played as a Twilio call into a running bridge; the WAV reader."""

from __future__ import annotations

import io
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bridge.errors import WavError
from bridge.wav import read_wav, to_ulaw_8k
from tests.support.bridge_process import run_bridge
from tests.support.calls import BridgeFactory, wait_for
from tests.support.fakes import FakeGladia, FakeWebhook
from tests.support.process import ROOT, free_port, minimal_env


def wav_bytes(samples: np.ndarray, rate: int, channels: int = 1, fmt: str = "pcm16") -> bytes:
    if fmt == "pcm16":
        tag, bits, data = 1, 16, np.clip(np.rint(samples * 32767), -32768, 32767).astype("<i2").tobytes()
    else:
        tag, bits, data = 3, 32, samples.astype("<f4").tobytes()
    block = channels * bits // 8
    header = struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, bits)
    return bytes(
        b"RIFF"
        + struct.pack("<I", 36 + len(data))
        + b"WAVE"
        + b"fmt "
        + struct.pack("<I", 16)
        + header
        + b"data"
        + struct.pack("<I", len(data))
        + data
    )


def test_reader_handles_pcm_float_stereo_and_mulaw() -> None:
    """PCM16 stereo at 44.1 kHz, float32 and the shipped mu-law sample all read to mono at their rate."""
    t = np.arange(44100) / 44100
    tone = 0.5 * np.sin(2 * np.pi * 440 * t)
    stereo = np.repeat(tone, 2)
    wav = read_wav(wav_bytes(stereo, 44100, channels=2))
    assert wav.sample_rate == 44100 and wav.channels == 2 and len(wav.samples) == 44100
    assert np.max(np.abs(wav.samples - tone)) < 1e-3
    assert len(to_ulaw_8k(wav)) == pytest.approx(8000, abs=2)
    assert read_wav(wav_bytes(tone, 16000, fmt="float")).seconds == pytest.approx(44100 / 16000)
    sample = read_wav((ROOT / "bridge" / "samples" / "demo_call.wav").read_bytes())
    assert sample.sample_rate == 8000 and sample.seconds > 20
    with pytest.raises(WavError):
        read_wav(b"RIFF\x00\x00\x00\x00WAVEjunk")


async def test_bridge_call_plays_a_wav_into_the_bridge(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str], tmp_path: Path
) -> None:
    """The command converts the file to 8 kHz mu-law, streams it, and reports the bridge's close code."""
    hook, _ = webhook
    server: Any = await make_bridge()
    t = np.arange(16000 * 2) / 16000
    path = tmp_path / "call.wav"
    path.write_bytes(wav_bytes(0.3 * np.sin(2 * np.pi * 300 * t), 16000))
    proc = await run_bridge(
        "call",
        str(path),
        "--fast",
        "--param",
        "stt.language=en",
        "--url",
        str(server.make_url("/twilio/stream")),
        env=minimal_env(),
        timeout=30,
    )
    out, err = proc.out, proc.err
    assert proc.returncode == 0, err.decode()
    assert "bridge closed the stream with code 1000" in out.decode()
    assert "2.0s" in err.decode()  # the progress bar reached the end
    await wait_for(lambda: bool(hook.events("call.ended")))
    assert fake_gladia.all_audio() == to_ulaw_8k(read_wav(path.read_bytes()))
    assert hook.events("call.started")[0]["call"]["parameters"]["stt.language"] == "en"


async def test_bridge_call_reports_a_missing_file(tmp_path: Path) -> None:
    proc = await run_bridge(
        "call",
        str(tmp_path / "nope.wav"),
        env=minimal_env(),
        timeout=30,
    )
    err = proc.err
    assert proc.returncode == 2 and b"nope.wav" in err


async def test_bridge_call_speaks_other_dialects(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str], tmp_path: Path
) -> None:
    """--carrier vonage --rate 16000: the bridge's /vonage/stream gets binary L16, Gladia wav/pcm 16 kHz."""
    hook, _ = webhook
    server: Any = await make_bridge()
    t = np.arange(8000) / 8000
    path = tmp_path / "call.wav"
    path.write_bytes(wav_bytes(0.3 * np.sin(2 * np.pi * 300 * t), 8000))
    proc = await run_bridge(
        "call",
        str(path),
        "--fast",
        "--carrier",
        "vonage",
        "--rate",
        "16000",
        "--url",
        str(server.make_url("/vonage/stream")),
        env=minimal_env(),
        timeout=30,
    )
    out, err = proc.out, proc.err
    assert proc.returncode == 0, err.decode()
    assert "bridge closed the stream with code 1000" in out.decode()
    await wait_for(lambda: bool(hook.events("call.ended")))
    (session,) = fake_gladia.sessions.values()
    assert (session.body["encoding"], session.body["sample_rate"]) == ("wav/pcm", 16000)
    assert len(session.audio) == 32000
    assert hook.events("call.ended")[0]["call"]["provider"] == "vonage"


def test_the_player_speaks_every_carrier_the_bridge_routes() -> None:
    """The call player has one dialect per carrier of bridge.adapters.CARRIERS (the one list)."""
    from bridge.adapters import CARRIERS
    from bridge.tools.dialects import DIALECTS

    assert set(DIALECTS) == set(CARRIERS)


async def test_bridge_call_saves_what_the_caller_heard(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str], tmp_path: Path
) -> None:
    """`--save-reply`: the command plays the bridge's answer like a Twilio phone (marks echoed), keeps
    the call open while it plays, saves what the caller heard as a WAV and prints the marks."""
    hook, _ = webhook
    fake_gladia.segment_seconds = 3600.0  # no transcripts: nothing interrupts the answer
    hook.answer = lambda e: (
        {"actions": [{"type": "say", "id": "hi", "text": "Hello. Thanks for calling."}]}
        if e["type"] == "call.started"
        else None
    )
    server: Any = await make_bridge()
    audio, reply = tmp_path / "call.wav", tmp_path / "reply.wav"
    audio.write_bytes(wav_bytes(np.zeros(8000), 8000))  # one second of silence from the caller
    proc = await run_bridge(
        "call",
        str(audio),
        "--save-reply",
        str(reply),
        "--url",
        str(server.make_url("/twilio/stream")),
        env=None,
        timeout=60,
    )
    out, err = proc.out, proc.err
    text = out.decode()
    assert proc.returncode == 0, text + err.decode()
    assert "2 marks echoed" in text and "saved what the caller heard" in text
    heard = read_wav(reply.read_bytes())
    (finished,) = hook.events("playback.finished")
    assert heard.sample_rate == 8000 and heard.seconds * 1000 == pytest.approx(finished["played_ms"], abs=40)
    assert np.max(np.abs(heard.samples)) > 0.05  # speech, not silence


# -- following a transfer, as Twilio would ---------------------------------------------------------

TWILIO_TOKEN = "call-command-twilio-token"


def _transfer_bot(hook: FakeWebhook, **transfer: Any) -> None:
    """The bot: on call.started, a short say and a transfer; the caller's return gets nothing more."""

    def answer(event: dict[str, Any]) -> Any:
        if event["type"] == "call.started" and len(hook.events("call.started")) == 1:
            action = {"type": "transfer", "id": "t1", "to": "+15550142", "on_no_answer": "return", **transfer}
            return {"actions": [{"type": "say", "text": "Please hold.", "id": "hold"}, action]}
        return None

    hook.answer = answer


async def _transfer_bridge(make_bridge: BridgeFactory) -> Any:
    port = free_port()
    env = {"TWILIO_AUTH_TOKEN": TWILIO_TOKEN, "BRIDGE_SECRET": "s" * 32, "BRIDGE_TRANSFER_TO": "+1555"}
    return await make_bridge(env | {"BRIDGE_PUBLIC_URL": f"http://127.0.0.1:{port}"}, port=port)


def _tone(path: Path, seconds: float) -> None:
    path.write_bytes(wav_bytes(0.2 * np.sin(2 * np.pi * 300 * np.arange(int(8000 * seconds)) / 8000), 8000))


async def test_bridge_call_follows_a_transfer_nobody_answers_back_to_the_bot(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str], tmp_path: Path
) -> None:
    """/twilio/voice, the stream, the bot's transfer: the bridge closes the stream, the tool POSTs the
    ``<Connect action>`` (signed: the bridge checks with TWILIO_AUTH_TOKEN) and prints the ``<Dial>``; with
    ``--dial-status no-answer`` the ``<Dial action>`` brings the caller back on a new stream with the rest
    of the audio: same call, ``call.stream_restarted`` and ``transfer.failed``."""
    hook, _ = webhook
    _transfer_bot(hook, ring_timeout_s=20, announce="A caller asking about a card.")
    server = await _transfer_bridge(make_bridge)
    path = tmp_path / "call.wav"
    _tone(path, 4.0)
    proc = await run_bridge(
        "call",
        str(path),
        "--dial-status",
        "no-answer",
        "--dtmf",
        "9@0.2s,12@3.2s",  # the 9 before the transfer, the 1 and 2 on the stream back to the bot
        "--url",
        str(server.make_url("/twilio/stream")),
        env=minimal_env() | {"TWILIO_AUTH_TOKEN": TWILIO_TOKEN},
        timeout=40,
    )
    out = proc.out.decode()
    assert proc.returncode == 0, out + proc.err.decode()
    assert "transfer: +15550142 (ring timeout 20 s, announce: yes)" in out
    assert "dial: no-answer" in out
    assert out.count("stream: ws://") == 2  # the call's stream, then the caller back to the bot
    await wait_for(lambda: bool(hook.events("call.ended")), timeout=20)
    (failed,) = hook.events("transfer.failed")
    assert failed["action_id"] == "t1" and failed["status"] == "no-answer"
    (restarted,) = hook.events("call.stream_restarted")
    (ended,) = hook.events("call.ended")
    assert restarted["call"]["id"] == ended["call"]["id"] == hook.events("call.started")[0]["call"]["id"]
    assert restarted["call"]["stream_sid"] != hook.events("call.started")[0]["call"]["stream_sid"]  # a new stream
    assert ended["summary"]["end_reason"] == "stop"  # the caller hung up at the end of the audio
    assert hook.events("transfer.started")[0]["method"] == "twiml"
    keys = hook.events("call.dtmf")
    assert [k["digit"] for k in keys] == ["9", "1", "2"]
    assert [k["call"]["stream_sid"] == restarted["call"]["stream_sid"] for k in keys] == [False, True, True]


async def test_bridge_call_follows_a_transfer_the_person_answers(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str], tmp_path: Path
) -> None:
    """Answered (the default): the whisper fetched like the person's phone and its audio saved
    (``--announce-out``), the answer reported, the ``<Dial action>`` answered ``<Hangup/>``."""
    hook, _ = webhook
    _transfer_bot(hook, announce="A caller asking about a card.")
    server = await _transfer_bridge(make_bridge)
    path, briefing = tmp_path / "call.wav", tmp_path / "briefing.wav"
    _tone(path, 3.0)
    proc = await run_bridge(
        "call",
        str(path),
        "--announce-out",
        str(briefing),
        "--url",
        str(server.make_url("/twilio/stream")),
        env=minimal_env() | {"TWILIO_AUTH_TOKEN": TWILIO_TOKEN},
        timeout=40,
    )
    out = proc.out.decode()
    assert proc.returncode == 0, out + proc.err.decode()
    assert "transfer: +15550142 (ring timeout 30 s, announce: yes)" in out
    assert "dial: answered" in out and out.rstrip().endswith("hangup: the call ends")
    audio = briefing.read_bytes()
    assert audio[:4] == b"RIFF" and read_wav(audio).seconds > 0.5  # the briefing, spoken
    await wait_for(lambda: bool(hook.events("call.ended")), timeout=20)
    assert hook.events("call.ended")[0]["summary"]["end_reason"] == "transferred"
    assert hook.events("transfer.completed")[0]["status"] == "answered"
    assert not hook.events("transfer.failed")


async def test_the_tools_twilio_requests_are_signed_as_twilios_sdk_checks(aiohttp_server: Any) -> None:
    """Each request of the call (a POST form, a GET with its fields in the query, a URL with a query of
    its own) carries the X-Twilio-Signature the official SDK's RequestValidator accepts, over the exact URL."""
    import aiohttp
    from aiohttp import web
    from twilio.request_validator import RequestValidator

    from bridge.tools.follow import TwilioCall

    checked: list[tuple[str, bool]] = []
    validator = RequestValidator(TWILIO_TOKEN)

    async def handler(request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()} if request.method == "POST" else {}
        url = str(request.url)
        checked.append((request.method, validator.validate(url, form, request.headers.get("X-Twilio-Signature", ""))))
        return web.Response(text="<Response><Hangup/></Response>", content_type="text/xml")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    server = await aiohttp_server(app, host="127.0.0.1")
    base = str(server.make_url("")).rstrip("/")
    async with aiohttp.ClientSession() as http:
        call = TwilioCall(http, base, b"", io.StringIO(), auth_token=TWILIO_TOKEN)
        assert [type(v).__name__ for v in await call.fetch("POST", base + "/twilio/voice", call.fields())] == ["Hangup"]
        await call.fetch("POST", base + "/twilio/dial-status?t=abc.def&x=1", call.fields() | {"DialCallStatus": "busy"})
        await call.fetch("GET", base + "/whisper?t=1", call.fields())
    assert checked == [("POST", True), ("POST", True), ("GET", True)]


# -- the TwiML the tool reads, as Twilio's own SDK writes it --------------------------------------


def test_twiml_the_tool_reads_is_what_twilios_sdk_writes() -> None:
    """The twilio SDK's VoiceResponse (an independent writer) for what a call through the bridge meets."""
    from twilio.twiml.voice_response import Connect, Dial, VoiceResponse

    from bridge.tools import twiml_read as t

    response = VoiceResponse()
    connect = Connect(action="https://b.example/twilio/after-stream")
    stream = connect.stream(url="wss://b.example/twilio/stream")
    stream.parameter(name="bridge.resume", value="abc")
    stream.parameter(name="From", value="+15550001")
    response.append(connect)
    dial = Dial(action="https://b.example/twilio/dial-status?t=x.y", timeout=20, caller_id="+15550002")
    dial.number(
        "+15550142",
        url="https://b.example/twilio/announce?t=z",
        status_callback_event="answered",
        status_callback="https://b.example/s?answered=1",
    )
    response.append(dial)
    sip = Dial()
    sip.sip("sip:agent@pbx.example.com")
    response.append(sip)
    response.say("Please hold.")
    response.play("https://b.example/a.wav")
    response.pause(length=2)
    response.redirect("https://b.example/next", method="GET")
    response.hangup()
    response.enqueue("support")
    verbs = t.read_twiml(str(response))
    assert verbs == [
        t.ConnectStream(
            "wss://b.example/twilio/stream",
            {"bridge.resume": "abc", "From": "+15550001"},
            "https://b.example/twilio/after-stream",
        ),
        t.Dial(
            (
                t.DialTarget(
                    "Number",
                    "+15550142",
                    "https://b.example/twilio/announce?t=z",
                    status_callback="https://b.example/s?answered=1",
                    status_events=("answered",),
                ),
            ),
            "https://b.example/twilio/dial-status?t=x.y",
            timeout_s=20,
            caller_id="+15550002",
        ),
        t.Dial((t.DialTarget("Sip", "sip:agent@pbx.example.com"),)),  # Twilio's defaults: POST, 30 s
        t.Say("Please hold."),
        t.Play("https://b.example/a.wav"),
        t.Pause(2.0),
        t.Redirect("https://b.example/next", "GET"),
        t.Hangup(),
        t.Unsupported("Enqueue"),
    ]
    assert verbs[1].announces and not verbs[2].announces  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("<Response><Dial></Dial></Response>", "nothing to dial"),
        ("<Response><Redirect/></Response>", "without a URL"),
        ("<Response><Connect><Stream/></Connect></Response>", "without url"),
        ("<Response><Redirect method='PUT'>https://x</Redirect></Response>", "GET or POST"),
        ("<Response><Dial timeout='soon'>+1555</Dial></Response>", "not a number"),
        ("<html><body/></html>", "not a TwiML <Response>"),
        ("<Response>", "not XML"),
        ("<Response>" + "<Pause/>" * 10_000 + "</Response>", "over 64 KB"),
    ],
)
def test_twiml_the_tool_cannot_follow_says_why(document: str, message: str) -> None:
    from bridge.tools.twiml_read import read_twiml

    with pytest.raises(ValueError, match=message):
        read_twiml(document)
