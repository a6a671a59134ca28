"""Under ``bridge serve --workers N``: any worker answers the bot API for any call of the machine.

SO_REUSEPORT hands each connection to a worker at random, but a call lives in the one worker that
holds its phone stream. So each worker also serves a small internal app, the same ``/v1/`` handlers
over the same state, on a unix socket of its own: ``<run dir>/w<index>.sock``. The run dir is made
by the parent ``bridge serve`` process (``mkdtemp``: mode 0700, only the bridge's user can connect;
removed when it exits). A worker that does not hold a call asks its siblings:

=====================================  ===============================================================
``GET /v1/calls/{id}``                 every sibling is asked at once (N-1 small requests in parallel,
                                       N at most the cores); the first answer that is not 404 (200 the
                                       state, 409 ended there) is relayed verbatim (status and body)
``POST /v1/calls/{id}/actions``        the owner is found as above (live, or ended: a repeated
                                       ``Idempotency-Key`` still gets its first answer there), then
                                       sent the body alone; it validates and applies, and its answer
                                       is relayed. Idempotency keys live with the call, on its owner
``GET /v1/calls``                      this worker's live calls, then each sibling's
``GET /v1/calls/{id}/events``          the call's worker's event stream, piped as it comes
``GET /v1/calls/{id}/transcript``      the SQLite file is shared, but each worker commits its finals in
                                       groups (0.2 s): a transcript still active whose call is not here
                                       is read by the call's owner, which first writes what it queued
=====================================  ===============================================================

The internal app holds no :data:`SIBLINGS`, so a forwarded request is never forwarded again (no loop).
It checks the client's ``Authorization`` header again (forwarded as it came). Bounds: each request to
a sibling gives up after :data:`FORWARD_TIMEOUT`; a sibling with no socket (stopping) holds no call; a
sibling that did not answer in time, when nobody else had the call, makes the answer 503 with
``Retry-After`` (not 404: the call may well be there; a POST that timed out may have been applied:
repeat it with the same ``Idempotency-Key``). 404 only when every sibling said so.

A transfer and a restarted stream need the call's worker too (:mod:`bridge.transfer_reach`,
:mod:`bridge.sibling_relay`): the transfer desk's answer is taken where it was left
(:meth:`Siblings.take_answer`), the carrier's word on a transfer is applied where the call waits
(:meth:`Siblings.transfer_outcome`), and a restarted stream is relayed to the worker where its call
waits (:meth:`Siblings.holder`). An outbound call (:mod:`bridge.dial`) is placed by the worker the bot's
``POST /v1/calls`` reached: its stream is relayed there (:meth:`Siblings.outbound_holder`), its carrier's
callbacks applied there (:meth:`Siblings.dial_report`), and ``DELETE /v1/calls/{id}`` sent there
(:meth:`Siblings.end_call`). The same bounds apply; no answer in time is "not here" (the
carrier's default markup, the call's own wait), never a 503 to a carrier.

Fleet mode (``BRIDGE_REDIS_URL``) routes actions and call state through Redis between all instances,
each worker being one: siblings are not asked for those (no double forwarding), only for the list of
active calls and live transcripts, which Redis does not cover.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import structlog
from aiohttp import web

log = structlog.get_logger("bridge.siblings")

FORWARD_TIMEOUT = 3.0  # seconds a sibling has to answer one forwarded request
INTERNAL_DESK = "/internal/transfer-desk"  # POST: take the transfer desk's answer for a carrier call
INTERNAL_OUTCOME = "/internal/transfer-outcome"  # POST: apply a transfer's outcome to a call waiting there
INTERNAL_SUSPENDED = "/internal/suspended"  # GET: does a call of this carrier call id wait there?
INTERNAL_OUTBOUND = "/internal/outbound"  # GET: is this outbound call being placed there (waiting for its stream)?
INTERNAL_DIAL_REPORT = "/internal/dial-report"  # POST: a carrier's callback on an outbound call placed there
FORWARDED_HEADERS = ("Authorization", "Idempotency-Key", "Content-Type")
RELAYED_HEADERS = ("Content-Type", "Retry-After")


def socket_path(run_dir: Path, index: int) -> Path:
    """Worker ``index``'s internal socket."""
    return run_dir / f"w{index}.sock"


