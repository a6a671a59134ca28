"""What Plivo sends on a stream, built from its documents (for ``bridge call`` and the tests)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Mapping
from typing import Any


class PlivoStreamWriter:
    """Plivo's side of a stream: ``start``, ``media``/``dtmf``, and (``send_stop``) a final ``stop``.

    ``parameters`` travel as ``extra_headers`` ("k=v;k2=v2"), ``custom_parameters`` (when given) as
    ``start.customParameters``. ``send_stop`` ends the stream as Plivo does (``bridge call`` uses it);
    without it the stream ends by the socket closing, which Plivo may also do.
    """

    def __init__(
        self,
        call_id: str,
        stream_id: str,
        parameters: dict[str, str] | None = None,
        sample_rate: int | None = None,
        *,
        custom_parameters: Mapping[str, str] | None = None,
        send_stop: bool = False,
        account_id: str = "MA0000",
    ) -> None:
        self.call_id, self.stream_id = call_id, stream_id
        self.parameters = parameters or {}
        self.custom_parameters = dict(custom_parameters) if custom_parameters is not None else None
        self.sample_rate = sample_rate
        self.send_stop = send_stop
        self.account_id = account_id
        self.bytes_per_ms = sample_rate * 2 // 1000 if sample_rate else 8
        self.epoch_ms = 1_700_000_000_000  # media.timestamp is the wall clock, in ms
        self._seq = 0
        self._chunk = 0
        self._audio_ms = 0.0

    def _next(self) -> int:
        self._seq += 1
        return self._seq

    @property
    def extra_headers(self) -> str:
        return ";".join(f"{k}={v}" for k, v in self.parameters.items())

    def start(self) -> str:
        fmt = (
            {"encoding": "audio/x-l16", "sampleRate": self.sample_rate}
            if self.sample_rate
            else {"encoding": "audio/x-mulaw", "sampleRate": 8000}
        )
        start: dict[str, Any] = {
            "callId": self.call_id,
            "streamId": self.stream_id,
            "accountId": self.account_id,
            "tracks": ["inbound"],
            "mediaFormat": fmt,
        }
        if self.custom_parameters is not None:
            start["customParameters"] = self.custom_parameters
        return json.dumps(
            {"event": "start", "sequenceNumber": self._next(), "start": start, "extra_headers": self.extra_headers}
        )

    def media(self, payload: bytes) -> str:
        self._chunk += 1
        msg = json.dumps(
            {
                "event": "media",
                "sequenceNumber": self._next(),
                "streamId": self.stream_id,
                "media": {
                    "track": "inbound",
                    "timestamp": str(self.epoch_ms + int(self._audio_ms)),
                    "chunk": self._chunk,
                    "payload": base64.b64encode(payload).decode(),
                },
                "extra_headers": self.extra_headers,
            }
        )
        self._audio_ms += len(payload) / self.bytes_per_ms
        return msg

    def dtmf(self, digit: str) -> str:
        return json.dumps(
            {
                "event": "dtmf",
                "sequenceNumber": self._next(),
                "streamId": self.stream_id,
                "dtmf": {"track": "inbound", "digit": digit, "timestamp": str(self.epoch_ms + int(self._audio_ms))},
            }
        )

    def played_stream(self, name: str) -> str:
        """Plivo's answer to a ``checkpoint`` whose audio played (never to one a ``clearAudio`` dropped)."""
        return json.dumps(
            {"event": "playedStream", "sequenceNumber": self._next(), "streamId": self.stream_id, "name": name}
        )

    def cleared_audio(self) -> str:
        """Plivo's answer to ``clearAudio``."""
        return json.dumps({"event": "clearedAudio", "sequenceNumber": self._next(), "streamId": self.stream_id})

    def stop(self, reason: str | None = None) -> str:
        msg: dict[str, Any] = {
            "event": "stop",
            "sequenceNumber": self._next(),
            "streamId": self.stream_id,
            "stop": {"callId": self.call_id, "streamId": self.stream_id, "tracks": ["inbound"]},
        }
        if reason is not None:
            msg["reason"] = reason
        return json.dumps(msg)

    def call(self, audio: bytes, frame_bytes: int) -> Iterator[str]:
        yield self.start()
        for i in range(0, len(audio), frame_bytes):
            yield self.media(audio[i : i + frame_bytes])
        if self.send_stop:
            yield self.stop()
