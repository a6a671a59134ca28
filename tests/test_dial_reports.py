"""Carriers' outbound-call callbacks read into DialReport (bridge.dial.reports): every documented value of
every carrier on its documented payload (the vendors' SDK types where they exist: telnyx's webhook models
build the Telnyx bodies and must read back our field names, twilio's CallInstance.Status and vonage's
CallState list the values that must all be handled), FreeSWITCH's originate answers, then hostile input:
wrong types, huge and unprintable strings, lists for mappings, and property-based junk that never raises."""

from __future__ import annotations

import json
import string
import typing
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from telnyx.types import (
    CallAnsweredWebhookEvent,
    CallHangupWebhookEvent,
    CallInitiatedWebhookEvent,
    CallMachineDetectionEndedWebhookEvent,
    CallMachineGreetingEndedWebhookEvent,
    CallMachinePremiumDetectionEndedWebhookEvent,
    CallMachinePremiumGreetingEndedWebhookEvent,
)
from telnyx.types.call_hangup import Payload as HangupPayload
from telnyx.types.call_machine_detection_ended import Payload as DetectionPayload
from telnyx.types.call_machine_greeting_ended import Payload as GreetingPayload
from telnyx.types.call_machine_premium_detection_ended import Payload as PremiumDetectionPayload
from telnyx.types.call_machine_premium_greeting_ended import Payload as PremiumGreetingPayload
from twilio.rest.api.v2010.account.call import CallInstance
from vonage_voice.models.enums import CallState

from bridge.dial.reports import FAILED_STATUSES, MAX_WORD, DialReport, originate_result, read_report

CARRIERS = ("twilio", "signalwire", "telnyx", "plivo", "vonage", "jambonz")
CA = "CA5f4c2c8a0e6d4b1f9e3a7b2c1d0e9f8a"  # a Twilio CallSid: CA + 32 hex
TELNYX_ID = "v3:MdI91X4lWFEs7IgbBEOT9M4AigoY08M0WWZFISt1Yw2axZ_IiE4pqg"
UUID = "aaaaaaaa-bbbb-cccc-dddd-0123456789ab"
FS_UUID = "4e3c1f2a-7d1b-4b7e-9d7a-2f6c9b1e0a55"  # FreeSWITCH's origination uuid


def literal_values(model: Any, field: str) -> set[str]:
    """The values a telnyx SDK model's ``Optional[Literal[...]]`` field documents."""
    (literal, _none) = typing.get_args(model.model_fields[field].annotation)
    return set(typing.get_args(literal))


# --- Twilio / SignalWire --------------------------------------------------------------------------------


def twilio_status(status: str, **extra: str) -> dict[str, str]:
    """A status callback as Twilio posts it (form fields; the standard parameters, reference §1.A/§1.B)."""
    return {
        "AccountSid": "AC0123456789abcdef0123456789abcdef",
        "ApiVersion": "2010-04-01",
        "CallSid": CA,
        "CallStatus": status,
        "Direction": "outbound-api",
        "From": "+15550002",
        "To": "+15550142",
        "CallbackSource": "call-progress-events",
        "SequenceNumber": "0",
        "Timestamp": "Sun, 06 Dec 2026 21:00:00 +0000",
        **extra,
    }


def twilio_amd(answered_by: str, duration: str = "2814") -> dict[str, str]:
    """An AsyncAmdStatusCallback: the fields of Telnyx's Twilio-compatible AMD callback (reference §3.B:
    AccountSid, AnsweredBy, CallSid, MachineDetectionDuration)."""
    return {
        "AccountSid": "AC0123456789abcdef0123456789abcdef",
        "AnsweredBy": answered_by,
        "CallSid": CA,
        "MachineDetectionDuration": duration,
    }


TWILIO_STATUSES = {
    "queued": None,
    "initiated": None,
    "ringing": "ringing",
    "in-progress": "answered",
    "completed": "completed",
    "busy": "busy",
    "no-answer": "no-answer",
    "failed": "failed",
    "canceled": "canceled",
}


