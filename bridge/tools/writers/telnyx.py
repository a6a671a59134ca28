"""What Telnyx sends on a stream, built from its documents (for ``bridge call`` and the tests)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from bridge.adapters.telnyx import codec_of, swap16
from bridge.audio import ALAW_8K, ULAW_8K, AudioFormat, silence
from bridge.tools.writers.two_tracks import check_outbound


class TelnyxStreamWriter:
    """Telnyx's side of a stream (for ``bridge call --carrier telnyx`` and tests), as Telnyx documents it.

    Takes audio in the bridge's formats (L16 little-endian) and sends L16 in network byte order, as
    RTP carries it. ``both_tracks`` (``stream_track=both_tracks``) adds an outbound chunk after each inbound one,
    silent unless ``call`` is given the other party's audio; each track has its own ``timestamp`` (ms since the
    stream started) and, unless ``shared_chunk_counter``, its own ``chunk`` counter.
    """

    def __init__(
        self,
        call_id: str,
        stream_id: str,
        caller: str = "+15550100",
        called: str = "+15550199",
        encoding: str = "PCMU",
        sample_rate: int = 8000,
        *,
        call_session_id: str | None = None,
        user_id: str = "3e6f995f-85f7-4705-9741-53b116d28237",
        client_state: str | None = None,
        tags: list[str] | None = None,
        both_tracks: bool = False,
        shared_chunk_counter: bool = False,
    ) -> None:
        self.call_id, self.stream_id, self.caller, self.called = call_id, stream_id, caller, called
        self.encoding, self.sample_rate = encoding, sample_rate
        self.call_session_id = call_session_id or call_id
        self.user_id, self.client_state, self.tags = user_id, client_state, tags
        self.both_tracks, self.shared_chunk_counter = both_tracks, shared_chunk_counter
        codec = codec_of(encoding) or "ulaw"
        self._format = {"ulaw": ULAW_8K, "alaw": ALAW_8K}.get(codec) or AudioFormat("pcm16", sample_rate)
        self._seq = 0
        self._chunks: dict[str, int] = {}
        self._elapsed_ms: dict[str, float] = {}

    def _next(self) -> str:
        self._seq += 1
        return str(self._seq)

    def connected(self) -> str:
        return json.dumps({"event": "connected", "version": "1.0.0"})

    def start(self) -> str:
        start: dict[str, Any] = {
            "user_id": self.user_id,
            "call_control_id": self.call_id,
            "call_session_id": self.call_session_id,
            "from": self.caller,
            "to": self.called,
            "client_state": self.client_state,
        }
        if self.tags is not None:
            start["tags"] = self.tags
        start["media_format"] = {"encoding": self.encoding, "sample_rate": self.sample_rate, "channels": 1}
        return json.dumps(
            {"event": "start", "sequence_number": self._next(), "stream_id": self.stream_id, "start": start}
        )

    def media(self, payload: bytes, track: str = "inbound") -> str:
        """One ``media`` message; ``payload`` in the bridge's format (L16 little-endian)."""
        if self._format.codec == "pcm16":
            if len(payload) % 2:
                raise ValueError("an L16 payload holds whole 16-bit samples")
            payload = swap16(payload)  # RTP's L16 is network byte order
        counter = "both" if self.shared_chunk_counter else track
        self._chunks[counter] = self._chunks.get(counter, 0) + 1
        timestamp = self._elapsed_ms.get(track, 0.0)
        self._elapsed_ms[track] = timestamp + len(payload) * 1000 / self._format.bytes_per_second
        return json.dumps(
            {
                "event": "media",
                "sequence_number": self._next(),
                "stream_id": self.stream_id,
                "media": {
                    "track": track,
                    "chunk": str(self._chunks[counter]),
                    "timestamp": str(int(timestamp)),
                    "payload": base64.b64encode(payload).decode(),
                },
            }
        )

    def dtmf(self, digit: str, occurred_at: str | None = None) -> str:
        """A key the caller pressed, as Telnyx's media streaming guide shows it (``dtmf{digit}``, with
        ``occurred_at``, ISO 8601, now by default: Telnyx may deliver DTMF out of order)."""
        return json.dumps(
            {
                "event": "dtmf",
                "stream_id": self.stream_id,
                "occurred_at": occurred_at or datetime.now(UTC).isoformat().replace("+00:00", "Z"),
                "sequence_number": self._next(),
                "dtmf": {"digit": digit},
            }
        )

    def stop(self) -> str:
        return json.dumps(
            {
                "event": "stop",
                "sequence_number": self._next(),
                "stream_id": self.stream_id,
                "stop": {"user_id": self.user_id, "call_control_id": self.call_id},
            }
        )

    def call(self, audio: bytes, frame_bytes: int, outbound: bytes | None = None) -> Iterator[str]:
        """Every message of a whole call playing ``audio``; ``outbound`` (as long as ``audio``) is the other
        party's audio on the outbound track (implies ``both_tracks``)."""
        check_outbound(("inbound", "outbound"), audio, outbound)
        yield self.connected()
        yield self.start()
        quiet = silence(self._format, 20)[:1]
        for i in range(0, len(audio), frame_bytes):
            frame = audio[i : i + frame_bytes]
            yield self.media(frame)
            if outbound is not None:
                yield self.media(outbound[i : i + frame_bytes], "outbound")
            elif self.both_tracks:
                yield self.media(quiet * len(frame), "outbound")
        yield self.stop()
