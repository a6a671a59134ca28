"""Call recordings end to end on loopback: a one-track Twilio call where the bot speaks and the caller
interrupts it, recorded by the bridge, served over the API and read back by Debian's sox (not by the
writer's library); the listing, retention and a restarted stream keeping one file.

Oracles: the caller's channel is the audio the phone sent, the other channel is what the phone's
loudspeaker played (:class:`bridge.tools.ear.TwilioEar`, which drops what a ``clear`` cut), each matched
by normalised cross-correlation within a few milliseconds."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from bridge.audio import decode_to_pcm16, encode_from_pcm16
from bridge.clock import Clock
from bridge.errors import ConfigError
from bridge.http.transcripts import TRANSCRIPTS
from bridge.settings import Settings
from tests.support.calls import BridgeFactory, caller_audio, wait_for
from tests.support.fakes import FakeGladia, FakeWebhook, VirtualClock
from tests.support.phone import PhoneCall, phone_call
from tests.support.recording_oracle import decode, similarity, speech
from tests.test_stream_restart import CALL_SID, stream_part, voice_parameters

pytestmark = pytest.mark.timeout(90)

TOKEN = "test-api-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LONG = (
    "Your balance is one thousand two hundred dollars. Your last payment was to the electricity company. "
    "Would you like to hear the other payments of this month?"
)
RATE = 8000
MAX_LAG = 40  # samples: 5 ms


def quiet(fake_gladia: FakeGladia) -> None:
    fake_gladia.segment_seconds = 3600.0


def speech_event(at: float, started: bool) -> tuple[float, dict[str, Any]]:
    return at, {"type": "speech_start" if started else "speech_end", "data": {"time": at, "channel": 0}}


def partial(at: float, text: str) -> tuple[float, dict[str, Any]]:
    utterance = {"start": at - 0.5, "end": at, "text": text, "words": [], "language": "en", "channel": 0}
    return at, {"type": "transcript", "data": {"id": f"p_{at}", "is_final": False, "utterance": utterance}}


def ulaw_pcm(ulaw: bytes) -> np.ndarray:
    return np.frombuffer(decode_to_pcm16(ulaw, "ulaw"), dtype="<i2")


def caller_ulaw(seconds: float) -> bytes:
    """The caller's side of the stereo sample (its left channel), as the phone sends it."""
    return encode_from_pcm16(speech(seconds)[:, 0].tobytes(), "ulaw")


async def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as http, http.get(url, headers={**AUTH, **(headers or {})}) as resp:
        return resp.status, dict(resp.headers), await resp.read()


def loudspeaker(call: PhoneCall, frames: int) -> np.ndarray:
    """What the phone played over the call, on the phone's clock (silence where nothing played)."""
    return ulaw_pcm(call.ear.audio_at(0.0, frames))