def test_twilio_status_table_covers_every_status_of_the_sdk() -> None:
    """Every CallInstance.Status of twilio-python has an expected reading in this test's table."""
    sdk = {v for k, v in vars(CallInstance.Status).items() if k.isupper()}
    assert sdk <= set(TWILIO_STATUSES), sdk - set(TWILIO_STATUSES)


@pytest.mark.parametrize("carrier", ["twilio", "signalwire"])
@pytest.mark.parametrize(("status", "expected"), TWILIO_STATUSES.items())
def test_twilio_status_callback(carrier: str, status: str, expected: str | None) -> None:
    """CallStatus maps as documented (queued/initiated: no status) and CallSid names the call."""
    report = read_report(carrier, twilio_status(status))
    assert report == DialReport(status=expected, carrier_call_id=CA)  # type: ignore[arg-type]


def test_twilio_failed_call_keeps_the_sip_response_code() -> None:
    """A failed call's SipResponseCode is its detail; ErrorCode is the fallback."""
    assert read_report("twilio", twilio_status("busy", SipResponseCode="486")).detail == "486"
    assert read_report("twilio", twilio_status("failed", ErrorCode="13224")).detail == "13224"
    both = twilio_status("failed", SipResponseCode="404", ErrorCode="13224")
    assert read_report("twilio", both) == DialReport(status="failed", carrier_call_id=CA, detail="404")


@pytest.mark.parametrize("carrier", ["twilio", "signalwire"])
@pytest.mark.parametrize(
    ("answered_by", "verdict", "ended", "beep"),
    [
        ("human", "human", False, False),
        ("machine_start", "machine", False, False),
        ("machine_end_beep", "machine", True, True),
        ("machine_end_silence", "machine", True, False),
        ("machine_end_other", "machine", True, False),
        ("fax", "fax", False, False),
        ("unknown", "unknown", False, False),
    ],
)
def test_twilio_amd_callback(carrier: str, answered_by: str, verdict: str, ended: bool, beep: bool) -> None:
    """Each of the seven AnsweredBy values (reference §1.B) gives its verdict, greeting end and beep."""
    report = read_report(carrier, twilio_amd(answered_by))
    assert report == DialReport(
        answered_by=verdict,  # type: ignore[arg-type]
        carrier_answered_by=answered_by,
        detection_ms=2814,
        greeting_ended=ended,
        beep=beep,
        carrier_call_id=CA,
    )


def test_twilio_undocumented_answered_by_is_unknown_with_the_word_kept() -> None:
    """An AnsweredBy nobody documents is 'unknown', the carrier's word kept (cut to 64 characters)."""
    report = read_report("signalwire", twilio_amd("machine_partial"))
    assert (report.answered_by, report.carrier_answered_by, report.status) == ("unknown", "machine_partial", None)
    long = read_report("twilio", twilio_amd("x" * 500))
    assert long.answered_by == "unknown" and long.carrier_answered_by == "x" * MAX_WORD


@pytest.mark.parametrize("duration", ["", "abc", "-5", "1e3", "12.5", "²", "99999999999", "3600001"])
def test_twilio_detection_ms_only_when_a_valid_number(duration: str) -> None:
    """MachineDetectionDuration that is not a whole number of ms up to an hour is left out."""
    report = read_report("twilio", twilio_amd("human", duration))
    assert report.answered_by == "human" and report.detection_ms is None


def test_twilio_values_are_trimmed_and_case_insensitive() -> None:
    """' Completed ' and 'MACHINE_END_BEEP' read as their documented spelling; the word is kept as sent."""
    assert read_report("twilio", twilio_status(" Completed ")).status == "completed"
    report = read_report("twilio", twilio_amd("MACHINE_END_BEEP"))
    assert (report.answered_by, report.beep, report.carrier_answered_by) == ("machine", True, "MACHINE_END_BEEP")


def test_twilio_status_callback_that_repeats_answered_by_gives_both() -> None:
    """A callback with CallStatus and AnsweredBy carries both readings (the caller acts on each once)."""
    report = read_report("twilio", {**twilio_status("in-progress"), "AnsweredBy": "human"})
    assert (report.status, report.answered_by) == ("answered", "human")


# --- Telnyx ---------------------------------------------------------------------------------------------


