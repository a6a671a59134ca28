"""Each carrier's word on an outbound call, read into one shape (pure): status callbacks and
answering-machine verdicts in, :class:`DialReport` out.

:func:`read_report` takes one callback's fields as the route decoded them (form fields as a dict of str,
JSON bodies as parsed) and :func:`originate_result` FreeSWITCH's answer to ``originate``. The tables below
say, carrier by carrier and with their sources, which word becomes which status or verdict.

Rules common to every carrier:

* Values are compared trimmed and lower-cased (FreeSWITCH's causes upper-cased).
* A status the carrier documents but that says nothing of the call's fate (Twilio's ``queued``,
  Telnyx's ``call.initiated``, jambonz's ``trying``...) gives no status. A value nobody documents gives
  no status either (the call's state is unchanged as far as the bridge knows); an unknown *verdict*
  where a verdict field is present gives ``answered_by="unknown"`` with the carrier's word kept.
* A callback may carry a status and a verdict together, and both are read: Plivo's machine-detection
  callback says ``CallStatus=in-progress`` beside ``Machine``, jambonz's ``amd`` hook carries the call's
  ``call_status`` (its payload is the call's info merged with the event). A status is the call's state
  when the carrier wrote; carriers repeat themselves (retries, the same state in several callbacks), so
  the caller acts on each change once and on the first verdict.
* Hostile input never raises: a field missing, of the wrong type (a list, a dict, a bool), or not a
  mapping at all counts as absent, so the report is empty. Words kept (``carrier_answered_by``,
  ``detail``) are cut to :data:`MAX_WORD` characters, with characters that do not print replaced by
  ``?``; an id longer than :data:`MAX_ID` or with such characters is dropped (a cut id would name
  another call).
* Rejected is busy: a call the person declines is reported ``busy``, as a busy line is, with the
  carrier's own word in ``detail``. Carriers cannot tell them apart themselves: Vonage says "a call might
  not be completed because the callee was on another line (busy) but it is relayed as rejected by the
  carrier" (https://developer.vonage.com/en/legacy-client-sdk/in-app-voice/concepts/call-statuses),
  and for the bot both mean the same thing, a person who did not take the call now (try later), unlike
  ``failed`` (the number or the network: trying again will not help). How Twilio itself reports a
  declined call (SIP 603) is UNVERIFIED. The transfer's reading (:mod:`bridge.control.dial_status`) takes
  ``rejected`` as ``failed``; there it only decides whether the caller comes back to the bot, which both
  do.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

DialStatus = Literal["ringing", "answered", "completed", "busy", "no-answer", "failed", "canceled"]
AnsweredBy = Literal["human", "machine", "fax", "unknown"]
FAILED_STATUSES = frozenset({"busy", "no-answer", "failed", "canceled"})  # call.failed's status values

MAX_WORD = 64  # characters of a carrier's word kept in carrier_answered_by / detail
MAX_ID = 128  # a carrier's call id longer than this is not one (Twilio's CallSid is 34, uuids 36)
MAX_DETECTION_MS = 3_600_000  # a detection time beyond an hour is not one


@dataclass(frozen=True, slots=True)
class DialReport:
    """What one callback says. Every field is optional: a status callback fills ``status``, an AMD one
    ``answered_by`` (and ``greeting_ended``/``beep`` when the machine's greeting is over)."""

    status: DialStatus | None = None  # None: not a status report (an AMD one, or an event of no interest)
    answered_by: AnsweredBy | None = None
    carrier_answered_by: str = ""  # the carrier's own word: "machine_end_beep", "amd_tone_detected"...
    detection_ms: int | None = None  # how long the carrier's detection took, when it says
    greeting_ended: bool = False  # the machine's greeting is over (a beep, or silence after it): speak now
    beep: bool = False  # ... and it ended with a beep
    carrier_call_id: str = ""  # the carrier's id of the call when the report names it (Plivo's CallUUID...)
    detail: str = ""  # the carrier's cause (hangup cause, SIP status), for the log and call.failed


EMPTY = DialReport()

# An AMD reading: (verdict or None, greeting ended, beep).
_Amd = tuple[AnsweredBy | None, bool, bool]
_UNKNOWN: _Amd = ("unknown", False, False)
_NOTHING: _Amd = (None, False, False)


# --- reading one field -------------------------------------------------------------------------------


def _word(value: object) -> str:
    """A field's value as a short printable word: a str (trimmed) or an int; '' for anything else."""
    if isinstance(value, bool):
        return ""
    if isinstance(value, int):
        # int -> str refuses beyond 4300 digits (ValueError): nothing that long is a word anyway.
        return str(value) if -(10**18) < value < 10**18 else ""
    if not isinstance(value, str):
        return ""
    # Cut before trimming, so a huge value is never scanned whole; a value cut short keeps its trailing
    # characters (no strip after the cut), so "completed" followed by 10 kB of spaces and an "x" is not
    # read as "completed": every table key is shorter than MAX_WORD, and a cut word never equals one.
    window = value[: MAX_WORD * 4]
    cut = window.lstrip()[:MAX_WORD] if len(value) > len(window) else window.strip()[:MAX_WORD]
    return cut if cut.isprintable() else "".join(c if c.isprintable() else "?" for c in cut)


def _key(value: object) -> str:
    """A field's value as a table key: :func:`_word`, lower-cased."""
    return _word(value).lower()


def _call_id(value: object) -> str:
    """A carrier's call id: a printable str of at most :data:`MAX_ID` characters, else ''."""
    if not isinstance(value, str):
        return ""
    text = value.strip() if len(value) <= MAX_ID + 64 else ""
    return text if len(text) <= MAX_ID and text.isprintable() else ""


def _millis(value: object) -> int | None:
    """A duration in ms: a non-negative int, an ASCII digit string or a finite float, at most an hour."""
    if isinstance(value, bool):
        return None
    number: int | None = None
    if isinstance(value, int):
        number = value
    elif isinstance(value, float) and math.isfinite(value):
        number = int(value)
    elif isinstance(value, str) and len(value) <= 32:
        text = value.strip()
        number = int(text) if 0 < len(text) <= 10 and text.isascii() and text.isdigit() else None
    return number if number is not None and 0 <= number <= MAX_DETECTION_MS else None


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _first(data: Mapping[str, Any], *keys: str) -> object:
    """The first of ``keys`` present in ``data`` with a usable word (fallback spellings)."""
    for key in keys:
        value = data.get(key)
        if _word(value):
            return value
    return None


def _joined(*words: str) -> str:
    return "/".join(w for w in words if w)[:MAX_WORD]


# --- Twilio and SignalWire ----------------------------------------------------------------------------

# CallStatus (twilio-python 9.13.0 twilio/rest/api/v2010/account/call/__init__.py CallInstance.Status:
# queued, ringing, in-progress, completed, busy, failed, no-answer, canceled; "initiated" is the status
# callback's first event, StatusCallbackEvent initiated, in the same file's create docstring). SignalWire's
# cXML callbacks are Twilio's (UNVERIFIED beyond the create-call page's StatusCallbackEvent list).
_TWILIO_STATUS: dict[str, DialStatus | None] = {
    "queued": None, "initiated": None, "ringing": "ringing", "in-progress": "answered", "completed": "completed",
    "busy": "busy", "no-answer": "no-answer", "failed": "failed", "canceled": "canceled",
}  # fmt: skip

# AnsweredBy (https://www.twilio.com/docs/voice/answering-machine-detection; the value list is confirmed by
# Telnyx's Twilio-compatible AMD callback, https://developers.telnyx.com/api-reference/callbacks/texml-call-amd,
# not on Twilio's page: UNVERIFIED for Twilio and SignalWire). machine_end_*: only with
# MachineDetection=DetectMessageEnd, "once the end of the greeting is reached, usually indicated by a beep";
# _silence and _other ended without one.
_TWILIO_AMD: dict[str, _Amd] = {
    "human": ("human", False, False),
    "machine_start": ("machine", False, False),
    "machine_end_beep": ("machine", True, True),
    "machine_end_silence": ("machine", True, False),
    "machine_end_other": ("machine", True, False),
    "fax": ("fax", False, False),
    "unknown": _UNKNOWN,
}


def _twilio(data: Mapping[str, Any]) -> DialReport:
    # Status callback fields CallSid, CallStatus; SipResponseCode / ErrorCode when a call fails (field names
    # UNVERIFIED for Twilio: the brief's reading, kept as detail only). AsyncAmdStatusCallback fields
    # CallSid, AnsweredBy, MachineDetectionDuration (ms) (confirmed for Telnyx's clone, UNVERIFIED for Twilio).
    status = _TWILIO_STATUS.get(_key(data.get("CallStatus")))
    said = _word(data.get("AnsweredBy"))
    verdict, ended, beep = _TWILIO_AMD.get(said.lower(), _UNKNOWN) if said else _NOTHING
    return DialReport(
        status=status,
        answered_by=verdict,
        carrier_answered_by=said,
        detection_ms=_millis(data.get("MachineDetectionDuration")) if said else None,
        greeting_ended=ended,
        beep=beep,
        carrier_call_id=_call_id(data.get("CallSid")),
        detail=_word(_first(data, "SipResponseCode", "ErrorCode")),
    )


# --- Telnyx Call Control ------------------------------------------------------------------------------

# Webhook bodies {"data": {"event_type": ..., "payload": {...}}} (telnyx 4.189.0 src/telnyx/types/
# call_*_webhook_event.py: CallHangupWebhookEvent.data is a CallHangup, whose payload holds
# call_control_id, hangup_cause, sip_hangup_cause...).

# call.hangup hangup_cause (types/call_hangup.py: call_rejected, normal_clearing, originator_cancel,
# timeout, time_limit, user_busy, not_found, no_answer, unspecified). normal_clearing: the call was
# answered and ended normally. timeout: "timeout_secs" ran out while ringing (call_dial_params.py). The
# rest (time_limit, not_found, unspecified, undocumented ones) is failed.
_TELNYX_HANGUP: dict[str, DialStatus] = {
    "normal_clearing": "completed", "user_busy": "busy", "timeout": "no-answer", "no_answer": "no-answer",
    "originator_cancel": "canceled",
    "call_rejected": "busy",  # rejected is busy: see the module's docstring
}  # fmt: skip

# call.machine.detection.ended result (types/call_machine_detection_ended.py: human, machine, not_sure).
_TELNYX_DETECTION: dict[str, _Amd] = {
    "human": ("human", False, False),
    "machine": ("machine", False, False),
    "not_sure": _UNKNOWN,
}

# call.machine.premium.detection.ended result (types/call_machine_premium_detection_ended.py:
# human_residence, human_business, machine, silence, fax_detected, not_sure).
_TELNYX_PREMIUM_DETECTION: dict[str, _Amd] = {
    "human_residence": ("human", False, False),
    "human_business": ("human", False, False),
    "machine": ("machine", False, False),
    "fax_detected": ("fax", False, False),
    "silence": _UNKNOWN,
    "not_sure": _UNKNOWN,
}

# call.machine.greeting.ended result (types/call_machine_greeting_ended.py: beep_detected, ended,
# not_sure) and call.machine.premium.greeting.ended (types/call_machine_premium_greeting_ended.py:
# beep_detected, no_beep_detected, prompt_ended). The verdict came with the detection event; these only
# say the greeting is over. not_sure is taken as over, without a beep: the event is the end of the
# greeting's analysis and nothing later would tell the bot to speak (which of "over but no beep heard" or
# "analysis gave up mid-greeting" Telnyx means is UNVERIFIED; the bridge's own beep detector is the second
# opinion). prompt_ended "is only sent when answering_machine_detection is
# premium_ios_call_screening_detection and the iOS call-screening prompt ends without a beep": a
# screening prompt, not a voicemail greeting (a person may still pick up), so no greeting end.
_TELNYX_GREETING: dict[str, _Amd] = {
    "beep_detected": (None, True, True),
    "ended": (None, True, False),
    "not_sure": (None, True, False),
    "no_beep_detected": (None, True, False),
    "prompt_ended": _NOTHING,
}
_GREETING_OTHER: _Amd = (None, True, False)  # an undocumented result of a greeting-ended event: still over

_TELNYX_AMD_EVENTS: dict[str, tuple[dict[str, _Amd], _Amd]] = {
    "call.machine.detection.ended": (_TELNYX_DETECTION, _UNKNOWN),
    "call.machine.premium.detection.ended": (_TELNYX_PREMIUM_DETECTION, _UNKNOWN),
    "call.machine.greeting.ended": (_TELNYX_GREETING, _GREETING_OTHER),
    "call.machine.premium.greeting.ended": (_TELNYX_GREETING, _GREETING_OTHER),
}


def _telnyx(data: Mapping[str, Any]) -> DialReport:
    event = _mapping(data.get("data"))
    kind = _key(event.get("event_type"))
    payload = _mapping(event.get("payload"))
    call_id = _call_id(payload.get("call_control_id"))
    if kind == "call.initiated":
        return DialReport(carrier_call_id=call_id)
    if kind == "call.answered":
        return DialReport(status="answered", carrier_call_id=call_id)
    if kind == "call.hangup":
        cause = _word(payload.get("hangup_cause"))
        return DialReport(
            status=_TELNYX_HANGUP.get(cause.lower(), "failed"),  # a hangup is an end, whatever its cause
            carrier_call_id=call_id,
            detail=_joined(cause, _word(payload.get("sip_hangup_cause"))),
        )
    if kind in _TELNYX_AMD_EVENTS:
        table, other = _TELNYX_AMD_EVENTS[kind]
        said = _word(payload.get("result"))
        if not said:
            return EMPTY
        verdict, ended, beep = table.get(said.lower(), other)
        return DialReport(
            answered_by=verdict, carrier_answered_by=said, greeting_ended=ended, beep=beep, carrier_call_id=call_id
        )
    return EMPTY


# --- Plivo --------------------------------------------------------------------------------------------

# ring_url / hangup_url / answer_url CallStatus: ringing, in-progress, completed, busy, no-answer, timeout,
# cancel, failed (https://docs.plivo.com/docs/voice/use-cases/dial-status-reporting; "failed" as a call
# status is the brief's reading of the same list, UNVERIFIED). CallUUID names the call, HangupCause says
# why it ended (hangup_url).
_PLIVO_STATUS: dict[str, DialStatus] = {
    "ringing": "ringing", "in-progress": "answered", "completed": "completed", "busy": "busy",
    "no-answer": "no-answer", "timeout": "no-answer", "cancel": "canceled", "failed": "failed",
}  # fmt: skip

# machine_detection_url callback: Machine "true" if a machine answered (so "false": a person); also
# CallStatus=in-progress, Event=MachineDetection, CallUUID (https://docs.plivo.com/docs/voice/api/call/
# machine-detection). Plivo documents no greeting end or beep: voicemail drop timing is the bridge's own.
_PLIVO_MACHINE: dict[str, _Amd] = {"true": ("machine", False, False), "false": ("human", False, False)}


def _plivo(data: Mapping[str, Any]) -> DialReport:
    machine = _word(data.get("Machine"))
    verdict, _, _ = _PLIVO_MACHINE.get(machine.lower(), _UNKNOWN) if machine else _NOTHING
    return DialReport(
        status=_PLIVO_STATUS.get(_key(data.get("CallStatus"))),
        answered_by=verdict,
        carrier_answered_by=f"Machine={machine}"[:MAX_WORD] if machine else "",
        carrier_call_id=_call_id(data.get("CallUUID")),
        detail=_word(data.get("HangupCause")),
    )


# --- Vonage -------------------------------------------------------------------------------------------

# event_url status (vonage-voice 1.5.1 vonage_voice/models/enums.py CallState: started, ringing, answered,
# machine, completed, busy, cancelled, failed, rejected, timeout, unanswered); "human" and "machine" are
# machine detection's results in the same field ("Vonage ... always sends the result to the event webhook
# in the status field", https://developer.vonage.com/en/voice/voice-api/concepts/advanced-machine-detection).
# rejected: "The call attempt was rejected by the destination" (legacy client SDK call-statuses page): busy,
# see the module's docstring. timeout: "The call timed out before it was answered"; unanswered likewise.
_VONAGE_STATUS: dict[str, DialStatus | None] = {
    "started": None, "ringing": "ringing", "answered": "answered", "completed": "completed", "busy": "busy",
    "cancelled": "canceled", "failed": "failed", "rejected": "busy", "timeout": "no-answer", "unanswered": "no-answer",
}  # fmt: skip

# Advanced machine detection's sub_state (same AMD page; Vonage .NET SDK AdvancedMachineDetectionProperties):
# mode detect_beep adds sub_state "beep_start" on a machine event when the beep is heard (the greeting is
# over); "beep_timeout" when beep_timeout expired without one: whether the greeting is over then is not
# said, so greeting_ended stays False and the word is kept ("machine/beep_timeout").
_VONAGE_SUB_STATE: dict[str, tuple[bool, bool]] = {"beep_start": (True, True)}


def _vonage(data: Mapping[str, Any]) -> DialReport:
    # uuid names the leg (webhook reference, https://developer.vonage.com/en/voice/voice-api/webhook-reference).
    # detail: "a more specific status to accompany" status (Vonage Java SDK EventWebhook; the field's name
    # "detail" is UNVERIFIED).
    said = _word(data.get("status"))
    call_id = _call_id(data.get("uuid"))
    kind = said.lower()
    if kind in ("human", "machine"):
        sub_state = _word(data.get("sub_state"))
        ended, beep = _VONAGE_SUB_STATE.get(sub_state.lower(), (False, False)) if kind == "machine" else (False, False)
        return DialReport(
            answered_by="human" if kind == "human" else "machine",
            carrier_answered_by=_joined(said, sub_state),
            greeting_ended=ended,
            beep=beep,
            carrier_call_id=call_id,
        )
    status = _VONAGE_STATUS.get(kind)
    if status is None:
        return DialReport(carrier_call_id=call_id) if kind in _VONAGE_STATUS else EMPTY
    return DialReport(status=status, carrier_call_id=call_id, detail=_word(data.get("detail")))


# --- jambonz ------------------------------------------------------------------------------------------

# call_status_hook: the call's info, keys snake_cased (jambonz-feature-server@389c65e lib/utils/
# http-requestor.js snakeCaseKeys): call_sid, call_status, sip_status. call_status (lib/utils/constants.json
# CallStatus): trying, ringing, early-media, in-progress, queued, failed, busy, no-answer, completed.
# camelCase spellings are read too, as the transfer's reading does (bridge/control/ways.py).
_JAMBONZ_STATUS: dict[str, DialStatus | None] = {
    "trying": None, "queued": None, "ringing": "ringing", "early-media": "ringing", "in-progress": "answered",
    "completed": "completed", "failed": "failed", "busy": "busy", "no-answer": "no-answer",
}  # fmt: skip

# amd actionHook: the call's info merged with the event {type, ...} (lib/tasks/task.js performHook;
# lib/utils/amd-utils.js: reason/greeting/language with human and machine, frequency/variance with the
# tone). type (constants.json AmdEvents). amd_machine_stopped_speaking: the greeting is over
# (greetingCompletionTimeoutMs of silence after it); amd_tone_detected: the beep (mod_avmd). amd_error,
# amd_stopped, amd_tone_timeout say nothing of who answered (the word is kept for the log).
_JAMBONZ_AMD: dict[str, _Amd] = {
    "amd_human_detected": ("human", False, False),
    "amd_machine_detected": ("machine", False, False),
    "amd_no_speech_detected": _UNKNOWN,
    "amd_decision_timeout": _UNKNOWN,
    "amd_machine_stopped_speaking": (None, True, False),
    "amd_tone_detected": (None, True, True),
    "amd_error": _NOTHING,
    "amd_stopped": _NOTHING,
    "amd_tone_timeout": _NOTHING,
}


def _jambonz(data: Mapping[str, Any]) -> DialReport:
    said = _word(data.get("type"))
    verdict, ended, beep = _JAMBONZ_AMD.get(said.lower(), _NOTHING)
    return DialReport(
        status=_JAMBONZ_STATUS.get(_key(_first(data, "call_status", "callStatus"))),
        answered_by=verdict,
        carrier_answered_by=said if said.lower() in _JAMBONZ_AMD else "",
        greeting_ended=ended,
        beep=beep,
        carrier_call_id=_call_id(_first(data, "call_sid", "callSid")),
        detail=_word(_first(data, "sip_status", "sipStatus")),
    )


_READERS = {
    "twilio": _twilio,
    "signalwire": _twilio,
    "telnyx": _telnyx,
    "plivo": _plivo,
    "vonage": _vonage,
    "jambonz": _jambonz,
}


def read_report(carrier: str, data: Mapping[str, Any]) -> DialReport:
    """One callback of ``carrier`` (a dial carrier name: twilio, signalwire, telnyx, plivo, vonage,
    jambonz) read into a :class:`DialReport`; anything unknown or malformed gives an empty report.

    Call it with every status, AMD or event callback the carrier sends for an outbound call, after the
    route has checked its signature; ``data`` is what the route decoded (form fields, or the JSON body).

    Raises:
        ValueError: ``carrier`` has no callbacks (freeswitch, asterisk) or is unknown.
    """
    reader = _READERS.get(carrier)
    if reader is None:
        raise ValueError(f"{carrier!r}: no dial callbacks (FreeSWITCH answers originate: originate_result)")
    if not isinstance(data, Mapping):
        return EMPTY
    return reader(data)


# --- FreeSWITCH ---------------------------------------------------------------------------------------

# Hangup causes originate answers with (-ERR <CAUSE>), per the reference (§8, signalwire/freeswitch@44f78e9
# mod_commands.c ORIGINATE_SYNTAX; causes as in the Q.850 table FreeSWITCH uses). NO_USER_RESPONSE: the far
# end never alerted within the time; NO_ANSWER: it rang out. CALL_REJECTED is busy (module docstring).
_FREESWITCH_CAUSE: dict[str, DialStatus] = {
    "USER_BUSY": "busy", "CALL_REJECTED": "busy", "NO_ANSWER": "no-answer", "NO_USER_RESPONSE": "no-answer",
    "ORIGINATOR_CANCEL": "canceled",
}  # fmt: skip


def originate_result(text: str) -> DialReport:
    """FreeSWITCH's answer to ``api originate`` (``+OK <uuid>`` once answered, ``-ERR USER_BUSY`` ...).

    Call it with the reply (or the ``BACKGROUND_JOB`` body of ``bgapi originate``). ``+OK`` gives
    ``answered`` with the new channel's uuid as ``carrier_call_id``; with ``ignore_early_media=true`` in
    the originate (the reference's recipe) that is the answer, without it early media may count (UNVERIFIED).
    Anything else ends the attempt: its cause mapped (``-ERR USER_BUSY`` busy...), ``failed`` otherwise,
    the cause (or the unexpected text, cut) in ``detail``. Never raises.
    """
    line = text[:512].strip() if isinstance(text, str) else ""
    if line.startswith("+OK"):
        words = line[3:].split(maxsplit=1)
        return DialReport(status="answered", carrier_call_id=_call_id(words[0]) if words else "")
    if line.startswith("-ERR"):
        cause = _word(line[4:]).split(maxsplit=1)
        name = cause[0].upper() if cause else ""
        return DialReport(status=_FREESWITCH_CAUSE.get(name, "failed"), detail=name)
    return DialReport(status="failed", detail=_word(line))
