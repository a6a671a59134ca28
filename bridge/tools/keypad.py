"""The keys a simulated caller presses (``bridge call --dtmf``), read from a short schedule (pure).

``"1234#@6s,9@12.5s"``: comma-separated groups ``KEYS@SECONDSs``. ``KEYS`` are telephone keypad keys
(``0-9``, ``*``, ``#`` and the rarely seen ``A-D``); ``@SECONDSs`` is when the group starts, in seconds
since the call started (the ``s`` may be left out); without it, the group starts right away. A person
on a keypad presses one key at a time: the keys of a group go :data:`KEY_GAP` seconds apart. Groups
may come in any order; the schedule is sorted by time (keys at the same moment keep their order).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

KEYS = "0123456789*#ABCD"
KEY_GAP = 0.2  # s between two keys of a group: a person pressing them one by one
MAX_SECONDS = 24 * 3600.0  # a time beyond a day is a typo, not a call
_GROUP = re.compile(r"(?P<keys>[^@]*)(?:@(?P<at>[^@]*))?")


@dataclass(frozen=True, slots=True)
class KeyPress:
    """One key, pressed ``at`` seconds after the call started."""

    at: float
    key: str


def parse_keys(text: str) -> list[KeyPress]:
    """The key presses ``text`` asks for, in time order.

    Raises:
        ValueError: the schedule does not read; the message names the group and what is wrong with it.
    """
    if not text.strip():
        raise ValueError("no keys: give KEYS[@SECONDSs] groups, e.g. '1234#@6s,9@12.5s'")
    presses: list[KeyPress] = []
    for raw in text.split(","):
        group = raw.strip()
        match = _GROUP.fullmatch(group)
        if not group or match is None:
            raise ValueError(f"{raw!r}: a group is KEYS or KEYS@SECONDSs (e.g. '1234#@6s'), comma-separated")
        keys = match["keys"].strip().upper()
        if not keys:
            raise ValueError(f"{group!r}: no keys before the '@'")
        wrong = sorted({k for k in keys if k not in KEYS})
        if wrong:
            raise ValueError(f"{group!r}: {', '.join(map(repr, wrong))} is not a keypad key (0-9, *, #, A-D)")
        at = 0.0 if match["at"] is None else _seconds(group, match["at"])
        presses.extend(KeyPress(at + i * KEY_GAP, key) for i, key in enumerate(keys))
    return sorted(presses, key=lambda p: p.at)  # stable: equal times keep the order given


def _seconds(group: str, text: str) -> float:
    value = text.strip()
    value = value[:-1] if value.endswith("s") else value
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(f"{group!r}: {text!r} is not a time in seconds (e.g. '@6s', '@12.5s')") from None
    if not math.isfinite(seconds) or seconds < 0 or seconds > MAX_SECONDS:
        raise ValueError(f"{group!r}: the time must be between 0 and {MAX_SECONDS:.0f} seconds")
    return seconds


def describe(presses: list[KeyPress]) -> str:
    """The schedule in a few words: ``"5 keys from 6.0 s to 6.8 s"``."""
    if not presses:
        return "no keys"
    n = len(presses)
    return f"{n} key{'s' if n != 1 else ''} from {presses[0].at:.1f} s to {presses[-1].at:.1f} s"