def telnyx_event(model: Any, event_type: str, **payload: str) -> dict[str, Any]:
    """A Call Control webhook body built through the telnyx SDK's webhook model: the SDK must read every
    payload field we name (a wrong name would come back None), and its JSON is what we read."""
    body = {
        "data": {
            "event_type": event_type,
            "id": "0ccc7b54-4df3-4bca-a65a-3da1ecc777f0",
            "occurred_at": "2026-12-06T21:00:00.000000Z",
            "record_type": "event",
            "payload": {"call_control_id": TELNYX_ID, "connection_id": "7267xxxxxxxxxxxxxx", **payload},
        }
    }
    event = model.model_validate(body)
    assert event.data.event_type == event_type
    for name, value in payload.items():
        assert getattr(event.data.payload, name) == value, name
    dumped: dict[str, Any] = json.loads(event.to_json())
    return dumped


def test_telnyx_initiated_names_the_call_without_a_status() -> None:
    """call.initiated gives no status, only the call_control_id."""
    body = telnyx_event(CallInitiatedWebhookEvent, "call.initiated", direction="outgoing", state="bridging")
    assert read_report("telnyx", body) == DialReport(carrier_call_id=TELNYX_ID)


def test_telnyx_answered() -> None:
    """call.answered is answered."""
    body = telnyx_event(CallAnsweredWebhookEvent, "call.answered", state="answered")
    assert read_report("telnyx", body) == DialReport(status="answered", carrier_call_id=TELNYX_ID)


TELNYX_HANGUP = {
    "normal_clearing": "completed",
    "user_busy": "busy",
    "call_rejected": "busy",
    "timeout": "no-answer",
    "no_answer": "no-answer",
    "originator_cancel": "canceled",
    "time_limit": "failed",
    "not_found": "failed",
    "unspecified": "failed",
}


def test_telnyx_hangup_table_covers_every_cause_of_the_sdk() -> None:
    """Every hangup_cause of the SDK's CallHangup payload has an expected reading here."""
    assert literal_values(HangupPayload, "hangup_cause") == set(TELNYX_HANGUP)


@pytest.mark.parametrize(("cause", "expected"), TELNYX_HANGUP.items())
def test_telnyx_hangup(cause: str, expected: str) -> None:
    """call.hangup's hangup_cause maps to the status; detail is the cause and the SIP cause."""
    body = telnyx_event(CallHangupWebhookEvent, "call.hangup", hangup_cause=cause, sip_hangup_cause="486")
    report = read_report("telnyx", body)
    assert report == DialReport(status=expected, carrier_call_id=TELNYX_ID, detail=f"{cause}/486")  # type: ignore[arg-type]


def test_telnyx_hangup_without_a_known_cause_is_failed() -> None:
    """A hangup is an end: no cause, or one the SDK does not list, is failed (detail keeps what came)."""
    bare = telnyx_event(CallHangupWebhookEvent, "call.hangup")
    assert read_report("telnyx", bare) == DialReport(status="failed", carrier_call_id=TELNYX_ID)
    odd = {"data": {"event_type": "call.hangup", "payload": {"hangup_cause": "network_gone"}}}
    assert read_report("telnyx", odd) == DialReport(status="failed", detail="network_gone")


TELNYX_DETECTION = {"human": "human", "machine": "machine", "not_sure": "unknown"}
TELNYX_PREMIUM_DETECTION = {
    "human_residence": "human",
    "human_business": "human",
    "machine": "machine",
    "fax_detected": "fax",
    "silence": "unknown",
    "not_sure": "unknown",
}


def test_telnyx_detection_tables_cover_the_sdk() -> None:
    """The expected readings cover every result the SDK's detection payloads list."""
    assert literal_values(DetectionPayload, "result") == set(TELNYX_DETECTION)
    assert literal_values(PremiumDetectionPayload, "result") == set(TELNYX_PREMIUM_DETECTION)


