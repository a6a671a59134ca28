"""What Asterisk sends on a stream, built from its documents (for ``bridge call`` and the tests)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any


class AsteriskStreamWriter:
    """chan_websocket's side of a call, as ``_create_event_MEDIA_START`` builds it: plain text
    ``MEDIA_START connection_id:... channel:... channel_id:... format:... optimal_frame_size:... ptime:...`` or,
    with ``json_style``, compact JSON that adds ``channel_variables``; then binary frames. Asterisk sends no
    stop: the call ends when the socket closes.

    ``channel_variables`` holds the WebSocket channel's variables: chan_websocket's own
    (``MEDIA_WEBSOCKET_CONNECTION_ID``, ``MEDIA_WEBSOCKET_OPTIMAL_FRAME_SIZE``) plus ``variables``, those the
    dialplan handed down; by default ``FROM`` and ``TO`` carry ``caller`` and ``called`` (Asterisk has no
    caller number of its own in these messages).
    """

    def __init__(
        self,
        channel_id: str,
        fmt: str = "ulaw",
        json_style: bool = False,
        caller: str = "+15550100",
        called: str = "+15550199",
        *,
        connection_id: str = "conn-1",
        variables: Mapping[str, str] | None = None,
    ) -> None:
        self.channel_id, self.fmt, self.json_style = channel_id, fmt, json_style
        self.caller, self.called = caller, called
        self.connection_id = connection_id
        self.channel = f"WebSocket/{connection_id}/0x7f3a5c0012a0"  # chan_websocket: WebSocket/<connection>/<%p>
        self.variables = dict(variables) if variables is not None else {"FROM": caller, "TO": called}

    def media_start(self, optimal_frame_size: int, ptime: int = 20) -> str:
        if self.json_style:
            channel_variables = {
                "MEDIA_WEBSOCKET_CONNECTION_ID": self.connection_id,
                "MEDIA_WEBSOCKET_OPTIMAL_FRAME_SIZE": str(optimal_frame_size),
                **self.variables,
            }
            return _compact(
                {
                    "event": "MEDIA_START",
                    "connection_id": self.connection_id,
                    "channel": self.channel,
                    "channel_id": self.channel_id,
                    "format": self.fmt,
                    "optimal_frame_size": optimal_frame_size,
                    "ptime": ptime,
                    "channel_variables": channel_variables,
                }
            )
        return (
            f"MEDIA_START connection_id:{self.connection_id} channel:{self.channel} channel_id:{self.channel_id} "
            f"format:{self.fmt} optimal_frame_size:{optimal_frame_size} ptime:{ptime}"
        )

    def dtmf(self, digit: str) -> str:
        if self.json_style:
            return _compact({"event": "DTMF_END", "channel_id": self.channel_id, "digit": digit})
        return f"DTMF_END digit:{digit} channel_id:{self.channel_id}"

    def call(self, audio: bytes, frame_bytes: int) -> Iterator[str | bytes]:
        yield self.media_start(frame_bytes)
        for i in range(0, len(audio), frame_bytes):
            yield audio[i : i + frame_bytes]


def _compact(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"))  # Asterisk's AST_JSON_COMPACT
