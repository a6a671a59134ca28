"""Call control: what a transfer becomes for each carrier.

A bot asks for ``transfer`` (send the caller to a person, optionally briefed first, back to the bot if
nobody answers). The bridge's call shell decides when; the modules here say what, as text, JSON-able
values or unsent requests, with no I/O except :mod:`bridge.control.send`:

- the markup carriers continue the call after the stream once the bridge closes it, fetching the next
  document from the bridge: Twilio, SignalWire cXML and Telnyx TeXML get ``<Dial>`` with ``<Number>`` /
  ``<Sip>`` and a whisper URL (:mod:`bridge.control.twiml`); Plivo ``<Dial>`` with ``<Number>`` /
  ``<User>`` and ``confirmSound`` (:mod:`bridge.control.plivo_xml`); jambonz a ``dial`` verb with a
  ``confirmHook`` (:mod:`bridge.control.jambonz_verbs`). The dial's end comes back to the bridge, which
  answers a new stream (return to the bot), a hang-up, or the operator's own URL;
- Vonage is moved by its REST API to an NCCO ``connect`` whose phone endpoint's ``onAnswer`` is the
  briefing and whose synchronous ``eventUrl`` can answer a new NCCO (:mod:`bridge.control.ncco`);
- every carrier's word for how the dial ended becomes one outcome, answered / busy / no-answer /
  failed / canceled (:mod:`bridge.control.dial_status`);
- the URLs handed to carriers (briefing audio, dial status) carry short-lived signed tokens
  (:mod:`bridge.control.tokens`), and every destination is checked against the operator's
  ``BRIDGE_TRANSFER_TO`` first (:mod:`bridge.control.allow`);
- carriers without such markup (Telnyx Call Control, Vonage, FreeSWITCH, Asterisk, a Twilio call whose
  TwiML the bridge did not write) take the transfer as one REST request (:mod:`bridge.control.rest`) or
  an event-socket command (:mod:`bridge.control.esl`), which :mod:`bridge.control.send` delivers.
"""
