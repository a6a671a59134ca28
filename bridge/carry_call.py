"""The call a phone stream carries, start to end: wait for the carrier's ``start``, take the suspended
call it restarts (or, in fleet mode, adopt the one another instance held; under ``--workers``, relay
the stream to the worker where its call waits) or begin a new one, run it, then end it or keep it
suspended for a restarted stream.

The HTTP edge (:func:`bridge.http.phone.phone_stream`) accepts the socket and hands it here with what
the application holds: the call registry, the calls' services, the metrics and the fleet (if any).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Protocol

import structlog

from bridge.call.analysis_wait import until_set
from bridge.call.lifetime import Call
from bridge.call.resume import CarriedCall, restart_proven
from bridge.delivery import stored_event
from bridge.dialing import OUTBOUND_LEASE, Elsewhere
from bridge.phone_stream import CallResult
from bridge.stt.stream import SessionState as SttSessionState

if TYPE_CHECKING:
    from bridge.adapters.base import CallStarted
    from bridge.call.registry import CallRegistry
    from bridge.call.services import CallServices
    from bridge.dialing import Dialer, OutboundCall
    from bridge.fleet.fleet import Fleet
    from bridge.fleet.handover import Adopted
    from bridge.metrics import Metrics
    from bridge.phone_connection import PhoneConnection
    from bridge.phone_stream import PhoneStream
    from bridge.stats import CallStats

log = structlog.get_logger("bridge.phone")


class StreamRelay(Protocol):
    """Under ``--workers`` (:class:`bridge.sibling_relay.SiblingRelay`): a restarted stream whose call
    waits in a sibling worker is carried there."""

    def record(self, messages: AsyncIterator[str | bytes]) -> AsyncIterator[str | bytes]:
        """The messages read until ``start``, kept to be replayed to the sibling."""
        ...

    async def relay(self, started: CallStarted) -> CallResult | None:
        """Carry the stream to the sibling holding its call; how it ended (None: no sibling has it)."""
        ...

    async def relay_outbound(self, call_id: str) -> CallResult | None:
        """Carry an outbound call's stream to the sibling placing it (None: no sibling is)."""
        ...


