"""The sensitive pause end to end on loopback: ``configure {"sensitive": true}`` and ``false`` posted by the
bot over the REST API mid-call, a Twilio phone speaking and pressing keys (Twilio's documented ``dtmf``
message), recordings on, Gladia faked (it makes a final of every second it receives, whatever the audio).

While paused: speech-to-text gets silence, the recording's caller channel is silent, no transcript row
overlaps the pause, the keys reach the bot as ``call.dtmf`` marked sensitive and appear in no file under
the data directory; ``call.ended`` says how long it was paused. A pause the bot forgets ends by itself at
``reply.sensitive_max_s`` with a ``sensitive.ended`` event."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import numpy as np
import pytest

from bridge.audio import decode_to_pcm16
from bridge.tools.phone import TwilioPhone
from tests.support.calls import BridgeFactory, caller_audio, wait_for
from tests.support.fakes import FakeGladia, FakeWebhook
from tests.support.recording_oracle import decode
from tests.test_gather_e2e import TOKEN, Bot, hold, key, pause, url

pytestmark = pytest.mark.timeout(90)


def pcm(ulaw: bytes) -> np.ndarray:
    return np.frombuffer(decode_to_pcm16(ulaw, "ulaw"), dtype="<i2")


def holds(recording: np.ndarray, audio: np.ndarray) -> bool:
    """Whether ``audio`` is in the recording's caller channel, sample for sample, somewhere."""
    starts = np.flatnonzero(recording == audio[0])
    return any(np.array_equal(recording[at : at + len(audio)], audio) for at in starts)


async def test_a_sensitive_pause_keeps_the_callers_words_and_keys_out_of_every_record(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str], tmp_path: Path
) -> None:
    hook, _ = webhook
    server = await make_bridge({"BRIDGE_API_TOKEN": TOKEN, "BRIDGE_RECORDINGS": "on"})
    before, during, after = caller_audio(1.0, seed=1), caller_audio(2.0, seed=2), caller_audio(1.0, seed=3)
    async with aiohttp.ClientSession() as http, TwilioPhone.dial(url(server)) as phone:
        bot = Bot(hook, server, http)
        await hold(phone, lambda: bool(bot.events("call.started")))
        await phone.say(before)
        assert (await bot.act({"type": "configure", "sensitive": True}))[0]["status"] == "done"
        await phone.say(during)
        for digit in "4721":
            await phone.send(key(digit))
        await hold(phone, lambda: len(bot.events("call.dtmf")) == 4)
        assert (await bot.act({"type": "configure", "sensitive": False}))[0]["status"] == "done"
        await pause(phone, 0.2)
        await phone.say(after)
        await pause(phone, 1.5)
    await wait_for(lambda: bool(hook.events("recording.completed")), timeout=20)

    keys = hook.events("call.dtmf")
    assert [k["digit"] for k in keys] == list("4721") and all(k.get("sensitive") is True for k in keys)
    (ended,) = hook.events("call.ended")
    assert 2.0 <= ended["summary"]["sensitive_s"] < 8.0
    # no file under the data directory holds the keys (the outbox keeps a sensitive event's number only)
    for path in (tmp_path / "data").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert b'"digit":"7"' not in data and b'"digit": "7"' not in data, path
    # the recording: the caller before and after, not during (speech-to-text got silence then)
    (rec,) = (tmp_path / "data" / "recordings").iterdir()
    caller = decode(rec, 8000, "sox")[:, 0]
    assert holds(caller, pcm(before)) and holds(caller, pcm(after))
    spoken = pcm(during)
    assert not any(holds(caller, spoken[i : i + 800]) for i in range(0, len(spoken) - 800, 800))
    # no transcript row overlaps the pause: finals of the silence Gladia heard are not on record
    completed = hook.events("transcript.completed")[0]
    finals = hook.events("utterance.final")
    assert 0 < len(completed["utterances"]) < len(finals)
    kept = {u["id"] for u in completed["utterances"]}
    paused = [f["utterance"] for f in finals if f["utterance"]["id"] not in kept]
    assert paused and all(u["end"] >= 1.0 for u in paused)


async def test_a_forgotten_pause_ends_by_itself_at_its_maximum(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    hook, _ = webhook
    server = await make_bridge({"BRIDGE_API_TOKEN": TOKEN}, reply__sensitive_max_s=1.0)
    async with aiohttp.ClientSession() as http, TwilioPhone.dial(url(server)) as phone:
        bot = Bot(hook, server, http)
        await hold(phone, lambda: bool(bot.events("call.started")))
        await bot.act({"type": "configure", "sensitive": True})
        await hold(phone, lambda: bool(bot.events("sensitive.ended")), timeout=5)
        await phone.send(key("9"))
        await hold(phone, lambda: bool(bot.events("call.dtmf")))
    (ended,) = [e for e in hook.events() if e["type"] == "sensitive.ended"]
    assert ended["reason"] == "timeout" and 0.9 <= ended["paused_s"] < 2.0
    assert "sensitive" not in bot.events("call.dtmf")[0]  # after the pause: an ordinary key
    await wait_for(lambda: bool(hook.events("call.ended")), timeout=10)
    assert 0.9 <= hook.events("call.ended")[0]["summary"]["sensitive_s"] < 2.0
