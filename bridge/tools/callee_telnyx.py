"""The fake Telnyx of :mod:`bridge.tools.callee`: Call Control's ``POST /v2/calls`` (Bearer API key, JSON)
and ``POST /v2/calls/{id}/actions/hangup``, the call's webhooks to ``webhook_url`` (``call.initiated``,
``call.answered`` or ``call.hangup``, ``streaming.*``, ``call.machine.*``), and the media stream to
``stream_url`` (its query kept) in Telnyx's dialect (:class:`bridge.tools.writers.telnyx.TelnyxStreamWriter`).

Sources: call-control.md §3.A (team-telnyx/telnyx-python@6d68c8c ``types/call_dial_params.py``,
``types/call_dial_response.py`` and the webhook types ``call_initiated``, ``call_answered``, ``call_hangup``,
``call_machine_detection_ended``, ``call_machine_greeting_ended``, ``call_streaming_*``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import uuid
from typing import Any

from aiohttp import web

from bridge.audio import Codec, encode_from_pcm16
from bridge.tools.callee_calls import TELNYX_NOT_ANSWERED, CalleeCall, iso_now, telnyx_detection
from bridge.tools.callee_line import Line
from bridge.tools.greetings import Greeting
from bridge.tools.writers.telnyx import TelnyxStreamWriter


def _telnyx_error(status: int, code: str, title: str, detail: str) -> web.Response:
    """Telnyx's error body: ``{"errors": [{"code", "title", "detail"}]}`` (the codes are UNVERIFIED)."""
    return web.json_response({"errors": [{"code": code, "title": title, "detail": detail}]}, status=status)