async def carry_call(
    stream: PhoneStream,
    messages: PhoneConnection,
    calls: CallRegistry,
    services: CallServices,
    metrics: Metrics,
    fleet: Fleet | None,
    relay: StreamRelay | None = None,
    dialer: Dialer | None = None,
    claim: str | None = None,
) -> CallResult:
    """One stream, start to end: wait for ``start``, take the call it restarts or begin a new one, run
    it, then end the call or keep it suspended for a restart. Returns how the stream ended. ``relay``
    (``--workers``): a restart of a call that waits in a sibling worker is carried there instead.
    ``dialer``: the calls the bot ordered; a stream whose ``start`` (or ``claim``, the stream URL's
    ``?outbound=``) claims one of them carries that call (same id, its events so far)."""
    settings = services.settings
    start = await stream.wait_for_start(relay.record(messages) if relay is not None else messages)
    if isinstance(start, CallResult):
        return start
    started = start.started
    suspended = calls.suspended
    key = (started.carrier, started.call_sid)
    outbound = dialer.claim(started, claim) if dialer is not None else None
    if isinstance(outbound, Elsewhere) and relay is not None and fleet is None:
        relayed = await relay.relay_outbound(outbound.call_id)  # --workers: the worker placing it has it
        if relayed is not None:
            return relayed
    if isinstance(outbound, Elsewhere) and fleet is not None and dialer is not None:
        outbound = await _adopt_outbound(fleet, dialer, started, claim, outbound.call_id)
    if isinstance(outbound, Elsewhere):
        outbound = f"outbound call {outbound.call_id} is not being placed here"
    if isinstance(outbound, str):
        log.warning("dial.claim_refused", call_sid=started.call_sid, detail=outbound)
        return CallResult("protocol_error", 1008, outbound[:100])
    call = suspended.take(key, started) if outbound is None else None
    if call is None and relay is not None and fleet is None and restart_proven(services.resume_secret, started):
        relayed = await relay.relay(started)  # its call waits in another worker (a drop, a transfer's return)
        if relayed is not None:
            return relayed
    if call is None:
        if suspended.waiting(key):
            log.warning(
                "call.restart_refused",
                call_sid=started.call_sid,
                waiting=suspended.waiting(key),
                detail="a stream names a suspended call without its resume token (bridge.resume) or "
                "from another account: started as a call of its own",
            )
        carried = None
        if fleet is not None and restart_proven(services.resume_secret, started):
            # A restarted stream whose call another instance holds (or held): carry it on here.
            adopted = await fleet.adopt(started.carrier, started.call_sid, channels=started.channels)
            if adopted is not None:
                carried = _carried(adopted)
        if outbound is not None and dialer is not None:
            call = Call.begin(dialer.started_for(outbound, started), services, stream, outbound=outbound)
            outbound.call = call
        elif carried is not None:
            call = Call.carry_on(started, carried, services)
        else:
            call = Call.begin(started, services, stream)
        if fleet is not None:  # this instance holds the carrier socket: it owns the call (an adopted one too)
            if outbound is None:
                fleet.own(call, started.carrier, started.call_sid)
            elif not fleet.rebind(call, started.carrier, started.call_sid):  # the lease it was placed under
                log.warning("fleet.outbound_lease_lost", call_id=call.id)

        def ended(call_id: str, stats: CallStats) -> None:
            calls.call_ended(call_id)
            metrics.call_ended(call_id, stats)
            if fleet is not None:
                fleet.call_over(call_id)
            if dialer is not None:
                dialer.call_over(call_id)

        call.on_ended = ended
    call.attach(stream)
    calls.live[call.id] = call
    result = stream.end_without_stop  # also what a cancelled handler (the peer vanished) means
    try:
        result = await call.run(stream, messages, start.rest)
    except Exception:  # top of the stream's task: a bug must end this call only, and say so
        log.exception("call.crashed", call_id=call.id)
        result = CallResult("internal_error", 1011, "internal error")
    finally:
        # Whatever happened (cancellation included), the call is either waiting for a restart or ended.
        calls.live.pop(call.id, None)
        grace = settings.server.stream_restart_grace
        transferring = call.transfer.waits() if result.reason != "protocol_error" else None
        if transferring is not None and not suspended.closed:
            # the caller is with the carrier, ringing the person: back here if nobody answers
            log.info("call.transferring", waiting_for_return=transferring)
            suspended.suspend(call, key, transferring, expired="transferred")
        elif result.reason == "socket_closed" and grace > 0 and not suspended.closed:
            log.info("call.stream_lost", waiting_for_restart=grace)
            suspended.suspend(call, key, grace)
        else:
            # The end of a call (last finals, call.ended) runs as its own task, shielded: it completes
            # even if the server cancels the handler when the phone hangs up. The socket waits for
            # call.ended, not for a transcript.completed that waits for Gladia's post-call analysis.
            end = asyncio.create_task(call.end(result), name=f"call-end-{call.id}")
            suspended.track(end)
            await asyncio.shield(until_set(call.ended_posted, end))
    return result


async def _adopt_outbound(
    fleet: Fleet, dialer: Dialer, started: CallStarted, claim: str | None, call_id: str
) -> OutboundCall | str | None:
    """Fleet mode: the stream of an outbound call another instance placed: adopt the call (its order, its
    event sequence, its undelivered events), then claim it here."""
    adopted = await fleet.adopt(OUTBOUND_LEASE, call_id, channels=started.channels)
    if adopted is None:
        return f"outbound call {call_id} could not be taken over"
    carried = _carried(adopted)
    if dialer.adopt(call_id, adopted.record, (carried.last_sequence, carried.events)) is None:
        return f"outbound call {call_id}: its record is not an outbound call's"
    claimed = dialer.claim(started, claim)
    return claimed if not isinstance(claimed, Elsewhere) else f"outbound call {call_id} could not be claimed"


def _carried(adopted: Adopted) -> CarriedCall:
    """What an adopted call brings (fleet mode): its Gladia session, sequence and undelivered events."""
    record = adopted.record
    events = [stored_event(adopted.call_id, entry_id, fields) for entry_id, fields in adopted.events]
    return CarriedCall(
        adopted.call_id,
        SttSessionState.from_fields(record),
        int(record.get("last_sequence") or 0),
        events,
        streams=int(record.get("streams") or 1),
    )