@pytest.mark.parametrize(("result", "verdict"), TELNYX_DETECTION.items())
def test_telnyx_machine_detection_ended(result: str, verdict: str) -> None:
    """call.machine.detection.ended: human, machine, not_sure as unknown."""
    body = telnyx_event(CallMachineDetectionEndedWebhookEvent, "call.machine.detection.ended", result=result)
    assert read_report("telnyx", body) == DialReport(
        answered_by=verdict,  # type: ignore[arg-type]
        carrier_answered_by=result,
        carrier_call_id=TELNYX_ID,
    )


@pytest.mark.parametrize(("result", "verdict"), TELNYX_PREMIUM_DETECTION.items())
def test_telnyx_premium_detection_ended(result: str, verdict: str) -> None:
    """call.machine.premium.detection.ended: residence/business human, fax_detected fax, silence unknown."""
    body = telnyx_event(
        CallMachinePremiumDetectionEndedWebhookEvent, "call.machine.premium.detection.ended", result=result
    )
    report = read_report("telnyx", body)
    assert (report.answered_by, report.carrier_answered_by, report.status) == (verdict, result, None)
    assert not report.greeting_ended


GREETING = {"beep_detected": (True, True), "ended": (True, False), "not_sure": (True, False)}
PREMIUM_GREETING = {"beep_detected": (True, True), "no_beep_detected": (True, False), "prompt_ended": (False, False)}


def test_telnyx_greeting_tables_cover_the_sdk() -> None:
    """The expected readings cover every result of both greeting-ended payloads of the SDK."""
    assert literal_values(GreetingPayload, "result") == set(GREETING)
    assert literal_values(PremiumGreetingPayload, "result") == set(PREMIUM_GREETING)


@pytest.mark.parametrize(
    ("model", "event_type", "result", "ended", "beep"),
    [(CallMachineGreetingEndedWebhookEvent, "call.machine.greeting.ended", r, e, b) for r, (e, b) in GREETING.items()]
    + [
        (CallMachinePremiumGreetingEndedWebhookEvent, "call.machine.premium.greeting.ended", r, e, b)
        for r, (e, b) in PREMIUM_GREETING.items()
    ],
)
def test_telnyx_greeting_ended(model: Any, event_type: str, result: str, ended: bool, beep: bool) -> None:
    """Greeting ended: beep_detected with a beep, ended/not_sure/no_beep_detected without, and the iOS
    call-screening prompt_ended not a greeting end; no verdict (it came with detection.ended)."""
    report = read_report("telnyx", telnyx_event(model, event_type, result=result))
    assert report == DialReport(carrier_answered_by=result, greeting_ended=ended, beep=beep, carrier_call_id=TELNYX_ID)


def test_telnyx_other_events_and_undocumented_results() -> None:
    """Events of no interest give an empty report; an undocumented detection result is unknown, kept."""
    bridged = {"data": {"event_type": "call.bridged", "payload": {"call_control_id": TELNYX_ID}}}
    assert read_report("telnyx", bridged) == DialReport()
    odd = {"data": {"event_type": "call.machine.detection.ended", "payload": {"result": "robot"}}}
    assert read_report("telnyx", odd) == DialReport(answered_by="unknown", carrier_answered_by="robot")
    no_result = {"data": {"event_type": "call.machine.detection.ended", "payload": {"call_control_id": TELNYX_ID}}}
    assert read_report("telnyx", no_result) == DialReport()


# --- Plivo ----------------------------------------------------------------------------------------------


def plivo_callback(status: str, **extra: str) -> dict[str, str]:
    """A ring_url / hangup_url callback (form fields; CallUUID, CallStatus, HangupCause: reference §4)."""
    return {
        "CallUUID": UUID,
        "CallStatus": status,
        "Direction": "outbound",
        "From": "+15550002",
        "To": "+15550142",
        "RequestUUID": "bbbbbbbb-cccc-dddd-eeee-0123456789ab",
        **extra,
    }


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("ringing", "ringing"),
        ("in-progress", "answered"),
        ("completed", "completed"),
        ("busy", "busy"),
        ("no-answer", "no-answer"),
        ("timeout", "no-answer"),
        ("cancel", "canceled"),
        ("failed", "failed"),
    ],
)
def test_plivo_status_callback(status: str, expected: str) -> None:
    """Plivo's CallStatus values map as documented; CallUUID names the call, HangupCause is the detail."""
    report = read_report("plivo", plivo_callback(status, HangupCause="USER_BUSY"))
    assert report == DialReport(status=expected, carrier_call_id=UUID, detail="USER_BUSY")  # type: ignore[arg-type]


