"""One call's ``transfer``: the caller handed to a person, and back to the bot when nobody answers.

:class:`CallTransfer` is what the call's reply asks (:class:`bridge.reply.call_reply.TransferHooks`):
``check`` when the bot's action arrives (the allow-list ``BRIDGE_TRANSFER_TO``, the carrier's way,
its settings; a refusal is ``action.failed`` naming what to set), ``hand_over`` when its moment has
come (``after=now``, or once the caller has heard what was queued before it, by the carrier's marks).

How the call is handed over depends on the carrier (``Carrier.capabilities.transfer``):

* **markup** (Twilio, when the bridge wrote the call's TwiML): the ``<Dial>`` is left on the transfer
  desk (:mod:`bridge.call.desk`) for the carrier's next fetch, then the stream closes. Twilio runs the
  ``<Connect action>`` (``/twilio/after-stream``, :mod:`bridge.http.call_control`), which answers it.
* **rest**: one request to the carrier's call-control API (:mod:`bridge.control.rest`), e.g. Twilio's
  call update with the same ``<Dial>`` for a call whose TwiML the operator wrote.

Either way the call then waits, suspended like a call whose stream dropped (its Gladia session and
delivery kept), for ``ring_timeout_s`` plus ``control.return_grace``: the carrier's dial result comes
back to ``/twilio/dial-status``, which answers a fresh ``<Connect><Stream>`` when nobody answered and
the bot asked ``on_no_answer: return``. That stream carries the call's resume token and the transfer's
id and status as parameters, so whichever process it reaches (another worker, another instance) says
``call.stream_restarted`` then ``transfer.failed {action_id, status}`` and the bot carries on, same
``call_id``. A person who answers ends the call with ``end_reason: "transferred"`` (and
``transfer.completed`` when the carrier reports the answer).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from bridge.adapters import CARRIERS
from bridge.call import hand_over as handing
from bridge.control import tokens, ways
from bridge.control.allow import destination, transfer_allowed
from bridge.control.rest import HttpRequest
from bridge.control.send import esl_api, send_request
from bridge.errors import ControlError
from bridge.phone_stream import CallResult

if TYPE_CHECKING:
    import aiohttp

    from bridge.adapters.base import CallStarted
    from bridge.call.desk import TransferDesk
    from bridge.phone_stream import PhoneStream
    from bridge.reply.actions import Transfer
    from bridge.settings import Settings
    from bridge.stats import EndReason

log = structlog.get_logger("bridge.transfer")

TRANSFER_PARAMETER = "bridge.transfer"  # a returning stream's parameter: the transfer's action id
STATUS_PARAMETER = "bridge.transfer_status"  # ... and how the dial ended (busy, no-answer, failed, canceled)
LATE_CALLBACK = 6 * 3600  # s a dial-status token stays valid: Twilio posts it when the person's call ends
REQUEST_TIMEOUT = 5.0  # s a carrier's call-control API has to answer


class TransferringCall(Protocol):
    """What a transfer needs of its call (bridge.call.lifetime.Call)."""

    @property
    def id(self) -> str: ...

    @property
    def started(self) -> CallStarted: ...

    @property
    def stream(self) -> PhoneStream | None:
        """The stream carrying the call now (None while it is suspended)."""
        ...

    @property
    def end_suspended_now(self) -> Callable[[EndReason], None] | None:
        """Ends the call now while it is suspended (None when it is not)."""
        ...


class CallTransfer:
    """The call's transfers (see the module docstring). ``emit`` posts a bot event (type, payload);
    ``fail`` an ``action.failed``; ``back`` lets the reply take actions again."""

    __slots__ = ("_done", "_task", "back", "call", "desk", "emit", "fail", "http", "pending", "secret", "settings")

    def __init__(
        self,
        call: TransferringCall,
        *,
        settings: Settings,
        secret: bytes,
        desk: TransferDesk | None,
        http: aiohttp.ClientSession | None,
        emit: Callable[[str, dict[str, Any]], None],
        fail: Callable[[str | None, str], None],
        back: Callable[[], None],
    ) -> None:
        self.call = call
        self.settings = settings
        self.secret = secret
        self.desk = desk
        self.http = http
        self.emit = emit
        self.fail = fail
        self.back = back
        self.pending: Transfer | None = None  # handed over, outcome not known yet
        self._done: set[str] = set()  # transfers whose outcome the bot has had (a repeated report is quiet)
        self._task: asyncio.Task[None] | None = None

    # -- TransferHooks --------------------------------------------------------------------------

    def check(self, action: Transfer) -> str | None:
        allow = self.settings.control.transfer_to
        if not allow:
            return "transfers are off: set BRIDGE_TRANSFER_TO (the E.164 prefixes and SIP domains a transfer may reach)"
        if not transfer_allowed(action.to, allow):
            return f"{action.to} is not in BRIDGE_TRANSFER_TO"
        if self.pending is not None:
            return f"transfer {self.pending.id!r} is under way"
        found = self.way()
        if isinstance(found, str):
            return found
        carrier = self.call.started.carrier
        announce = found.announce and not (carrier == "vonage" and destination(action.to) == "sip")
        if action.announce is not None and not announce:
            return f"{carrier}: no briefing can be played to the person here (announce): leave it out"
        if "on_no_answer" in action.model_fields_set and action.on_no_answer == "return" and not found.returns:
            return f"{carrier}: a transfer nobody answers cannot come back to the bot here (on_no_answer: return)"
        return None

    def hand_over(self, action: Transfer) -> None:
        self.pending = action
        self._task = asyncio.create_task(self._hand_over(action), name=f"transfer-{self.call.id}")

    def capabilities(self) -> dict[str, bool]:
        """What the bot can do on this call (``call.started``, ``GET /v1/calls/{id}``): ``transfer``
        (a way, and BRIDGE_TRANSFER_TO set), ``announce`` (a briefing to the person), ``return`` (a
        transfer nobody answers comes back), ``gather`` (keys reach the bridge)."""
        found = self.way()
        can = isinstance(found, handing.Way) and bool(self.settings.control.transfer_to)
        stream = self.call.stream
        plays = stream is None or stream.adapter.plays_audio
        return {
            "transfer": can,
            "announce": can and isinstance(found, handing.Way) and found.announce,
            "return": can and isinstance(found, handing.Way) and found.returns,
            "gather": plays and CARRIERS[self.call.started.carrier].capabilities.gather,
        }

    # -- how -------------------------------------------------------------------------------------

    def way(self) -> handing.Way | str:
        """How this call is handed over (bridge.call.hand_over), or why it cannot be."""
        stream = self.call.stream
        plays = stream is not None and stream.adapter.plays_audio
        return handing.way(self.settings, self.secret, self.call.started, plays)

    def order(self, action: Transfer) -> tuple[ways.Order, ways.Links]:
        """The transfer as its links carry it, and the links (one token the bridge signs)."""
        started = self.call.started
        order = ways.Order(
            self.call.id, action.id, started.carrier, started.call_sid, action.to, action.caller_id,
            action.ring_timeout_s, action.on_no_answer, action.announce,
        )  # fmt: skip
        token = tokens.sign(self.secret, order.fields(), int(time.time()) + LATE_CALLBACK)
        return order, ways.Links(self._base(), token, announced=action.announce is not None)

    async def _hand_over(self, action: Transfer) -> None:
        started = self.call.started
        found = self.way()
        try:
            if isinstance(found, str):
                raise ControlError(found)
            order, links = self.order(action)
            if found.method == "twiml":
                if self.desk is None:
                    raise ControlError("no transfer desk on this bridge")
                markup = ways.dial(order, links)
                assert isinstance(markup.body, str)
                await self.desk.put(started.carrier, started.call_sid, markup.body)
            else:
                await self._send(handing.request(self.settings, started, order, links))
        except (ControlError, ValueError) as exc:
            self.pending = None
            log.warning("transfer.not_handed_over", action_id=action.id, error=str(exc)[:300])
            self.fail(action.id, f"the transfer could not be handed to the carrier: {exc}")
            self.back()
            return
        except Exception as exc:  # a bug must fail the transfer, not leave the call stuck in it
            self.pending = None
            log.exception("transfer.error", action_id=action.id)
            self.fail(action.id, f"the bridge could not hand the call over ({type(exc).__name__})")
            self.back()
            return
        method = found.method
        log.info("transfer.started", action_id=action.id, method=method, ring_timeout_s=action.ring_timeout_s)
        self.emit("transfer.started", {"action_id": action.id, "to": action.to, "method": method})
        # Twilio then runs <Connect action>: the desk's <Dial>. A carrier that may leave the stream open
        # (Vonage's websocket leg; FreeSWITCH, Asterisk: UNVERIFIED) is let go of here too.
        if method == "twiml" or found.closes:
            self._close_stream(CallResult("transferred", 1000, "transferred"))

    async def _send(self, request: HttpRequest | tuple[str, str]) -> None:
        """One request to the carrier: HTTP (a 2xx is success), or an ESL api command (URL, command)."""
        if isinstance(request, tuple):
            await esl_api(*request, REQUEST_TIMEOUT)
            return
        if self.http is None:
            raise ControlError("no HTTP client")
        status, body = await send_request(self.http, request, REQUEST_TIMEOUT)
        if not 200 <= status < 300:
            raise ControlError(f"the carrier answered HTTP {status}: {body[:200]}")

    def _base(self) -> str:
        """The bridge's public base URL (``BRIDGE_PUBLIC_URL``, else the host the stream came to)."""
        stream = self.call.stream
        return self.settings.server.public_url or (stream.public_base if stream is not None else "")

    def _close_stream(self, result: CallResult) -> None:
        stream = self.call.stream
        if stream is not None:
            if stream.forced_end is None:
                stream.forced_end = result
            stream.hang_up()

    def _end(self, reason: EndReason) -> None:
        """End the call: now when it waits suspended, else by closing the stream that still carries it."""
        end = self.call.end_suspended_now
        if end is not None:
            end(reason)
        else:
            self._close_stream(CallResult(reason, 1000, reason.replace("_", " ")))

    # -- outcomes ---------------------------------------------------------------------------------

    def waits(self) -> float | None:
        """Once the stream has closed: how long the call waits for its transfer's outcome (0: it went to
        the person, end it now; None: no transfer under way, the call ends as usual)."""
        if self.pending is None:
            return None
        found = self.way()
        if isinstance(found, handing.Way) and not found.returns:
            return 0.0  # FreeSWITCH, Asterisk: the carrier has the caller now
        return self.pending.ring_timeout_s + self.settings.control.return_grace

    def returned(self, started: CallStarted) -> None:
        """A restarted stream: when it is a transfer's return (its parameters say so), the bot hears
        ``transfer.failed`` and the call is its again."""
        action_id = started.parameters.get(TRANSFER_PARAMETER)
        if action_id is None or action_id in self._done:
            return
        self.not_answered(action_id, started.parameters.get(STATUS_PARAMETER) or "no-answer")

    def not_answered(self, action_id: str, status: str) -> None:
        """Nobody answered and the caller is on the call again (a returned stream, or Telnyx's caller
        who never left it): ``transfer.failed``, and the bot has the call back."""
        if action_id in self._done:
            return
        self._done.add(action_id)
        self.pending = None
        log.info("transfer.returned", action_id=action_id, status=status)
        self.emit("transfer.failed", {"action_id": action_id, "status": status})
        self.back()

    def answered(self, action_id: str, to: str) -> None:
        """The carrier reports the person answered: the caller is theirs, the call ends here."""
        if action_id in self._done:
            return
        self._done.add(action_id)
        self.pending = None
        log.info("transfer.completed", action_id=action_id)
        self.emit("transfer.completed", {"action_id": action_id, "status": "answered", "to": to})
        self._end("transferred")

    def gave_up(self, action_id: str, status: str) -> None:
        """Nobody answered and the bot asked ``on_no_answer: hangup``: the call ends."""
        if action_id in self._done:
            return
        self._done.add(action_id)
        self.pending = None
        log.info("transfer.failed", action_id=action_id, status=status)
        self.emit("transfer.failed", {"action_id": action_id, "status": status})
        self._end("transfer_failed")
