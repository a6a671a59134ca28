"""Vonage NCCOs for a transfer (pure), as JSON-able lists.

The bridge moves the caller's leg with ``PUT /v1/calls/{uuid}`` ``{"action": "transfer", "destination":
{"type": "ncco", "ncco": [...]}}`` (Vonage/vonage-python-sdk@b308cb1 ``voice/src/vonage_voice/voice.py``
``transfer_call_ncco``). The NCCO is one ``connect`` (``voice/src/vonage_voice/models/ncco.py``):

- ``endpoint``: ``phone`` (``number`` without "+", as the SDK's ``PhoneNumber`` pattern
  ``^[1-9]\\d{6,14}$`` demands) whose ``onAnswer.url`` serves an NCCO run on the answering person before
  they join the caller: the briefing (:func:`announce_ncco`, a ``stream`` of the bridge's audio); or
  ``sip`` (``uri``), which has no ``onAnswer`` in the SDK's model, so no briefing there (UNVERIFIED
  either way: :func:`can_announce` says no and :func:`transfer_ncco` refuses rather than drop it);
- ``eventType: "synchronous"``: the ``eventUrl`` may answer the dial's end (``unanswered``, ``busy``,
  ``timeout``, ``failed``, ``rejected``) with a new NCCO, which is how the caller returns to the bot
  (:func:`return_ncco`, a ``connect`` to the bridge's WebSocket again);
- ``from`` (the caller id shown) or, without one, ``randomFromNumber``: the SDK requires one of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bridge.control.allow import destination


def can_announce(to: str) -> bool:
    """Whether Vonage documents a briefing for a transfer to ``to`` (phone endpoints only).

    Raises:
        ValueError: ``to`` is neither an E.164 number nor a SIP URI.
    """
    return destination(to) == "number"


def _from(from_number: str | None) -> dict[str, Any]:
    return {"from": from_number.removeprefix("+")} if from_number else {"randomFromNumber": True}


def transfer_ncco(
    to: str,
    *,
    from_number: str | None,
    ring_timeout_s: int,
    event_url: str,
    announce_url: str | None,
) -> list[dict[str, Any]]:
    """Connect the caller to ``to`` (E.164 or SIP URI), ringing ``ring_timeout_s`` seconds; events,
    and the chance to answer the dial's end with an NCCO, go to ``event_url``.

    Raises:
        ValueError: ``to`` is neither an E.164 number nor a SIP URI, or a briefing (``announce_url``)
            is asked for a SIP endpoint, which Vonage does not document.
    """
    endpoint: dict[str, Any]
    if destination(to) == "sip":
        if announce_url:
            raise ValueError("Vonage documents no briefing (onAnswer) for SIP endpoints")
        endpoint = {"type": "sip", "uri": to}
    else:
        endpoint = {"type": "phone", "number": to.removeprefix("+")}
        if announce_url:
            endpoint["onAnswer"] = {"url": announce_url}
    connect: dict[str, Any] = {
        "action": "connect",
        **_from(from_number),
        "timeout": int(ring_timeout_s),
        "eventType": "synchronous",
        "eventUrl": [event_url],
        "endpoint": [endpoint],
    }
    return [connect]


def announce_ncco(audio_url: str) -> list[dict[str, Any]]:
    """The briefing run on the answering person's leg before the caller joins: the bridge's audio."""
    return [{"action": "stream", "streamUrl": [audio_url]}]


def return_ncco(
    ws_uri: str, *, content_type: str, headers: Mapping[str, str], from_number: str | None = None
) -> list[dict[str, Any]]:
    """The caller back to the bot: a ``connect`` to the bridge's WebSocket, ``headers`` arriving in
    the ``websocket:connected`` message. ``content_type`` is ``audio/l16;rate=8000|16000|24000``.

    Pass ``from_number`` (the Vonage number the call reached): the SDK's model demands ``from`` or
    ``randomFromNumber`` on every connect; whether the API itself needs one on a websocket connect is
    UNVERIFIED, and with ``from`` both readings hold. Without it neither key is sent (no random number
    is picked for a leg to the bridge). The bridge passes the transfer's caller id, a number of the
    application, when the bot gave one."""
    endpoint = {"type": "websocket", "uri": ws_uri, "content-type": content_type, "headers": dict(headers)}
    caller = {"from": from_number.removeprefix("+")} if from_number else {}
    return [{"action": "connect", **caller, "endpoint": [endpoint]}]
