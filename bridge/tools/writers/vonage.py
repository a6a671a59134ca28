"""What Vonage sends on a stream, built from its documents (for ``bridge call`` and the tests)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any


class VonageStreamWriter:
    """Vonage's side of a websocket call, as documented: ``websocket:connected`` with the ``content-type`` and
    the NCCO ``headers`` flattened to the top level, then 20 ms binary L16 frames; DTMF in the flat form.

    ``id_header`` names the NCCO header the application uses to pass the call's uuid (``None``: no such
    header, as in Vonage's own example); Vonage itself puts no call id in the message.
    """

    def __init__(
        self,
        call_id: str,
        sample_rate: int = 16000,
        headers: Mapping[str, str] | None = None,
        *,
        id_header: str | None = "uuid",
    ) -> None:
        self.call_id, self.sample_rate = call_id, sample_rate
        self.headers: dict[str, str] = {id_header: call_id} if id_header else {}
        self.headers.update(headers or {})

    def connected(self) -> str:
        return _compact(
            {"event": "websocket:connected", "content-type": f"audio/l16;rate={self.sample_rate}", **self.headers}
        )

    def dtmf(self, digit: str, duration: int = 260) -> str:
        return _compact({"event": "websocket:dtmf", "digit": digit, "duration": duration})

    def call(self, pcm: bytes, frame_bytes: int) -> Iterator[str | bytes]:
        yield self.connected()
        for i in range(0, len(pcm), frame_bytes):
            yield pcm[i : i + frame_bytes]


def _compact(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"))
