"""How a call carries on in a new stream (pure): the resume token a restarted stream proves itself with,
and what a call brings when another instance hands it over (fleet mode).

``/twilio/voice`` puts the token in the TwiML as the ``bridge.resume`` stream ``<Parameter>``: an HMAC
of the carrier's call id under ``BRIDGE_SECRET``. A new stream whose ``start`` names a suspended call
(same carrier call id) takes it over only with that token, the same number of channels and, when the
carrier says it, the same account: a captured upgrade signature or a known call id is not enough.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bridge.adapters.base import CallStarted
from bridge.untrusted import same_secret

if TYPE_CHECKING:
    from bridge.delivery import PendingEvent
    from bridge.stt.stream import SessionState as SttSessionState

RESUME_PARAMETER = "bridge.resume"  # the stream parameter holding a call's resume token


def resume_token(secret: bytes, carrier: str, call_sid: str) -> str:
    """The proof a restarted stream gives that it belongs to the call: an HMAC of the carrier's call
    id under the bridge's secret (``/twilio/voice`` puts it in the TwiML as a ``<Parameter>``)."""
    return hmac.new(secret, f"{carrier}:{call_sid}".encode(), hashlib.sha256).hexdigest()[:32]


def restart_proven(secret: bytes, started: CallStarted) -> bool:
    """Whether a stream's ``start`` carries the resume token of its carrier call (``bridge.resume``)."""
    if not secret:
        return False
    want = resume_token(secret, started.carrier, started.call_sid)
    return same_secret(started.parameters.get(RESUME_PARAMETER, ""), want)


def restart_accepted(secret: bytes, held: CallStarted, channels: int, started: CallStarted) -> bool:
    """Whether a new stream's ``start`` proves it belongs to a suspended call: ``held`` is the start of
    the call's last stream, ``channels`` those its Gladia session was opened for."""
    if not secret:
        return False
    if (started.carrier, started.call_sid) != (held.carrier, held.call_sid):
        return False
    if started.channels != channels:
        return False  # the Gladia session was opened for the other number of channels
    accounts = (started.account_sid, held.account_sid)
    if None not in accounts and accounts[0] != accounts[1]:
        return False
    return restart_proven(secret, started)


@dataclass(frozen=True, slots=True)
class CarriedCall:
    """What a call brings when another instance hands it over (fleet mode)."""

    call_id: str
    session: SttSessionState | None  # None: the former owner had no Gladia session yet (a new one opens)
    last_sequence: int
    events: list[PendingEvent]  # its events not yet delivered, in order
    streams: int = 1