@dataclass(frozen=True, slots=True)
class Answer:
    """A sibling's answer, relayed verbatim."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    def response(self) -> web.Response:
        return web.Response(status=self.status, body=self.body, headers=dict(self.headers))


SILENT = Answer(0, {}, b"")  # no answer in time (or the connection broke): the call may be there


def _error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers or None)


def _no_answer() -> web.Response:
    return _error(503, "another worker did not answer in time; try again", **{"Retry-After": "1"})


class Siblings:
    """This worker's view of the others (see the module docstring). Open it (:meth:`open`) on the
    running loop, close it at shutdown; :func:`install` does both."""

    def __init__(self, run_dir: Path, index: int, count: int, timeout: float = FORWARD_TIMEOUT) -> None:
        self.run_dir = run_dir
        self.index = index
        self.others = [i for i in range(count) if i != index]
        self.timeout = timeout
        self._http: dict[int, aiohttp.ClientSession] = {}

    def open(self) -> None:
        for i in self.others:
            self._http[i] = aiohttp.ClientSession(
                connector=aiohttp.UnixConnector(path=str(socket_path(self.run_dir, i))),
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            )

    async def close(self) -> None:
        sessions, self._http = list(self._http.values()), {}
        for http in sessions:
            await http.close()

    async def _ask(self, i: int, method: str, path: str, request: web.Request, body: bytes | None = None) -> Answer:
        headers = {h: request.headers[h] for h in FORWARDED_HEADERS if h in request.headers}
        http = self._http.get(i)
        if http is None:  # closed: this worker is stopping
            return SILENT
        try:
            async with http.request(method, "http://worker" + path, headers=headers, data=body) as resp:
                data = await resp.read()
                return Answer(resp.status, {h: resp.headers[h] for h in RELAYED_HEADERS if h in resp.headers}, data)
        except aiohttp.ClientConnectorError:
            return Answer(404, {}, b"")  # no socket: that worker is not serving, so it holds no call
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("siblings.no_answer", sibling=self.index, to=i, path=path, error=type(exc).__name__)
            return SILENT

    async def _find(self, request: web.Request, call_id: str) -> tuple[int, Answer] | Answer | None:
        """Ask every sibling for the call at once: ``(sibling, its answer)`` from the first that knows it
        (200 live, 409 ended), :data:`SILENT` when none does but one did not answer, else None."""
        path = f"/v1/calls/{quote(call_id, safe='')}"

        async def ask(i: int) -> tuple[int, Answer]:
            return i, await self._ask(i, "GET", path, request)

        tasks = [asyncio.create_task(ask(i)) for i in self.others]
        silent = False
        try:
            for done in asyncio.as_completed(tasks):
                i, answer = await done
                if answer is SILENT:
                    silent = True
                elif answer.status != 404:
                    return i, answer
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return SILENT if silent else None

    async def call_state(self, request: web.Request) -> web.Response | None:
        """``GET /v1/calls/{id}`` for a call this worker does not hold: the owner's answer, 503 when a
        sibling did not answer, None when no worker has the call."""
        found = await self._find(request, request.match_info["call_id"])
        if isinstance(found, tuple):
            return found[1].response()
        return None if found is None else _no_answer()

    async def actions(self, request: web.Request, body: bytes) -> web.Response | None:
        """``POST /v1/calls/{id}/actions`` (``body`` as read) for a call this worker does not hold: sent
        to the owner, whose answer is relayed; 503 when a sibling did not answer; None: no such call."""
        call_id = request.match_info["call_id"]
        found = await self._find(request, call_id)
        if not isinstance(found, tuple):
            return None if found is None else _no_answer()
        owner, _ = found
        answer = await self._ask(owner, "POST", f"/v1/calls/{quote(call_id, safe='')}/actions", request, body)
        if answer is SILENT:
            return _error(
                503,
                "the call's worker did not answer in time: the actions may or may not have been applied; repeat "
                "them with the same Idempotency-Key",
                **{"Retry-After": "1"},
            )
        return answer.response()

    async def live_calls(self, request: web.Request) -> list[Any] | web.Response:
        """Every sibling's active calls (``GET /v1/calls`` without ``since``), or 503."""
        answers = await asyncio.gather(*(self._ask(i, "GET", "/v1/calls", request) for i in self.others))
        calls: list[Any] = []
        for answer in answers:
            if answer is SILENT:
                return _no_answer()
            if answer.status == 200:
                calls += json.loads(answer.body)["calls"]
        return calls

    async def transcript(self, request: web.Request) -> web.Response | None:
        """A live call's transcript from the worker that holds the call (it writes what it queued first);
        None when no sibling holds it live (the caller serves what the shared file has)."""
        call_id = request.match_info["call_id"]
        found = await self._find(request, call_id)
        if not isinstance(found, tuple) or found[1].status != 200:
            return None
        answer = await self._ask(found[0], "GET", request.rel_url.path_qs, request)
        return None if answer is SILENT else answer.response()

    # -- transfers (bridge.transfer_reach) and restarted streams (bridge.sibling_relay) ----------

    async def _internal(self, i: int, method: str, path: str, payload: Mapping[str, str]) -> Answer:
        """One internal request (JSON body, or a query for GET) to sibling ``i``, bounded like the rest."""
        http = self._http.get(i)
        if http is None:
            return SILENT
        body = json.dumps(payload).encode() if method != "GET" else None
        params = dict(payload) if method == "GET" else None
        try:
            async with http.request(method, "http://worker" + path, params=params, data=body) as resp:
                return Answer(resp.status, {}, await resp.read())
        except aiohttp.ClientConnectorError:
            return Answer(404, {}, b"")  # no socket: that worker is not serving
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("siblings.no_answer", sibling=self.index, to=i, path=path, error=type(exc).__name__)
            return SILENT

    async def _first(self, method: str, path: str, payload: Mapping[str, str]) -> tuple[int, Answer] | None:
        """Every sibling asked at once; the first that answers 200 (None: none did, or none in time)."""

        async def ask(i: int) -> tuple[int, Answer]:
            return i, await self._internal(i, method, path, payload)

        tasks = [asyncio.create_task(ask(i)) for i in self.others]
        try:
            for done in asyncio.as_completed(tasks):
                i, answer = await done
                if answer.status == 200:
                    return i, answer
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return None

    async def take_answer(self, carrier: str, call_sid: str) -> str | None:
        """The transfer desk's answer for a call handed over by a sibling (taken there, once)."""
        found = await self._first("POST", INTERNAL_DESK, {"carrier": carrier, "call_sid": call_sid})
        return None if found is None else found[1].body.decode()

    async def transfer_outcome(self, word: Mapping[str, str]) -> bool:
        """A transfer's outcome to the sibling whose call waits for it; False when none has the call."""
        return await self._first("POST", INTERNAL_OUTCOME, word) is not None

    async def outbound_holder(self, call_id: str) -> int | None:
        """The sibling placing outbound call ``call_id`` (its stream is on its way), if any."""
        found = await self._first("GET", INTERNAL_OUTBOUND, {"call": call_id})
        return None if found is None else found[0]

    async def dial_report(self, call_id: str, fields: Mapping[str, str]) -> bool:
        """A carrier's callback on an outbound call, to the sibling that placed it; False: none has it."""
        return await self._first("POST", INTERNAL_DIAL_REPORT, {**fields, "call": call_id}) is not None

    async def events(self, request: web.Request, call_id: str) -> web.StreamResponse | None:
        """``GET /v1/calls/{id}/events`` for a call another worker holds: that worker's stream, piped as it
        comes (no total timeout: a call's events come for as long as it lasts; the sibling's own bounds end
        a stream whose reader stalls). 503 when a sibling did not answer; None: no worker has the call."""
        found = await self._find(request, call_id)
        if not isinstance(found, tuple):
            return None if found is None else _no_answer()
        headers = {h: request.headers[h] for h in ("Authorization", "Last-Event-ID") if h in request.headers}
        connector = aiohttp.UnixConnector(path=str(socket_path(self.run_dir, found[0])))
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.timeout)
        try:
            async with (
                aiohttp.ClientSession(connector=connector, timeout=timeout) as http,
                http.get("http://worker" + request.rel_url.path_qs, headers=headers) as upstream,
            ):
                if upstream.status != 200:
                    relayed = {h: upstream.headers[h] for h in RELAYED_HEADERS if h in upstream.headers}
                    return web.Response(status=upstream.status, body=await upstream.read(), headers=relayed)
                resp = web.StreamResponse(headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
                resp.content_type = "text/event-stream"
                resp.charset = "utf-8"
                await resp.prepare(request)
                async for chunk in upstream.content.iter_any():
                    await resp.write(chunk)
                return resp
        except (aiohttp.ClientError, ConnectionError) as exc:
            log.info("siblings.events_ended", to=found[0], error=type(exc).__name__)
            return None

    async def knows(self, request: web.Request, call_id: str) -> bool | None:
        """Whether a sibling holds (or held) ``call_id``; None: one did not answer in time."""
        found = await self._find(request, call_id)
        return True if isinstance(found, tuple) else (None if found is SILENT else False)

    async def end_call(self, request: web.Request) -> web.Response | None:
        """``DELETE /v1/calls/{id}`` for a call this worker does not hold: sent to its worker, whose
        answer is relayed; 503 when a sibling did not answer; None: no worker has the call."""
        call_id = request.match_info["call_id"]
        found = await self._find(request, call_id)
        if not isinstance(found, tuple):
            return None if found is None else _no_answer()
        owner, _ = found
        answer = await self._ask(owner, "DELETE", f"/v1/calls/{quote(call_id, safe='')}", request)
        return _no_answer() if answer is SILENT else answer.response()

    async def holder(self, carrier: str, call_sid: str) -> int | None:
        """The sibling where a call of this carrier call id waits for a restarted stream, if any."""
        found = await self._first("GET", INTERNAL_SUSPENDED, {"carrier": carrier, "call_sid": call_sid})
        return None if found is None else found[0]


SIBLINGS = web.AppKey("siblings", Siblings)
