"""jambonz ``listen`` / FreeSWITCH mod_audio_fork / mod_audio_stream adapter (pure), from the documents'
literal metadata (jambonz ``lib/tasks/listen.js`` + ``call-info.js``, mod_audio_fork's README), plus one
end-to-end call: a mod_audio_stream fork without metadata reaches Gladia whole, first frame included."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from bridge.adapters import make_adapter
from bridge.adapters.audiofork import AudioForkAdapter
from bridge.adapters.base import Audio, CallStarted
from bridge.audio import AudioFormat
from bridge.tools.writers.audiofork import AudioForkStreamWriter
from tests.support.calls import BridgeFactory, caller_audio, wait_for
from tests.support.fakes import FakeGladia, FakeWebhook

# mod_audio_fork README: callerData = {to: '6173333456', from: '2061236666', callid: req.get('Call-Id')},
# sent as JSON.stringify(callerData).
README_METADATA = '{"to":"6173333456","from":"2061236666","callid":"a84b4c76e66710@pc33.atlanta.example.com"}'
# jambonz listen: Object.assign({sampleRate, mixType}, callInfo.toJSON(), verb metadata), JSON.stringify'd.
JAMBONZ_METADATA = (
    '{"sampleRate":16000,"mixType":"mixed","callSid":"9f1ad5e2-27a6-4c2b-9d3b-8c0c1f2e6b11",'
    '"direction":"inbound","from":"+15550100","to":"+15550199",'
    '"callId":"a84b4c76e66710@192.0.2.10","sbcCallid":"sbc-a84b4c76e66710@192.0.2.10",'
    '"sipStatus":200,"sipReason":"OK","callStatus":"in-progress",'
    '"accountSid":"bb845d4b-83a9-4cde-a6e9-50f3743bab3f","traceId":"f0c1d2e3a4b5c6d7e8f9a0b1c2d3e4f5",'
    '"applicationSid":"0dddaabf-0a30-43e3-84e8-426873b1a78b","fsSipAddress":"10.0.0.12:5060",'
    '"bot":"sales"}'
)


def start_of(adapter: AudioForkAdapter, message: str | bytes) -> CallStarted:
    event = adapter.receive(message)[0]
    assert isinstance(event, CallStarted)
    return event


def test_mod_audio_fork_readme_metadata_names_the_call_by_callid() -> None:
    """The README's {to, from, callid}: callid (lower case) is the call id, from/to the numbers."""
    start = start_of(AudioForkAdapter(), README_METADATA)
    assert start.call_sid == start.stream_sid == "a84b4c76e66710@pc33.atlanta.example.com"
    assert (start.caller, start.called) == ("2061236666", "6173333456")


@pytest.mark.parametrize("key", ["callid", "callId", "call_id", "uuid", "callSid", "call_sid"])
def test_each_call_id_spelling_is_read(key: str) -> None:
    """callid, callId, call_id, uuid (and callSid, call_sid) name the call before any synthetic id."""
    assert start_of(AudioForkAdapter(), json.dumps({key: "c-42", "from": "1"})).call_sid == "c-42"


def test_metadata_without_an_id_gets_a_synthetic_one() -> None:
    """Metadata with no id field (or a blank one) falls back to a synthetic audiofork-... call id."""
    assert start_of(AudioForkAdapter(), '{"to":"1","callid":""}').call_sid.startswith("audiofork-")
    assert start_of(AudioForkAdapter(), "plain text metadata").call_sid.startswith("audiofork-")


def test_jambonz_call_sid_wins_over_the_sip_call_id() -> None:
    """jambonz sends callSid and callId (the SIP Call-ID): the call is named by callSid."""
    start = start_of(AudioForkAdapter(), JAMBONZ_METADATA)
    assert start.call_sid == "9f1ad5e2-27a6-4c2b-9d3b-8c0c1f2e6b11"
    assert start.parameters["callId"] == "a84b4c76e66710@192.0.2.10"
    assert start.parameters["sipStatus"] == "200" and start.parameters["bot"] == "sales"


def test_metadata_rate_and_mix_win_over_the_route_defaults() -> None:
    """jambonz's sampleRate 16000 and mixType mixed override a route's rate=8000&mix=stereo."""
    adapter = make_adapter("audiofork", 8000, {"rate": "8000", "mix": "stereo"})
    assert isinstance(adapter, AudioForkAdapter)
    start = start_of(adapter, JAMBONZ_METADATA)
    assert start.audio_format == AudioFormat("pcm16", 16000)
    assert adapter.receive(b"\x10\x00\x20\x00") == [Audio(b"\x10\x00\x20\x00")]  # mixed: one channel, untouched