@pytest.mark.parametrize(("machine", "verdict"), [("true", "machine"), ("false", "human"), ("TRUE", "machine")])
def test_plivo_machine_detection_callback(machine: str, verdict: str) -> None:
    """The machine_detection_url callback exactly as documented (reference §4): Machine true/false is the
    verdict; its CallStatus=in-progress reads as answered."""
    body = {
        "From": "+15550002",
        "To": "+15550142",
        "Machine": machine,
        "RequestUUID": "bbbbbbbb-cccc-dddd-eeee-0123456789ab",
        "ALegRequestUUID": "bbbbbbbb-cccc-dddd-eeee-0123456789ab",
        "CallUUID": UUID,
        "IfMachine": "continue",
        "Direction": "outbound",
        "ALegUUID": UUID,
        "Event": "MachineDetection",
        "CallStatus": "in-progress",
    }
    assert read_report("plivo", body) == DialReport(
        status="answered",
        answered_by=verdict,  # type: ignore[arg-type]
        carrier_answered_by=f"Machine={machine}",
        carrier_call_id=UUID,
    )


def test_plivo_odd_machine_value_is_unknown() -> None:
    """A Machine value other than true/false is unknown, kept as Machine=<value>."""
    report = read_report("plivo", {"Machine": "maybe", "CallUUID": UUID})
    assert (report.answered_by, report.carrier_answered_by) == ("unknown", "Machine=maybe")


# --- Vonage ---------------------------------------------------------------------------------------------


def vonage_event(status: str, **extra: str) -> dict[str, Any]:
    """An event_url body (JSON; uuid, conversation_uuid, status, timestamp: webhook reference)."""
    return {
        "from": "447700900000",
        "to": "447700900001",
        "uuid": UUID,
        "conversation_uuid": "CON-aaaaaaaa-bbbb-cccc-dddd-0123456789ab",
        "status": status,
        "direction": "outbound",
        "timestamp": "2026-12-06T21:00:00.000Z",
        **extra,
    }


VONAGE_STATUSES: dict[str, str | None] = {
    "started": None,
    "ringing": "ringing",
    "answered": "answered",
    "completed": "completed",
    "busy": "busy",
    "cancelled": "canceled",
    "failed": "failed",
    "rejected": "busy",
    "timeout": "no-answer",
    "unanswered": "no-answer",
}


def test_vonage_table_covers_every_call_state_of_the_sdk() -> None:
    """Every CallState of vonage-voice is a status here or the machine verdict."""
    assert {s.value for s in CallState} == set(VONAGE_STATUSES) | {"machine"}


@pytest.mark.parametrize(("status", "expected"), VONAGE_STATUSES.items())
def test_vonage_status_event(status: str, expected: str | None) -> None:
    """Vonage's status maps as documented (rejected as busy, timeout/unanswered as no-answer)."""
    report = read_report("vonage", vonage_event(status))
    assert report == DialReport(status=expected, carrier_call_id=UUID)  # type: ignore[arg-type]


def test_vonage_failed_keeps_its_detail() -> None:
    """A failed event's detail field is kept."""
    report = read_report("vonage", vonage_event("failed", detail="invalid_number"))
    assert (report.status, report.detail) == ("failed", "invalid_number")


@pytest.mark.parametrize(
    ("status", "sub_state", "expected"),
    [
        ("human", None, DialReport(answered_by="human", carrier_answered_by="human", carrier_call_id=UUID)),
        ("machine", None, DialReport(answered_by="machine", carrier_answered_by="machine", carrier_call_id=UUID)),
        (
            "machine",
            "beep_start",
            DialReport(
                answered_by="machine",
                carrier_answered_by="machine/beep_start",
                greeting_ended=True,
                beep=True,
                carrier_call_id=UUID,
            ),
        ),
        (
            "machine",
            "beep_timeout",
            DialReport(answered_by="machine", carrier_answered_by="machine/beep_timeout", carrier_call_id=UUID),
        ),
    ],
)
def test_vonage_machine_detection(status: str, sub_state: str | None, expected: DialReport) -> None:
    """human/machine in status are the verdict; sub_state beep_start ends the greeting with a beep,
    beep_timeout leaves the greeting's end unknown (kept in the word)."""
    extra = {"sub_state": sub_state} if sub_state else {}
    assert read_report("vonage", vonage_event(status, **extra)) == expected


