"""BRIDGE_REDACT end to end on loopback: a fake Gladia whose finals say a card number and a phone number,
the bridge, the bot's webhook and the transcript API.

What is kept (the transcript store and its API, ``transcript.completed``, the add-ons' results on
record) never holds the numbers; the live events hold them unless ``BRIDGE_REDACT_EVENTS`` is on. A
Luhn-invalid 16-digit number is not a card and stays. The oracle is the numbers themselves: their
digits must appear nowhere they should not, in any form the bridge serves.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from bridge.audio import decode_to_pcm16
from tests.support.calls import BridgeFactory, caller_audio, play_call, wait_for
from tests.support.fakes import FakeGladia, FakeWebhook
from tests.support.recording_oracle import decode

TOKEN = "api-token-for-the-redaction-tests"
CARD = "my card is 4111 1111 1111 1111 thanks"
SPOKEN_PHONE = "call me on four one five five five five two six seven one"
NOT_A_CARD = "the order is 4111 1111 1111 1112"  # Luhn-invalid: not a card
SAID = {0: CARD, 1: SPOKEN_PHONE, 2: NOT_A_CARD}
TRANSLATE = {"translation": True, "translation_config": {"target_languages": ["fr"]}}


async def _call(make_bridge: BridgeFactory, fake_gladia: FakeGladia, hook: FakeWebhook, **env: str) -> Any:
    fake_gladia.said = dict(SAID)
    server = await make_bridge(
        {"BRIDGE_API_TOKEN": TOKEN, "BRIDGE_REDACT": "card, phone", **env},
        stt__default={"realtime_processing": TRANSLATE},
    )
    assert await play_call(str(server.make_url("/twilio/stream")), caller_audio(3.0)) == 1000
    await wait_for(lambda: bool(hook.events("transcript.completed")), timeout=20)
    return server


async def _record(server: Any, call_id: str) -> tuple[dict[str, Any], str, str]:
    base = str(server.make_url(f"/v1/calls/{call_id}/transcript"))
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        async with http.get(base) as resp:
            assert resp.status == 200
            record = await resp.json()
        async with http.get(base, params={"format": "txt"}) as resp:
            txt = await resp.text()
        async with http.get(base, params={"format": "vtt", "lang": "fr"}) as resp:
            vtt_fr = await resp.text()
    return record, txt, vtt_fr


def _texts(utterances: list[dict[str, Any]]) -> list[str]:
    return [u["text"].strip() for u in sorted(utterances, key=lambda u: u["start"])[:3]]


@pytest.mark.timeout(60)
async def test_what_is_kept_is_redacted_and_the_live_events_are_not_by_default(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    hook, _ = webhook
    server = await _call(make_bridge, fake_gladia, hook)
    finals = hook.events("utterance.final")
    assert [f["utterance"]["text"].strip() for f in finals[:3]] == [CARD, SPOKEN_PHONE, NOT_A_CARD]
    assert any("4111 1111 1111 1111" in t["text"] for t in hook.events("utterance.translation"))

    expected = ["my card is [card] thanks", "call me on [phone]", NOT_A_CARD]
    (completed,) = hook.events("transcript.completed")
    assert _texts(completed["utterances"]) == expected
    record, txt, vtt_fr = await _record(server, finals[0]["call"]["id"])
    assert _texts(record["utterances"]) == expected
    first = min(record["utterances"], key=lambda u: u["start"])
    # the card's four words are one, with their times
    assert [w["word"].strip() for w in first["words"]] == ["my", "card", "is", "[card]", "thanks"]
    assert first["translations"] == {"fr": "[fr] my card is [card] thanks"}
    for kept in (json.dumps(record), txt, vtt_fr, json.dumps(completed)):
        assert "1111 1111 1111 1111" not in kept and "two six seven one" not in kept
        assert "[card]" in kept
    assert "[phone]" in txt


@pytest.mark.timeout(60)
async def test_with_redact_events_the_bot_gets_the_redacted_words_too(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    hook, _ = webhook
    await _call(make_bridge, fake_gladia, hook, BRIDGE_REDACT_EVENTS="true")
    finals = hook.events("utterance.final")
    assert [f["utterance"]["text"].strip() for f in finals[:3]] == [
        "my card is [card] thanks",
        "call me on [phone]",
        NOT_A_CARD,
    ]
    card = finals[0]["utterance"]
    (word,) = [w for w in card["words"] if "[card]" in w["word"]]
    assert word["start"] == card["words"][0]["start"]  # the fake times every word with its utterance
    live = json.dumps([e for e in hook.events() if e["type"] != "transcript.completed"])
    assert "1111 1111 1111 1111" not in live and "two six seven one" not in live
    assert "[fr] my card is [card] thanks" in [t["text"] for t in hook.events("utterance.translation")]


def test_a_kind_the_bridge_does_not_know_is_refused_by_name() -> None:
    from bridge.errors import ConfigError
    from bridge.settings import Settings

    with pytest.raises(ConfigError, match=r"transcripts\.redact \(from BRIDGE_REDACT\).*'iban'"):
        Settings.load({"BRIDGE_REDACT": "card,iban"})
    settings = Settings.load({"BRIDGE_REDACT": "Card, EMAIL", "BRIDGE_REDACT_EVENTS": "true"})
    assert settings.transcripts.redact == {"card", "email"} and settings.transcripts.redact_events
    assert Settings.load({}).transcripts.redact == frozenset()


@pytest.mark.timeout(60)
async def test_a_redacted_span_is_silent_in_the_recording(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str], tmp_path: Path
) -> None:
    """Recordings and redaction both on: the card's words (the fake Gladia times every word of final 0 over
    its segment, the call's first second) are silence on both channels of the file, read back by sox; the
    rest of the caller's audio is there, sample for sample."""
    hook, _ = webhook
    fake_gladia.said = {0: CARD}
    server = await make_bridge({"BRIDGE_API_TOKEN": TOKEN, "BRIDGE_REDACT": "card", "BRIDGE_RECORDINGS": "on"})
    audio = caller_audio(3.0)
    assert await play_call(str(server.make_url("/twilio/stream")), audio) == 1000
    await wait_for(lambda: bool(hook.events("recording.completed")), timeout=20)
    (final, *_) = hook.events("utterance.final")
    start, end = round(final["utterance"]["start"] * 8000), round(final["utterance"]["end"] * 8000)
    assert (start, end) == (0, 8000)
    (path,) = (tmp_path / "data" / "recordings").iterdir()
    got = decode(path, 8000, "sox")
    assert not got[start:end].any()
    caller = np.frombuffer(decode_to_pcm16(audio, "ulaw"), dtype="<i2")
    assert got[end:, 0].any() and np.array_equal(got[end : len(caller), 0], caller[end:])
