"""The wait for Gladia's post-call analysis before ``transcript.completed``, and what cuts it short.

A call whose profile asks for a summary (or chapters) posts ``call.ended`` at once, and then waits up
to ``stt.analysis_timeout`` for the analysis (:meth:`bridge.stt.stream.SttStream.analysis`). Nothing
of the call is held meanwhile: the phone's socket is closed (:meth:`bridge.call.lifetime.Call.until_ended`)
and the call is no longer live. A bridge that is stopping does not wait: ``transcript.completed`` goes
out at once with ``analysis: {"status": "timeout"}`` (a drain must not last two minutes)."""

from __future__ import annotations

import asyncio
from typing import Any

import structlog

from bridge.stt.stream import SttStream

log = structlog.get_logger("bridge.call")

TIMED_OUT: dict[str, Any] = {"status": "timeout"}


async def analysis_unless_stopping(
    stt: SttStream, timeout: float, stopping: asyncio.Event | None
) -> dict[str, Any] | None:
    """The call's analysis (None: none asked for, and then at once, without giving the loop a turn:
    ``transcript.completed`` follows ``call.ended`` as it always did), or the timeout's answer as soon as
    ``stopping`` is set."""
    if not stt.results.analysis.wanted:
        return None
    if stopping is None:
        return await stt.analysis(timeout)
    waiting = asyncio.ensure_future(stt.analysis(timeout))
    stop = asyncio.ensure_future(stopping.wait())
    try:
        await asyncio.wait({waiting, stop}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
    if waiting.done():
        return waiting.result()
    waiting.cancel()
    log.warning("stt.analysis_cut_short", detail="the bridge is stopping: transcript.completed goes out now")
    return dict(TIMED_OUT)


async def until_set(event: asyncio.Event, task: asyncio.Task[None]) -> None:
    """Until ``event`` is set or ``task`` is over: the phone's socket waits for ``call.ended`` to be out
    (``Call.ended_posted``) or the call's end to be over, not for the analysis after it."""
    posted = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({task, posted}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        posted.cancel()
