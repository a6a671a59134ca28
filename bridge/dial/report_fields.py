"""A carrier's report on an outbound call as text fields, and back (pure): how a callback that reached
one process travels to the one placing the call (``--workers``: a sibling's internal socket; fleet mode:
the call's action stream in Redis), and how what the carrier said before a hand-over travels with the call.
"""

from __future__ import annotations

from collections.abc import Mapping

from bridge.dial.reports import AnsweredBy, DialReport, DialStatus

DIAL_STATUSES: tuple[str, ...] = DialStatus.__args__  # type: ignore[attr-defined]
ANSWERED_BY: tuple[str, ...] = AnsweredBy.__args__  # type: ignore[attr-defined]


def report_fields(report: DialReport) -> dict[str, str]:
    """A carrier's report as text fields, to travel to the process placing the call (``--workers``)."""
    fields = {
        "status": report.status or "",
        "answered_by": report.answered_by or "",
        "carrier_answered_by": report.carrier_answered_by,
        "detection_ms": "" if report.detection_ms is None else str(report.detection_ms),
        "greeting_ended": "1" if report.greeting_ended else "",
        "beep": "1" if report.beep else "",
        "carrier_call_id": report.carrier_call_id,
        "detail": report.detail,
    }
    return {k: v for k, v in fields.items() if v}


def report_from_fields(fields: Mapping[str, str]) -> DialReport | None:
    """:func:`report_fields` read back (None: not a report this bridge could have sent)."""
    status, answered_by = fields.get("status") or None, fields.get("answered_by") or None
    detection = fields.get("detection_ms", "")
    if status not in (None, *DIAL_STATUSES) or answered_by not in (None, *ANSWERED_BY):
        return None
    return DialReport(
        status=status,  # type: ignore[arg-type]
        answered_by=answered_by,  # type: ignore[arg-type]
        carrier_answered_by=fields.get("carrier_answered_by", "")[:64],
        detection_ms=int(detection) if detection.isdigit() and len(detection) < 9 else None,
        greeting_ended=fields.get("greeting_ended") == "1",
        beep=fields.get("beep") == "1",
        carrier_call_id=fields.get("carrier_call_id", "")[:128],
        detail=fields.get("detail", "")[:200],
    )
