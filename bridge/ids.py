"""The bridge's call ids (pure): what :class:`bridge.call.Call` makes (``uuid.uuid4().hex``, 32 lowercase
hex digits), checked before an id from outside (a URL) reaches a store. Fleet mode builds Redis keys
from call ids (``{prefix}:call:{id}``): an id such as ``<id>:lease`` would name another of the call's
keys, so anything else is "no such call" at the edge and never becomes a key."""

from __future__ import annotations

import re

CALL_ID = re.compile(r"[0-9a-f]{32}")


def is_call_id(value: str) -> bool:
    """Is ``value`` a call id the bridge could have made?"""
    return CALL_ID.fullmatch(value) is not None
