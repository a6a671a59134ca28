"""Gathering keys end to end on loopback: a Twilio phone pressing keys (Twilio's documented ``dtmf``
message, https://www.twilio.com/docs/voice/media-streams/websocket-messages#dtmf-message), the bridge
with the embedded TTS speaking the prompts, a bot that posts ``gather`` actions over the REST API (and
once in a webhook answer) and receives ``dtmf.gathered``, Gladia faked."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog
from aiohttp.test_utils import TestServer

from bridge.adapters.audiofork import AudioForkAdapter
from bridge.reply.actions import parse_actions
from bridge.reply.call_reply import CallReply
from bridge.settings import ReplySettings
from bridge.tools.phone import TwilioPhone
from tests.support.calls import BridgeFactory, caller_audio, wait_for
from tests.support.fakes import FakeGladia, FakeWebhook

pytestmark = pytest.mark.timeout(60)

TOKEN = "test-api-token-0123456789"
STREAM_SID = "MZ" + "1" * 32
MENU = (
    "For your balance, press one. For your last payments, press two. "
    "To speak to someone about a lost card, press three."
)


def key(digit: str) -> str:
    """A key press as Twilio sends it on the media stream (its documented ``dtmf`` message)."""
    return json.dumps(
        {
            "event": "dtmf",
            "streamSid": STREAM_SID,
            "sequenceNumber": "9999",
            "dtmf": {"track": "inbound_track", "digit": digit},
        }
    )


class Bot:
    """The bot's side: when each event reached it (its webhook), and its REST calls."""

    def __init__(self, hook: FakeWebhook, server: TestServer, http: aiohttp.ClientSession) -> None:
        self.hook, self.server, self.http = hook, server, http
        self.arrivals: list[tuple[str, float, dict[str, Any]]] = []
        self.answer: Callable[[dict[str, Any]], Any] | None = None
        hook.answer = self._heard

    def _heard(self, event: dict[str, Any]) -> Any:
        self.arrivals.append((event["type"], time.monotonic(), event))
        return self.answer(event) if self.answer is not None else None

    def events(self, *types: str) -> list[dict[str, Any]]:
        return [e for t, _, e in self.arrivals if t in types]

    def arrived(self, type_: str, **fields: Any) -> float | None:
        """When the first event of that type with those fields arrived (None: not yet)."""
        for t, at, e in self.arrivals:
            if t == type_ and all(e.get(k) == v for k, v in fields.items()):
                return at
        return None

    def gathered(self) -> list[dict[str, Any]]:
        """The ``dtmf.gathered`` events, without what every event carries (call, sequence, timestamp)."""
        common = ("call", "sequence", "timestamp")
        return [{k: v for k, v in e.items() if k not in common} for e in self.events("dtmf.gathered")]

    def call_dtmf(self) -> list[str]:
        return [e["digit"] for e in self.events("call.dtmf")]

    async def act(self, *actions: dict[str, Any]) -> list[dict[str, Any]]:
        call_id = self.events("call.started")[0]["call"]["id"]
        async with self.http.post(
            self.server.make_url(f"/v1/calls/{call_id}/actions"),
            json={"actions": list(actions)},
            headers={"Authorization": f"Bearer {TOKEN}"},
        ) as resp:
            assert resp.status == 202, await resp.text()
            results: list[dict[str, Any]] = (await resp.json())["actions"]
            return results


