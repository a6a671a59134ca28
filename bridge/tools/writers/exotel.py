"""What Exotel sends on a stream, built from its documents (for ``bridge call`` and the tests)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator


class ExotelStreamWriter:
    """Exotel's side of a stream: ``connected``, ``start``, ``media`` (timestamps advance by each chunk's
    real duration, about 100 ms), ``dtmf``, ``mark``, ``stop``; raw 16-bit PCM by default, 8 kHz mu-law
    (as ExoML ``<StartStream>`` sends by default) with ``ulaw=True``."""

    def __init__(
        self,
        call_sid: str,
        stream_sid: str,
        caller: str = "+15550100",
        called: str = "+15550199",
        sample_rate: int = 8000,
        parameters: dict[str, str] | None = None,
        *,
        ulaw: bool = False,
        account_sid: str = "acc",
    ) -> None:
        self.call_sid, self.stream_sid, self.caller, self.called = call_sid, stream_sid, caller, called
        self.sample_rate = 8000 if ulaw else sample_rate
        self.parameters, self.ulaw, self.account_sid = parameters or {}, ulaw, account_sid
        self.bytes_per_ms = 8 if ulaw else sample_rate * 2 // 1000
        self._seq = 0
        self._chunk = 0
        self._audio_ms = 0.0

    def _next(self) -> str:
        self._seq += 1
        return str(self._seq)

    def connected(self) -> str:
        return json.dumps({"event": "connected"})

    def start(self) -> str:
        # UNVERIFIED for mu-law: the media_format Exotel sends for an ExoML mu-law stream is not documented.
        fmt = (
            {"encoding": "audio/x-mulaw", "sample_rate": "8000", "bit_rate": "8"}
            if self.ulaw
            else {"encoding": "audio/x-raw", "sample_rate": str(self.sample_rate), "bit_rate": "16"}
        )
        return json.dumps(
            {
                "event": "start",
                "sequence_number": self._next(),
                "stream_sid": self.stream_sid,
                "start": {
                    "stream_sid": self.stream_sid,
                    "call_sid": self.call_sid,
                    "account_sid": self.account_sid,
                    "from": self.caller,
                    "to": self.called,
                    "custom_parameters": self.parameters,
                    "media_format": fmt,
                },
            }
        )

    def media(self, payload: bytes) -> str:
        self._chunk += 1
        msg = json.dumps(
            {
                "event": "media",
                "sequence_number": self._next(),
                "stream_sid": self.stream_sid,
                "media": {
                    "chunk": str(self._chunk),
                    "timestamp": str(int(self._audio_ms)),
                    "payload": base64.b64encode(payload).decode(),
                },
            }
        )
        self._audio_ms += len(payload) / self.bytes_per_ms
        return msg

    def dtmf(self, digit: str, duration_ms: int = 250) -> str:
        return json.dumps(
            {
                "event": "dtmf",
                "sequence_number": self._next(),
                "stream_sid": self.stream_sid,
                "dtmf": {"digit": digit, "duration": str(duration_ms)},
            }
        )

    def mark(self, name: str) -> str:
        return json.dumps(
            {"event": "mark", "sequence_number": self._next(), "stream_sid": self.stream_sid, "mark": {"name": name}}
        )

    def stop(self, reason: str = "callended") -> str:
        return json.dumps(
            {
                "event": "stop",
                "sequence_number": self._next(),
                "stream_sid": self.stream_sid,
                "stop": {"call_sid": self.call_sid, "account_sid": self.account_sid, "reason": reason},
            }
        )

    def call(self, audio: bytes, frame_bytes: int) -> Iterator[str]:
        yield self.connected()
        yield self.start()
        for i in range(0, len(audio), frame_bytes):
            yield self.media(audio[i : i + frame_bytes])
        yield self.stop()
