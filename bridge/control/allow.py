"""Where a bot may send a caller (pure): the operator's allow-list ``BRIDGE_TRANSFER_TO``.

A bot, or whoever holds its token, must not be able to dial premium-rate numbers or someone else's PBX
on the operator's account. Entries are E.164 prefixes (``+1555``, ``+44``) and SIP domains
(``pbx.example.com``, also written ``sip:pbx.example.com``). A number is allowed when an entry is a
prefix of it; a ``sip:``/``sips:`` URI when its host is a listed domain or a subdomain of one
(``a.pbx.example.com``, never ``pbx.example.com.evil.org``). An empty list allows nothing.

Parsing is deliberately narrower than RFC 3261: a URI another parser could read with a different host
is refused rather than guessed at. So: one ``@`` at most (RFC 3261 allows it only between user and
host), a user part of plain characters (no ``;``, ``?``, ``/`` or ``:`` that a lenient parser might take
for the end of the user), and an ASCII host name of letters, digits, dots and hyphens (no IP literals,
no percent-escapes, no look-alike Unicode).
"""

from __future__ import annotations

import re
from typing import Literal

E164 = re.compile(r"\+[1-9][0-9]{1,14}")
_PREFIX = re.compile(r"\+[0-9]{1,15}")
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOST = re.compile(rf"(?:{_LABEL}\.)*(?=[a-z0-9-]*[a-z]){_LABEL}")  # the last label has a letter: no IPv4
# RFC 3261 unreserved and user-unreserved characters, minus ; ? / (and : which would start a password),
# plus %XX escapes.
_USER = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()&=+$,]|%[0-9A-Fa-f]{2})+")
# What may follow the host: a port, then ;params and ?headers of plain characters (never another @).
_TAIL = re.compile(r"(?::[0-9]{1,5})?(?:[;?][A-Za-z0-9\-_.!~*'()&=+$,;?/:%\[\]]*)?")


def sip_host(uri: str) -> str | None:
    """The lower-cased host of a ``sip:``/``sips:`` URI, or None when it is not one this module can
    read without doubt."""
    scheme, colon, rest = uri.partition(":")
    if not colon or scheme.lower() not in ("sip", "sips"):
        return None
    if rest.count("@") > 1:
        return None
    user, at, hostpart = rest.rpartition("@")
    if at and not _USER.fullmatch(user):
        return None
    match = re.match(r"[A-Za-z0-9.\-]+", hostpart)
    if match is None:
        return None
    host = match.group(0).lower().removesuffix(".")
    if not _HOST.fullmatch(host) or not _TAIL.fullmatch(hostpart[match.end() :]):
        return None
    return host


def _domain(entry: str) -> str | None:
    text = entry.strip().lower()
    for scheme in ("sip:", "sips:"):
        text = text.removeprefix(scheme)
    text = text.removesuffix(".")
    return text if _HOST.fullmatch(text) else None


def transfer_allowed(to: str, allow: tuple[str, ...]) -> bool:
    """Whether ``to`` (an E.164 number or a SIP URI) is covered by an entry of ``allow``.

    An entry is an E.164 prefix (``+`` then 1 to 15 digits; a bare ``+`` is not taken as "everything")
    or a SIP domain; anything else in the list (``user@host``, an IP address, text) matches nothing.
    """
    if E164.fullmatch(to):
        return any(_PREFIX.fullmatch(e.strip()) and to.startswith(e.strip()) for e in allow)
    host = sip_host(to)
    if host is None:
        return False
    for entry in allow:
        domain = _domain(entry)
        if domain is not None and (host == domain or host.endswith("." + domain)):
            return True
    return False


def destination(to: str) -> Literal["number", "sip"]:
    """What ``to`` is, for the markup writers: an E.164 ``number`` or a ``sip`` URI read as above.

    Raises:
        ValueError: ``to`` is neither (the message quotes it).
    """
    if E164.fullmatch(to):
        return "number"
    if sip_host(to) is not None:
        return "sip"
    raise ValueError(f"to={to!r} is neither an E.164 number nor a sip:/sips: URI")