async def hold(phone: TwilioPhone, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """The phone streams silence until ``predicate()`` holds (fails the test after ``timeout`` s)."""
    assert await phone.wait(predicate, timeout), "timed out waiting"


async def pause(phone: TwilioPhone, seconds: float) -> None:
    await phone.wait(lambda: False, seconds)


async def bridge(make_bridge: BridgeFactory, fake_gladia: FakeGladia) -> TestServer:
    fake_gladia.segment_seconds = 3600.0  # no transcripts: only keys and the bot's events count
    return await make_bridge({"BRIDGE_API_TOKEN": TOKEN})


def url(server: TestServer) -> str:
    return str(server.make_url("/twilio/stream"))


async def test_num_digits_ends_it_the_first_key_cuts_the_prompt_and_its_keys_are_not_call_dtmf(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    """A gather with a spoken menu: the first key interrupts the menu (reason dtmf), the third key ends
    the gather at once with the three digits; those keys are no call.dtmf events, the next one is."""
    server = await bridge(make_bridge, fake_gladia)
    async with aiohttp.ClientSession() as http:
        bot = Bot(webhook[0], server, http)
        async with TwilioPhone.dial(url(server)) as phone:
            await hold(phone, lambda: bool(bot.events("call.started")))
            gather = {"type": "gather", "id": "menu", "num_digits": 3, "prompt": {"type": "say", "text": MENU}}
            assert await bot.act(gather) == [{"id": "menu", "status": "queued"}]
            await hold(phone, lambda: bot.arrived("playback.started", action_id="menu") is not None)
            await pause(phone, 1.0)
            for digit in "12":
                await phone.send(key(digit))
                await pause(phone, 0.2)
            pressed_at = time.monotonic()
            await phone.send(key("3"))
            await hold(phone, lambda: bool(bot.events("dtmf.gathered")), 5.0)
            gathered_at = bot.arrived("dtmf.gathered")
            await phone.send(key("5"))  # no gather runs: an ordinary key again
            await hold(phone, lambda: bool(bot.events("call.dtmf")) and bool(bot.events("playback.interrupted")))
    assert bot.gathered() == [{"type": "dtmf.gathered", "action_id": "menu", "digits": "123", "reason": "num_digits"}]
    (interrupted,) = bot.events("playback.interrupted")
    assert interrupted["action_id"] == "menu" and interrupted["reason"] == "dtmf"
    assert 0 < interrupted["played_ms"] < 3000 and not bot.events("playback.finished")
    assert bot.call_dtmf() == ["5"]
    # posted at once from the key (target: 50 ms; 2-8 ms measured on loopback), bounded loosely for busy machines
    assert gathered_at is not None and gathered_at - pressed_at < 0.25


async def test_the_finishing_key_ends_it_and_a_waiting_prompt_is_dropped_by_the_first_key(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    """The bot answers call.started with a sentence no key interrupts, then a gather whose prompt waits
    behind it. A key during that sentence: the sentence plays to the end, the prompt never plays
    (interrupted by the key, nothing of it heard); ``#`` ends the gather without being a digit."""
    hook, _ = webhook
    server = await bridge(make_bridge, fake_gladia)
    actions = [
        {"type": "say", "id": "intro", "text": "Welcome to the bridge bank.", "interrupt": "none"},
        {"type": "gather", "id": "acct", "prompt": {"type": "say", "text": "Enter your account number."}},
    ]
    async with aiohttp.ClientSession() as http:
        bot = Bot(hook, server, http)
        bot.answer = lambda e: {"actions": actions} if e["type"] == "call.started" else None
        async with TwilioPhone.dial(url(server)) as phone:
            await hold(phone, lambda: bot.arrived("playback.started", action_id="intro") is not None)
            await pause(phone, 0.3)
            await phone.send(key("4"))
            await hold(phone, lambda: bot.arrived("playback.finished", action_id="intro") is not None)
            for digit in "2#":
                await phone.send(key(digit))
            await hold(phone, lambda: bool(bot.events("dtmf.gathered")), 5.0)
    assert bot.gathered() == [{"type": "dtmf.gathered", "action_id": "acct", "digits": "42", "reason": "finish_on_key"}]
    assert [e["action_id"] for e in bot.events("playback.started")] == ["intro"], [
        (t, round(at - bot.arrivals[0][1], 3), e.get("action_id"), e.get("played_ms")) for t, at, e in bot.arrivals
    ]
    (interrupted,) = bot.events("playback.interrupted")
    assert interrupted["action_id"] == "acct" and interrupted["reason"] == "dtmf" and interrupted["played_ms"] == 0
    assert not bot.call_dtmf()


async def test_timeouts_count_from_the_prompts_end_then_between_keys(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    """No key: the gather ends ``timeout`` once ``timeout_ms`` passed after its prompt played (not after
    it was accepted). A key then silence: it ends ``timeout`` ``inter_digit_timeout_ms`` after the key."""
    server = await bridge(make_bridge, fake_gladia)
    async with aiohttp.ClientSession() as http:
        bot = Bot(webhook[0], server, http)
        async with TwilioPhone.dial(url(server)) as phone:
            await hold(phone, lambda: bool(bot.events("call.started")))
            prompt = {"type": "say", "text": "Please enter your date of birth."}
            await bot.act({"type": "gather", "id": "dob", "num_digits": 8, "timeout_ms": 1000, "prompt": prompt})
            await hold(phone, lambda: bool(bot.events("dtmf.gathered")))
            await bot.act({"type": "gather", "id": "pin", "inter_digit_timeout_ms": 600, "timeout_ms": 20000})
            await pause(phone, 0.2)
            pressed_at = time.monotonic()
            await phone.send(key("1"))
            await hold(phone, lambda: len(bot.events("dtmf.gathered")) == 2)
    assert bot.gathered() == [
        {"type": "dtmf.gathered", "action_id": "dob", "digits": "", "reason": "timeout"},
        {"type": "dtmf.gathered", "action_id": "pin", "digits": "1", "reason": "timeout"},
    ]
    played, timed_out = bot.arrived("playback.finished", action_id="dob"), bot.arrived("dtmf.gathered")
    assert played is not None and timed_out is not None and 0.9 <= timed_out - played < 1.6
    second = bot.arrived("dtmf.gathered", action_id="pin")
    assert second is not None and 0.55 <= second - pressed_at < 1.2
    assert not bot.call_dtmf()


async def test_a_second_gather_replaces_the_first(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    """The first gather ends ``replaced`` with the key it had, before the second one's outcome; the
    second collects the keys that follow."""
    server = await bridge(make_bridge, fake_gladia)
    async with aiohttp.ClientSession() as http:
        bot = Bot(webhook[0], server, http)
        async with TwilioPhone.dial(url(server)) as phone:
            await hold(phone, lambda: bool(bot.events("call.started")))
            await bot.act({"type": "gather", "id": "first", "num_digits": 4})
            await phone.send(key("1"))
            await pause(phone, 0.3)
            await bot.act({"type": "gather", "id": "second", "num_digits": 2})
            for digit in "79":
                await phone.send(key(digit))
            await hold(phone, lambda: len(bot.events("dtmf.gathered")) == 2, 5.0)
    assert bot.gathered() == [
        {"type": "dtmf.gathered", "action_id": "first", "digits": "1", "reason": "replaced"},
        {"type": "dtmf.gathered", "action_id": "second", "digits": "79", "reason": "num_digits"},
    ]
    assert not bot.call_dtmf()


async def test_the_call_ending_ends_it_with_hangup_before_call_ended(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str]
) -> None:
    server = await bridge(make_bridge, fake_gladia)
    async with aiohttp.ClientSession() as http:
        bot = Bot(webhook[0], server, http)
        async with TwilioPhone.dial(url(server)) as phone:
            await hold(phone, lambda: bool(bot.events("call.started")))
            await bot.act({"type": "gather", "id": "g", "num_digits": 6, "timeout_ms": 30000})
            await phone.send(key("5"))
            await pause(phone, 0.3)
        # the phone hung up (Twilio's stop)
        await wait_for(lambda: bool(bot.events("call.ended")))
    assert bot.gathered() == [{"type": "dtmf.gathered", "action_id": "g", "digits": "5", "reason": "hangup"}]
    order = [t for t, _, _ in bot.arrivals]
    assert order.index("dtmf.gathered") < order.index("call.ended")


async def test_a_sensitive_gather_reaches_the_bot_only(
    make_bridge: BridgeFactory, fake_gladia: FakeGladia, webhook: tuple[FakeWebhook, str], tmp_path: Path
) -> None:
    """A PIN: the event says ``sensitive``, no log line and no file under the data directory holds the
    digits, and what the caller sent while the gather ran reached speech-to-text as silence (the audio
    after it as it was)."""
    server = await bridge(make_bridge, fake_gladia)
    during, after = caller_audio(1.0, seed=7), caller_audio(1.0, seed=8)
    async with aiohttp.ClientSession() as http:
        bot = Bot(webhook[0], server, http)
        with structlog.testing.capture_logs() as logs:
            async with TwilioPhone.dial(url(server)) as phone:
                await hold(phone, lambda: bool(bot.events("call.started")))
                await bot.act({"type": "gather", "id": "pin", "sensitive": True, "timeout_ms": 30000})
                await phone.say(during)
                for digit in "7*3#":
                    await phone.send(key(digit))
                await hold(phone, lambda: bool(bot.events("dtmf.gathered")), 5.0)
                await phone.say(after)
            await wait_for(lambda: bool(bot.events("call.ended")))
    assert bot.gathered() == [
        {"type": "dtmf.gathered", "action_id": "pin", "digits": "7*3", "reason": "finish_on_key", "sensitive": True}
    ]
    assert not any("7*3" in repr(line) for line in logs)
    assert any(line["event"] == "reply.gathered" and line.get("keys") == 3 for line in logs)
    for path in (tmp_path / "data").rglob("*"):
        assert not path.is_file() or b"7*3" not in path.read_bytes(), path
    heard = fake_gladia.all_audio()
    assert after[:8000] in heard  # the hush ended with the gather
    frames = [during[i : i + 160] for i in range(0, len(during), 160)]
    assert not any(frame in heard for frame in frames)  # not one frame of what the caller sent meanwhile


# -- the reply on its own (no TTS, no play url allowed) -------------------------------------------


async def _reply() -> tuple[CallReply, list[tuple[str, dict[str, Any]]]]:
    adapter = AudioForkAdapter(default_sample_rate=8000)
    adapter.receive(b"\x00\x00" * 160)
    events: list[tuple[str, dict[str, Any]]] = []

    async def send(message: str | bytes) -> None:
        pass

    reply = CallReply(
        "c1",
        settings=ReplySettings(),
        speaker=None,
        http=None,
        emit=lambda t, p: events.append((t, p)),
        on_hangup=lambda: None,
    )
    reply.attach(adapter, send)
    return reply, events


async def test_a_gather_whose_prompt_cannot_play_is_refused_and_the_running_one_goes_on() -> None:
    reply, events = await _reply()
    try:
        (ok,) = reply.apply(parse_actions({"actions": [{"type": "gather", "id": "g1", "num_digits": 2}]}))
        prompt = {"type": "play", "url": "https://prompts.example.com/menu.wav"}  # not in BRIDGE_PLAY_URL_HOSTS
        prompted = {"type": "gather", "id": "g2", "num_digits": 2, "prompt": prompt}
        (refused,) = reply.apply(parse_actions({"actions": [prompted]}))
        (again,) = reply.apply(parse_actions({"actions": [{"type": "gather", "id": "g1", "num_digits": 3}]}))
        assert ok.status == "queued" and refused.status == "failed" and again.status == "failed"
        assert "BRIDGE_PLAY_URL_HOSTS" in (refused.error or "") and "already used" in (again.error or "")
        assert [reply.caller_key(d) for d in "12"] == [True, True]
        assert reply.caller_key("3") is False  # the gather ended: an ordinary key
    finally:
        await reply.close()
    assert [(t, p.get("action_id")) for t, p in events] == [
        ("action.failed", "g2"),
        ("action.failed", "g1"),
        ("dtmf.gathered", "g1"),
    ]
    assert events[-1][1] == {"action_id": "g1", "digits": "12", "reason": "num_digits"}


async def test_hushed_from_acceptance_to_outcome_only_for_a_sensitive_gather() -> None:
    reply, events = await _reply()
    try:
        reply.apply(parse_actions({"actions": [{"type": "gather", "id": "a", "num_digits": 1}]}))
        assert not reply.hushed
        reply.apply(parse_actions({"actions": [{"type": "gather", "id": "b", "num_digits": 1, "sensitive": True}]}))
        assert reply.hushed
        reply.caller_key("9")
        assert not reply.hushed
        reply.apply(parse_actions({"actions": [{"type": "gather", "id": "c", "sensitive": True}]}))
        await asyncio.sleep(0)
    finally:
        await reply.close()
    assert not reply.hushed
    assert [p for t, p in events if t == "dtmf.gathered"] == [
        {"action_id": "a", "digits": "", "reason": "replaced"},
        {"action_id": "b", "digits": "9", "reason": "num_digits", "sensitive": True},
        {"action_id": "c", "digits": "", "reason": "hangup", "sensitive": True},
    ]


async def test_a_replaced_gathers_prompt_is_dropped() -> None:
    """The menu of a gather that no longer runs is not played: what is left of it ends ``replace``,
    before the gather's own ``replaced``."""
    reply, events = await _reply()
    try:
        menu = {"type": "gather", "id": "a", "num_digits": 1, "prompt": {"type": "say", "text": "Press one."}}
        (first,) = reply.apply(parse_actions({"actions": [menu]}))
        (second,) = reply.apply(parse_actions({"actions": [{"type": "gather", "id": "b", "num_digits": 1}]}))
        assert first.status == second.status == "queued"
    finally:
        await reply.close()
    assert events == [
        ("playback.interrupted", {"action_id": "a", "played_ms": 0, "heard_text": "", "reason": "replace"}),
        ("dtmf.gathered", {"action_id": "a", "digits": "", "reason": "replaced"}),
        ("dtmf.gathered", {"action_id": "b", "digits": "", "reason": "hangup"}),
    ]
