"""Which finals of a call are new (pure): Gladia may send a final again after a reconnect, and a
session read back after the call holds finals the socket already delivered.

Per channel: on a call of both parties the two channels' finals interleave in time (one party's
final may end before the other's that came first), so "ends after the last one delivered" is
tracked for each channel on its own."""

from __future__ import annotations

from bridge.stt.protocol import Utterance


class FinalsTracker:
    """Drops a final whose id was seen, or which does not end after the last one delivered on its
    channel, for the current Gladia session; remembers each session's last end per channel for the
    read-back after the call."""

    def __init__(self) -> None:
        self._seen: set[str] = set()
        self._last_end: dict[int, float] = {}
        self._last_end_by_session: dict[tuple[str, int], float] = {}
        self.duplicates = 0

    def accept(self, session_id: str, final_id: str | None, utterance: Utterance) -> bool:
        """True (and remembered) when this final is new; False for a duplicate (counted)."""
        channel = utterance.channel
        key = final_id or f"{channel}:{utterance.start:.3f}-{utterance.end:.3f}"
        if key in self._seen or utterance.end <= self._last_end.get(channel, -1.0):
            self.duplicates += 1
            return False
        self._seen.add(key)
        self._last_end[channel] = utterance.end
        self._last_end_by_session[session_id, channel] = utterance.end
        return True

    def last_ends(self) -> dict[int, float]:
        """The end of the last final delivered, per channel (for another process to carry on)."""
        return dict(self._last_end)

    def seed(self, last_ends: dict[int, float]) -> None:
        """Carry on after another process: finals not ending after these are repeats."""
        self._last_end.update(last_ends)

    def new_session(self) -> None:
        """A new Gladia session starts (its times and ids start over)."""
        self._seen.clear()
        self._last_end.clear()

    def missed(self, session_id: str, utterances: list[Utterance]) -> list[tuple[int, Utterance]]:
        """Of a session read back after the call, the finals that never arrived on the socket (by
        index in the read-back), in order; they are then remembered as delivered."""
        out = []
        for i, utt in enumerate(utterances):
            last_end = self._last_end_by_session.get((session_id, utt.channel), -1.0)
            if utt.end <= last_end + 1e-6 or not utt.text.strip():
                continue
            self._last_end_by_session[session_id, utt.channel] = utt.end
            out.append((i, utt))
        return out
