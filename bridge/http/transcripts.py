"""Transcripts on record over HTTP: a call's transcript and the recent calls, under ``/v1/``.

==============================================  ============================================================
``GET /v1/calls/{call_id}/transcript``          the call's transcript as JSON (``application/json``)
``GET /v1/calls/{call_id}/transcript?format=``  ``json`` (the default), ``txt`` (``text/plain``: one line per
                                                turn, ``[HH:MM:SS.d] speaker: text``), ``vtt`` (``text/vtt``:
                                                WebVTT captions, one cue per utterance, ``<v speaker>`` voices)
``...?format=txt|vtt&lang=<code>``              each utterance in its translation into ``lang`` (``fr``,
                                                ``pt-BR``: 2-3 letters, an optional region; a code with a
                                                region also takes the language's own translation), an
                                                utterance without one in its own words; ``json`` ignores
                                                ``lang`` (it carries every translation)
``GET /v1/calls?since=<time>[&limit=<n>]``      calls that started or ended at or after ``since`` (ISO 8601,
                                                e.g. ``2026-01-31T12:00:00Z``, no zone meaning UTC; or unix
                                                seconds), newest first, at most ``limit`` (default 100, at
                                                most 1000): ``{"calls": [{"id", "provider", "call_sid",
                                                "stream_sid", "from", "to", "started_at", "ended_at",
                                                "end_reason", "active", "utterances"}]}`` (``utterances``:
                                                how many). Without ``since``: the active calls, as before.
``GET /v1/calls?since=<time>&q=<text>``         only the calls whose caller or called number, or the text of
                                                one of their utterances, holds ``text`` (at most 100
                                                characters, blanks around it dropped; letters in either case:
                                                SQLite's only ASCII ones; ``%`` and ``_`` are themselves)
==============================================  ============================================================

The JSON transcript is the call (``id``, ``provider``, ``call_sid``, ``stream_sid``, ``from``, ``to``,
``parameters``, ``started_at``, ``ended_at``, ``end_reason``; times ISO 8601 UTC), ``active`` (true while
the call runs: what is recorded so far is served), and ``utterances``: each final as the bot's
``utterance.final`` event carries it (``id``, ``channel``, ``speaker``, ``start``, ``end`` in seconds from
the start of the call, ``text``, ``language``, ``words`` with ``word``/``start``/``end``/``confidence``),
in start order; with Gladia's add-ons, an utterance also has, when they came, ``translations``
(``{language: text}``), ``entities`` and ``sentiment`` (as ``utterance.entities`` / ``utterance.sentiment``
carried them), and the call has ``analysis`` (``transcript.completed``'s: ``status``, ``summary``,
``chapters``, ``errors``) once recorded. Text and WebVTT times are from the start of the call too.

Same auth as the rest of ``/v1/``: ``Authorization: Bearer <BRIDGE_API_TOKEN>``; no token configured:
403. Errors, each ``{"error": "..."}``: 401 bad token, 404 unknown call (or transcripts off), 422 a bad
``format``, ``lang``, ``since``, ``limit`` or ``q`` (the message names the allowed values), 503
the store cannot be read (or, with ``Retry-After: 1``, too many reads are already waiting for it: reads
run on two threads of their own, :mod:`bridge.blocking`, never on those that make the calls' reply audio).

Where and how long: ``<BRIDGE_DATA_DIR>/transcripts.sqlite3``, one file shared by every worker process
(any of them answers for any call). A call's finals are written as they come, off the event loop; a
full or failing disk is logged once and never ends a call. Calls that ended more than
``transcripts.retention_days`` ago (``BRIDGE_TRANSCRIPT_RETENTION_DAYS``, default 30; a call whose end
was never recorded counts from its start) are deleted with their utterances, add-ons and analysis at
start-up and every
``transcripts.purge_interval`` seconds (default 3600). ``BRIDGE_TRANSCRIPTS=false`` keeps nothing, and
the transcript route answers 404 saying transcripts are off.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import structlog
from aiohttp import web

from bridge.app_keys import CLOCK, SETTINGS
from bridge.blocking import BlockingPool, PoolFull
from bridge.call.registry import CALLS
from bridge.clock import Clock
from bridge.http.bot_api import authorized
from bridge.record_store import RecordStore, open_record_store
from bridge.recording.service import RECORDINGS
from bridge.settings import Settings, TranscriptSettings
from bridge.siblings import SIBLINGS
from bridge.transcript_render import in_language, iso, parse_lang, parse_since, render_json, render_txt, render_vtt

log = structlog.get_logger("bridge.transcripts")

FORMATS: dict[str, tuple[str, Callable[[Mapping[str, Any]], str]]] = {
    "json": ("application/json", render_json),
    "txt": ("text/plain", render_txt),
    "vtt": ("text/vtt", render_vtt),
}
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_Q = 100  # characters of a search (?q=)
CLOSE_TIMEOUT = 5.0  # seconds the last queued writes get at shutdown
READ_FLUSH_TIMEOUT = 1.0  # a read first waits (at most this long) for the writes this process has queued

_DETAILS = {
    "transcripts.degraded": "transcript writes fail: they stay queued (bounded) and are retried; calls are not "
    "affected",
    "transcripts.dropping": "transcript writes are being dropped (counted); calls are not affected",
    "transcripts.recovered": "transcript writes work again",
    "transcripts.caught_up": "the transcript writer has caught up",
}


TRANSCRIPTS: web.AppKey[RecordStore | None] = web.AppKey("transcripts")  # None: off, or could not be opened
TRANSCRIPT_READS = web.AppKey("transcript_reads", BlockingPool)  # the store's read threads (bridge.blocking)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _store(request: web.Request) -> RecordStore | web.Response:
    if not request.app[SETTINGS].transcripts.enabled:
        return _error(404, "transcripts are off (BRIDGE_TRANSCRIPTS=false): no transcript is kept")
    store = request.app[TRANSCRIPTS]
    if store is None:
        return _error(503, "the transcript store could not be opened at start-up (see the log)")
    return store


def _busy(exc: PoolFull) -> web.Response:
    if str(exc.refused).strip("0") == "1":  # the 1st, 10th, 100th... refusal: a flood logs a few lines
        log.warning("transcripts.reads_refused", reason=str(exc), refused_so_far=exc.refused)
    return web.json_response(
        {"error": "too many transcript reads are waiting; try again"}, status=503, headers={"Retry-After": "1"}
    )


def _unreadable(exc: Exception) -> web.Response:
    log.warning("transcripts.read_failed", reason=f"{type(exc).__name__}: {exc}"[:200])
    return _error(503, "the transcript store cannot be read now; try again")


async def get_transcript(request: web.Request) -> web.Response:
    refused = authorized(request)
    if refused is not None:
        return refused
    fmt = request.query.get("format", "json")
    if fmt not in FORMATS:
        return _error(422, f"format must be one of {', '.join(FORMATS)} (got {fmt[:20]!r})")
    lang = None
    if "lang" in request.query:  # checked for every format; json ignores it (it carries every translation)
        try:
            lang = parse_lang(request.query["lang"])
        except ValueError as exc:
            return _error(422, str(exc))
    store = _store(request)
    if isinstance(store, web.Response):
        return store
    call_id = request.match_info["call_id"]
    content_type, render = FORMATS[fmt]
    translate = lang if fmt != "json" else None

    def read() -> tuple[bool, str] | None:  # a worker thread: a long transcript is read and rendered off the loop
        store.flush(READ_FLUSH_TIMEOUT)  # this process's finals still in the writer's commit window
        transcript = store.get(call_id)
        if transcript is None:
            return None
        shown = transcript if translate is None else in_language(transcript, translate)
        return bool(transcript["active"]), render(shown)

    try:
        found = await request.app[TRANSCRIPT_READS].run(read)  # never the default executor: the audio path's threads
    except PoolFull as exc:
        return _busy(exc)
    except store.ERRORS as exc:
        return _unreadable(exc)
    siblings = request.app.get(SIBLINGS)
    if (found is None or found[0]) and siblings is not None and call_id not in request.app[CALLS].live:
        # --workers: a live call of another worker, whose last finals may still wait in its queue
        relayed = await siblings.transcript(request)
        if relayed is not None:
            return relayed
    if found is None:
        return _error(404, f"no transcript for call {call_id}")
    return web.Response(text=found[1], content_type=content_type, charset="utf-8")


async def recent_calls(request: web.Request) -> web.Response:
    """``GET /v1/calls?since=...`` (bridge.http.bot_api sends it here when ``since`` is present)."""
    refused = authorized(request)
    if refused is not None:
        return refused
    try:
        since = parse_since(request.query["since"])
    except ValueError as exc:
        return _error(422, str(exc))
    raw_limit = request.query.get("limit", str(DEFAULT_LIMIT))
    limit = int(raw_limit) if raw_limit.isdigit() and len(raw_limit) <= 4 else 0
    if not 1 <= limit <= MAX_LIMIT:
        return _error(422, f"limit must be a whole number from 1 to {MAX_LIMIT}")
    q = request.query.get("q", "").strip() or None
    if q is not None and len(q) > MAX_Q:
        return _error(422, f"q must be at most {MAX_Q} characters")
    store = _store(request)
    if isinstance(store, web.Response):
        return store

    recordings = request.app.get(RECORDINGS)

    def read() -> list[dict[str, Any]]:
        store.flush(READ_FLUSH_TIMEOUT)
        calls = store.list_since(since, limit, q)
        found = recordings.describe_many([c["id"] for c in calls]) if recordings is not None else {}
        for call in calls:  # {format, duration_s, bytes} or null (bridge.recording.service)
            call["recording"] = found.get(call["id"])
        return calls

    try:
        calls = await request.app[TRANSCRIPT_READS].run(read)
    except PoolFull as exc:
        return _busy(exc)
    except store.ERRORS as exc:
        return _unreadable(exc)
    return web.json_response({"calls": calls})


def add_routes(app: web.Application) -> None:
    """``GET /v1/calls/{call_id}/transcript`` (``GET /v1/calls?since=`` is :func:`recent_calls`, given to
    ``bridge.http.bot_api.add_routes``, which owns ``/v1/calls``)."""
    app.router.add_get("/v1/calls/{call_id}/transcript", get_transcript)


async def transcript_store(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: open the store (:data:`TRANSCRIPTS`) and its read threads (:data:`TRANSCRIPT_READS`),
    purge now and every ``purge_interval``, and at shutdown (after the calls have ended) write what is
    queued and close it.

    A store that cannot be opened is logged and the bridge runs without transcripts (calls are not
    affected; the API answers 503).
    """
    settings, clock = app[SETTINGS], app[CLOCK]
    config = settings.transcripts
    # The store's reads and the purge run on threads of their own (bridge.blocking), never on the default
    # executor, whose threads make the calls' reply audio: a locked file must not delay a call's audio.
    # (A thread starts only when work comes: with transcripts off, none ever does.)
    app[TRANSCRIPT_READS] = pool = BlockingPool(name="transcript-read")
    app[TRANSCRIPTS] = store = await _open_store(settings, clock) if config.enabled else None
    recordings = app.get(RECORDINGS)
    if store is not None and recordings is not None:
        store.on_purged = recordings.forget  # a call's recording goes with its transcript
        if recordings.remote is not None:
            recordings.remote.attach(store)  # the index of the parts in object storage
    purge = None
    if store is not None:
        purge = asyncio.create_task(_purge_loop(store, pool, config, clock), name="transcripts-purge")
    try:
        yield
    finally:
        if purge is not None:
            purge.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await purge
        pool.close()
        if store is not None and recordings is not None and recordings.remote is not None:
            # The last parts are uploaded and listed before the store closes (the service stops again later: no-op).
            await asyncio.to_thread(recordings.stop, CLOSE_TIMEOUT)
        if store is not None:
            await asyncio.to_thread(store.close, CLOSE_TIMEOUT)
            if store.dropped:
                log.warning("transcripts.closed", dropped=store.dropped, write_failures=store.write_failures)