async def test_a_barged_in_reply_is_recorded_up_to_the_clear_and_served_with_ranges(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str], tmp_path: Path
) -> None:
    """One-track Twilio call: the caller talks for 3 s, the bot's long reply plays, the caller barges in at
    4 s. Channel 0 holds the caller's audio (within 5 ms), channel 1 the reply as the phone played it up
    to the clear and nothing after; recording.completed follows call.ended; GET serves the file with
    Range (206); GET /v1/calls?since= lists it."""
    hook, _ = webhook
    quiet(fake_gladia)
    fake_gladia.script = [speech_event(4.0, True), partial(4.6, "wait a second")]
    hook.answer = lambda e: (
        {"actions": [{"type": "say", "id": "balance", "text": LONG}]} if e["type"] == "call.started" else None
    )
    server = await make_bridge({"BRIDGE_RECORDINGS": "on", "BRIDGE_API_TOKEN": TOKEN})
    since = time.time() - 5
    sent = caller_ulaw(3.0)
    call = await phone_call(
        str(server.make_url("/twilio/stream")),
        sent,
        until=lambda c: bool(hook.events("playback.interrupted")) and c.now > 6.0,
        max_seconds=20,
    )
    await wait_for(lambda: bool(hook.events("recording.completed")), timeout=20)
    types = [e["type"] for e in hook.events()]
    assert types.index("call.ended") < types.index("recording.completed")
    (completed,) = hook.events("recording.completed")
    call_id = completed["call"]["id"]
    assert completed["format"] == "wav" and completed["channels"] == 2 and completed["sample_rate"] == RATE
    assert completed["degraded"] is False

    status, headers, body = await fetch(str(server.make_url(f"/v1/calls/{call_id}/recording")))
    assert status == 200 and headers["Content-Type"] == "audio/wav" and headers.get("Accept-Ranges") == "bytes"
    assert len(body) == completed["bytes"]
    status, headers, part = await fetch(
        str(server.make_url(f"/v1/calls/{call_id}/recording")), {"Range": "bytes=1000-1999"}
    )
    assert status == 206 and part == body[1000:2000] and headers["Content-Range"] == f"bytes 1000-1999/{len(body)}"
    path = tmp_path / "read.wav"
    path.write_bytes(body)
    audio = decode(path, RATE, "sox")  # an independent decoder

    # its length is the call's: every 20 ms frame the phone sent
    assert len(audio) == pytest.approx(call.frames * 160, abs=160)
    assert completed["duration_s"] == pytest.approx(len(audio) / RATE, abs=0.001)

    # channel 0: the caller, placed where it was sent
    caller = np.zeros(len(audio), dtype="<i2")
    caller[: len(sent)] = ulaw_pcm(sent)[: len(audio)]
    (score, lag), _ = similarity(np.stack([caller, caller], axis=1), audio, MAX_LAG)[0], None
    assert score > 0.95 and abs(lag) <= MAX_LAG, (score, lag)

    # channel 1: what the phone played, up to the clear, then nothing
    played = loudspeaker(call, len(audio))
    assert np.abs(played).max() > 1000  # the reply did play
    score1, lag1 = similarity(np.stack([played, played], axis=1), audio, MAX_LAG)[1]
    assert score1 > 0.9 and abs(lag1) <= MAX_LAG, (score1, lag1)
    (clear_at, _) = next((t, m) for t, m in call.received if '"clear"' in m)
    after = audio[round((clear_at + 0.01) * RATE) :, 1]
    assert not after.any(), f"{np.count_nonzero(after)} samples after the clear"
    voiced = np.flatnonzero(audio[:, 1])
    span_ms = (voiced[-1] - voiced[0] + 1) / RATE * 1000  # the reply, first sample to last
    assert span_ms == pytest.approx(len(call.ear.heard()) / 8, abs=60)  # what the phone played of it

    # the listing says the call has a recording
    status, _, listing = await fetch(str(server.make_url(f"/v1/calls?since={int(since)}")))
    assert status == 200
    (listed,) = [c for c in json.loads(listing)["calls"] if c["id"] == call_id]
    assert listed["recording"] == {"format": "wav", "duration_s": completed["duration_s"], "bytes": len(body)}


async def test_recordings_are_off_by_default_and_per_number(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str], tmp_path: Path
) -> None:
    """Off by default: no file, no event, 404. ``recording.numbers`` switches one called number on."""
    hook, _ = webhook
    quiet(fake_gladia)
    server = await make_bridge({"BRIDGE_API_TOKEN": TOKEN})
    await phone_call(str(server.make_url("/twilio/stream")), caller_ulaw(1.0), until=lambda c: c.now > 1.5)
    await wait_for(lambda: bool(hook.events("call.ended")))
    call_id = hook.events("call.ended")[0]["call"]["id"]
    status, _, _ = await fetch(str(server.make_url(f"/v1/calls/{call_id}/recording")))
    assert status == 404 and not hook.events("recording.completed")
    assert not (tmp_path / "data" / "recordings").exists()