def test_vonage_events_of_no_interest_are_empty() -> None:
    """transfer, disconnected and the like give an empty report."""
    assert read_report("vonage", vonage_event("transfer")) == DialReport()
    assert read_report("vonage", vonage_event("disconnected")) == DialReport()


# --- jambonz --------------------------------------------------------------------------------------------


def jambonz_call_info(call_status: str, **extra: Any) -> dict[str, Any]:
    """The call's info as jambonz posts it to call_status_hook (snake_cased keys, reference §7)."""
    return {
        "call_sid": UUID,
        "direction": "outbound",
        "from": "+15550002",
        "to": "+15550142",
        "call_id": "3b2a-sip-call-id",
        "sip_status": 200,
        "call_status": call_status,
        "account_sid": "cccccccc-dddd-eeee-ffff-0123456789ab",
        **extra,
    }


@pytest.mark.parametrize(
    ("status", "sip", "expected"),
    [
        ("trying", 100, None),
        ("ringing", 180, "ringing"),
        ("early-media", 183, "ringing"),
        ("in-progress", 200, "answered"),
        ("completed", 200, "completed"),
        ("failed", 503, "failed"),
        ("busy", 486, "busy"),
        ("no-answer", 487, "no-answer"),
        ("queued", 100, None),
    ],
)
def test_jambonz_call_status_hook(status: str, sip: int, expected: str | None) -> None:
    """call_status maps as documented (constants.json CallStatus); sip_status is the detail."""
    report = read_report("jambonz", jambonz_call_info(status, sip_status=sip))
    assert report == DialReport(status=expected, carrier_call_id=UUID, detail=str(sip))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("event", "verdict", "ended", "beep"),
    [
        ({"type": "amd_human_detected", "reason": "short greeting", "greeting": "hello?"}, "human", False, False),
        ({"type": "amd_machine_detected", "reason": "long greeting", "language": "en-US"}, "machine", False, False),
        ({"type": "amd_no_speech_detected"}, "unknown", False, False),
        ({"type": "amd_decision_timeout"}, "unknown", False, False),
        ({"type": "amd_machine_stopped_speaking"}, None, True, False),
        ({"type": "amd_tone_detected", "frequency": 1004, "variance": 12}, None, True, True),
        ({"type": "amd_error"}, None, False, False),
        ({"type": "amd_stopped"}, None, False, False),
        ({"type": "amd_tone_timeout"}, None, False, False),
    ],
)
def test_jambonz_amd_action_hook(event: dict[str, Any], verdict: str | None, ended: bool, beep: bool) -> None:
    """Each AmdEvents type on the amd actionHook (the call's info merged with the event, as task.js
    performHook sends it); error/stopped/tone_timeout keep only the word."""
    report = read_report("jambonz", jambonz_call_info("in-progress", **event))
    assert report == DialReport(
        status="answered",
        answered_by=verdict,  # type: ignore[arg-type]
        carrier_answered_by=event["type"],
        greeting_ended=ended,
        beep=beep,
        carrier_call_id=UUID,
        detail="200",
    )


def test_jambonz_camel_case_spellings_are_read() -> None:
    """callSid / callStatus / sipStatus (the requestor's camelCase) read as the snake_cased keys."""
    report = read_report("jambonz", {"callSid": UUID, "callStatus": "busy", "sipStatus": 486})
    assert report == DialReport(status="busy", carrier_call_id=UUID, detail="486")


def test_jambonz_unknown_type_is_not_a_verdict() -> None:
    """A type that is not an AmdEvents value gives no verdict and keeps no word."""
    assert read_report("jambonz", {"type": "verb:hook"}) == DialReport()


