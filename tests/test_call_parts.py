"""The pure parts of a call, each on its own: resume tokens (bridge.call.resume), bot-event payloads
(bridge.call.payloads), the conversation for transcript.completed (bridge.call.record), the chain that
keeps webhook answers from looping (bridge.call.answers); and a call is what fleet mode holds
(:class:`bridge.call.services.FleetCall`, checked by mypy on a typed assignment)."""

from __future__ import annotations

import inspect
from dataclasses import replace
from typing import Any

import pytest

from bridge.adapters.base import CallStarted
from bridge.audio import ULAW_8K
from bridge.call.answers import MAX_ANSWER_CHAIN, MAX_GENERATIONS_KEPT, AnswerChain
from bridge.call.lifetime import Call
from bridge.call.payloads import call_json, param, started_json, utterance_json, who
from bridge.call.record import MAX_CONVERSATION_CHARS, MAX_CONVERSATION_UTTERANCES, Conversation, transcript_json
from bridge.call.resume import RESUME_PARAMETER, restart_accepted, restart_proven, resume_token
from bridge.call.services import FleetCall
from bridge.stt.notices import FinalUtterance
from bridge.stt.protocol import Utterance, Word

SECRET = b"k" * 32
SID = "CA" + "1" * 32
HELD = CallStarted("twilio", SID, "MZ" + "1" * 32, "AC1", {}, ULAW_8K)
FLEET_HELD: type[FleetCall] = Call  # mypy --strict fails here if a Call stops being what the fleet holds


def test_a_call_has_every_member_the_fleet_asks_for() -> None:
    for name in ("apply_actions", "session_fields", "hand_over", "lost_to_another_instance"):
        assert callable(getattr(FLEET_HELD, name))
    assert inspect.iscoroutinefunction(Call.hand_over)
    assert list(inspect.signature(Call.hand_over).parameters) == ["self"]


# -- resume tokens -----------------------------------------------------------------------------------------


def _restart(**changes: Any) -> CallStarted:
    token = resume_token(SECRET, "twilio", SID)
    return replace(HELD, stream_sid="MZ" + "2" * 32, parameters={RESUME_PARAMETER: token}, **changes)


def test_a_resume_token_is_per_secret_carrier_and_call() -> None:
    token = resume_token(SECRET, "twilio", SID)
    assert len(token) == 32 and token == resume_token(SECRET, "twilio", SID)
    assert token not in {
        resume_token(b"j" * 32, "twilio", SID),
        resume_token(SECRET, "telnyx", SID),
        resume_token(SECRET, "twilio", "CA" + "2" * 32),
    }


@pytest.mark.parametrize(
    ("started", "secret", "accepted"),
    [
        (_restart(), SECRET, True),
        (_restart(account_sid=None), SECRET, True),  # the carrier does not say the account
        (_restart(), b"", False),  # no secret: no restart is ever proven
        (replace(_restart(), parameters={}), SECRET, False),  # no token
        (replace(_restart(), parameters={RESUME_PARAMETER: "0" * 32}), SECRET, False),
        (_restart(account_sid="AC2"), SECRET, False),  # another account
        (_restart(channels=2), SECRET, False),  # the session was opened for one channel
        (replace(_restart(), call_sid="CA" + "2" * 32), SECRET, False),  # another call
    ],
)
def test_a_restart_is_accepted_only_with_its_proof(started: CallStarted, secret: bytes, accepted: bool) -> None:
    assert restart_accepted(secret, HELD, 1, started) is accepted


def test_a_restart_is_proven_by_its_token_alone() -> None:
    assert restart_proven(SECRET, _restart(account_sid="AC2"))
    assert not restart_proven(SECRET, HELD) and not restart_proven(b"", _restart())


# -- payloads ----------------------------------------------------------------------------------------------


def test_the_call_object_says_the_numbers_and_the_parameters_but_not_the_token() -> None:
    started = replace(
        _restart(), caller="+15550001", parameters={"To": "+15550002", "lang": "fr", RESUME_PARAMETER: "x"}
    )
    assert param(started, "from") == "+15550001" and param(started, "to") == "+15550002"
    assert param(started, "missing") is None
    assert call_json("c1", started) == {
        "id": "c1",
        "provider": "twilio",
        "call_sid": SID,
        "stream_sid": "MZ" + "2" * 32,
        "from": "+15550001",
        "to": "+15550002",
        "parameters": {"To": "+15550002", "lang": "fr"},
        "direction": "inbound",
    }
    assert call_json("c1", started, "outbound")["direction"] == "outbound"  # a call the bot placed