class TelnyxLine(Line):
    """The fake Telnyx (see the module docstring)."""

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v2/calls", self._telnyx_dial)
        app.router.add_post("/v2/calls/{call}/actions/hangup", self._telnyx_hangup)

    async def _telnyx_dial(self, request: web.Request) -> web.Response:
        """``POST /v2/calls``: ``{"data": {call_control_id, call_leg_id, call_session_id, ...}}``, then the call."""
        if request.headers.get("Authorization", "") != f"Bearer {self.api_key}" or not self.api_key:
            return _telnyx_error(401, "10009", "Authentication failed", "The API key is missing or wrong.")
        try:
            body = json.loads(await request.text())
        except ValueError:
            return _telnyx_error(400, "10002", "Invalid request", "The body is not JSON.")
        if not isinstance(body, dict):
            return _telnyx_error(400, "10002", "Invalid request", "The body is not a JSON object.")
        if self.answering.refuse is not None:
            return _telnyx_error(self.answering.refuse, "10007", "Refused", "refused by the fake")
        for name in ("connection_id", "to", "from"):
            if not body.get(name):
                return _telnyx_error(422, "10015", "Invalid value", f"{name} is required")  # UNVERIFIED code
        to = body["to"] if isinstance(body["to"], str) else str(body["to"][0])
        call = CalleeCall("v3:" + base64.urlsafe_b64encode(os.urandom(33)).decode(), to, str(body["from"]), body)
        leg, session = str(uuid.uuid4()), str(uuid.uuid4())
        self.calls.append(call)
        self._by_id[call.carrier_call_id] = call
        greeting = self._greeting_task()
        self._spawn(call, lambda c: self._telnyx_call(c, greeting, leg, session))
        data = {
            "call_control_id": call.carrier_call_id,
            "call_leg_id": leg,
            "call_session_id": session,
            "is_alive": False,
            "record_type": "call",
        }
        return web.json_response({"data": data})

    async def _telnyx_hangup(self, request: web.Request) -> web.Response:
        """``POST /v2/calls/{id}/actions/hangup``: cancels a ringing call, hangs up an answered one."""
        if request.headers.get("Authorization", "") != f"Bearer {self.api_key}" or not self.api_key:
            return _telnyx_error(401, "10009", "Authentication failed", "The API key is missing or wrong.")
        call = self._by_id.get(request.match_info["call"])
        if call is None:
            return _telnyx_error(404, "10005", "Resource not found", "No call with this call_control_id.")
        if call.done.is_set() or call.state not in ("queued", "ringing", "in-progress"):
            return _telnyx_error(422, "90018", "Call has already ended", "The call is no longer active.")
        call.ended_by = call.ended_by or "bridge"
        call._cancel.set()
        call._hangup.set()
        return web.json_response({"data": {"result": "ok"}})

    async def _telnyx_webhook(self, call: CalleeCall, event_type: str, ids: dict[str, str], **payload: Any) -> None:
        """A Call Control webhook to the create's ``webhook_url``, signed as Telnyx signs it (Ed25519) when the
        fake was given a signing key."""
        body = call.request
        common = {
            "call_control_id": call.carrier_call_id,
            **ids,
            "client_state": body.get("client_state"),
            "connection_id": body.get("connection_id"),
        }
        if event_type.startswith("call."):  # streaming.* payloads name no parties (the SDK's types)
            common |= {"from": call.from_, "to": call.to}
        event = {
            "data": {
                "event_type": event_type,
                "id": str(uuid.uuid4()),
                "occurred_at": iso_now(),
                "record_type": "event",
                "payload": {**common, **payload},
            },
            "meta": {"attempt": 1, "delivered_to": body.get("webhook_url")},
        }
        if event_type.startswith("call.machine."):
            call.amd.append({"event_type": event_type, "result": str(payload.get("result"))})
        else:
            call.statuses.append(event_type)
        url = body.get("webhook_url")
        if url:
            await self._post(str(url), body=event, method=str(body.get("webhook_url_method") or "POST").upper())

    async def _telnyx_call(
        self, call: CalleeCall, greeting_task: asyncio.Task[Greeting] | None, leg: str, session: str
    ) -> None:
        ids = {"call_leg_id": leg, "call_session_id": session}
        started = iso_now()
        call.state = "ringing"
        await self._telnyx_webhook(
            call, "call.initiated", ids, direction="outgoing", state="bridging", start_time=started
        )
        answer = self.answering.answer
        if not await self._ring(call):
            call.state = "canceled"
            await self._telnyx_webhook(
                call, "call.hangup", ids, hangup_cause="originator_cancel", hangup_source="caller", state="hangup"
            )
            return
        if answer in ("busy", "no-answer", "failed"):
            call.state = answer
            cause = TELNYX_NOT_ANSWERED[answer]
            await self._telnyx_webhook(
                call, "call.hangup", ids, hangup_cause=cause, hangup_source="callee", state="hangup", start_time=started
            )
            return
        if not await self._greet(call, greeting_task):
            call.state = "failed"
            await self._telnyx_webhook(
                call, "call.hangup", ids, hangup_cause="unspecified", hangup_source="callee", state="hangup"
            )
            return
        call.state = "in-progress"
        await self._telnyx_webhook(call, "call.answered", ids, state="answered", start_time=started)
        loop = asyncio.get_running_loop()
        answered = loop.time()
        events = telnyx_detection(
            answer, str(call.request.get("answering_machine_detection") or ""), call.greeting, self.answering.amd_ms
        )
        amd = asyncio.create_task(self._telnyx_amd(call, events, answered, ids)) if events else None
        deadline = self._deadline(call.greeting, answered)
        try:
            stream_url = call.request.get("stream_url")
            if stream_url:
                why = await self._telnyx_stream(call, str(stream_url), ids, deadline)
                if why == "bridge":  # the stream ended, the call did not: Telnyx keeps the call up
                    await self._telnyx_webhook(call, "streaming.stopped", ids, stream_url=stream_url)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(call._hangup.wait(), max(0.0, deadline - loop.time()))
        finally:
            if amd is not None:
                amd.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await amd
        call.ended_by = call.ended_by or "callee"  # the bridge's hang-up said so already
        source = "caller" if call.ended_by == "bridge" else "callee"
        call.state = "completed"
        await self._telnyx_webhook(
            call,
            "call.hangup",
            ids,
            hangup_cause="normal_clearing",
            hangup_source=source,
            state="hangup",
            start_time=started,
        )

    async def _telnyx_amd(
        self, call: CalleeCall, events: list[tuple[int, str, str]], answered: float, ids: dict[str, str]
    ) -> None:
        loop = asyncio.get_running_loop()
        for at_ms, event_type, result in events:
            await asyncio.sleep(max(0.0, answered + at_ms / 1000 - loop.time()))
            await self._telnyx_webhook(call, event_type, ids, result=result)

    async def _telnyx_stream(self, call: CalleeCall, url: str, ids: dict[str, str], deadline: float) -> str:
        """The stream as Telnyx connects it (the URL's query kept): ``connected``, ``start``, media in the
        create's ``stream_codec`` (PCMU by default; PCMA; L16, here at 8 kHz: UNVERIFIED which rate Telnyx
        uses for L16 on a narrowband leg), ``stop``."""
        requested = str(call.request.get("stream_codec") or "PCMU").upper()
        encoding = requested if requested in ("PCMU", "PCMA", "L16") else "PCMU"
        codec: Codec = {"PCMU": "ulaw", "PCMA": "alaw"}.get(encoding, "pcm16")  # type: ignore[assignment]
        writer = TelnyxStreamWriter(
            call.carrier_call_id,
            str(uuid.uuid4()),
            call.from_,
            call.to,
            encoding,
            8000,
            call_session_id=ids["call_session_id"],
            client_state=call.request.get("client_state"),
        )
        audio = encode_from_pcm16(call.greeting.pcm, codec) if call.greeting is not None else b""

        async def started() -> None:
            await self._telnyx_webhook(call, "streaming.started", ids, stream_url=url)

        why = await self._converse(
            call, url, [writer.connected(), writer.start()], writer, codec, audio, deadline, connected=started
        )
        if why == "unreachable":
            await self._telnyx_webhook(
                call, "streaming.failed", ids, stream_url=url, failure_reason="connection_failed"
            )
        return why
