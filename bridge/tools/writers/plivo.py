"""What Plivo sends on a stream, built from its documents (for ``bridge call`` and the tests)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from bridge.tools.writers.two_tracks import check_outbound


class PlivoStreamWriter:
    """Plivo's side of a stream: ``start``, ``media``/``dtmf``, and (``send_stop``) a final ``stop``.

    ``parameters`` travel as ``extra_headers`` ("k=v;k2=v2"), ``custom_parameters`` (when given) as
    ``start.customParameters``. ``send_stop`` ends the stream as Plivo does (``bridge call`` uses it);
    without it the stream ends by the socket closing, which Plivo may also do.

    ``tracks`` is what ``start.tracks`` (and ``stop.tracks``) announce: ``["inbound"]`` by default,
    ``["inbound", "outbound"]`` for ``audioTrack="both"``. Each ``media`` message carries one track; its
    ``timestamp`` is the wall clock (epoch ms) at that track's audio, and ``chunk`` counts per track (Plivo
    does not document how it numbers two tracks).
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
        tracks: Sequence[str] = ("inbound",),
    ) -> None:
        self.call_id, self.stream_id = call_id, stream_id
        self.parameters = parameters or {}
        self.custom_parameters = dict(custom_parameters) if custom_parameters is not None else None
        self.sample_rate = sample_rate
        self.send_stop = send_stop
        self.account_id = account_id
        self.tracks = list(tracks)
        self.bytes_per_ms = sample_rate * 2 // 1000 if sample_rate else 8
        self.epoch_ms = 1_700_000_000_000  # media.timestamp is the wall clock, in ms
        self._seq = 0
        self._chunks: dict[str, int] = {}  # per track
        self._track_ms: dict[str, float] = {}
        self._audio_ms = 0.0  # the inbound track's (for DTMF)

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
            "tracks": self.tracks,
            "mediaFormat": fmt,
        }
        if self.custom_parameters is not None:
            start["customParameters"] = self.custom_parameters
        return json.dumps(
            {"event": "start", "sequenceNumber": self._next(), "start": start, "extra_headers": self.extra_headers}
        )

    def media(self, payload: bytes, track: str = "inbound") -> str:
        self._chunks[track] = chunk = self._chunks.get(track, 0) + 1
        audio_ms = self._track_ms.get(track, 0.0)
        self._track_ms[track] = audio_ms + len(payload) / self.bytes_per_ms
        if track == "inbound":
            self._audio_ms = self._track_ms[track]
        return json.dumps(
            {
                "event": "media",
                "sequenceNumber": self._next(),
                "streamId": self.stream_id,
                "media": {
                    "track": track,
                    "timestamp": str(self.epoch_ms + int(audio_ms)),
                    "chunk": chunk,
                    "payload": base64.b64encode(payload).decode(),
                },
                "extra_headers": self.extra_headers,
            }
        )

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
            "stop": {"callId": self.call_id, "streamId": self.stream_id, "tracks": self.tracks},
        }
        if reason is not None:
            msg["reason"] = reason
        return json.dumps(msg)

    def call(self, audio: bytes, frame_bytes: int, outbound: bytes | None = None) -> Iterator[str]:
        """Every message of a whole call playing ``audio``; with ``outbound`` (as long as ``audio``, both tracks
        announced), each inbound frame is followed by the outbound track's."""
        check_outbound(self.tracks, audio, outbound)
        yield self.start()
        for i in range(0, len(audio), frame_bytes):
            yield self.media(audio[i : i + frame_bytes])
            if outbound is not None:
                yield self.media(outbound[i : i + frame_bytes], "outbound")
        if self.send_stop:
            yield self.stop()
