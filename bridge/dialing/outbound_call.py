"""One outbound call between the bot's order and its stream (see :mod:`bridge.dialing`): its record, and
what it says to its carrier (the create request, the cancel or hang-up) and to the bot (its events)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from bridge.control.send import esl_api, send_request
from bridge.dial.carriers import create_request, created_call_id, end_request
from bridge.dial.links import DialLinks, EslOriginate
from bridge.dial.order import STREAM_ROUTE, DialOrder
from bridge.dial.reports import DialReport, originate_result
from bridge.errors import ControlError
from bridge.reply.call_reply import ActionResult

if TYPE_CHECKING:
    from bridge.call.lifetime import Call
    from bridge.delivery import CallDelivery
    from bridge.reply.actions import Action
    from bridge.reply.bot_socket import BotSocket
    from bridge.settings import Settings

log = structlog.get_logger("bridge.dial")

CREATE_TIMEOUT = 10.0  # s for the carrier's answer to a create (or cancel) request
NOT_YET = "the call has not been answered yet: actions apply from call.started on"


@dataclass(frozen=True, slots=True)
class Elsewhere:
    """A stream's claim that holds, for an outbound call another process places (``--workers``, fleet)."""

    call_id: str


@dataclass(eq=False)
class OutboundCall:
    """One call the bot ordered, from the order to its end (a :class:`bridge.call.dialed.Dialed` once
    its stream arrives; a :class:`bridge.call.services.FleetCall` while it rings, in fleet mode)."""

    call_id: str
    order: DialOrder
    token: str
    links: DialLinks
    delivery: CallDelivery
    bot_socket: BotSocket | None
    created: float  # monotonic
    host: Any = None  # the Dialer: what fleet mode asks of a ringing call goes to it
    state: str = "queued"  # queued, dialing, ringing, answered, live, failed, handed, lost, ended
    carrier_call_id: str = ""  # the id the create answer gave (Plivo: the request uuid)
    live_call_id: str = ""  # the carrier's id of the answered call when it differs (Plivo's CallUUID)
    call: Call | None = None  # set when its stream arrives
    early: list[DialReport] = field(default_factory=list)  # AMD reports that came before the stream
    answered_at: float | None = None  # monotonic: the carrier said answered
    timer: asyncio.TimerHandle | None = None
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    ended: bool = False  # call.ended went out (failed), or it went to another instance (handed, lost)
    cancel_sent: bool = False

    @property
    def id(self) -> str:
        return self.call_id

    def call_json(self) -> dict[str, Any]:
        """The ``call`` object of its events before the stream (the call's own from ``call.started`` on)."""
        return call_object(self.call_id, self.order, self.live_call_id or self.carrier_call_id or None)

    @property
    def pending(self) -> bool:
        """Between the order and the answer (counts toward ``outbound.max_pending``)."""
        return self.state in ("queued", "dialing", "ringing", "answered") and not self.ended

    def spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(work, name=f"{name}-{self.call_id}")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def stop_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def post(self, type_: str, payload: dict[str, Any], publish: Callable[[str, int, str, str], None] | None) -> None:
        """A bot event of the call before its stream: its queue, its bot socket, the live event tap."""
        event = self.delivery.submit(type_, {"call": self.call_json(), **payload})
        if event is None:
            return
        if self.bot_socket is not None:
            self.bot_socket.send_event(event.body, sequence=event.sequence, sensitive=event.sensitive)
        if publish is not None:
            publish(self.call_id, event.sequence, type_, event.body)

    # -- fleet mode: the instance placing the call owns it (bridge.call.services.FleetCall) ---------

    def apply_actions(self, actions: list[Action], key: str) -> object:
        """Actions routed to a call still ringing: each fails (``action.failed``), saying why."""
        for action in actions:
            self.post("action.failed", {"action_id": action.id, "error": NOT_YET}, None)
        return not_yet(actions, key)

    def session_fields(self) -> dict[str, str] | None:
        return None  # no Gladia session before the stream

    async def hand_over(self) -> dict[str, str] | None:
        """Its stream reached another instance: the call goes there (see :meth:`Dialer.hand_over`)."""
        return self.host.hand_over(self) if self.host is not None else None

    def lost_to_another_instance(self) -> None:
        if self.host is not None:
            self.host.lost(self)


def call_object(call_id: str, order: DialOrder, call_sid: str | None = None) -> dict[str, Any]:
    """An outbound call's ``call`` object before its stream: its id, the order's numbers and parameters."""
    return {
        "id": call_id,
        "provider": STREAM_ROUTE.get(order.carrier, order.carrier),
        "call_sid": call_sid,
        "stream_sid": None,
        "from": order.from_,
        "to": order.to,
        "parameters": dict(order.parameters),
        "direction": "outbound",
    }


def not_yet(actions: list[Action], key: str | None = None) -> list[ActionResult]:
    """Actions before the answer (the bot's socket, a routed request): refused, each saying why."""
    return [ActionResult(a.id, "failed", NOT_YET) for a in actions]


def _twilio_token(settings: Settings) -> str:
    return settings.twilio.auth_token.get_secret_value() if settings.twilio.auth_token else ""


async def create_at_carrier(
    outbound: OutboundCall,
    settings: Settings,
    http: Any,
    *,
    dialing: Callable[[OutboundCall], None],
    report: Callable[[str, DialReport], object],
) -> str | None:
    """The carrier's create request. Returns why it failed (None: the carrier has the call, ``dialing``
    was told; FreeSWITCH's originate answers once the call is answered or failed, told to ``report``)."""
    order = outbound.order
    try:
        request = create_request(
            order, outbound.call_id, settings.control, settings.outbound, outbound.links,
            twilio_auth_token=_twilio_token(settings),
        )  # fmt: skip
        if isinstance(request, EslOriginate):
            outbound.carrier_call_id = request.uuid
            dialing(outbound)
            esl_url = settings.control.freeswitch_esl_url
            assert esl_url is not None  # refusal() checked it
            wait = order.ring_timeout_s + CREATE_TIMEOUT
            report(outbound.call_id, originate_result(await esl_api(esl_url.get_secret_value(), request.command, wait)))
            return None
        status, body = await send_request(http, request, CREATE_TIMEOUT)
        outbound.carrier_call_id = created_call_id(order.carrier, status, body)
    except ControlError as exc:
        log.warning("dial.create_failed", error=str(exc)[:300])
        return str(exc)[:200]
    except Exception:  # a bug: this call fails and says so, no other call is touched
        log.exception("dial.create_crashed")
        return "internal error placing the call"
    dialing(outbound)
    return None


async def end_at_carrier(outbound: OutboundCall, settings: Settings, http: Any, *, answered: bool) -> None:
    """Cancel a ringing call at its carrier, or hang up an answered one (once; logged, never raised)."""
    carrier_id = (outbound.live_call_id or outbound.carrier_call_id) if answered else outbound.carrier_call_id
    try:
        request = end_request(
            outbound.order.carrier, settings.control, settings.outbound, carrier_id,
            answered=answered, twilio_auth_token=_twilio_token(settings),
        )  # fmt: skip
        if isinstance(request, str):
            esl_url = settings.control.freeswitch_esl_url
            assert esl_url is not None
            await esl_api(esl_url.get_secret_value(), request, CREATE_TIMEOUT)
            return
        status, body = await send_request(http, request, CREATE_TIMEOUT)
    except ControlError as exc:
        log.warning("dial.end_failed", error=str(exc)[:300])
        return
    level = log.info if 200 <= status < 300 else log.warning
    level("dial.end_sent", status=status, answered=answered, body=body[:200] if status >= 300 else None)
