"""How a transfer's dial ended, one word for every carrier (pure).

Each carrier reports the end of the dial towards the person in its own vocabulary; the bridge needs
one outcome to decide (answered: the caller is with the person; otherwise return the caller to the bot
or hang up) and to tell the bot (``transfer.completed`` / ``transfer.failed {status}``). Values a
carrier sends that are not listed map to ``failed``: the caller is never left believing someone
answered. Values are compared lower-cased and trimmed.
"""

from __future__ import annotations

from typing import Literal

Outcome = Literal["answered", "busy", "no-answer", "failed", "canceled"]


def _norm(value: str) -> str:
    return value.strip().lower()


# Twilio <Dial action> DialCallStatus (https://www.twilio.com/docs/voice/twiml/dial; the value table is
# UNVERIFIED, the names are those of Call.status in twilio-python@306691e). Also SignalWire cXML and
# Telnyx TeXML, which are Twilio-shaped (UNVERIFIED for both).
_TWILIO: dict[str, Outcome] = {
    "completed": "answered",
    "answered": "answered",
    "busy": "busy",
    "no-answer": "no-answer",
    "failed": "failed",
    "canceled": "canceled",
}


def twilio_outcome(dial_call_status: str) -> Outcome:
    """Twilio's (and SignalWire's, Telnyx TeXML's) ``DialCallStatus``."""
    return _TWILIO.get(_norm(dial_call_status), "failed")


# Plivo <Dial action> DialStatus: completed|busy|failed|timeout|no-answer
# (https://docs.plivo.com/docs/voice/use-cases/dial-status-reporting). "cancel" is a Plivo call status
# (same page); as a DialStatus it is UNVERIFIED.
_PLIVO: dict[str, Outcome] = {
    "completed": "answered",
    "busy": "busy",
    "failed": "failed",
    "timeout": "no-answer",
    "no-answer": "no-answer",
    "cancel": "canceled",
}


def plivo_outcome(dial_status: str) -> Outcome:
    """Plivo's ``DialStatus``."""
    return _PLIVO.get(_norm(dial_status), "failed")


# Vonage connect eventUrl status (vonage-python-sdk@b308cb1 voice/src/vonage_voice/models/enums.py
# CallState: started, ringing, answered, machine, completed, busy, cancelled, failed, rejected, timeout,
# unanswered). Which of them end a synchronous connect's dial is UNVERIFIED beyond the SDK's docstring.
_VONAGE: dict[str, Outcome] = {
    "answered": "answered",
    "completed": "answered",
    "busy": "busy",
    "timeout": "no-answer",
    "unanswered": "no-answer",
    "rejected": "failed",
    "failed": "failed",
    "cancelled": "canceled",
}


def vonage_outcome(status: str) -> Outcome:
    """Vonage's ``status`` on the connect's event URL."""
    return _VONAGE.get(_norm(status), "failed")


# jambonz dial actionHook dial_call_status (jambonz-feature-server@389c65e lib/tasks/dial.js;
# values from lib/utils/constants.json CallStatus: trying, ringing, early-media, in-progress, queued,
# failed, busy, no-answer, completed). "in-progress" when the hook fires while the person is still on
# the line is UNVERIFIED; taken as answered.
_JAMBONZ: dict[str, Outcome] = {
    "completed": "answered",
    "in-progress": "answered",
    "busy": "busy",
    "no-answer": "no-answer",
    "failed": "failed",
}


def jambonz_outcome(dial_call_status: str) -> Outcome:
    """jambonz's ``dial_call_status``."""
    return _JAMBONZ.get(_norm(dial_call_status), "failed")


# Telnyx call.hangup hangup_cause (telnyx-python@6d68c8c src/telnyx/types/call_hangup.py: call_rejected,
# normal_clearing, originator_cancel, timeout, time_limit, user_busy, not_found, no_answer, unspecified).
# Once call.bridged has come, the person answered and was connected: however that leg ends later
# (normal_clearing mostly, time_limit, unspecified), the transfer was answered. Before a bridge,
# normal_clearing is a dial that ended without one (UNVERIFIED when exactly Telnyx sends it), so failed.
_TELNYX: dict[str, Outcome] = {
    "user_busy": "busy",
    "timeout": "no-answer",
    "no_answer": "no-answer",
    "originator_cancel": "canceled",
}


def telnyx_outcome(hangup_cause: str, bridged: bool) -> Outcome:
    """Telnyx Call Control's ``hangup_cause`` of the transfer's other leg; ``bridged``: whether a
    ``call.bridged`` came first (the person answered and was connected)."""
    if bridged:
        return "answered"
    return _TELNYX.get(_norm(hangup_cause), "failed")
