"""What a call the bot ordered (``POST /v1/calls``) brings to its :class:`~bridge.call.Call` when its stream
arrives, and what the call does with it: the id, event queue and bot socket of the dialing (``call.dialing``
came first: the sequence goes on), ``first_say`` queued before ``call.started``, and the answering-machine
detection (:mod:`bridge.call.answering`) fed with what the carrier said before the stream.

:class:`Dialed` is the shape the placing side (:mod:`bridge.dialing`) gives; the call imports nothing of it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from bridge.call.answering import Answering
from bridge.dial.order import CARRIER_DETECTION, FIRST_SAY_ID, DialOrder
from bridge.dial.reports import DialReport
from bridge.reply.actions import Action, Say

if TYPE_CHECKING:
    from bridge.audio import AudioFormat
    from bridge.delivery import CallDelivery
    from bridge.reply.bot_socket import BotSocket


class Dialed(Protocol):
    """An outbound call whose stream has arrived (see the module docstring)."""

    call_id: str
    order: DialOrder
    delivery: CallDelivery
    bot_socket: BotSocket | None
    early: list[DialReport]  # the carrier's answering-machine reports that came before the stream


def answering_for(
    dialed: Dialed | None, audio: AudioFormat, post: Callable[[str, dict[str, Any]], object], cut: Callable[[], None]
) -> Answering | None:
    """The call's answering-machine detection, when the bot asked for one (None: an inbound call, or ``off``)."""
    if dialed is None or dialed.order.machine_detection == "off":
        return None
    return Answering(
        mode=dialed.order.machine_detection,
        carrier_detects=dialed.order.carrier in CARRIER_DETECTION,
        audio=audio,
        post=post,
        cut=cut,
    )


def first_say(dialed: Dialed | None) -> list[Action]:
    """The order's ``first_say`` as the call's first action (its id :data:`FIRST_SAY_ID`), or nothing."""
    order = dialed.order if dialed is not None else None
    if order is None or not order.first_say:
        return []
    return [Say(type="say", id=FIRST_SAY_ID, text=order.first_say, voice=order.voice, interrupt="speech")]


def tell_early(dialed: Dialed | None, answering: Answering | None) -> None:
    """What the carrier said before the stream (after ``call.started``: the bot hears them in that order)."""
    if dialed is None:
        return
    if answering is not None:
        for report in dialed.early:
            answering.carrier_said(report)
    dialed.early.clear()
