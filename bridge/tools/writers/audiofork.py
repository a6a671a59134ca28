"""What a jambonz or FreeSWITCH audio fork sends on a stream, from their documents (for ``bridge call``, tests)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any, Literal

from bridge.tools.writers.two_tracks import interleave_pcm16

WriterStyle = Literal["jambonz", "audio_fork", "audio_stream"]
_WRITER_SUBPROTOCOLS: dict[str, tuple[str, ...]] = {
    "jambonz": ("audio.jambonz.org",),
    "audio_fork": ("audio.drachtio.org",),
    "audio_stream": (),
}


class AudioForkStreamWriter:
    """An audio fork's side of a call: optional metadata text, then binary L16 frames; no stop.

    ``style`` picks the sender and its metadata, as each documents it:

    - ``jambonz`` (default): ``listen``'s ``{sampleRate, mixType}`` + the call info (``callSid``, ``direction``,
      ``from``, ``to``, ``callId``, ``sbcCallid``, ``sipStatus`` (a number), ...) + the verb's ``metadata``
      merged in at the top level, as ``lib/tasks/listen.js`` builds it; subprotocol ``audio.jambonz.org``.
    - ``audio_fork``: drachtio's mod_audio_fork with its README's metadata ``{to, from, callid}`` (plus
      ``metadata``); subprotocol ``audio.drachtio.org``.
    - ``audio_stream``: amigniter's mod_audio_stream, no subprotocol; its metadata is whatever the application
      passed (``metadata`` as JSON).

    ``send_metadata=False`` starts with audio (mod_audio_stream's and mod_audio_fork's metadata are optional).
    ``call_id`` is the SIP Call-ID (jambonz ``callId``, mod_audio_fork ``callid``).

    ``mix_type="stereo"`` (jambonz ``mixType``; FreeSWITCH's ``stereo`` argument) carries both legs of the call
    in each binary frame: 16-bit samples of the caller (left) and the other party (right), interleaved.
    """

    subprotocol = "audio.jambonz.org"  # kept for callers that offer one subprotocol; see ``subprotocols``

    def __init__(
        self,
        call_sid: str,
        sample_rate: int = 8000,
        caller: str = "+15550100",
        called: str = "+15550199",
        metadata: Mapping[str, Any] | None = None,
        *,
        style: WriterStyle = "jambonz",
        send_metadata: bool = True,
        mix_type: str = "mono",
        call_id: str | None = None,
    ) -> None:
        self.call_sid, self.sample_rate, self.caller, self.called = call_sid, sample_rate, caller, called
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.style, self.send_metadata, self.mix_type = style, send_metadata, mix_type
        self.call_id = call_id or f"{call_sid}@192.0.2.10"
        self.subprotocols = _WRITER_SUBPROTOCOLS[style]  # what the sender offers on the upgrade
        if self.subprotocols:
            self.subprotocol = self.subprotocols[0]

    def metadata_message(self) -> str:
        if self.style == "jambonz":
            return _compact(
                {
                    "sampleRate": self.sample_rate,
                    "mixType": self.mix_type,
                    "callSid": self.call_sid,
                    "direction": "inbound",
                    "from": self.caller,
                    "to": self.called,
                    "callId": self.call_id,
                    "sbcCallid": f"sbc-{self.call_id}",
                    "sipStatus": 200,
                    "sipReason": "OK",
                    "callStatus": "in-progress",
                    "accountSid": "bb845d4b-83a9-4cde-a6e9-50f3743bab3f",
                    "traceId": "f0c1d2e3a4b5c6d7e8f9a0b1c2d3e4f5",
                    "applicationSid": "0dddaabf-0a30-43e3-84e8-426873b1a78b",
                    "fsSipAddress": "10.0.0.12:5060",
                    **self.metadata,
                }
            )
        if self.style == "audio_fork":
            return _compact({"to": self.called, "from": self.caller, "callid": self.call_id, **self.metadata})
        return _compact(self.metadata)

    @property
    def sends_dtmf(self) -> bool:
        """jambonz's ``listen`` passes keys on (``passDtmf``); the FreeSWITCH forks send audio only."""
        return self.style == "jambonz"

    def dtmf(self, digit: str, duration_ms: int = 250) -> str:
        """A key, as jambonz's ``listen`` with ``passDtmf`` sends it (text ``{event, dtmf, duration}``,
        jambonz-feature-server ``lib/tasks/listen.js``)."""
        if not self.sends_dtmf:
            raise ValueError(f"an {self.style} fork sends no DTMF message (jambonz listen with passDtmf does)")
        return _compact({"event": "dtmf", "dtmf": digit, "duration": duration_ms})

    def call(self, pcm: bytes, frame_bytes: int, outbound: bytes | None = None) -> Iterator[str | bytes]:
        """Every message of a whole call playing ``pcm`` (L16) in frames of ``frame_bytes`` per channel; with
        ``outbound`` (the right channel, as long as ``pcm``; ``mix_type`` must be ``stereo``), each binary frame
        holds both channels interleaved (twice ``frame_bytes``)."""
        if outbound is not None:
            if self.mix_type != "stereo":
                raise ValueError(f"two channels on a {self.mix_type!r} fork; use mix_type='stereo'")
            pcm, frame_bytes = interleave_pcm16(pcm, outbound), 2 * frame_bytes
        if self.send_metadata:
            yield self.metadata_message()
        for i in range(0, len(pcm), frame_bytes):
            yield pcm[i : i + frame_bytes]


def _compact(obj: Mapping[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"))  # as JSON.stringify writes it
