"""The calls this process is placing (``app[DIALER]``): orders in, carriers' words in, streams claimed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web
from pydantic import ValidationError

from bridge.adapters.base import CallStarted
from bridge.dial.links import DialLinks
from bridge.dial.order import OUTBOUND_PARAMETER, STREAM_ROUTE, DialError, DialOrder, claim_token, read_claim
from bridge.dial.report_fields import report_fields, report_from_fields
from bridge.dial.reports import FAILED_STATUSES, DialReport
from bridge.dialing.outbound_call import (
    CREATE_TIMEOUT,
    Elsewhere,
    OutboundCall,
    call_object,
    create_at_carrier,
    end_at_carrier,
    not_yet,
)
from bridge.reply.actions import Hangup
from bridge.reply.bot_socket import BotSocket
from bridge.reply.tts import sentences

if TYPE_CHECKING:
    from bridge.call.services import CallServices
    from bridge.fleet.fleet import Fleet

log = structlog.get_logger("bridge.dial")

MAX_REMEMBERED = 10_000  # outbound calls remembered after their end (late callbacks, DELETE, repeats)
MAX_EARLY_REPORTS = 8  # carrier reports kept for a call whose stream has not arrived yet
OUTBOUND_LEASE = "outbound"  # fleet mode: a ringing call's lease is keyed ("outbound", call id)
DIAL_WORD = "dial"  # fleet mode: a carrier's report routed to the owner (bridge.transfer_reach's channel)
END_WORD = "dial_end"  # ... and the bot's DELETE


class Dialer:
    """The outbound calls of this process (see :mod:`bridge.dialing`)."""

    def __init__(
        self,
        services: CallServices,
        *,
        call_ended: Callable[[str], None],
        publish: Callable[[str, int, str, str], None] | None = None,
        fleet: Fleet | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``call_ended(call_id)``: a call that never got a stream is over (the registry answers 409
        for it from then on); ``publish(call_id, sequence, type, body)``: the live event tap; ``fleet``:
        fleet mode, where the instance placing a call owns it until its stream lands."""
        self.services = services
        self.settings = services.settings
        self._call_ended = call_ended
        self.publish = publish
        self.fleet = fleet
        self._clock = clock
        self.calls: OrderedDict[str, OutboundCall] = OrderedDict()
        self._keys: OrderedDict[str, dict[str, Any]] = OrderedDict()  # Idempotency-Key -> the 201 answer
        self._closed = False

    # -- the order -----------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        return sum(1 for c in self.calls.values() if c.pending)

    def repeat(self, key: str) -> dict[str, Any] | None:
        """The first answer to an order with this ``Idempotency-Key`` (None: a new order)."""
        return self._keys.get(key)

    def place(
        self, order: DialOrder, *, base: str, stream_url: str, key: str | None = None, call_id: str | None = None
    ) -> dict[str, Any]:
        """Accept ``order``: the call's id, its delivery and, in a task, the carrier's create request.
        ``base``: the bridge's public http(s) URL; ``stream_url``: the ws(s) URL of the carrier's stream
        route (with its stream token); ``call_id``: a keyed order's id (:func:`bridge.dial.order.keyed_call_id`).
        Returns the ``201`` body.

        Raises:
            DialError: 429 when ``outbound.max_pending`` calls are being placed already; 503 shutting down.
        """
        if self._closed:
            raise DialError(503, "the bridge is shutting down")
        if call_id is not None and call_id in self.calls:  # a keyed repeat whose key this process forgot
            return {"id": call_id, "status": "queued", "carrier_call_id": None}
        limit = self.settings.outbound.max_pending
        if self.pending >= limit:
            raise DialError(429, f"{limit} calls are being placed already (outbound.max_pending)")
        call_id = call_id or uuid.uuid4().hex
        token = claim_token(self.services.resume_secret, call_id, order, time.time() + self.settings.outbound.link_ttl)
        with structlog.contextvars.bound_contextvars(call_id=call_id, provider=order.carrier, direction="outbound"):
            outbound = self._open(call_id, order, token, DialLinks(base=base, stream_url=stream_url, token=token))
            if self.fleet is not None:
                self.fleet.own(outbound, OUTBOUND_LEASE, call_id)  # ours until its stream lands, here or not
            log.info(
                "dial.ordered",
                to=order.to,
                machine_detection=order.machine_detection,
                ring_timeout_s=order.ring_timeout_s,
                parameters=len(order.parameters),
            )
            outbound.spawn(self._create(outbound), "dial-create")
            if order.first_say and self.services.speaker is not None:
                outbound.spawn(self._warm(order.first_say, order.voice), "dial-warm")
        ring = order.ring_timeout_s + self.settings.outbound.answer_grace
        outbound.timer = asyncio.get_running_loop().call_later(ring, self._no_word, outbound)
        answer = {"id": call_id, "status": "queued", "carrier_call_id": None}
        if key is not None:
            self._keys[key] = answer
            while len(self._keys) > MAX_REMEMBERED:
                self._keys.popitem(last=False)
        return answer

    def _open(
        self,
        call_id: str,
        order: DialOrder,
        token: str,
        links: DialLinks,
        carry_on: tuple[int, list[Any]] | None = None,
    ) -> OutboundCall:
        """The call's record, its event queue (``carry_on``: an adopted call's sequence and events) and bot socket."""
        delivery = self.services.delivery.open(call_id, call_object(call_id, order), carry_on=carry_on)
        bot_ws = self.settings.bot_ws
        socket = (
            BotSocket(bot_ws, self.services.http, call_id, not_yet, on_acked=delivery.acknowledged)
            if bot_ws.url
            else None
        )
        outbound = OutboundCall(call_id, order, token, links, delivery, socket, self._clock(), host=self)
        self.calls[call_id] = outbound
        while len(self.calls) > MAX_REMEMBERED and not next(iter(self.calls.values())).pending:
            self.calls.popitem(last=False)  # (the pending ones are bounded by max_pending)
        return outbound

    async def _warm(self, text: str, voice: str | None) -> None:
        """Speak ``first_say`` into the speech cache while the phone rings: the answer hears it at once."""
        speaker = self.services.speaker
        assert speaker is not None
        try:
            for sentence in sentences(text):
                await speaker.sentence(sentence, voice)
        except Exception as exc:  # the say itself will fail the same way and say so (action.failed)
            log.info("dial.first_say_not_warmed", error=str(exc)[:200])

    async def _create(self, outbound: OutboundCall) -> None:
        """The carrier's create request; its answer gives ``call.dialing`` or ``call.failed``."""
        failed = await create_at_carrier(
            outbound, self.settings, self.services.http, dialing=self._dialing, report=self.report
        )
        if failed is not None:
            self._failed(outbound, "failed", failed)
        elif outbound.ended and outbound.state in ("failed", "canceled"):
            self._send_end(outbound, answered=False)  # cancelled while the request was on its way

    def _dialing(self, outbound: OutboundCall) -> None:
        if outbound.ended:
            return
        if outbound.state == "queued":
            outbound.state = "dialing"
        structlog.contextvars.bind_contextvars(call_sid=outbound.carrier_call_id)
        log.info("dial.dialing")
        outbound.post("call.dialing", {"carrier_call_id": outbound.carrier_call_id or None}, self.publish)

    # -- the carrier's word ----------------------------------------------------------------------

    def find(self, call_id: str) -> OutboundCall | None:
        return self.calls.get(call_id)

    def report(self, call_id: str, report: DialReport) -> bool:
        """A carrier's callback (or FreeSWITCH's originate answer) about ``call_id``; False: not held here
        (another process places it, or carries it since its stream landed there)."""
        outbound = self.calls.get(call_id)
        if outbound is None or outbound.state in ("handed", "lost"):
            return False
        with structlog.contextvars.bound_contextvars(call_id=call_id, provider=outbound.order.carrier):
            self._report(outbound, report)
        return True

    def _report(self, outbound: OutboundCall, report: DialReport) -> None:
        if report.carrier_call_id and report.carrier_call_id != outbound.carrier_call_id:
            outbound.live_call_id = report.carrier_call_id  # Plivo: the CallUUID after the request uuid
        status = report.status
        if status is not None:
            log.info("dial.status", status=status, detail=report.detail or None, state=outbound.state)
        if status == "ringing" and outbound.state in ("queued", "dialing"):
            outbound.state = "ringing"
        elif status == "answered" and outbound.pending:
            outbound.state, outbound.answered_at = "answered", self._clock()
        elif status in FAILED_STATUSES and outbound.pending:
            self._failed(outbound, status, report.detail)
            return
        elif status == "completed" and outbound.pending:
            # ended before its stream ever came: answered (the stream failed to connect) or refused
            self._failed(outbound, "failed", report.detail or "the call ended before its stream connected")
            return
        if report.answered_by is not None or report.greeting_ended:
            call = outbound.call
            if call is not None and call.answering is not None:
                call.answering.carrier_said(report)
            elif outbound.pending and len(outbound.early) < MAX_EARLY_REPORTS:
                outbound.early.append(report)  # the stream is not here yet: told when it is

    def _no_word(self, outbound: OutboundCall) -> None:
        """The ring time and the grace are over with no stream and no final word from the carrier."""
        outbound.timer = None
        if outbound.pending:
            with structlog.contextvars.bound_contextvars(call_id=outbound.call_id, provider=outbound.order.carrier):
                answered = outbound.state == "answered"
                log.warning("dial.no_stream", state=outbound.state)
                self._send_end(outbound, answered=answered)
                self._failed(
                    outbound,
                    "failed" if answered else "no-answer",
                    "answered, but no stream came" if answered else "no answer within the ring time",
                )

    # -- the stream ------------------------------------------------------------------------------

    def claim(self, started: CallStarted, query_token: str | None) -> OutboundCall | Elsewhere | str | None:
        """The outbound call a stream's ``start`` claims: its :class:`OutboundCall`; :class:`Elsewhere`
        when the claim holds but another process places the call; a refusal (a str: a claim that does not
        hold, or a call already carried or over); None: no claim (an inbound call)."""
        token = started.parameters.get(OUTBOUND_PARAMETER) or query_token
        if not token:
            return None
        claim = read_claim(self.services.resume_secret, token, time.time())
        if claim is None:
            return "a bad or expired outbound claim"
        outbound = self.calls.get(claim.call_id)
        if outbound is None or outbound.state in ("handed", "lost"):
            return Elsewhere(claim.call_id)
        if not outbound.pending:
            return f"outbound call {claim.call_id} is {'over' if outbound.ended else 'carried already'}"
        if STREAM_ROUTE.get(outbound.order.carrier, outbound.order.carrier) != started.carrier:
            return "an outbound call's claim on another carrier's stream"
        outbound.state = "live"
        outbound.stop_timer()
        if not outbound.live_call_id and started.call_sid != outbound.carrier_call_id:
            outbound.live_call_id = started.call_sid
        return outbound

    def started_for(self, outbound: OutboundCall, started: CallStarted) -> CallStarted:
        """The stream's ``start`` as the call knows it: the order's numbers and parameters, the claim left out."""
        carried = {k: v for k, v in started.parameters.items() if k != OUTBOUND_PARAMETER}
        return replace(
            started,
            parameters={**outbound.order.parameters, **carried},
            caller=started.caller or outbound.order.from_,
            called=started.called or outbound.order.to,
        )

    def call_over(self, call_id: str) -> None:
        """The call its stream carried has ended."""
        outbound = self.calls.get(call_id)
        if outbound is not None:
            outbound.ended, outbound.state, outbound.call = True, "ended", None

    # -- the end -----------------------------------------------------------------------------------

    def end(self, call_id: str) -> str | None:
        """The bot's ``DELETE``: a call still ringing is cancelled (``call.failed`` canceled, then
        ``call.ended``); a live one hung up (``ending``). None: not held here."""
        outbound = self.calls.get(call_id)
        if outbound is None:
            return None
        with structlog.contextvars.bound_contextvars(call_id=call_id, provider=outbound.order.carrier):
            if outbound.pending:
                self._send_end(outbound, answered=outbound.state == "answered")
                self._failed(outbound, "canceled", "cancelled by the bot")
                return "canceled"
            if outbound.call is not None:
                outbound.call.reply.apply([Hangup(type="hangup", after="now")])
                self._send_end(outbound, answered=True)  # the carrier's call may outlive the stream
                return "ending"
        return None

    def _send_end(self, outbound: OutboundCall, *, answered: bool) -> None:
        """The carrier's cancel or hang-up, in a task (once; not before the carrier gave its id)."""
        if outbound.cancel_sent or not outbound.carrier_call_id:
            return
        outbound.cancel_sent = True
        outbound.spawn(end_at_carrier(outbound, self.settings, self.services.http, answered=answered), "dial-end")

    def _failed(self, outbound: OutboundCall, status: str, detail: str) -> None:
        """``call.failed`` then ``call.ended`` (``not_answered``): the call is over before its stream."""
        if outbound.ended:
            return
        outbound.ended, outbound.state = True, "failed"
        outbound.stop_timer()
        ring_s = round(self._clock() - outbound.created, 3)
        log.info("dial.failed", status=status, detail=detail[:200] or None, ring_s=ring_s)
        failed = {"status": status, **({"detail": detail[:200]} if detail else {})}
        outbound.post("call.failed", failed, self.publish)
        summary = {"end_reason": "not_answered", "dial_status": status, "duration_s": 0.0, "ring_s": ring_s}
        outbound.post("call.ended", {"summary": summary}, self.publish)
        log.info("call.ended", end_reason="not_answered", dial_status=status)
        store = self.services.transcripts
        if store is not None:  # on record too (GET /v1/calls?since=): a call that never connected
            store.call_started({**outbound.call_json(), "speakers": []}, time.time() - ring_s)
            store.call_ended(outbound.call_id, time.time(), "not_answered")
        self._close(outbound)
        self._call_ended(outbound.call_id)
        if self.fleet is not None:
            self.fleet.call_over(outbound.call_id)  # the lease goes back once its last events are out

    def _close(self, outbound: OutboundCall) -> None:
        outbound.delivery.close()
        if outbound.bot_socket is not None:
            outbound.spawn(outbound.bot_socket.close(), "dial-socket-close")

    # -- fleet mode --------------------------------------------------------------------------------

    def hand_over(self, outbound: OutboundCall) -> dict[str, str] | None:
        """The call's stream reached another instance, which adopts it: this one lets it go without a
        word to the bot (its queued events are in Redis) and gives what the adopter needs to carry on."""
        if not outbound.pending:
            return None
        outbound.ended, outbound.state = True, "handed"
        outbound.stop_timer()
        self._close(outbound)
        log.info("dial.handed_over", call_id=outbound.call_id)
        return {
            "streams": "0",
            "dial_order": outbound.order.model_dump_json(by_alias=True),
            "dial_token": outbound.token,
            "dial_carrier_id": outbound.carrier_call_id,
            "dial_live_id": outbound.live_call_id,
            "dial_early": json.dumps([report_fields(r) for r in outbound.early]),
        }

    def lost(self, outbound: OutboundCall) -> None:
        """Another instance took the ringing call over (this one was cut off from Redis): drop it quietly."""
        if not outbound.ended:
            outbound.ended, outbound.state = True, "lost"
            outbound.stop_timer()
            self._close(outbound)

    def adopt(self, call_id: str, record: Mapping[str, str], carry_on: tuple[int, list[Any]]) -> OutboundCall | None:
        """The taker's side: the call handed over, rebuilt from its record (None: not an outbound call's)."""
        try:
            order = DialOrder.model_validate_json(record.get("dial_order") or "")
            early = json.loads(record.get("dial_early") or "[]")
        except (ValidationError, ValueError, RecursionError):
            return None
        token = record.get("dial_token") or ""
        with structlog.contextvars.bound_contextvars(call_id=call_id, provider=order.carrier, direction="outbound"):
            outbound = self._open(call_id, order, token, DialLinks("", "", token), carry_on=carry_on)
        outbound.state = "answered"
        outbound.carrier_call_id = record.get("dial_carrier_id") or ""
        outbound.live_call_id = record.get("dial_live_id") or ""
        reports = [report_from_fields(f) for f in early if isinstance(f, dict)] if isinstance(early, list) else []
        outbound.early = [r for r in reports if r is not None][:MAX_EARLY_REPORTS]
        return outbound

    def apply_word(self, word: Mapping[str, str]) -> bool:
        """A word routed to this instance as the call's owner (a carrier's report, the bot's ``DELETE``)."""
        call_id, kind = word.get("call", ""), word.get("kind")
        if kind == DIAL_WORD:
            report = report_from_fields(word)
            return report is not None and self.report(call_id, report)
        if kind == END_WORD:
            return self.end(call_id) is not None
        return False

    async def aclose(self) -> None:
        """Shutting down: calls still ringing are cancelled at their carrier and end ``canceled``."""
        self._closed = True
        for outbound in list(self.calls.values()):
            if outbound.pending:
                self._send_end(outbound, answered=outbound.state == "answered")
                self._failed(outbound, "canceled", "the bridge is shutting down")
        tasks = [t for c in self.calls.values() for t in c.tasks]
        if tasks:
            _, left = await asyncio.wait(tasks, timeout=CREATE_TIMEOUT)
            for task in left:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task


DIALER = web.AppKey("dialer", Dialer)  # the calls this process places (set up by bridge.app's cleanup_ctx)