def test_route_defaults_apply_when_metadata_has_no_rate_or_mix() -> None:
    """The README's metadata carries no rate or mix: the route's rate=16000&mix=stereo apply."""
    adapter = make_adapter("audiofork", 8000, {"rate": "16000", "mix": "stereo"})
    assert isinstance(adapter, AudioForkAdapter)
    assert start_of(adapter, README_METADATA).audio_format == AudioFormat("pcm16", 16000)
    # stereo: the two legs (left the caller) as two tracks, kept apart for Gladia's two channels
    assert adapter.receive(b"\x10\x00\x20\x00") == [Audio(b"\x10\x00", 0), Audio(b"\x20\x00", 1)]


@pytest.mark.parametrize(
    ("meta", "rate", "channels"),
    [
        ({"sample_rate": 16000, "mixType": "stereo"}, 16000, 2),
        ({"sampleRate": "24000", "mixType": "mono"}, 24000, 1),
        ({"sampleRate": 8000, "mixType": "mixed"}, 8000, 1),
    ],
)
def test_sample_rate_spellings_and_mix_types(meta: dict[str, Any], rate: int, channels: int) -> None:
    """sampleRate or sample_rate (number or text) set the rate; stereo is two channels (the legs as
    tracks 0 and 1), mono/mixed one."""
    adapter = AudioForkAdapter(default_sample_rate=8000, default_mix="stereo" if channels == 1 else "mono")
    started = start_of(adapter, json.dumps(meta))
    assert started.audio_format == AudioFormat("pcm16", rate) and started.channels == channels
    out = adapter.receive(b"\x10\x00\x20\x00")
    assert out == ([Audio(b"\x10\x00", 0), Audio(b"\x20\x00", 1)] if channels == 2 else [Audio(b"\x10\x00\x20\x00")])


def test_binary_first_frame_starts_the_call_and_is_its_first_audio() -> None:
    """mod_audio_stream without metadata: the first binary frame gives CallStarted and that frame's Audio."""
    adapter = AudioForkAdapter(default_sample_rate=16000)
    start, audio = adapter.receive(b"\x01\x02" * 320)
    assert isinstance(start, CallStarted) and start.audio_format == AudioFormat("pcm16", 16000)
    assert start.call_sid.startswith("audiofork-")
    assert audio == Audio(b"\x01\x02" * 320)


def test_writer_sends_the_documented_metadata() -> None:
    """AudioForkStreamWriter: jambonz listen's metadata, mod_audio_fork README's, or none (binary first)."""
    jambonz = AudioForkStreamWriter(
        "9f1ad5e2-27a6-4c2b-9d3b-8c0c1f2e6b11",
        16000,
        "+15550100",
        "+15550199",
        {"bot": "sales"},
        mix_type="mixed",
        call_id="a84b4c76e66710@192.0.2.10",
    )
    assert jambonz.subprotocols == ("audio.jambonz.org",)
    assert list(jambonz.call(bytes(640), 640)) == [JAMBONZ_METADATA, bytes(640)]
    fork = AudioForkStreamWriter(
        "s1", 8000, "2061236666", "6173333456", style="audio_fork", call_id="a84b4c76e66710@pc33.atlanta.example.com"
    )
    assert fork.subprotocols == ("audio.drachtio.org",) and fork.metadata_message() == README_METADATA
    bare = AudioForkStreamWriter("s2", style="audio_stream", send_metadata=False)
    assert bare.subprotocols == () and list(bare.call(bytes(640), 320)) == [bytes(320), bytes(320)]


@pytest.mark.parametrize(("query", "rate"), [("", 8000), ("?rate=16000", 16000)])
async def test_mod_audio_stream_without_metadata_reaches_gladia_whole(
    make_bridge: BridgeFactory,
    fake_gladia: FakeGladia,
    webhook: tuple[FakeWebhook, str],
    query: str,
    rate: int,
) -> None:
    """A fork that starts with binary audio (no metadata, no subprotocol) gets every byte to Gladia, the
    first 20 ms frame included (it was lost before: 31,680 of 32,000 bytes at 8 kHz)."""
    hook, _ = webhook
    server: Any = await make_bridge()
    pcm = caller_audio(4.0 * rate / 8000, seed=7)  # 4 * rate bytes: 2 s of 16-bit samples
    writer = AudioForkStreamWriter("unused", rate, style="audio_stream", send_metadata=False)
    frame = rate * 2 // 50  # 20 ms
    messages = list(writer.call(pcm, frame))
    assert isinstance(messages[0], bytes)  # no metadata: audio first
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(str(server.make_url("/audiofork/stream")) + query, protocols=writer.subprotocols)
        for message in messages:
            assert isinstance(message, bytes)
            await ws.send_bytes(message)
        await ws.close()
    await wait_for(lambda: bool(hook.events("call.ended")), timeout=20)

    (session,) = fake_gladia.sessions.values()
    assert (session.body["encoding"], session.body["sample_rate"]) == ("wav/pcm", rate)
    assert len(pcm) == 4 * rate and fake_gladia.all_audio() == pcm  # 32,000 bytes at 8 kHz
    summary = hook.events("call.ended")[0]["summary"]
    assert summary["phone_bytes"] == summary["stt_bytes"] == len(pcm)
    assert summary["end_reason"] == "hangup"