# --- FreeSWITCH / Asterisk ------------------------------------------------------------------------------


@pytest.mark.parametrize("carrier", ["freeswitch", "asterisk", "exotel", "", "TWILIO"])
def test_carriers_without_callbacks_raise(carrier: str) -> None:
    """FreeSWITCH, Asterisk and names that are no dial carrier are refused with ValueError."""
    with pytest.raises(ValueError):
        read_report(carrier, {"CallStatus": "completed"})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"+OK {FS_UUID}\n", DialReport(status="answered", carrier_call_id=FS_UUID)),
        ("+OK", DialReport(status="answered")),
        ("-ERR USER_BUSY\n", DialReport(status="busy", detail="USER_BUSY")),
        ("-ERR CALL_REJECTED\n", DialReport(status="busy", detail="CALL_REJECTED")),
        ("-ERR NO_ANSWER\n", DialReport(status="no-answer", detail="NO_ANSWER")),
        ("-ERR NO_USER_RESPONSE\n", DialReport(status="no-answer", detail="NO_USER_RESPONSE")),
        ("-ERR ORIGINATOR_CANCEL\n", DialReport(status="canceled", detail="ORIGINATOR_CANCEL")),
        ("-ERR NORMAL_TEMPORARY_FAILURE\n", DialReport(status="failed", detail="NORMAL_TEMPORARY_FAILURE")),
        ("-ERR SUBSCRIBER_ABSENT\n", DialReport(status="failed", detail="SUBSCRIBER_ABSENT")),
        ("-ERR\n", DialReport(status="failed")),
        ("-USAGE: <call url> <exten>", DialReport(status="failed", detail="-USAGE: <call url> <exten>")),
        ("", DialReport(status="failed")),
    ],
)  # fmt: skip
def test_originate_result(text: str, expected: DialReport) -> None:
    """originate's answer: +OK <uuid> answered; -ERR causes mapped (others failed); anything else failed."""
    assert originate_result(text) == expected


def test_originate_result_hostile() -> None:
    """A huge or unprintable answer never raises and keeps at most MAX_WORD printable characters."""
    huge = originate_result("-ERR " + "X" * 5_000_000)
    assert huge.status == "failed" and len(huge.detail) <= MAX_WORD
    odd = originate_result("-ERR \x00\udcff\x1b[31m")
    assert odd.status == "failed" and odd.detail.isprintable()
    assert originate_result("+OK " + "u" * 10_000) == DialReport(status="answered")  # not an id: dropped
    assert originate_result(None) == DialReport(status="failed")  # type: ignore[arg-type]


# --- hostile input --------------------------------------------------------------------------------------

HUGE = "A" * 10_000_000


@pytest.mark.parametrize(
    ("carrier", "data"),
    [
        ("twilio", {"CallStatus": ["completed"], "AnsweredBy": {"x": 1}, "CallSid": 123}),
        ("twilio", {"CallStatus": True, "AnsweredBy": None, "MachineDetectionDuration": "12"}),
        ("twilio", {"CallStatus": HUGE, "CallSid": HUGE}),
        ("signalwire", {"CallStatus": 10**5000}),
        ("telnyx", {"data": ["call.hangup"]}),
        ("telnyx", {"data": {"event_type": ["call.answered"], "payload": {}}}),
        ("telnyx", {"data": {"event_type": "call.answered" * 1000, "payload": {}}}),
        ("telnyx", {"data": {"event_type": "call.machine.detection.ended", "payload": ["human"]}}),
        ("telnyx", {"data": {"event_type": "call.machine.greeting.ended", "payload": {"result": 7.5}}}),
        ("telnyx", {"data": "call.hangup"}),
        ("plivo", {"Machine": ["true"], "CallStatus": {"a": "b"}}),
        ("vonage", {"status": {"human": True}, "uuid": [UUID]}),
        ("vonage", {"status": HUGE}),
        ("jambonz", {"type": ["amd_human_detected"], "call_status": None, "call_sid": {"a": 1}}),
    ],
)
def test_hostile_fields_give_an_empty_report(carrier: str, data: Mapping[str, Any]) -> None:
    """Fields of the wrong type, huge, nested, or not mappings where the body has one, count as absent."""
    assert read_report(carrier, data) == DialReport()