async def test_a_restarted_stream_continues_the_same_file(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str], tmp_path: Path
) -> None:
    """Stream 1 drops after 1.5 s of audio; stream 2 resumes the call 4 s later: one file, the first part
    at 0, silence for the time no stream carried the call, the second part after it (the new owner of
    the call, the same recorder, appends); one recording.completed."""
    hook, _ = webhook
    server: Any = await make_bridge({"BRIDGE_RECORDINGS": "on", "BRIDGE_API_TOKEN": TOKEN})
    url = str(server.make_url("/twilio/stream"))
    audio = caller_audio(3.0)
    await stream_part(url, "MZ" + "1" * 32, audio[:12000], False, await voice_parameters(server, CALL_SID))
    await asyncio.sleep(4.0)
    await stream_part(url, "MZ" + "2" * 32, audio[12000:], True, await voice_parameters(server, CALL_SID))
    await wait_for(lambda: bool(hook.events("recording.completed")), timeout=20)
    assert [e["type"] for e in hook.events()].count("recording.completed") == 1
    files = sorted((tmp_path / "data" / "recordings").iterdir())
    assert [f.name for f in files] == [f"{hook.events('call.started')[0]['call']['id']}.wav"]
    got = decode(files[0], RATE, "sox")[:, 0]
    first, second = ulaw_pcm(audio[:12000]), ulaw_pcm(audio[12000:])
    assert np.array_equal(got[:12000], first)
    at = len(got) - len(second)
    assert np.array_equal(got[at:], second)
    assert 2.0 < at / RATE - 1.5 < 5.0 and not got[12000:at].any()  # the gap: silence of about its length


async def test_retention_deletes_the_recording_with_the_transcript(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str], tmp_path: Path
) -> None:
    """The transcript store's purge takes the call's recording with it (the same retention)."""
    hook, _ = webhook
    quiet(fake_gladia)
    clock = VirtualClock()
    server = await make_bridge(
        {"BRIDGE_RECORDINGS": "on", "BRIDGE_API_TOKEN": TOKEN},
        clock=Clock(time=clock.time, sleep=clock.sleep),
        transcripts__purge_interval=0.05,
    )
    await phone_call(str(server.make_url("/twilio/stream")), caller_ulaw(1.0), until=lambda c: c.now > 1.2)
    await wait_for(lambda: bool(hook.events("recording.completed")), timeout=20)
    call_id = hook.events("recording.completed")[0]["call"]["id"]
    url = str(server.make_url(f"/v1/calls/{call_id}/recording"))
    path = tmp_path / "data" / "recordings" / f"{call_id}.wav"
    store = server.app[TRANSCRIPTS]
    assert store is not None
    await wait_for(lambda: bool(store.get(call_id)), timeout=10)
    await asyncio.sleep(0.2)  # a few purges: nothing recent goes
    assert path.exists() and (await fetch(url))[0] == 200
    clock.offset += 31 * 86400
    await wait_for(lambda: not path.exists(), timeout=10)
    assert (await fetch(url))[0] == 404
    assert (await fetch(str(server.make_url(f"/v1/calls/{call_id}/transcript"))))[0] == 404


def test_the_settings_names_and_the_per_number_table(tmp_path: Path) -> None:
    """BRIDGE_RECORDINGS=on|off and BRIDGE_RECORDING_FORMAT map to the recording section; a number's entry
    wins over the default; a bad value names the key and the variable."""
    assert not Settings.load(environ={}).recording.enabled  # off unless asked
    on = Settings.load(environ={"BRIDGE_RECORDINGS": "on", "BRIDGE_RECORDING_FORMAT": "opus"}).recording
    assert on.enabled and on.format == "opus" and on.flush_s == 5.0
    assert not Settings.load(environ={"BRIDGE_RECORDINGS": "off"}).recording.enabled
    config = tmp_path / "bridge.toml"
    config.write_text('[recording]\nnumbers = { "+15550100" = true, "+15550199" = false }\n')
    table = Settings.load(environ={"BRIDGE_CONFIG": str(config)}).recording
    assert table.enabled_for("+15550100") and not table.enabled_for("+15550199") and not table.enabled_for(None)
    on_table = Settings.load(environ={"BRIDGE_CONFIG": str(config), "BRIDGE_RECORDINGS": "on"}).recording
    assert on_table.enabled_for("+15550123") and not on_table.enabled_for("+15550199")
    with pytest.raises(ConfigError, match=r"recording\.format \(from BRIDGE_RECORDING_FORMAT\)"):
        Settings.load(environ={"BRIDGE_RECORDING_FORMAT": "mp3"})
    with pytest.raises(ConfigError, match=r"recording\.enabled \(from BRIDGE_RECORDINGS\)"):
        Settings.load(environ={"BRIDGE_RECORDINGS": "sometimes"})
