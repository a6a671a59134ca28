"""Gladia's add-ons end to end on loopback: a fake Gladia that sends them (built from the official SDK's
types, tests/support/gladia_addons.py), the bridge, the bot's webhook and the transcript API.

What is checked is what the bot can rely on: each result after the ``utterance.final`` it is about,
linked by its ``id``, on the final's channel and speaker, once, however the Gladia socket drops; the
post-call summary over the socket, read back after a drop during post-processing, or a timeout when it
never comes; failures as ``stt.addon_failed``; refusals said in ``call.started``.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bridge.tools.player import play_call as play_tracks
from tests.support.calls import BridgeFactory, caller_audio, play_call, wait_for
from tests.support.fakes import FakeGladia, FakeWebhook

TOKEN = "api-token-for-the-add-on-tests"
TRANSLATE = {"translation": True, "translation_config": {"target_languages": ["fr", "es"]}}
REALTIME = {**TRANSLATE, "named_entity_recognition": True, "sentiment_analysis": True}
ADDON_EVENTS = ("utterance.translation", "utterance.entities", "utterance.sentiment")


def stream_url(server: Any) -> str:
    return str(server.make_url("/twilio/stream"))


def webhook_delivered_once(hook: FakeWebhook) -> list[dict[str, Any]]:
    """Every event reached the bot once (2xx per webhook-id), in sequence order; the events."""
    ok = Counter(r.headers["webhook-id"] for r in hook.requests if r.status < 300)
    events = hook.events()
    assert len(ok) == len(events) and all(n == 1 for n in ok.values())
    assert [e["sequence"] for e in events] == list(range(1, len(events) + 1))
    return events


def linked_after_their_finals(events: list[dict[str, Any]], languages: tuple[str, ...]) -> dict[str, Any]:
    """Each final has, after it, one translation per language, one entities and one sentiment event, on its
    channel and speaker, and nothing else names it; returns the finals by id."""
    finals = {e["utterance"]["id"]: e for e in events if e["type"] == "utterance.final"}
    assert finals
    seen: Counter[tuple[str, str, str]] = Counter()
    for e in events:
        if e["type"] not in ADDON_EVENTS:
            continue
        final = finals[e["utterance_id"]]  # linked to a final the bot has
        assert e["sequence"] > final["sequence"], f"{e['type']} before its final"
        assert (e["channel"], e["speaker"]) == (final["utterance"]["channel"], final["utterance"]["speaker"])
        seen[e["type"], e["utterance_id"], e.get("language", "")] += 1
        if e["type"] == "utterance.translation":
            assert e["text"] == f"[{e['language']}] {final['utterance']['text']}"
            assert e["original_language"] == "en"
        elif e["type"] == "utterance.entities":
            (entity,) = e["entities"]
            assert entity["text"] == " ".join(final["utterance"]["text"].split()[:2])
            # the entity's times are the session's seconds: moved to call time like the final's
            assert (entity["start"], entity["end"]) == (final["utterance"]["start"], final["utterance"]["end"])
        else:
            (result,) = e["results"]
            assert result["text"] == final["utterance"]["text"] and result["sentiment"] == "neutral"
    expected = {("utterance.translation", uid, lang) for uid in finals for lang in languages}
    expected |= {(t, uid, "") for uid in finals for t in ("utterance.entities", "utterance.sentiment")}
    assert set(seen) == expected and set(seen.values()) == {1}
    return finals


@pytest.mark.timeout(90)
async def test_a_two_party_call_gets_every_result_once_after_its_final_across_drops(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    """Both parties, translation to two languages, entities and sentiment; the Gladia socket drops three
    times, once right after a final before its results went out (they are only in GET /v2/live/{id}:
    read back after the call), and on each resume the server repeats the last results it sent (dropped
    as repeats). The transcript API has them too, and txt/vtt show a translation with ?lang=."""
    hook, _ = webhook
    fake_gladia.drops = [(40_000, 1011), (100_000, None)]
    fake_gladia.lose_addons_at = 5
    fake_gladia.repeat_addons_on_resume = True
    caller, other = caller_audio(8.0, seed=31), caller_audio(8.0, seed=32)
    server = await make_bridge(
        {"BRIDGE_API_TOKEN": TOKEN},
        stt__default={"realtime_processing": REALTIME},
    )
    report = await play_tracks(stream_url(server), caller, outbound=other)  # in real time: drops mid-call
    assert report.close_code == 1000
    await wait_for(lambda: bool(hook.events("transcript.completed")), timeout=30)
    (session,) = fake_gladia.sessions.values()
    assert session.connections >= 2 and session.addons_lost and session.addons_repeated
    events = webhook_delivered_once(hook)
    finals = linked_after_their_finals(events, ("fr", "es"))
    assert {f["utterance"]["channel"] for f in finals.values()} == {0, 1}
    # every result the server made reached the bot, those lost with a dropped socket included
    assert session.connections == 4 and len(session.addons_lost) == 4
    assert sum(e["type"] in ADDON_EVENTS for e in events) == len(session.addons_sent) == 4 * len(finals)
    # all before the call's end
    ended = next(e["sequence"] for e in events if e["type"] == "call.ended")
    assert all(e["sequence"] < ended for e in events if e["type"] in ADDON_EVENTS)
    assert "analysis" not in hook.events("transcript.completed")[0]  # no post-call add-on asked for

    call_id = events[0]["call"]["id"]
    auth = {"Authorization": f"Bearer {TOKEN}"}
    base = str(server.make_url(f"/v1/calls/{call_id}/transcript"))
    async with aiohttp.ClientSession(headers=auth) as http:
        async with http.get(base) as resp:
            record = await resp.json()
        async with http.get(base, params={"format": "txt", "lang": "fr"}) as resp:
            txt_fr = await resp.text()
        async with http.get(base, params={"format": "vtt", "lang": "es"}) as resp:
            vtt_es = await resp.text()
        async with http.get(base, params={"format": "txt", "lang": "not a language"}) as resp:
            assert resp.status == 422 and "lang" in (await resp.json())["error"]
    by_id = {u["id"]: u for u in record["utterances"]}
    for uid, final in finals.items():
        text = final["utterance"]["text"]
        assert by_id[uid]["translations"] == {"fr": f"[fr] {text}", "es": f"[es] {text}"}
        assert len(by_id[uid]["entities"]) == 1 and len(by_id[uid]["sentiment"]) == 1
        assert f"[fr] {text}" in txt_fr and f"[es] {text}" in vtt_es
    assert "[es]" not in txt_fr


@pytest.mark.timeout(60)
async def test_a_failed_add_on_is_said_not_crashed_on(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    """Gladia's add-on messages with an error and data null: stt.addon_failed for each (the add-on, its
    error; the final it was about is not said), the finals and the other add-on still delivered."""
    hook, _ = webhook
    fake_gladia.addon_errors = {"translation", "named_entity_recognition"}
    server = await make_bridge(stt__default={"realtime_processing": REALTIME})
    assert await play_call(stream_url(server), caller_audio(3.0)) == 1000
    await wait_for(lambda: bool(hook.events("transcript.completed")), timeout=20)
    events = webhook_delivered_once(hook)
    finals = [e for e in events if e["type"] == "utterance.final"]
    failed = [e for e in events if e["type"] == "stt.addon_failed"]
    assert len(finals) == 3
    assert Counter(e["addon"] for e in failed) == {"translation": 6, "named_entity_recognition": 3}
    assert {e["error"] for e in failed} == {"injected translation failure", "injected named_entity_recognition failure"}
    assert all(e["utterance_id"] is None for e in failed)
    assert len(hook.events("utterance.sentiment")) == 3 and not hook.events("utterance.translation")


@pytest.mark.timeout(60)
async def test_the_summary_over_the_socket(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    """post_processing.summarization: the bridge asks for post-processing messages, and the summary that
    comes over the socket is transcript.completed's analysis (and on record)."""
    hook, _ = webhook
    server = await make_bridge({"BRIDGE_API_TOKEN": TOKEN}, stt__default={"post_processing": {"summarization": True}})
    assert await play_call(stream_url(server), caller_audio(3.0)) == 1000
    await wait_for(lambda: bool(hook.events("transcript.completed")), timeout=20)
    (session,) = fake_gladia.sessions.values()
    assert session.body["messages_config"]["receive_post_processing_events"] is True
    assert [m["type"] for m in session.post_sent][-1] == "post_summarization"
    (completed,) = hook.events("transcript.completed")
    assert completed["analysis"] == {"status": "done", "summary": "Summary of 3 segments"}
    call_id = completed["call"]["id"]
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with (
        aiohttp.ClientSession(headers=auth) as http,
        http.get(f"{server.make_url('/v1/calls')}/{call_id}/transcript") as resp,
    ):
        assert (await resp.json())["analysis"] == completed["analysis"]