def test_call_started_lists_the_speakers_of_the_channels_gladia_gets() -> None:
    payload = started_json({"id": "c1"}, ULAW_8K, ("caller", "agent"), {"transfer": False})
    assert payload["speakers"] == ["caller"] and payload["stt"]["channels"] == 1
    assert started_json({}, replace(ULAW_8K, channels=2), ("caller", "agent"), {})["speakers"] == ["caller", "agent"]


def test_an_utterance_is_on_the_call_clock_with_its_speaker() -> None:
    utt = Utterance(1.0, 2.0, " hello ", "en", 0.9, 1, (Word(" hello", 1.0, 1.5, 0.9),))
    final = FinalUtterance("u1", utt, "s1", call_start=11.0, call_end=12.0)
    out = utterance_json(final, ("caller", "agent"))
    assert (out["text"], out["start"], out["end"], out["speaker"]) == ("hello", 11.0, 12.0, "agent")
    assert out["words"] == [{"word": "hello", "start": 11.0, "end": 11.5, "confidence": 0.9}]
    assert utterance_json(replace(final, utterance=replace(utt, channel=3)), ("a", "b"))["speaker"] == "channel 3"


def test_who_speaks_is_said_only_on_a_call_of_both_parties() -> None:
    assert who(False, ("caller", "agent"), 1) == {}
    assert who(True, ("caller", "agent"), 1) == {"channel": 1, "speaker": "agent"}
    assert who(True, ("caller", "agent"), 2) == {"channel": 2, "speaker": "channel 2"}


# -- the conversation --------------------------------------------------------------------------------------


def _turn(n: int, text: str = "hi", start: float = 0.0, channel: int = 0) -> dict[str, Any]:
    return {"id": f"u{n}", "channel": channel, "speaker": "caller", "start": start, "end": start + 1, "text": text}


def test_the_conversation_is_in_order_of_time_then_channel() -> None:
    conversation = Conversation()
    for turn in (_turn(1, start=2.0), _turn(2, start=1.0, channel=1), _turn(3, start=1.0)):
        assert conversation.add({**turn, "language": "en", "words": []})
    assert [t["id"] for t in conversation.turns()] == ["u3", "u2", "u1"]
    assert set(conversation.turns()[0]) == {"id", "channel", "speaker", "start", "end", "text", "language"}


def test_the_conversation_is_bounded_and_transcript_completed_says_it_is_cut() -> None:
    conversation = Conversation()
    kept = sum(conversation.add({**_turn(n), "language": None}) for n in range(MAX_CONVERSATION_UTTERANCES + 5))
    assert kept == MAX_CONVERSATION_UTTERANCES
    payload = transcript_json({"id": "c1"}, ["caller"], conversation, MAX_CONVERSATION_UTTERANCES + 5, None)
    assert payload["truncated"] and payload["utterances_total"] == MAX_CONVERSATION_UTTERANCES + 5
    by_text = Conversation()
    assert by_text.add({**_turn(1, "x" * MAX_CONVERSATION_CHARS), "language": None})
    assert not by_text.add({**_turn(2, "y"), "language": None})
    assert not transcript_json({}, [], by_text, 1, "/v1/calls/c1/transcript")["truncated"]


# -- the answer chain --------------------------------------------------------------------------------------


def test_what_an_answer_causes_is_one_generation_further() -> None:
    chain = AnswerChain()
    assert chain.of_event("playback.started", "a1") == 0  # the caller's, or time's
    chain.answering = chain.answer_to("msg_1")  # an answer to a generation-0 event
    assert chain.answering == 1 and chain.of_event("playback.started", "a1") == 1
    chain.event_posted("msg_2", 1)
    chain.action_applied("a1", 1)
    chain.answering = None
    assert chain.of_event("action.failed", "a1") == 1  # later, a failure of an action an answer asked for
    assert chain.of_event("playback.finished", "a1") == 0
    assert chain.answer_to("msg_2") == 2 and chain.answer_to("msg_2") == 1  # remembered once


@pytest.mark.parametrize(
    ("type_", "generation", "posted"),
    [
        ("action.failed", 1, True),
        ("action.failed", 2, False),  # a failure caused by the answer to a failure
        ("playback.interrupted", MAX_ANSWER_CHAIN, True),
        ("playback.interrupted", MAX_ANSWER_CHAIN + 1, False),
    ],
)
def test_an_event_too_far_from_the_caller_is_not_posted(type_: str, generation: int, posted: bool) -> None:
    assert AnswerChain.posted(type_, generation) is posted


def test_the_chain_remembers_a_bounded_number_of_events() -> None:
    chain = AnswerChain()
    for n in range(MAX_GENERATIONS_KEPT + 1):
        chain.event_posted(f"msg_{n}", 3)
    assert chain.answer_to("msg_0") == 1  # forgotten: the oldest went first
    assert chain.answer_to(f"msg_{MAX_GENERATIONS_KEPT}") == 4
