"""After a call: the finals a Gladia session has that never arrived on its socket.

A session that did not end normally (its socket dropped for good, or the call ended while Gladia was
unreachable) may hold finals the bridge never received. ``GET /v2/live/{id}`` reads it back (retried
while Gladia's post-processing is not done), the :class:`~bridge.stt.finals.FinalsTracker` says
which finals are new, and each one reaches the call as a :class:`FinalUtterance` in call time.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from bridge.errors import SttError
from bridge.stt.finals import FinalsTracker
from bridge.stt.gladia_api import GladiaApi
from bridge.stt.notices import FinalUtterance, SttNotice
from bridge.stt.protocol import parse_utterance

log = structlog.get_logger("bridge.stt")

READ_BACK_ATTEMPTS = 3


async def recover_missed_finals(
    api: GladiaApi,
    finals: FinalsTracker,
    sessions: list[tuple[str, float]],
    on_notice: Callable[[SttNotice], None],
    sleep: Callable[[float], Awaitable[None]],
) -> int:
    """Read back each ``(session id, call-time origin in seconds)`` and deliver its missed finals;
    returns how many were delivered. A session that cannot be read is logged and skipped."""
    recovered = 0
    for session_id, origin in sessions:
        try:
            utterances = await _read_back(api, session_id, sleep)
        except SttError as exc:
            log.warning("stt.recovery_failed", session_id=session_id, error=str(exc))
            continue
        for i, utt in finals.missed(session_id, [parse_utterance(u) for u in utterances]):
            recovered += 1
            on_notice(FinalUtterance(f"recovered_{i:08d}", utt, session_id, origin + utt.start, origin + utt.end))
    if recovered:
        log.info("stt.recovered_finals", count=recovered)
    return recovered


async def _read_back(
    api: GladiaApi, session_id: str, sleep: Callable[[float], Awaitable[None]]
) -> list[dict[str, Any]]:
    for attempt in range(READ_BACK_ATTEMPTS):
        utterances = await api.utterances(session_id)
        if utterances is not None:
            return utterances
        await sleep(0.5 * (attempt + 1))  # post-processing not done yet
    return []