@pytest.mark.timeout(60)
async def test_the_summary_is_read_back_after_a_drop_during_post_processing(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    """The socket dies after the last final, before any post-processing message; the session is done
    1.5 s later: call.ended goes out, then transcript.completed with the summary read with GET."""
    hook, _ = webhook
    fake_gladia.drop_before_summary = True
    fake_gladia.summary_delay = 1.5
    server = await make_bridge(stt__default={"post_processing": {"summarization": True}})
    assert await play_call(stream_url(server), caller_audio(3.0)) == 1000
    await wait_for(lambda: bool(hook.events("transcript.completed")), timeout=30)
    (session,) = fake_gladia.sessions.values()
    assert not session.post_sent  # nothing came over the socket
    (completed,) = hook.events("transcript.completed")
    assert completed["analysis"] == {"status": "done", "summary": "Summary of 3 segments"}
    assert [e["type"] for e in webhook_delivered_once(hook)][-2:] == ["call.ended", "transcript.completed"]


@pytest.mark.timeout(60)
async def test_a_summary_that_never_comes_is_a_timeout_after_the_bound(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    """Gladia never finishes post-processing: transcript.completed goes out stt.analysis_timeout after
    call.ended with analysis {"status": "timeout"}; the phone's socket closes without waiting for it."""
    hook, _ = webhook
    fake_gladia.summary_never = True
    server = await make_bridge(
        stt__default={"post_processing": {"summarization": True}},
        stt__analysis_timeout=2.0,
        gladia__finish_timeout=1.0,
    )
    assert await play_call(stream_url(server), caller_audio(2.0)) == 1000
    await wait_for(lambda: bool(hook.events("call.ended")), timeout=20)
    ended_at = time.monotonic()
    assert not hook.events("transcript.completed")  # the socket closed after call.ended, before it
    await wait_for(lambda: bool(hook.events("transcript.completed")), timeout=20)
    waited = time.monotonic() - ended_at
    (completed,) = hook.events("transcript.completed")
    assert completed["analysis"] == {"status": "timeout"}
    assert 1.0 <= waited <= 6.0
    assert len(hook.events("utterance.final")) == 2  # the finals were not held back


@pytest.mark.timeout(60)
async def test_a_call_may_ask_only_for_the_add_ons_the_operator_allows(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    """stt.per_call_addons = ["sentiment_analysis"]: a call's stt.sentiment_analysis is taken, its
    stt.translation refused, logged and said in call.started's stt.refused; Gladia gets what was taken."""
    hook, _ = webhook
    server = await make_bridge(stt__per_call_addons=["sentiment_analysis"])
    parameters = {"From": "+15550001", "To": "+15550002", "stt.sentiment_analysis": "true", "stt.translation": "fr"}
    assert await play_call(stream_url(server), caller_audio(2.0), parameters=parameters) == 1000
    await wait_for(lambda: bool(hook.events("transcript.completed")), timeout=20)
    (started,) = hook.events("call.started")
    assert started["stt"]["refused"] == ["stt.translation: not in stt.per_call_addons"]
    (session,) = fake_gladia.sessions.values()
    assert session.body["realtime_processing"] == {"sentiment_analysis": True}
    assert len(hook.events("utterance.sentiment")) == 2 and not hook.events("utterance.translation")


@pytest.mark.timeout(60)
async def test_a_stopping_bridge_does_not_wait_for_the_analysis(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    """A call waits for a summary that never comes (analysis_timeout 60 s) when the bridge is stopped: the
    drain does not last a minute; transcript.completed goes out at once with {"status": "timeout"}."""
    hook, _ = webhook
    fake_gladia.summary_never = True
    server = await make_bridge(
        stt__default={"post_processing": {"summarization": True}},
        stt__analysis_timeout=60.0,
        gladia__finish_timeout=1.0,
    )
    assert await play_call(stream_url(server), caller_audio(1.0)) == 1000
    await wait_for(lambda: bool(hook.events("call.ended")), timeout=20)
    stopped_at = time.monotonic()
    await server.close()
    assert time.monotonic() - stopped_at < 15
    (completed,) = hook.events("transcript.completed")
    assert completed["analysis"] == {"status": "timeout"}


@pytest.mark.timeout(120)
async def test_the_embedded_engine_refuses_a_calls_add_on_and_says_so(webhook: tuple[FakeWebhook, str]) -> None:
    """bridge serve on its embedded engine, an operator who allows translation per call: a call asking for
    it is refused (the embedded engine does none), said in call.started's stt.refused, and carried on."""
    from tests.support.bridge_process import start_bridge
    from tests.support.process import minimal_env

    hook, hook_url = webhook
    env = minimal_env(BOT_WEBHOOK_URL=hook_url)
    config = Path(env["BRIDGE_DATA_DIR"]) / "bridge.toml"
    config.write_text('[stt]\nper_call_addons = ["translation"]\n')
    env["BRIDGE_CONFIG"] = str(config)
    bridge = await start_bridge(env, startup=90.0)
    try:
        parameters = {"From": "+15550001", "To": "+15550002", "stt.translation": "fr"}
        assert await play_call(f"{bridge.ws}/twilio/stream", caller_audio(1.0), parameters=parameters) == 1000
        await wait_for(lambda: bool(hook.events("transcript.completed")), timeout=30)
    finally:
        await bridge.stop()
    (started,) = hook.events("call.started")
    assert started["stt"]["refused"] == ["stt.translation: the embedded engine does not do translation"]
    (refused,) = bridge.logs("call.stt_parameters_refused")
    assert refused["refused"] == started["stt"]["refused"]
