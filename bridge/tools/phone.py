"""A Twilio phone on a real socket, driven by a script (for ``bridge demo``, the load test and the
tests): it streams the caller's audio in real time and silence between what the caller says (a
carrier streams continuously), plays what the bridge sends back through a
:class:`~bridge.tools.ear.TwilioEar` (real-time playback, mark echoes, clears), and hangs up when told.

    async with TwilioPhone.dial(url) as phone:
        await phone.say(ulaw)                       # real time
        await phone.wait(lambda: reply_done, 10.0)  # silence while waiting
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Self

import aiohttp

from bridge.tools.ear import TwilioEar
from bridge.tools.writers.twilio import TwilioStreamWriter

FRAME = 160  # 20 ms of 8 kHz mu-law
SILENCE = b"\xff" * FRAME


@dataclass
class TwilioPhone:
    ws: aiohttp.ClientWebSocketResponse
    writer: TwilioStreamWriter
    ear: TwilioEar = field(default_factory=TwilioEar)
    t0: float = 0.0  # monotonic time of the start message
    frames: int = 0  # 20 ms frames sent since t0
    mark_delay: float = 0.0  # extra seconds before each mark echo (a slow carrier)
    received: list[tuple[float, str]] = field(default_factory=list)  # (seconds after t0, message)
    closed_by_bridge_at: float | None = None
    _echoes: set[asyncio.Task[None]] = field(default_factory=set)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _listener: asyncio.Task[None] | None = None

    @classmethod
    @contextlib.asynccontextmanager
    async def dial(
        cls,
        url: str,
        *,
        call_sid: str = "CA" + "1" * 32,
        stream_sid: str = "MZ" + "1" * 32,
        parameters: dict[str, str] | None = None,
        mark_delay: float = 0.0,
        headers: dict[str, str] | None = None,
    ) -> AsyncIterator[Self]:
        """A call on ``url`` (``headers`` on the upgrade: e.g. Twilio's signature)."""
        writer = TwilioStreamWriter(
            call_sid, stream_sid, parameters=parameters or {"From": "+15550001", "To": "+15550002"}
        )
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(url, max_msg_size=2**22, headers=headers) as ws,
        ):
            phone = cls(ws, writer, mark_delay=mark_delay)
            await ws.send_str(writer.connected())
            await ws.send_str(writer.start())
            phone.t0 = time.monotonic()
            phone._listener = asyncio.create_task(phone._listen())
            try:
                yield phone
            finally:
                await phone.hang_up()

    @property
    def now(self) -> float:
        return time.monotonic() - self.t0

    @property
    def closed(self) -> bool:
        return self.ws.closed or (self._listener is not None and self._listener.done())

    def texts(self, event: str) -> list[str]:
        return [m for _, m in self.received if json.loads(m).get("event") == event]

    async def say(self, ulaw: bytes) -> None:
        """The caller's audio, in real time."""
        for i in range(0, len(ulaw), FRAME):
            if self.closed:
                return
            await self._frame(ulaw[i : i + FRAME].ljust(FRAME, b"\xff"))

    async def wait(
        self,
        until: Callable[[], bool],
        timeout: float,
        each: Callable[[float], list[str]] | None = None,
        echo: tuple[float, float] | None = None,
    ) -> bool:
        """Silence, in real time, until ``until()`` holds (True) or ``timeout`` seconds (False);
        ``each(t)`` may add messages (e.g. DTMF events) before each frame. ``echo=(gain, delay)``: instead
        of silence, what the phone is playing, ``delay`` seconds late and scaled by ``gain`` (a
        speakerphone's microphone hearing its loudspeaker)."""
        end = time.monotonic() + timeout
        while not until():
            if self.closed or time.monotonic() >= end:
                return until()
            for message in each(self.now) if each is not None else ():
                await self.send(message)
            if echo is None:
                await self._frame(SILENCE)
            else:
                gain, delay = echo
                await self._frame(_echo(self.ear.audio_at(self.now - delay, FRAME), gain))
        return True

    async def send(self, message: str) -> None:
        """Another message of the phone's (e.g. a DTMF event), between frames."""
        async with self._lock:
            if not self.ws.closed:
                await self.ws.send_str(message)

    async def hang_up(self) -> None:
        if not self.ws.closed:
            with contextlib.suppress(ConnectionError):
                await self.send(self.writer.stop())
        if self._listener is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._listener), 10)
            self._listener.cancel()
        for task in list(self._echoes):
            task.cancel()

    async def _frame(self, audio: bytes) -> None:
        self._answer(self.ear.due(self.now))
        await self.send(self.writer.media(audio))
        self.frames += 1
        await asyncio.sleep(max(0.0, self.t0 + self.frames * 0.02 - time.monotonic()))

    def _answer(self, names: list[str]) -> None:
        if names:
            task = asyncio.create_task(self._echo(names))
            self._echoes.add(task)
            task.add_done_callback(self._echoes.discard)

    async def _echo(self, names: list[str]) -> None:
        for name in names:
            if self.mark_delay:
                await asyncio.sleep(self.mark_delay)
            await self.send(self.writer.mark(name))

    async def _listen(self) -> None:
        async for msg in self.ws:
            if msg.type is aiohttp.WSMsgType.TEXT:
                now = self.now
                self.received.append((now, msg.data))
                self._answer(self.ear.receive(msg.data, now))
        self.closed_by_bridge_at = self.now


def _echo(ulaw: bytes, gain: float) -> bytes:
    import numpy as np

    from bridge.audio import decode_to_pcm16, encode_from_pcm16

    pcm = np.frombuffer(decode_to_pcm16(ulaw, "ulaw"), dtype="<i2").astype(np.float64) * gain
    return encode_from_pcm16(np.clip(pcm, -32768, 32767).astype("<i2").tobytes(), "ulaw")