async def _open_store(settings: Settings, clock: Clock) -> RecordStore | None:
    """The store in ``server.data_dir``, or PostgreSQL's (``BRIDGE_DATABASE_URL``); None (logged) when it
    cannot be opened."""
    config = settings.transcripts
    loop = asyncio.get_running_loop()
    context = contextvars.copy_context()  # e.g. the worker's index, for lines logged from the writer thread

    def report(event: str, fields: dict[str, Any]) -> None:  # any thread
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is left to tell
            loop.call_soon_threadsafe(_log_report, event, fields, context=context)

    try:
        return await asyncio.to_thread(open_record_store, settings, clock.time, report)
    except Exception as exc:  # any store's (sqlite3, psycopg, OSError): the calls go on without a record
        log.error(
            "transcripts.unavailable",
            path=str(settings.server.data_dir) if config.database_url is None else "BRIDGE_DATABASE_URL",
            reason=f"{type(exc).__name__}: {exc}"[:200],
            detail="no transcript is kept (calls are not affected); /v1/calls/{id}/transcript answers 503",
        )
        return None


def _log_report(event: str, fields: dict[str, Any]) -> None:
    if event in ("transcripts.degraded", "transcripts.dropping"):
        log.error(event, detail=_DETAILS[event], **fields)
    else:
        log.info(event, detail=_DETAILS.get(event, ""), **fields)


async def _purge_loop(store: RecordStore, pool: BlockingPool, config: TranscriptSettings, clock: Clock) -> None:
    """Delete what is past retention, now and every ``purge_interval``. "Now" is ``clock.time()`` (tests
    move it); the interval is waited in real time (a virtual clock's sleep returns at once, so sleeping on
    it would spin)."""
    while True:
        cutoff = clock.time() - config.retention_days * 86400
        try:
            gone = await pool.run(store.purge, cutoff, bounded=False)
        except store.ERRORS as exc:
            log.warning(
                "transcripts.purge_failed",
                reason=f"{type(exc).__name__}: {exc}"[:200],
                detail=f"tried again in {config.purge_interval:g} s",
            )
        else:
            if gone:
                log.info("transcripts.purged", calls=gone, ended_before=iso(cutoff))
        await asyncio.sleep(config.purge_interval)
