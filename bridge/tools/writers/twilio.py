"""What Twilio sends on a stream, built from its documents (for ``bridge call`` and the tests)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

from bridge.tools.writers.two_tracks import check_outbound


class TwilioStreamWriter:
    """Builds the messages Twilio sends for one stream: ``connected``, ``start``, ``media``..., ``stop``.

    ``tracks`` is what ``start.tracks`` announces: ``("inbound",)`` by default, ``("inbound", "outbound")`` for
    ``<Start><Stream track="both_tracks">``. Each ``media`` message is one track's mono audio
    (``mediaFormat.channels`` stays 1); ``media.timestamp`` runs per track (ms since the stream started), and
    ``media.chunk`` is one counter across both tracks, as in Twilio's own both_tracks example.
    """

    media_format: ClassVar[dict[str, Any]] = {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}

    def __init__(
        self,
        call_sid: str,
        stream_sid: str,
        account_sid: str = "AC" + "0" * 32,
        parameters: Mapping[str, str] | None = None,
        tracks: Sequence[str] = ("inbound",),
    ) -> None:
        self.call_sid, self.stream_sid, self.account_sid = call_sid, stream_sid, account_sid
        self.parameters = dict(parameters or {})
        self.tracks = list(tracks)
        self.bytes_per_ms = 8
        self._seq = 0
        self._chunk = 0
        self._timestamps_ms: dict[str, int] = {}  # per track

    def _next(self) -> str:
        self._seq += 1
        return str(self._seq)

    def connected(self) -> str:
        return json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})

    def start(self) -> str:
        return json.dumps(
            {
                "event": "start",
                "sequenceNumber": self._next(),
                "streamSid": self.stream_sid,
                "start": {
                    "streamSid": self.stream_sid,
                    "accountSid": self.account_sid,
                    "callSid": self.call_sid,
                    "tracks": self.tracks,
                    "customParameters": self.parameters,
                    "mediaFormat": self.media_format,
                },
            }
        )

    def media(self, ulaw: bytes, track: str = "inbound") -> str:
        self._chunk += 1
        timestamp = self._timestamps_ms.get(track, 0)
        msg = json.dumps(
            {
                "event": "media",
                "sequenceNumber": self._next(),
                "streamSid": self.stream_sid,
                "media": {
                    "track": track,
                    "chunk": str(self._chunk),
                    "timestamp": str(timestamp),
                    "payload": base64.b64encode(ulaw).decode(),
                },
            }
        )
        self._timestamps_ms[track] = timestamp + len(ulaw) // self.bytes_per_ms
        return msg

    def dtmf(self, digit: str) -> str:
        return json.dumps(
            {
                "event": "dtmf",
                "sequenceNumber": self._next(),
                "streamSid": self.stream_sid,
                "dtmf": {"track": "inbound_track", "digit": digit},
            }
        )

    def mark(self, name: str) -> str:
        """Twilio's echo of a mark the server sent, once the audio before it has played."""
        return json.dumps(
            {"event": "mark", "sequenceNumber": self._next(), "streamSid": self.stream_sid, "mark": {"name": name}}
        )

    def stop(self) -> str:
        return json.dumps(
            {
                "event": "stop",
                "sequenceNumber": self._next(),
                "streamSid": self.stream_sid,
                "stop": {"accountSid": self.account_sid, "callSid": self.call_sid},
            }
        )

    def call(self, ulaw: bytes, frame_bytes: int = 160, outbound: bytes | None = None) -> Iterator[str]:
        """Every message of a whole call playing ``ulaw``, in 20 ms frames by default.

        With ``outbound`` (the other party, as long as ``ulaw``; the writer must announce both tracks), each
        frame of the inbound track is followed by the same 20 ms of the outbound track.
        """
        check_outbound(self.tracks, ulaw, outbound)
        yield self.connected()
        yield self.start()
        for i in range(0, len(ulaw), frame_bytes):
            yield self.media(ulaw[i : i + frame_bytes])
            if outbound is not None:
                yield self.media(outbound[i : i + frame_bytes], "outbound")
        yield self.stop()
