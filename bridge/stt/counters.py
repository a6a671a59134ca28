"""What a call's STT stream counts (:class:`SttCounters`, ``SttStream.counters``): read for the call's
``call.ended`` summary and its metrics by :mod:`bridge.call.figures`. Pure: no I/O."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class SttCounters:
    """What a call's STT stream counts for the call's summary and metrics (:mod:`bridge.call.figures`)."""

    sessions: int = 0  # Gladia sessions opened (or carried on from another instance)
    connections: int = 0  # WebSocket connections that opened, to any session
    reconnects: int = 0  # connections after the first
    finals: int = 0  # finals delivered from the socket
    keepalive_bytes: int = 0  # silence sent while the phone sent no audio
    recovered_finals: int = 0  # finals read back after the call (GET /v2/live/{id})
    addon_results: int = 0  # realtime add-on results passed to the call (translations, entities, sentiment)
    queued_seconds: float = 0.0  # waited for a free session slot (admission)
