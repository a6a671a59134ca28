"""The calls this bridge is placing (the I/O shell of :mod:`bridge.dial`): from the bot's ``POST /v1/calls``
to the stream's ``start``, or to ``call.failed``.

The order is answered at once (``201``, the call's id); the carrier's create request goes out after the
answer, in a task of its own, so a slow carrier never holds the bot. Then, in the call's own event order:

* ``call.dialing`` once the carrier took the call (with its id for the call), or ``call.failed``
  (``status: failed``) when it refused;
* ``call.failed`` (``busy``, ``no-answer``, ``failed``, ``canceled``) when the carrier says so, when the
  bot cancels (``DELETE /v1/calls/{id}``), or when neither the stream nor a word from the carrier came
  within the ring time plus ``outbound.answer_grace``; then ``call.ended`` (``end_reason: not_answered``);
* else the stream arrives, proves its claim (:func:`bridge.dial.order.read_claim`), and the call
  (:class:`bridge.call.Call`) carries on with the same id, the same event sequence and the same bot
  socket (:mod:`bridge.call.dialed`): ``call.started`` with ``direction: "outbound"``, the order's
  ``parameters``, then what the carrier's answering-machine detection says (:mod:`bridge.call.answering`).

Where the stream lands: this process (the common case); under ``--workers`` another worker, which relays
it here (:meth:`bridge.sibling_relay.SiblingRelay.relay_outbound`); in fleet mode another instance,
which adopts the call (the placing instance owns it, leased as ``("outbound", call id)``, and hands it
over with its order and undelivered events: :meth:`Dialer.hand_over`, :meth:`Dialer.adopt`). The
carrier's callbacks may reach any process: they are sent on to the one placing or carrying the call.

Bounded: at most ``outbound.max_pending`` calls between the order and the answer (429 beyond), and the
calls this process remembers (for a late callback, ``DELETE``, an idempotent repeat) are capped.
"""

from bridge.dialing.dialer import DIAL_WORD, DIALER, END_WORD, OUTBOUND_LEASE, Dialer
from bridge.dialing.outbound_call import Elsewhere, OutboundCall

__all__ = ["DIALER", "DIAL_WORD", "END_WORD", "OUTBOUND_LEASE", "Dialer", "Elsewhere", "OutboundCall"]
