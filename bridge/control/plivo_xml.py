"""Plivo XML for a transfer (pure).

The bridge answers Plivo's call with ``<Stream bidirectional="true" keepCallAlive="true">`` and a
``<Redirect>`` after it: with ``keepCallAlive`` the stream "runs alone" and the next element runs only
once the stream disconnects (https://plivo.com/docs/voice/xml/audio-streaming). So a transfer is the
bridge closing the stream and answering the redirect with :func:`dial_xml`:

- ``<Dial action=... timeout=... callerId=...>`` around ``<Number>`` (a phone number) or ``<User>`` (a
  SIP URI) (https://www.plivo.com/docs/voice/xml/dial/, .../dial/user/);
- ``confirmSound``: a URL whose XML (``<Play>``/``<Speak>``/``<Wait>`` only) is played to the called
  party when they answer, before the caller is connected: the briefing (:func:`announce_xml`). Plivo's
  page pairs it with ``confirmKey``; whether it plays without one is UNVERIFIED (the page's note is cut
  off), so the bridge sends it alone and the lead's shell should treat a briefing nobody heard as
  possible;
- the ``action`` URL gets ``DialStatus`` (``completed|busy|failed|timeout|no-answer``); for ``return``
  the bridge answers :func:`return_xml`, the same stream again;
- ``callbackUrl``: notified when the called party is bridged with the caller (``DialAction=answer``) and
  when they hang up, so the bridge learns of the answer at once, not when the person's call ends (the
  attribute is the plivo SDK's ``DialElement(callback_url=)``; its parameter names are UNVERIFIED here,
  the shell reads ``DialAction`` or ``DialBLegStatus``).

Numbers are written as given, E.164 with ``+``: Plivo's current XML reference writes
``<Number>+14155551111</Number>`` (https://www.plivo.com/docs/voice/xml/redirect); its older pages and
its REST API write digits only (``14155551111``). Which one ``<Number>`` requires is UNVERIFIED; both
appear in Plivo's own documents, and the "+" form is E.164 as the bot gave it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from xml.sax.saxutils import escape, quoteattr

from bridge.adapters.twilio import _xml_text
from bridge.control.allow import destination

_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>'
# extraHeaders: "test1=12,test2=123", at most 512 bytes, only [A-Za-z0-9] in names and values
# (https://docs.plivo.com/docs/voice/xml/audiostream). The stream's start message carries them back as
# extra_headers, which bridge/adapters/plivo.py reads.
_PLAIN = re.compile(r"[A-Za-z0-9]+")
MAX_EXTRA_HEADERS = 512


def _attr(name: str, value: str) -> str:
    return f" {name}={quoteattr(_xml_text(value))}"


def _document(body: str) -> str:
    return f"{_DECLARATION}<Response>{body}</Response>"


def dial_xml(
    to: str,
    *,
    caller_id: str | None,
    ring_timeout_s: int,
    action_url: str,
    confirm_sound_url: str | None,
    callback_url: str | None = None,
) -> str:
    """``<Dial>`` the person at ``to`` (a phone number or a SIP URI) for ``ring_timeout_s`` seconds;
    Plivo posts ``DialStatus`` to ``action_url``; ``confirm_sound_url`` serves the briefing XML;
    ``callback_url`` hears of the person being bridged with the caller.

    Raises:
        ValueError: ``to`` is neither an E.164 number nor a SIP URI.
    """
    attrs = _attr("action", action_url) + _attr("method", "POST") + _attr("timeout", str(int(ring_timeout_s)))
    if caller_id:
        attrs += _attr("callerId", caller_id)
    if confirm_sound_url:
        attrs += _attr("confirmSound", confirm_sound_url)
    if callback_url:
        attrs += _attr("callbackUrl", callback_url) + _attr("callbackMethod", "POST")
    noun = "User" if destination(to) == "sip" else "Number"
    return _document(f"<Dial{attrs}><{noun}>{escape(_xml_text(to))}</{noun}></Dial>")


def announce_xml(audio_url: str) -> str:
    """The briefing played to the person who answered (a ``confirmSound`` document)."""
    return _document(f"<Play>{escape(_xml_text(audio_url))}</Play>")


def extra_headers_value(headers: Mapping[str, str]) -> str:
    """``headers`` as Plivo's ``extraHeaders`` value, ``k=v,k2=v2``.

    Raises:
        ValueError: a name or value is empty or has a character other than A-Z, a-z, 0-9, or the whole
            is over 512 bytes (Plivo's documented limits): put such values in the stream URL instead.
    """
    for key, value in headers.items():
        if not _PLAIN.fullmatch(key) or not _PLAIN.fullmatch(value):
            raise ValueError(f"Plivo extraHeaders allow only A-Z, a-z, 0-9 in names and values: {key!r}")
    text = ",".join(f"{key}={value}" for key, value in headers.items())
    if len(text) > MAX_EXTRA_HEADERS:
        raise ValueError(f"Plivo extraHeaders are at most {MAX_EXTRA_HEADERS} bytes, this is {len(text)}")
    return text


def return_xml(stream_url: str, *, extra_headers: Mapping[str, str], content_type: str, after_url: str) -> str:
    """The caller back to the bot: the bidirectional stream again (``keepCallAlive``), then a
    ``<Redirect>`` to ``after_url`` once it ends, as in the bridge's first answer.

    Raises:
        ValueError: ``extra_headers`` break Plivo's rules (see :func:`extra_headers_value`).
    """
    attrs = _attr("bidirectional", "true") + _attr("keepCallAlive", "true") + _attr("contentType", content_type)
    headers = extra_headers_value(extra_headers)
    if headers:
        attrs += _attr("extraHeaders", headers)
    stream = f"<Stream{attrs}>{escape(_xml_text(stream_url))}</Stream>"
    return _document(f"{stream}<Redirect>{escape(_xml_text(after_url))}</Redirect>")


def hangup_xml() -> str:
    """End the call."""
    return _document("<Hangup/>")
