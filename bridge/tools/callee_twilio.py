"""The fake Twilio of :mod:`bridge.tools.callee`: the REST API that places a call
(``POST /2010-04-01/Accounts/{sid}/Calls.json``, HTTP Basic, form; ``POST .../Calls/{sid}.json`` to cancel or
hang up), the status and asynchronous AMD callbacks signed with X-Twilio-Signature, and the call's TwiML run
as Twilio runs it (``<Connect><Stream>``, ``<Connect action>``, ``<Redirect>``, ``<Hangup>``).

Sources: call-control.md §1.B (twilio/twilio-python@306691e ``rest/api/v2010/account/call/__init__.py``),
https://www.twilio.com/docs/voice/answering-machine-detection, https://www.twilio.com/docs/voice/twiml/stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import aiohttp
from aiohttp import web

from bridge.adapters.twilio import signature
from bridge.audio import encode_from_pcm16
from bridge.tools.callee_calls import CalleeCall, twilio_answered_by, twilio_timestamp, without_query
from bridge.tools.callee_line import CALLBACK_TIMEOUT, Line, log
from bridge.tools.greetings import Greeting
from bridge.tools.twiml_read import MAX_TWIML, ConnectStream, Dial, Hangup, Redirect, Verb, read_twiml
from bridge.tools.writers.twilio import TwilioStreamWriter

API_VERSION = "2010-04-01"
MAX_DOCUMENTS = 20  # TwiML documents fetched in one call: more is a loop


def _twilio_error(status: int, code: int, message: str) -> web.Response:
    """Twilio's REST error body (``code``, ``message``, ``more_info``, ``status``)."""
    body = {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    return web.json_response(body, status=status)


class TwilioLine(Line):
    """The fake Twilio (see the module docstring)."""

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post(f"/{API_VERSION}/Accounts/{{sid}}/Calls.json", self._twilio_create)
        app.router.add_post(f"/{API_VERSION}/Accounts/{{sid}}/Calls/{{call}}.json", self._twilio_update)

    def _twilio_authorized(self, request: web.Request) -> bool:
        try:
            auth = aiohttp.BasicAuth.decode(request.headers.get("Authorization", ""))
        except ValueError:
            return False
        return auth.login == self.account_sid and (not self.auth_token or auth.password == self.auth_token)

    async def _twilio_create(self, request: web.Request) -> web.Response:
        """``POST /2010-04-01/Accounts/{sid}/Calls.json``: the call resource (201), then the call in a task."""
        if not self._twilio_authorized(request):
            return _twilio_error(401, 20003, "Authenticate")
        if request.match_info["sid"] != self.account_sid:
            return _twilio_error(404, 20404, "The requested resource was not found")
        form = await request.post()
        fields: dict[str, Any] = {}
        for name in form:
            values = [str(v) for v in form.getall(name)]
            fields[name] = values if len(values) > 1 or name == "StatusCallbackEvent" else values[0]
        if self.answering.refuse is not None:
            return _twilio_error(
                self.answering.refuse, 20500 if self.answering.refuse >= 500 else 21210, "refused by the fake"
            )
        if not fields.get("To"):
            return _twilio_error(400, 21201, "No 'To' number is specified")
        if not fields.get("From"):
            return _twilio_error(400, 21213, "No 'From' number is specified")
        if not fields.get("Twiml") and not fields.get("Url"):
            return _twilio_error(400, 21205, "Url parameter is required.")
        if fields.get("Twiml"):
            try:
                read_twiml(str(fields["Twiml"]))
            except ValueError as exc:
                return _twilio_error(400, 21205, f"Twiml: {exc}")  # UNVERIFIED code for bad inline TwiML
        sid = "CA" + uuid.uuid4().hex
        call = CalleeCall(sid, str(fields["To"]), str(fields["From"]), fields)
        self.calls.append(call)
        self._by_id[sid] = call
        greeting = self._greeting_task()
        self._spawn(call, lambda c: self._twilio_call(c, greeting))
        return web.json_response(self._twilio_resource(call), status=201)

    def _twilio_resource(self, call: CalleeCall) -> dict[str, Any]:
        """The call resource as Twilio's REST API shows it (the fields twilio-python's CallInstance reads)."""
        now = twilio_timestamp()
        return {
            "sid": call.carrier_call_id,
            "account_sid": self.account_sid,
            "to": call.to,
            "to_formatted": call.to,
            "from": call.from_,
            "from_formatted": call.from_,
            "status": call.state,
            "direction": "outbound-api",
            "api_version": API_VERSION,
            "date_created": now,
            "date_updated": now,
            "start_time": None,
            "end_time": None,
            "duration": None,
            "answered_by": None,
            "parent_call_sid": None,
            "phone_number_sid": None,
            "price": None,
            "price_unit": "USD",
            "uri": f"/{API_VERSION}/Accounts/{self.account_sid}/Calls/{call.carrier_call_id}.json",
            "subresource_uris": {},
        }

    async def _twilio_update(self, request: web.Request) -> web.Response:
        """``POST .../Calls/{sid}.json``: ``Status=canceled`` cancels a call still ringing (an answered one goes
        on), ``Status=completed`` hangs one up (while ringing: cancels it; UNVERIFIED that Twilio reports it as
        ``canceled`` then). Other updates (``Twiml``, ``Url``) are not modelled: 200, nothing changes."""
        if not self._twilio_authorized(request):
            return _twilio_error(401, 20003, "Authenticate")
        call = self._by_id.get(request.match_info["call"])
        if call is None or request.match_info["sid"] != self.account_sid:
            return _twilio_error(404, 20404, "The requested resource was not found")
        form = await request.post()
        status = str(form.get("Status", ""))
        ringing = call.state in ("queued", "ringing")
        if status in ("canceled", "completed") and ringing:
            call._cancel.set()
        elif status == "completed" and call.state == "in-progress":
            call.ended_by = call.ended_by or "bridge"
            call._hangup.set()
        elif form.get("Twiml") or form.get("Url"):
            log.warning("callee.update_not_modelled", carrier_call_id=call.carrier_call_id)
        return web.json_response(self._twilio_resource(call))

    def _twilio_fields(self, call: CalleeCall, status: str) -> dict[str, str]:
        return {
            "CallSid": call.carrier_call_id,
            "AccountSid": self.account_sid,
            "From": call.from_,
            "To": call.to,
            "CallStatus": status,
            "Direction": "outbound-api",
            "ApiVersion": API_VERSION,
        }

    async def _twilio_status(self, call: CalleeCall, status: str, extra: Mapping[str, str] | None = None) -> None:
        """A status callback, when the create asked for its event (``StatusCallbackEvent``; none: only
        ``completed``). Twilio reports every end (completed, busy, no-answer, failed, canceled) as the
        ``completed`` event, so the final status is always sent."""
        call.state = status
        kind = {"initiated": "initiated", "ringing": "ringing", "in-progress": "answered"}.get(status, "completed")
        url = call.request.get("StatusCallback")
        events = call.request.get("StatusCallbackEvent") or ["completed"]
        if not url or (kind != "completed" and kind not in events):
            return
        call.statuses.append(status)
        fields = {
            **self._twilio_fields(call, status),
            "Timestamp": twilio_timestamp(),
            "SequenceNumber": str(len(call.statuses) - 1),
            "CallbackSource": "call-progress-events",  # UNVERIFIED for Twilio (call-control.md §1.B)
            **(extra or {}),
        }
        await self._post(str(url), form=fields, method=str(call.request.get("StatusCallbackMethod", "POST")).upper())

    async def _twilio_call(self, call: CalleeCall, greeting_task: asyncio.Task[Greeting] | None) -> None:
        await self._twilio_status(call, "initiated")  # UNVERIFIED: CallStatus "initiated" for that event
        await self._twilio_status(call, "ringing")
        answer = self.answering.answer
        if not await self._ring(call):
            await self._twilio_status(call, "canceled")
            return
        if answer in ("busy", "no-answer", "failed"):
            await self._twilio_status(call, answer)
            return
        if not await self._greet(call, greeting_task):
            await self._twilio_status(call, "failed")
            return
        await self._twilio_status(call, "in-progress")
        answered = asyncio.get_running_loop().time()
        detection = str(call.request.get("MachineDetection", ""))
        verdict = twilio_answered_by(answer, detection, call.greeting, self.answering.amd_ms)
        in_async = str(call.request.get("AsyncAmd", "")).lower() == "true"
        amd: asyncio.Task[None] | None = None
        skip_ms, answered_by = 0, ""
        if verdict is not None and in_async:
            amd = asyncio.create_task(self._twilio_amd(call, verdict, answered))
        elif verdict is not None:
            # Synchronous AMD: Twilio holds the call's TwiML until the verdict, and passes AnsweredBy with the
            # request to Url; the callee's greeting goes on meanwhile (the stream misses its start).
            skip_ms, answered_by = verdict[1], verdict[0]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(call._hangup.wait(), skip_ms / 1000)
        try:
            if not call._hangup.is_set():
                await self._twilio_run(call, answered, skip_ms, answered_by)
        finally:
            if amd is not None:
                amd.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await amd
        duration = asyncio.get_running_loop().time() - answered
        await self._twilio_status(call, "completed", {"CallDuration": str(math.ceil(duration))})

    async def _twilio_amd(self, call: CalleeCall, verdict: tuple[str, int], answered: float) -> None:
        answered_by, at_ms = verdict
        await asyncio.sleep(max(0.0, answered + at_ms / 1000 - asyncio.get_running_loop().time()))
        url = call.request.get("AsyncAmdStatusCallback")
        fields = {
            "CallSid": call.carrier_call_id,
            "AccountSid": self.account_sid,
            "AnsweredBy": answered_by,
            "MachineDetectionDuration": str(at_ms),
        }
        call.amd.append(fields)
        if url:  # without one Twilio only sets the call resource's answered_by (warning 21262)
            await self._post(
                str(url), form=fields, method=str(call.request.get("AsyncAmdStatusCallbackMethod", "POST")).upper()
            )

    async def _twilio_run(self, call: CalleeCall, answered: float, skip_ms: int, answered_by: str) -> None:
        """The call's TwiML as Twilio runs it: ``<Connect><Stream>`` (then ``<Connect action>``'s TwiML, or the
        next verb, when the bridge closes the stream), ``<Redirect>``, ``<Hangup>``; ``<Dial>`` is not modelled
        (the call ends), ``<Say>``/``<Play>``/``<Pause>`` are skipped."""
        fields = self._twilio_fields(call, "in-progress")
        if answered_by:
            fields["AnsweredBy"] = answered_by
        twiml = call.request.get("Twiml")
        if twiml:
            verbs: list[Verb] | None = read_twiml(str(twiml))
        else:
            verbs = await self._twiml(str(call.request["Url"]), str(call.request.get("Method", "POST")), fields)
        deadline = self._deadline(call.greeting, answered)
        audio = encode_from_pcm16(call.greeting.pcm, "ulaw") if call.greeting is not None else b""
        audio = audio[8 * skip_ms :]
        fetched = 0
        while verbs:
            following: list[Verb] | None = None
            for verb in verbs:
                if call._hangup.is_set():
                    return
                match verb:
                    case ConnectStream():
                        why = await self._twilio_stream(call, verb, audio, deadline)
                        audio = b""  # a later stream of the call: the greeting is over
                        if why not in ("bridge", "unreachable"):  # unreachable: Twilio goes on (error 31920)
                            call.ended_by = call.ended_by or ("callee" if why == "callee" else "bridge")
                            return
                        if verb.action is not None:
                            following = await self._twiml(verb.action, verb.method, fields)
                            break
                    case Redirect():
                        following = await self._twiml(verb.url, verb.method, fields)
                        break
                    case Hangup():
                        call.ended_by = call.ended_by or "bridge"
                        return
                    case Dial():
                        log.warning("callee.dial_not_modelled", to=[t.to for t in verb.targets])
                        call.ended_by = call.ended_by or "bridge"
                        return
                    case _:
                        continue
            else:
                call.ended_by = call.ended_by or "bridge"  # the end of the TwiML: Twilio hangs up
                return
            fetched += 1
            if fetched > MAX_DOCUMENTS:
                log.warning("callee.twiml_loop", carrier_call_id=call.carrier_call_id)
                return
            verbs = following

    async def _twiml(self, url: str, method: str, fields: dict[str, str]) -> list[Verb] | None:
        """A TwiML document as Twilio fetches it (signed); None when it cannot be had (Twilio would say an
        application error and hang up)."""
        assert self._http is not None
        if method.upper() == "GET":
            url += ("&" if "?" in url else "?") + urlencode(fields)
        form = fields if method.upper() != "GET" else None
        headers = {"X-Twilio-Signature": signature(self.auth_token, url, form)} if self.auth_token else {}
        try:
            async with self._http.request(
                method.upper(), url, data=form, headers=headers, timeout=CALLBACK_TIMEOUT
            ) as resp:
                body = await resp.content.read(MAX_TWIML + 1)
                if not 200 <= resp.status < 300:
                    log.warning("callee.twiml_refused", url=url, status=resp.status)
                    return None
            return read_twiml(body)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.warning("callee.twiml_failed", url=url, error=str(exc) or type(exc).__name__)
            return None

    async def _twilio_stream(self, call: CalleeCall, verb: ConnectStream, audio: bytes, deadline: float) -> str:
        """A ``<Connect><Stream>`` as Twilio connects it: the upgrade signed over the URL, ``connected``, then
        ``start`` with the ``<Parameter>``s as ``customParameters`` and a new ``MZ`` stream sid."""
        url = without_query(verb.url)
        if url != verb.url:
            log.warning("callee.stream_query_dropped", url=verb.url)
        writer = TwilioStreamWriter(call.carrier_call_id, "MZ" + uuid.uuid4().hex, self.account_sid, verb.parameters)
        headers = {"X-Twilio-Signature": signature(self.auth_token, url)} if self.auth_token else None
        return await self._converse(
            call, url, [writer.connected(), writer.start()], writer, "ulaw", audio, deadline, headers
        )
