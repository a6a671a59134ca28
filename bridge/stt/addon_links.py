"""Which add-on results reach the call, and when (pure): each after the final it is about, once.

Gladia links a realtime add-on message (``translation``, ``named_entity_recognition``,
``sentiment_analysis``) to a final by ``utterance_id``, the final's ``data.id``. The bot must get the
result after that final's ``utterance.final``, never before it, and once: a message may come before its
final (nothing in Gladia's documents orders them), be sent again on a resumed connection, or be lost
with a dropped one and be read back after the call (``GET /v2/live/{id}``'s ``result.messages``).

:class:`AddonLinks` holds a result until its final is delivered (bounded: past ``max_held`` the oldest
is dropped, counted), drops a repeat (same session, add-on, utterance and language), and knows, per
session, whether a delivered final still lacks a result the profile asked for (then the session is
read back after the call). Ids are per Gladia session (a replacement session counts from 0 again), so
every key has the session's id in it.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from bridge.stt.addons import AddonFailed, Entities, Sentiments, Translation

RealtimeResult = Translation | Entities | Sentiments | AddonFailed


@dataclass(frozen=True, slots=True)
class Linked:
    """A result ready for the call: its final was delivered on ``channel`` (None: a failure that does
    not say which final it was about)."""

    result: RealtimeResult
    session_id: str
    channel: int | None


def _key(result: RealtimeResult) -> tuple[str, str, str]:
    match result:
        case Translation():
            return ("translation", result.utterance_id, result.language)
        case Entities():
            return ("named_entity_recognition", result.utterance_id, "")
        case Sentiments():
            return ("sentiment_analysis", result.utterance_id, "")
        case AddonFailed():
            return (result.addon, result.utterance_id or "", "failed:" + result.error)


class AddonLinks:
    """See the module docstring. ``addons``: the realtime add-ons the session was asked for;
    ``languages``: the translation's target languages."""

    def __init__(self, addons: tuple[str, ...], languages: tuple[str, ...], max_held: int = 256) -> None:
        self._expected: tuple[tuple[str, str], ...] = tuple(
            [("translation", lang) for lang in languages if "translation" in addons]
            + [(a, "") for a in ("named_entity_recognition", "sentiment_analysis") if a in addons]
        )
        self._max_held = max_held
        self._finals: dict[tuple[str, str], int] = {}  # (session, final id) -> channel, once delivered
        self._seen: set[tuple[str, str, str, str]] = set()  # (session, add-on, utterance, language)
        self._held: OrderedDict[tuple[str, str, str, str], RealtimeResult] = OrderedDict()
        self._owed: dict[str, set[tuple[str, str, str]]] = {}  # session -> results still expected
        self._before: dict[tuple[str, int], float] = {}  # (session, channel) -> end of finals another process had
        self.duplicates = 0
        self.dropped = 0  # held results pushed out by newer ones (their final never came in time)

    def seed(self, session_id: str, last_ends: dict[int, float]) -> None:
        """Fleet mode: the session's finals up to these ends (per channel) were delivered by the instance
        that carried the call before: a result about one of them is passed on, not held for ever."""
        for channel, end in last_ends.items():
            self._before[session_id, channel] = end

    @property
    def held(self) -> int:
        return len(self._held)

    def final(self, session_id: str, final_id: str, channel: int, text: str) -> list[Linked]:
        """A final was delivered: the results held for it, now in order of arrival. An empty final is
        owed no results (Gladia has nothing to translate or analyse)."""
        self._finals[session_id, final_id] = channel
        owed = self._owed.setdefault(session_id, set())
        if text.strip():
            for addon, lang in self._expected:
                if (session_id, addon, final_id, lang) not in self._seen:
                    owed.add((addon, final_id, lang))
        ready = [k for k in self._held if k[0] == session_id and k[2] == final_id]
        return [Linked(self._held.pop(k), session_id, channel) for k in ready]

    def result(self, session_id: str, result: RealtimeResult) -> list[Linked]:
        """A result came: ``[it]`` when its final was delivered, ``[]`` when it is held or a repeat.
        A failure that names no utterance (``data`` null) is passed on at once, and cannot be told
        from a repeat (so the read-back after the call leaves such failures out)."""
        if isinstance(result, AddonFailed) and not result.utterance_id:
            return [Linked(result, session_id, None)]
        addon, uid, lang = _key(result)
        key = (session_id, addon, uid, lang)
        if key in self._seen:
            self.duplicates += 1
            return []
        self._seen.add(key)
        self._owed.get(session_id, set()).discard((addon, uid, lang))
        if isinstance(result, AddonFailed):  # a failed translation does not say which language
            owed = self._owed.get(session_id, set())
            for item in [o for o in owed if o[0] == addon and o[1] == uid]:
                owed.discard(item)
        channel = self._finals.get((session_id, uid)) if uid else None
        analysed = None if isinstance(result, AddonFailed) else result.utterance
        before = self._before.get((session_id, analysed.channel), -1.0) if analysed is not None else -1.0
        if channel is None and analysed is not None and analysed.end <= before + 1e-6:
            channel = analysed.channel  # about a final another instance delivered
        if channel is not None:
            return [Linked(result, session_id, channel)]
        self._held[key] = result
        if len(self._held) > self._max_held:
            self._held.popitem(last=False)
            self.dropped += 1
        return []

    def owed(self, session_id: str) -> int:
        """How many results the session's delivered finals still lack (read it back when not 0)."""
        return len(self._owed.get(session_id, ()))

    def orphans(self) -> int:
        """Results still held (their final never delivered), dropped now: the call is over."""
        count = len(self._held)
        self._held.clear()
        return count