@pytest.mark.parametrize("carrier", CARRIERS)
@pytest.mark.parametrize("data", [[], ["CallStatus", "completed"], "completed", None, 42, b"{}"])
def test_not_a_mapping_gives_an_empty_report(carrier: str, data: Any) -> None:
    """A body that is a list, a string, bytes or nothing at all is an empty report."""
    assert read_report(carrier, data) == DialReport()


def test_huge_word_is_cut_and_never_read_as_a_value() -> None:
    """A 10 MB status next to a good CallSid: no status; a 10 MB AnsweredBy: unknown, the word cut."""
    assert read_report("twilio", twilio_status(HUGE)) == DialReport(carrier_call_id=CA)
    report = read_report("twilio", twilio_amd(HUGE))
    assert report.answered_by == "unknown" and report.carrier_answered_by == "A" * MAX_WORD
    assert read_report("twilio", twilio_status("completed" + " " * 10_000 + "x")).status is None
    assert read_report("twilio", twilio_status("completed" + " " * 60 + "x")).status is None
    assert read_report("twilio", twilio_amd("human" + " " * 300 + "x")).answered_by == "unknown"


def test_unprintable_words_are_replaced_and_ids_dropped() -> None:
    """Control characters and lone surrogates in a kept word become '?'; in an id, the id is dropped."""
    report = read_report("plivo", {"CallStatus": "busy", "HangupCause": "USER\x00BUSY\udcff", "CallUUID": "a\nb"})
    assert report == DialReport(status="busy", detail="USER?BUSY?")
    assert read_report("vonage", vonage_event("answered", uuid="x" * 200)) == DialReport(status="answered")


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=80),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
WORDS = st.sampled_from(
    [
        "completed", "in-progress", "busy", "human", "machine", "machine_end_beep", "call.hangup",
        "call.machine.greeting.ended", "beep_start", "amd_tone_detected", "true", "",
    ]
) | st.text(alphabet=string.printable + "\x00\udcff", max_size=100)  # fmt: skip
FIELDS = [
    "CallStatus", "AnsweredBy", "CallSid", "MachineDetectionDuration", "SipResponseCode", "ErrorCode", "Machine",
    "CallUUID", "HangupCause", "status", "sub_state", "uuid", "detail", "type", "call_status", "call_sid",
    "sip_status", "data",
]  # fmt: skip


def check(report: DialReport) -> None:
    """What every report must be, whatever came in."""
    assert isinstance(report, DialReport)
    assert report.status in (None, "ringing", "answered", "completed", *FAILED_STATUSES)
    assert report.answered_by in (None, "human", "machine", "fax", "unknown")
    for word in (report.carrier_answered_by, report.detail):
        assert isinstance(word, str) and len(word) <= MAX_WORD and word.isprintable()
    assert report.carrier_call_id.isprintable() and len(report.carrier_call_id) <= 128
    assert report.detection_ms is None or 0 <= report.detection_ms <= 3_600_000
    assert not report.beep or report.greeting_ended


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    carrier=st.sampled_from(CARRIERS),
    data=st.dictionaries(st.sampled_from(FIELDS), WORDS | JSON, max_size=8),
    event=st.fixed_dictionaries(
        {"event_type": WORDS | JSON, "payload": st.dictionaries(st.text(max_size=20), WORDS | JSON)}
    ),
)
def test_junk_never_raises(carrier: str, data: dict[str, Any], event: dict[str, Any]) -> None:
    """Any JSON-shaped fields, in any carrier's names, give a well-formed report and never raise."""
    check(read_report(carrier, data))
    check(read_report(carrier, {"data": event}))


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=300) | st.from_regex(r"[+-](OK|ERR)[ A-Z_]{0,40}\n?", fullmatch=True))
def test_originate_junk_never_raises(text: str) -> None:
    """Any answer to originate gives a status (answered only for +OK) and never raises."""
    report = originate_result(text)
    check(report)
    assert report.status is not None and (report.status == "answered") == text.strip().startswith("+OK")
