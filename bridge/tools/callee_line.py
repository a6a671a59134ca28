"""The fake callee's line (for :mod:`bridge.tools.callee`): what every carrier's fake shares. It keeps the
calls, runs each in its own task, rings, makes the greeting, posts callbacks, and holds the media stream:
the greeting and then silence in real-time 20 ms frames, and a record of what the bridge plays back (marks
echoed once the audio before them has played, clears honoured: :class:`bridge.tools.ear.TwilioEar`)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from typing import Any, Literal
from urllib.parse import urlencode

import aiohttp
import structlog
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bridge.adapters.twilio import signature
from bridge.audio import Codec
from bridge.tools.callee_calls import Answering, CalleeCall, default_greeter
from bridge.tools.greetings import Greeting
from bridge.tools.writers.telnyx import TelnyxStreamWriter
from bridge.tools.writers.twilio import TwilioStreamWriter

log = structlog.get_logger("bridge.tools.callee")

FRAME_MS = 20
CALLBACK_TIMEOUT = aiohttp.ClientTimeout(total=10)


class Line(ABC):
    """One carrier's fake, less its API: the calls and what every carrier does with them (subclassed by
    :class:`bridge.tools.callee_twilio.TwilioLine` and :class:`bridge.tools.callee_telnyx.TelnyxLine`)."""

    def __init__(
        self,
        answering: Answering,
        *,
        auth_token: str = "",
        account_sid: str = "AC" + "0" * 32,
        api_key: str = "",
        on_done: Callable[[CalleeCall], None] | None = None,
        signing_key: Ed25519PrivateKey | None = None,
    ) -> None:
        self.answering = answering
        self.auth_token, self.account_sid, self.api_key = auth_token, account_sid, api_key
        self.signing_key = signing_key  # Telnyx: its webhooks signed as Telnyx signs them (Ed25519)
        self.on_done = on_done
        self.calls: list[CalleeCall] = []
        self._by_id: dict[str, CalleeCall] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._greetings: dict[tuple[str, int, str], asyncio.Task[Greeting]] = {}
        self._http: aiohttp.ClientSession | None = None

    @abstractmethod
    def add_routes(self, app: web.Application) -> None:
        """The carrier's API routes on ``app``."""

    async def open(self) -> None:
        """The HTTP client the callbacks and the streams use."""
        self._http = aiohttp.ClientSession()

    async def close(self) -> None:
        """End every call still going (an answered one as the callee hanging up, a ringing one as cancelled)
        and close the HTTP client."""
        for call in self.calls:
            if call.state == "in-progress":
                call.ended_by = call.ended_by or "callee"
            call._hangup.set()
            call._cancel.set()
        if self._tasks:
            _, pending = await asyncio.wait(list(self._tasks), timeout=5)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for synthesis in self._greetings.values():
            synthesis.cancel()
        await asyncio.gather(*self._greetings.values(), return_exceptions=True)
        if self._http is not None:
            await self._http.close()

    def _spawn(self, call: CalleeCall, run: Callable[[CalleeCall], Awaitable[None]]) -> None:
        async def guarded() -> None:
            try:
                await run(call)
            except Exception:  # the top of the call's task: log it, the call is over
                log.exception("callee.call_failed", carrier_call_id=call.carrier_call_id)
            finally:
                call.done.set()
                if self.on_done is not None:
                    try:
                        self.on_done(call)
                    except Exception:  # the caller's hook: its failure is not the call's
                        log.exception("callee.on_done_failed", carrier_call_id=call.carrier_call_id)

        task = asyncio.create_task(guarded())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _greeting_task(self) -> asyncio.Task[Greeting] | None:
        """The callee's greeting, synthesised once per (kind, variant, voice) in a thread while the phone rings."""
        a = self.answering
        if a.answer not in ("human", "machine"):
            return None
        kind: Literal["human", "machine"] = "human" if a.answer == "human" else "machine"
        key = (kind, a.variant, a.voice)
        if key not in self._greetings:
            greeter = a.greeter or default_greeter
            self._greetings[key] = asyncio.create_task(asyncio.to_thread(greeter, kind, a.variant, a.voice))
        return self._greetings[key]

    async def _greet(self, call: CalleeCall, task: asyncio.Task[Greeting] | None) -> bool:
        """The callee's greeting into ``call.greeting``; False (logged) when it cannot be made (a voice missing):
        the call then fails, as a phone that cannot answer."""
        try:
            call.greeting = await task if task is not None else None
        except Exception:
            log.exception("callee.greeting_failed", voice=self.answering.voice)
            return False
        return True

    async def _ring(self, call: CalleeCall) -> bool:
        """The ringing: False when the caller cancelled it first."""
        try:
            await asyncio.wait_for(call._cancel.wait(), self.answering.ring_ms / 1000)
        except TimeoutError:
            return True
        return False

    async def _post(
        self, url: str, *, form: dict[str, str] | None = None, body: Any = None, method: str = "POST"
    ) -> None:
        """One callback to the bridge: a Twilio form (signed) or a Telnyx JSON webhook; a failure is logged."""
        assert self._http is not None
        headers: dict[str, str] = {}
        data: Any = None
        if form is not None:
            if method == "GET":
                url += ("&" if "?" in url else "?") + urlencode(form)
            else:
                data = form
            if self.auth_token:
                headers["X-Twilio-Signature"] = signature(self.auth_token, url, form if method != "GET" else None)
        else:
            data, headers["Content-Type"] = json.dumps(body), "application/json"
            if self.signing_key is not None:  # "{timestamp}|{body}", Ed25519, base64 (telnyx-python's rules)
                stamp = str(int(time.time()))
                signed = self.signing_key.sign(f"{stamp}|{data}".encode())
                headers["telnyx-timestamp"] = stamp
                headers["telnyx-signature-ed25519"] = base64.b64encode(signed).decode("ascii")
        try:
            async with self._http.request(method, url, data=data, headers=headers, timeout=CALLBACK_TIMEOUT) as resp:
                await resp.read()
                if not 200 <= resp.status < 300:
                    log.warning("callee.callback_refused", url=url, status=resp.status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("callee.callback_failed", url=url, error=str(exc) or type(exc).__name__)

    async def _converse(
        self,
        call: CalleeCall,
        url: str,
        opening: list[str],
        writer: TwilioStreamWriter | TelnyxStreamWriter,
        codec: Codec,
        audio: bytes,
        deadline: float,
        headers: dict[str, str] | None = None,
        connected: Callable[[], Awaitable[None]] | None = None,
    ) -> str:
        """One media stream: connect ``url`` (then ``connected()``), send ``opening``, play ``audio`` (``codec``
        at 8 kHz) then silence, in real-time 20 ms frames, and record what comes back. Returns why it ended:
        ``unreachable`` (the upgrade failed), ``bridge`` (the bridge closed it), ``hangup`` (a REST hang-up),
        ``callee`` (``deadline``, loop time, passed: the callee hung up). The stream is stopped (the carrier's
        ``stop``) and closed unless the bridge closed it."""
        assert self._http is not None
        loop = asyncio.get_running_loop()
        frame = 8 * FRAME_MS * (2 if codec == "pcm16" else 1)
        quiet = (b"\x00" if codec == "pcm16" else b"\xd5" if codec == "alaw" else b"\xff") * frame
        try:
            ws = await self._http.ws_connect(
                url, headers=headers, max_msg_size=2**22, timeout=aiohttp.ClientWSTimeout(ws_close=5)
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("callee.stream_refused", url=url, error=str(exc) or type(exc).__name__)
            return "unreachable"
        t0 = loop.time()
        if call.answered_at is None:
            call.answered_at = t0
        lock = asyncio.Lock()

        async def send(text: str) -> None:
            async with lock:
                if not ws.closed:
                    await ws.send_str(text)

        async def echo(names: list[str]) -> None:
            for name in names:
                call.marks.append(name)
                await send(mark_echo(writer, name))

        async def listen() -> None:
            async for msg in ws:
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    continue
                try:
                    data = json.loads(msg.data)
                    event = data.get("event")
                    if event == "media":
                        call.heard += base64.b64decode(data["media"]["payload"])
                    elif event == "clear":
                        call.cleared += 1
                    names = call.ear.receive(msg.data, loop.time() - t0)
                except (ValueError, KeyError, TypeError, AttributeError):
                    log.warning("callee.bad_message", message=str(msg.data)[:200])
                    continue
                with contextlib.suppress(ConnectionError):
                    await echo(names)

        listener: asyncio.Task[None] | None = None
        try:
            if connected is not None:
                await connected()
            for text in opening:
                await send(text)
            call.streams.append(json.loads(opening[-1]))
            listener = asyncio.create_task(listen())
            frames, why = 0, ""
            while not why:
                if listener.done():
                    why = "bridge"
                elif call._hangup.is_set():
                    why = "hangup"
                elif loop.time() >= deadline:
                    why = "callee"
                else:
                    chunk = audio[frames * frame : (frames + 1) * frame]
                    with contextlib.suppress(ConnectionError):
                        await echo(call.ear.due(loop.time() - t0))
                        await send(writer.media(chunk.ljust(frame, quiet[:1]) if chunk else quiet))
                    frames += 1
                    await asyncio.wait({listener}, timeout=max(0.0, t0 + frames * FRAME_MS / 1000 - loop.time()))
            if why != "bridge":
                with contextlib.suppress(ConnectionError):
                    await send(writer.stop())
                await ws.close()
            await asyncio.wait({listener}, timeout=5)
            return why
        finally:
            if listener is not None:
                listener.cancel()
                await asyncio.wait({listener})
                if not listener.cancelled() and listener.exception() is not None:
                    log.warning("callee.listen_failed", error=repr(listener.exception()))
            if not ws.closed:
                await ws.close()

    def _deadline(self, greeting: Greeting | None, answered: float) -> float:
        length = len(greeting.pcm) / 16000 if greeting is not None else 0.0
        return answered + length + self.answering.stay_s


def mark_echo(writer: TwilioStreamWriter | TelnyxStreamWriter, name: str) -> str:
    """The carrier's echo of a mark once the audio before it has played (Telnyx's shape, like Twilio's with
    ``stream_id``: UNVERIFIED beyond ``mark.name``, which is what the bridge reads)."""
    if isinstance(writer, TwilioStreamWriter):
        return writer.mark(name)
    return json.dumps(
        {"event": "mark", "sequence_number": writer._next(), "stream_id": writer.stream_id, "mark": {"name": name}}
    )
