"""What a carrier cannot do is said, never silent: a `stop` on a dialect with no clear answers
action.failed (the queue is still dropped)."""

from __future__ import annotations

import json
from typing import Any

from bridge.adapters.audiofork import AudioForkAdapter
from bridge.reply.actions import parse_actions
from bridge.reply.call_reply import CallReply
from bridge.settings import ReplySettings


async def _stop_on(subprotocol: str | None) -> tuple[list[Any], list[tuple[str, dict[str, Any]]]]:
    adapter = AudioForkAdapter(default_sample_rate=8000)
    adapter.subprotocol = subprotocol
    adapter.receive(json.dumps({"callSid": "x", "sampleRate": 8000}) if subprotocol else b"\x00\x00" * 160)
    events: list[tuple[str, dict[str, Any]]] = []
    sent: list[str | bytes] = []

    async def send(message: str | bytes) -> None:
        sent.append(message)

    reply = CallReply(
        "c1",
        settings=ReplySettings(),
        speaker=None,
        http=None,
        emit=lambda t, p: events.append((t, p)),
        on_hangup=lambda: None,
    )
    reply.attach(adapter, send)
    try:
        results = reply.apply(parse_actions({"actions": [{"type": "stop", "id": "s1"}]}))
    finally:
        await reply.close()
    return results, events


async def test_a_stop_where_the_carrier_cannot_clear_says_so() -> None:
    results, events = await _stop_on(None)  # mod_audio_stream: no killAudio
    assert results[0].status == "failed" and "cannot drop audio" in (results[0].error or "")
    assert [t for t, _ in events] == ["action.failed"] and events[0][1]["action_id"] == "s1"


async def test_a_stop_where_the_carrier_can_clear_is_done() -> None:
    results, events = await _stop_on("audio.jambonz.org")
    assert results[0].status == "done" and not events
