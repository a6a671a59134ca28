"""Both parties of a call, end to end: the stereo sample conversation (left the caller, right the agent,
two espeak voices taking turns) played as a two-track call into `bridge serve` with the embedded local
STT, then read back from the bot's events and the transcript API.

The oracle for "the right words under the right label" does not depend on recognition: each turn's
time span comes from the sample's script (``two_party_call.txt``, made with the WAV), and a final must
lie on one turn of its own channel's speaker. Which words come back depends on the CPU; the word error
rate per channel is printed, not asserted (``test_recognition_quality.py`` holds the quality bound).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import webvtt

from bridge.tools.player import play_call, read_two_tracks
from tests.support.bridge_process import start_bridge
from tests.support.calls import wait_for
from tests.support.fakes import FakeWebhook
from tests.support.process import minimal_env
from tests.support.speech import wer, words

pytestmark = pytest.mark.recognition

TOKEN = "api-token-for-the-test"


def script() -> list[tuple[float, float, str, str]]:
    """(start, end, speaker, text) per turn, from the sample's script."""
    text = resources.files("bridge.samples").joinpath("two_party_call.txt").read_text()
    turns = []
    for line in text.splitlines():
        times, _, rest = line.partition(": ")
        start, end, who = times.split()
        turns.append((float(start), float(end), who, rest))
    return turns


@pytest.mark.timeout(240)
@pytest.mark.parametrize("carrier", ["twilio", "audiofork"])
async def test_each_party_comes_back_under_its_own_label(
    carrier: str, webhook: tuple[FakeWebhook, str], tmp_path: Path
) -> None:
    """The stereo sample as a Twilio both_tracks fork and as a FreeSWITCH stereo fork: every final on
    a turn of its own channel's speaker, every turn heard, the record in transcript.completed and the
    transcript API (JSON with words, txt, WebVTT that a WebVTT parser reads, voices per speaker)."""
    hook, hook_url = webhook
    left, right = read_two_tracks(resources.files("bridge.samples").joinpath("two_party_call.wav").read_bytes())
    config = tmp_path / "bridge.toml"
    config.write_text("[server]\nmax_audio_speed = 0\n")  # the 32 s call is played as fast as it goes
    bridge = await start_bridge(
        minimal_env(BOT_WEBHOOK_URL=hook_url, BRIDGE_API_TOKEN=TOKEN, BRIDGE_CONFIG=str(config)), startup=60.0
    )
    transcript: dict[str, Any] = {}
    try:
        report = await play_call(
            f"{bridge.ws}/{carrier}/stream" + ("?mix=stereo" if carrier == "audiofork" else ""),
            left,
            outbound=right,
            realtime=False,
            carrier=carrier,
            parameters={"From": "+15550100", "To": "+15550199"},
        )
        assert report.close_code == 1000
        await wait_for(lambda: bool(hook.events("transcript.completed")), timeout=150)
        call_id = hook.events("call.started")[0]["call"]["id"]
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with aiohttp.ClientSession(headers=headers) as http:
            base = f"{bridge.base}/v1/calls/{call_id}/transcript"
            async with http.get(base) as resp:
                assert resp.status == 200
                transcript = await resp.json()
            async with http.get(base + "?format=txt") as resp:
                txt = await resp.text()
            async with http.get(base + "?format=vtt") as resp:
                assert resp.content_type == "text/vtt"
                vtt = await resp.text()
    finally:
        await bridge.stop()

    (started,) = hook.events("call.started")
    assert started["stt"]["channels"] == 2 and started["speakers"] == ["caller", "agent"]
    finals = [f["utterance"] for f in hook.events("utterance.final")]
    turns = script()
    heard: dict[str, list[str]] = {"caller": [], "agent": []}
    for utt in finals:
        assert utt["speaker"] == ("caller", "agent")[utt["channel"]]
        mid = (utt["start"] + utt["end"]) / 2
        (turn,) = [t for t in turns if t[0] - 0.4 <= mid <= t[1] + 0.4]  # on one turn ...
        assert turn[2] == utt["speaker"], (utt, turn)  # ... of its own speaker
        heard[utt["speaker"]].append(utt["text"])
    for who in ("caller", "agent"):
        said = " ".join(t[3] for t in turns if t[2] == who)
        assert words(" ".join(heard[who])), f"nothing came back for the {who}"
        print(f"{carrier} {who}: word error rate {wer(said, ' '.join(heard[who])):.1%}: {' | '.join(heard[who])}")
    # every turn was heard by someone: each has a final on it
    for start, end, who, _ in turns:
        assert any(start - 0.4 <= (u["start"] + u["end"]) / 2 <= end + 0.4 for u in finals), (start, end, who)

    # the record: transcript.completed, then the API in its three formats
    (done,) = hook.events("transcript.completed")
    assert [u["text"] for u in done["utterances"]] == [
        u["text"] for u in sorted(finals, key=lambda u: (u["start"], u["channel"]))
    ]
    assert done["speakers"] == ["caller", "agent"] and not done["truncated"]
    assert [u["speaker"] for u in transcript["utterances"]] == [u["speaker"] for u in done["utterances"]]
    assert all(u["words"] for u in transcript["utterances"])
    assert "caller: " in txt and "agent: " in txt
    cues = webvtt.from_string(vtt, strict=True).captions
    assert {c.voice for c in cues} == {"caller", "agent"}
    assert [c.start_in_seconds for c in cues] == sorted(c.start_in_seconds for c in cues)
