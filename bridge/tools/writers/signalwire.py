"""What SignalWire sends on a stream, built from its documents (for ``bridge call`` and the tests)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from bridge.tools.writers.two_tracks import check_outbound


class SignalWireStreamWriter:
    """SignalWire's side of a stream, as its ``<Stream>`` page shows the messages: ``connected``
    (version "0.2.0"), ``start``, ``media``, ``dtmf`` (``dtmf{duration, digit}``), ``stop``, and the
    ``mark``/``clear`` acknowledgements; mu-law, or L16 at ``sample_rate``.

    ``wrapped`` sends each one in the documented envelope (``timestamp``, ``direction``, ``eventType``,
    ``rawEvent``...). Unwrapped, each message is the ``rawEvent`` alone, except that a DTMF then keeps a
    ``sequenceNumber`` (in the envelope form only the envelope has it, and unwrapped there is none).

    ``tracks`` (``start.tracks``) defaults to both tracks when ``channels`` is 2, else the inbound one; each
    ``media`` message carries one track, with its own ``timestamp`` (ms since the stream started) and one
    ``chunk`` counter across tracks, as Twilio numbers them.
    """

    def __init__(
        self,
        call_sid: str,
        stream_sid: str,
        parameters: Mapping[str, str] | None = None,
        sample_rate: int | None = None,
        *,
        wrapped: bool = False,
        channels: int = 1,
        tracks: Sequence[str] | None = None,
        account_sid: str = "00000000-0000-0000-0000-000000000001",
    ) -> None:
        self.call_sid, self.stream_sid, self.account_sid = call_sid, stream_sid, account_sid
        self.parameters = dict(parameters or {})
        self.wrapped = wrapped
        self.media_format: dict[str, Any] = (
            {"encoding": "audio/x-L16", "sampleRate": sample_rate, "channels": channels}
            if sample_rate
            else {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": channels}
        )
        self.tracks = (
            list(tracks) if tracks is not None else (["inbound", "outbound"] if channels == 2 else ["inbound"])
        )
        self.bytes_per_ms = sample_rate * 2 // 1000 if sample_rate else 8
        self.clock = datetime(2025, 9, 26, 16, 25, 4, 792000, tzinfo=UTC)  # the envelope's wall clock
        self._seq = 0
        self._chunk = 0
        self._audio_ms = 0.0  # the inbound track's, for the envelope's wall clock
        self._track_ms: dict[str, float] = {}

    def _next(self) -> str:
        self._seq += 1
        return str(self._seq)

    def _message(self, raw: dict[str, Any], envelope: dict[str, str], direction: str = "inbound") -> str:
        if not self.wrapped:
            return json.dumps(raw)
        now = self.clock + timedelta(milliseconds=self._audio_ms)
        return json.dumps(
            {
                "timestamp": now.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                "direction": direction,
                "eventType": raw["event"],
                **envelope,
                "rawEvent": raw,
            }
        )

    def connected(self) -> str:
        return self._message({"event": "connected", "protocol": "Call", "version": "0.2.0"}, {})

    def start(self) -> str:
        seq = self._next()
        start: dict[str, Any] = {
            "streamSid": self.stream_sid,
            "accountSid": self.account_sid,
            "callSid": self.call_sid,
            "tracks": self.tracks,
        }
        if self.parameters:  # "Appears only when parameters are defined."
            start["customParameters"] = self.parameters
        start["mediaFormat"] = self.media_format
        return self._message(
            {"event": "start", "sequenceNumber": seq, "start": start},
            {"streamSid": self.stream_sid, "callSid": self.call_sid, "sequenceNumber": seq},
        )

    def media(self, payload: bytes, track: str = "inbound") -> str:
        seq = self._next()
        self._chunk += 1
        timestamp = self._track_ms.get(track, 0.0)
        self._track_ms[track] = timestamp + len(payload) / self.bytes_per_ms
        raw = {
            "event": "media",
            "sequenceNumber": seq,
            "media": {
                "track": track,
                "chunk": str(self._chunk),
                "timestamp": str(int(timestamp)),
                "payload": base64.b64encode(payload).decode(),
            },
        }
        msg = self._message(raw, {"streamSid": self.stream_sid, "sequenceNumber": seq})
        if track == "inbound":
            self._audio_ms += len(payload) / self.bytes_per_ms
        return msg

    def dtmf(self, digit: str, duration_ms: int = 2700) -> str:
        seq = self._next()
        raw: dict[str, Any] = {"event": "dtmf"}
        if not self.wrapped:
            raw["sequenceNumber"] = seq
        raw.update({"streamSid": self.stream_sid, "dtmf": {"duration": duration_ms, "digit": digit}})
        return self._message(raw, {"streamSid": self.stream_sid, "sequenceNumber": seq})

    def mark(self, name: str) -> str:
        """The acknowledgement of a mark the server sent (no sequenceNumber in the document's example)."""
        return self._message(
            {"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}}, {"streamSid": self.stream_sid}
        )

    def clear(self) -> str:
        """The acknowledgement of a ``clear`` the server sent."""
        return self._message(
            {"event": "clear", "streamSid": self.stream_sid}, {"streamSid": self.stream_sid}, direction="outbound"
        )

    def stop(self) -> str:
        seq = self._next()
        return self._message(
            {"event": "stop", "sequenceNumber": seq}, {"streamSid": self.stream_sid, "sequenceNumber": seq}
        )

    def call(self, audio: bytes, frame_bytes: int = 160, outbound: bytes | None = None) -> Iterator[str]:
        """Every message of a whole call playing ``audio`` (in the stream's format); with ``outbound`` (as long
        as ``audio``, both tracks announced), each inbound frame is followed by the outbound track's."""
        check_outbound(self.tracks, audio, outbound)
        yield self.connected()
        yield self.start()
        for i in range(0, len(audio), frame_bytes):
            yield self.media(audio[i : i + frame_bytes])
            if outbound is not None:
                yield self.media(outbound[i : i + frame_bytes], "outbound")
        yield self.stop()
