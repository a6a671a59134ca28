"""What one call's Gladia sessions give the call: finals (each once, in call time), the add-on results
linked to them, and the post-call analysis; read from the socket as it comes and read back after the
call (``GET /v2/live/{id}``) for what never came. The session loop (:mod:`bridge.stt.stream`) feeds it;
it tells the call through ``on_notice`` and never awaits, except when reading back after the call."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from bridge.stt.addon_links import AddonLinks, Linked, RealtimeResult
from bridge.stt.addons import POST_ADDONS, REALTIME_ADDONS, PostResults, requested_addons, target_languages
from bridge.stt.analysis import CallAnalysis
from bridge.stt.counters import SttCounters
from bridge.stt.finals import FinalsTracker
from bridge.stt.gladia_api import GladiaApi
from bridge.stt.notices import AddonResult, FinalUtterance, SttNotice
from bridge.stt.protocol import Transcript
from bridge.stt.recovery import read_back_sessions, wait_for_analysis
from bridge.stt.utterance import Utterance

log = structlog.get_logger("bridge.stt")


class SessionResults:
    """See the module docstring. ``request_body``: the call's ``POST /v2/live`` body (which add-ons)."""

    __slots__ = ("_counters", "analysis", "finals", "links", "on_notice")

    def __init__(
        self, request_body: dict[str, Any], counters: SttCounters, on_notice: Callable[[SttNotice], None]
    ) -> None:
        addons = requested_addons(request_body)
        self.finals = FinalsTracker()
        self.links = AddonLinks(tuple(a for a in addons if a in REALTIME_ADDONS), target_languages(request_body))
        self.analysis = CallAnalysis(tuple(a for a in addons if a in POST_ADDONS))
        self._counters = counters
        self.on_notice = on_notice

    def transcript(self, session_id: str, origin: float, event: Transcript) -> None:
        """A final from the socket (``origin``: the session's time 0 in call seconds): delivered when new."""
        if self.finals.accept(session_id, event.id, event.utterance):
            self._counters.finals += 1
            self.final(event.id, event.utterance, session_id, origin)

    def final(self, final_id: str, utt: Utterance, session_id: str, origin: float) -> None:
        """A new final, then the add-on results that came for it before it."""
        self.on_notice(FinalUtterance(final_id, utt, session_id, origin + utt.start, origin + utt.end))
        for linked in self.links.final(session_id, final_id, utt.channel, utt.text):
            self.result(linked, origin)

    def addon(self, session_id: str, origin: float, event: RealtimeResult) -> None:
        """A realtime add-on's result (or failure) from the socket: passed on once its final was."""
        for linked in self.links.result(session_id, event):
            self.result(linked, origin)

    def post(self, session_id: str, event: PostResults) -> None:
        self.analysis.take(session_id, event)

    def result(self, linked: Linked, origin: float) -> None:
        self._counters.addon_results += 1
        self.on_notice(AddonResult(linked.result, linked.session_id, linked.channel, origin))

    def needs_read_back(self, session_id: str) -> bool:
        """Its finals still lack add-on results (a dropped connection lost them)."""
        return self.links.owed(session_id) > 0

    async def read_back(
        self, api: GladiaApi, sessions: list[tuple[str, float]], sleep: Callable[[float], Awaitable[None]]
    ) -> int:
        """After the call: read back ``(session id, origin)`` each and deliver what never came; returns
        how many finals were recovered. Results whose final never came are dropped then (logged)."""
        recovered = 0
        if sessions:
            recovered = await read_back_sessions(
                api, sessions, self.finals, self.links, self.analysis, self.final, self.result, sleep
            )
        self._counters.recovered_finals += recovered
        orphans = self.links.orphans()
        if orphans or self.links.dropped:
            log.warning("stt.addon_results_unlinked", never_linked=orphans, pushed_out=self.links.dropped)
        return recovered

    async def wait_for_analysis(
        self, api: GladiaApi, session_ids: list[str], timeout: float, sleep: Callable[[float], Awaitable[None]]
    ) -> dict[str, Any] | None:
        """``transcript.completed``'s ``analysis`` (None: none asked for), waiting at most ``timeout``."""
        if not self.analysis.wanted:
            return None
        return await wait_for_analysis(api, self.analysis, session_ids, timeout, sleep)
