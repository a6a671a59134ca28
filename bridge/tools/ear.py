"""What a Twilio phone does with the messages a bridge sends back (pure; for ``bridge call``, the demo,
the load test and the tests): plays ``media`` at real time from its buffer, echoes each ``mark`` when
playback reaches it, and on ``clear`` drops what it has not played and echoes the marks still pending
(as Twilio documents). It records what the caller heard, when, and every clear and mark.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field

BYTES_PER_SECOND = 8000  # mu-law 8 kHz


@dataclass(slots=True)
class Played:
    start: float  # when it started playing (the phone's clock)
    audio: bytes


@dataclass(slots=True)
class TwilioEar:
    """Feed it the bridge's messages with :meth:`receive` and ask it what is due with :meth:`due`;
    both return mark echoes to send back (as names)."""

    played: list[Played] = field(default_factory=list)
    marks: list[tuple[float, str]] = field(default_factory=list)  # (sent back at, name)
    clears: list[float] = field(default_factory=list)
    closed_at: float | None = None
    _busy_until: float = 0.0
    _pending: list[tuple[float, str]] = field(default_factory=list)  # (due at, name)

    def receive(self, message: str, now: float) -> list[str]:
        try:
            msg = json.loads(message)
        except ValueError:
            return []
        event = msg.get("event")
        if event == "media":
            audio = base64.b64decode(msg["media"]["payload"])
            start = max(now, self._busy_until)
            self.played.append(Played(start, audio))
            self._busy_until = start + len(audio) / BYTES_PER_SECOND
        elif event == "mark":
            self._pending.append((max(now, self._busy_until), msg["mark"]["name"]))
        elif event == "clear":
            self.clears.append(now)
            self._cut(now)
            echoed = [name for _, name in self._pending]  # Twilio returns pending marks on clear
            self._pending.clear()
            self.marks += [(now, name) for name in echoed]
            return echoed
        return self.due(now)

    def due(self, now: float) -> list[str]:
        ready = [name for at, name in self._pending if at <= now]
        self._pending = [(at, name) for at, name in self._pending if at > now]
        self.marks += [(now, name) for name in ready]
        return ready

    def next_due(self) -> float | None:
        return min((at for at, _ in self._pending), default=None)

    def _cut(self, now: float) -> None:
        kept: list[Played] = []
        for p in self.played:
            heard = max(0, min(len(p.audio), round((now - p.start) * BYTES_PER_SECOND)))
            if heard:
                kept.append(Played(p.start, p.audio[:heard]))
        self.played = kept
        self._busy_until = min(self._busy_until, now)

    def heard(self) -> bytes:
        """What the caller heard, in order (mu-law), without the gaps between replies."""
        return b"".join(p.audio for p in self.played)

    def audio_at(self, t: float, nbytes: int) -> bytes:
        """The mu-law the phone's loudspeaker plays from ``t`` for ``nbytes`` samples (silence, 0xFF,
        where nothing plays): what a speakerphone's microphone picks up as echo."""
        out = bytearray(b"\xff" * nbytes)
        end = t + nbytes / BYTES_PER_SECOND
        for p in self.played:
            p_end = p.start + len(p.audio) / BYTES_PER_SECOND
            if p_end <= t or p.start >= end:
                continue
            src = max(0, round((t - p.start) * BYTES_PER_SECOND))
            dst = max(0, round((p.start - t) * BYTES_PER_SECOND))
            n = min(len(p.audio) - src, nbytes - dst)
            if n > 0:
                out[dst : dst + n] = p.audio[src : src + n]
        return bytes(out)

    def first_audio_at(self) -> float | None:
        return self.played[0].start if self.played else None

    def finished_at(self) -> float:
        """When the last audio it was given ends (or ended)."""
        return self._busy_until
