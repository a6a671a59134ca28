"""After the call: what a Gladia session holds that never arrived on its socket, and the post-call analysis.

* :func:`read_back_sessions`: a session that did not end normally (its socket dropped for good, or the
  call ended while Gladia was unreachable) may hold finals the bridge never received, and a session
  whose finals still lack add-on results (a dropped connection lost them) holds those in its
  ``result.messages``. ``GET /v2/live/{id}`` reads it back (retried while Gladia's post-processing is
  not done); the :class:`~bridge.stt.finals.FinalsTracker` says which finals are new and the
  :class:`~bridge.stt.addon_links.AddonLinks` which results, and each reaches the call in order: a
  final, then its results. What the read-back says of the analysis is kept too.
* :func:`wait_for_analysis`: ``transcript.completed`` waits (bounded) for the summary and chapters,
  reading each session back until it is ``done``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

from bridge.errors import SttError
from bridge.stt.addon_links import AddonLinks, Linked
from bridge.stt.analysis import CallAnalysis
from bridge.stt.finals import FinalsTracker
from bridge.stt.gladia_api import GladiaApi
from bridge.stt.read_back import ReadBack
from bridge.stt.utterance import Utterance

log = structlog.get_logger("bridge.stt")

READ_BACK_ATTEMPTS = 3
ANALYSIS_POLL_S = (1.0, 2.0, 4.0, 5.0)  # between reads of a session still post-processing (then the last)

Sleep = Callable[[float], Awaitable[None]]


async def read_back_sessions(
    api: GladiaApi,
    sessions: list[tuple[str, float]],
    finals: FinalsTracker,
    links: AddonLinks,
    analysis: CallAnalysis,
    on_final: Callable[[str, Utterance, str, float], None],
    on_result: Callable[[Linked, float], None],
    sleep: Sleep,
) -> int:
    """Read back each ``(session id, call-time origin in seconds)``; deliver its missed finals (``on_final``:
    id, utterance, session id, origin) and results (``on_result``) in order. Returns how many finals were
    delivered. A session that cannot be read is logged and skipped."""
    recovered = 0
    for session_id, origin in sessions:
        try:
            back = await _read_when_done(api, session_id, sleep)
        except SttError as exc:
            log.warning("stt.recovery_failed", session_id=session_id, error=str(exc))
            continue
        if back is None:
            log.warning("stt.recovery_failed", session_id=session_id, error="still being processed")
            continue
        for i, utt in finals.missed(session_id, [u for _, u in back.finals]):
            recovered += 1
            final_id = back.finals[i][0] or f"recovered_{i:08d}"
            on_final(final_id, utt, session_id, origin)
            for linked in links.final(session_id, final_id, utt.channel, utt.text):
                on_result(linked, origin)
        for result in back.addons:
            for linked in links.result(session_id, result):
                on_result(linked, origin)
        if back.post is not None and analysis.wanted:
            analysis.take(session_id, back.post)
    if recovered:
        log.info("stt.recovered_finals", count=recovered)
    return recovered


async def _read_when_done(api: GladiaApi, session_id: str, sleep: Sleep) -> ReadBack | None:
    for attempt in range(READ_BACK_ATTEMPTS):
        back = await api.read(session_id)
        if back.done:
            return back
        await sleep(0.5 * (attempt + 1))  # post-processing not done yet
    return None


async def wait_for_analysis(
    api: GladiaApi, analysis: CallAnalysis, session_ids: list[str], timeout: float, sleep: Sleep
) -> dict[str, object]:
    """``transcript.completed``'s ``analysis``: at once when every session's results came over its socket,
    else read back every ``timeout`` seconds at most (``{"status": "timeout"}`` then)."""
    if not session_ids:
        return {"status": "failed", "errors": dict.fromkeys(analysis.wanted, "no Gladia session")}
    try:
        async with asyncio.timeout(timeout):
            attempt = 0
            while True:
                waiting = [s for s in session_ids if not analysis.complete(s)]
                if not waiting:
                    return analysis.json(session_ids)
                if attempt:
                    await sleep(ANALYSIS_POLL_S[min(attempt - 1, len(ANALYSIS_POLL_S) - 1)])
                attempt += 1
                for session_id in waiting:
                    await _read_analysis(api, analysis, session_id)
    except TimeoutError:
        log.warning("stt.analysis_timeout", timeout=timeout, sessions=len(session_ids))
        return analysis.json(session_ids, timed_out=True)


async def _read_analysis(api: GladiaApi, analysis: CallAnalysis, session_id: str) -> None:
    try:
        back = await api.read(session_id)
    except SttError as exc:
        if not exc.retryable:  # e.g. 404: the session is gone, and its results with it
            analysis.fail(session_id, str(exc))
        return
    if back.status == "error":
        analysis.fail(session_id, "Gladia's session ended in error")
    elif back.done and back.post is not None:
        analysis.take(session_id, back.post)
        if not analysis.complete(session_id):  # done, and still no trace of what was asked
            analysis.fail(session_id, "not in the session's result")
