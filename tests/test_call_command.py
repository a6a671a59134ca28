"""`bridge call`: a WAV file played as a Twilio call into a running bridge; the WAV reader."""

from __future__ import annotations

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
from tests.support.process import ROOT, minimal_env


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
