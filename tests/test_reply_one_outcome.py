"""One outcome per action, even when the call ends while a `say` the caller cut off is still being
synthesised: the key press that ended it was its outcome, and the hang-up adds none."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from bridge.adapters.audiofork import AudioForkAdapter
from bridge.reply.actions import parse_actions
from bridge.reply.call_reply import CallReply
from bridge.reply.tts import Speaker, Speech
from bridge.settings import ReplySettings


class SecondSentenceIsSlow:
    """An engine that speaks the first sentence at once and takes its time over the second."""

    name = "slow-second"

    def __init__(self) -> None:
        self.second_started = asyncio.Event()

    async def synthesize(self, text: str, voice: str | None) -> Speech:
        if "Second" in text:
            self.second_started.set()
            await asyncio.sleep(2.0)
        return Speech(text, b"\x00\x00" * 8000, 8000)  # 1 s of silence

    async def aclose(self) -> None:
        return None


@pytest.mark.timeout(20)
async def test_a_say_cut_off_by_a_key_while_its_next_sentence_is_synthesised_ends_once() -> None:
    adapter = AudioForkAdapter(default_sample_rate=8000)
    adapter.subprotocol = "audio.jambonz.org"
    adapter.receive(json.dumps({"callSid": "call-1", "sampleRate": 8000}))
    events: list[tuple[str, dict[str, Any]]] = []
    engine = SecondSentenceIsSlow()

    async def send(message: str | bytes) -> None:
        return None

    reply = CallReply(
        "call-1",
        settings=ReplySettings(),
        speaker=Speaker(engine),
        http=None,
        emit=lambda type_, payload: events.append((type_, payload)),
        on_hangup=lambda: None,
    )
    reply.attach(adapter, send)
    say = {"type": "say", "id": "menu", "text": "First one here. Second one there.", "interrupt": "dtmf"}
    reply.apply(parse_actions({"actions": [say]}))
    await asyncio.wait_for(engine.second_started.wait(), 5)
    await asyncio.sleep(0.1)  # the first sentence is playing
    reply.caller_dtmf()
    await asyncio.sleep(0.2)
    await reply.close()  # the call ends while the second sentence is still being synthesised

    outcomes = [(t, p.get("reason")) for t, p in events if t in ("playback.interrupted", "playback.finished")]
    assert outcomes == [("playback.interrupted", "dtmf")], events
