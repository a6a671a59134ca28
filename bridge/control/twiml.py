"""TwiML for a transfer (pure): Twilio, and the Twilio-shaped SignalWire cXML and Telnyx TeXML.

While ``<Connect><Stream>`` runs, Twilio executes nothing else; once the bridge closes the stream,
Twilio requests the ``<Connect action>`` URL (https://www.twilio.com/docs/voice/twiml/connect) and the
bridge answers with what the bot asked for:

- a transfer: ``<Dial action=".../dial-status" answerOnBridge="true">`` with ``<Number>`` (E.164) or
  ``<Sip>`` (a SIP URI). The noun's ``url`` is the whisper: TwiML run on the answering person's end
  before the caller is connected (https://www.twilio.com/docs/voice/twiml/number; the same attribute on
  ``<Sip>`` is UNVERIFIED), here one ``<Play>`` of the bridge's own voice (:func:`announce_twiml`).
  ``answerOnBridge`` keeps the caller hearing ringing until then. ``statusCallbackEvent="answered"``
  tells the bridge the moment the person picks up (``transfer.completed``);
- the dial's end: ``<Dial action>`` gets ``DialCallStatus``; for a caller nobody answered, a fresh
  ``<Connect><Stream>`` back to the bridge (:func:`return_twiml`, the call's resume token in a
  ``<Parameter>``); ``<Hangup/>`` (:func:`hangup_twiml`); or ``<Redirect>`` to the operator's own
  after-stream URL (:func:`redirect_twiml`).

SignalWire and Telnyx document the same verbs and nouns (``<Connect>`` without ``action`` on
SignalWire, where a ``<Redirect>`` after it is the fetch point; UNVERIFIED for the ``<Dial action>``
parameter names on both). Every value is escaped, attribute or text, after dropping what XML 1.0
cannot carry.
"""

from __future__ import annotations

from collections.abc import Mapping
from xml.sax.saxutils import escape, quoteattr

from bridge.adapters.twilio import _xml_text
from bridge.control.allow import destination

_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>'


def _attr(name: str, value: str) -> str:
    return f" {name}={quoteattr(_xml_text(value))}"


def _text(value: str) -> str:
    return escape(_xml_text(value))


def _document(body: str) -> str:
    return f"{_DECLARATION}<Response>{body}</Response>"


def dial_twiml(
    to: str,
    *,
    caller_id: str | None,
    ring_timeout_s: int,
    action_url: str,
    announce_url: str | None,
    answered_url: str | None,
) -> str:
    """``<Dial>`` the person at ``to`` (E.164 or SIP URI), ringing ``ring_timeout_s`` seconds; Twilio
    posts the outcome to ``action_url``. ``announce_url`` serves the whisper TwiML, ``answered_url``
    receives the "answered" status callback.

    Raises:
        ValueError: ``to`` is neither an E.164 number nor a SIP URI.
    """
    noun = "Sip" if destination(to) == "sip" else "Number"
    dial = (
        _attr("action", action_url)
        + _attr("method", "POST")
        + _attr("timeout", str(int(ring_timeout_s)))
        + _attr("answerOnBridge", "true")
    )
    if caller_id:
        dial += _attr("callerId", caller_id)
    attrs = ""
    if announce_url:
        attrs += _attr("url", announce_url) + _attr("method", "POST")
    if answered_url:
        attrs += (
            _attr("statusCallbackEvent", "answered")
            + _attr("statusCallback", answered_url)
            + _attr("statusCallbackMethod", "POST")
        )
    return _document(f"<Dial{dial}><{noun}{attrs}>{_text(to)}</{noun}></Dial>")


def announce_twiml(audio_url: str) -> str:
    """The whisper: ``<Play>`` of the briefing audio to the person who answered, before the caller is
    connected (a whisper document may not ``<Dial>``)."""
    return _document(f"<Play>{_text(audio_url)}</Play>")


def return_twiml(stream_url: str, parameters: Mapping[str, str], action_url: str) -> str:
    """The caller back to the bot: a new bidirectional stream to ``stream_url`` carrying ``parameters``
    (``start.customParameters``), with ``action_url`` fetched again when that stream ends. Each
    parameter's name and value together stay under Twilio's 500 characters (the value is cut)."""
    params = "".join(
        f"<Parameter{_attr('name', name)}{_attr('value', _xml_text(value)[: max(0, 499 - len(name))])}/>"
        for name, value in parameters.items()
    )
    return _document(
        f"<Connect{_attr('action', action_url)}><Stream{_attr('url', stream_url)}>{params}</Stream></Connect>"
    )


def hangup_twiml() -> str:
    """End the call (the bot hung up, or nobody answered and the bot asked for ``hangup``)."""
    return _document("<Hangup/>")


def redirect_twiml(url: str) -> str:
    """Hand the call on to ``url`` (the operator's ``TWILIO_AFTER_STREAM_URL``)."""
    return _document(f"<Redirect>{_text(url)}</Redirect>")
