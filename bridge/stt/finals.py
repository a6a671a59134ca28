"""Which finals of a call are new (pure): Gladia may send a final again after a reconnect, and a
session read back after the call holds finals the socket already delivered."""

from __future__ import annotations

from bridge.stt.protocol import Utterance


class FinalsTracker:
    """Drops a final whose id was seen, or which does not end after the last one delivered, for the
    current Gladia session; remembers each session's last end for the read-back after the call."""

    def __init__(self) -> None:
        self._seen: set[str] = set()
        self._last_end = -1.0
        self._last_end_by_session: dict[str, float] = {}
        self.duplicates = 0

    def accept(self, session_id: str, final_id: str | None, utterance: Utterance) -> bool:
        """True (and remembered) when this final is new; False for a duplicate (counted)."""
        key = final_id or f"{utterance.start:.3f}-{utterance.end:.3f}"
        if key in self._seen or utterance.end <= self._last_end:
            self.duplicates += 1
            return False
        self._seen.add(key)
        self._last_end = utterance.end
        self._last_end_by_session[session_id] = utterance.end
        return True

    def new_session(self) -> None:
        """A new Gladia session starts (its times and ids start over)."""
        self._seen.clear()
        self._last_end = -1.0

    def missed(self, session_id: str, utterances: list[Utterance]) -> list[tuple[int, Utterance]]:
        """Of a session read back after the call, the finals that never arrived on the socket (by
        index in the read-back), in order; they are then remembered as delivered."""
        last_end = self._last_end_by_session.get(session_id, -1.0)
        out = []
        for i, utt in enumerate(utterances):
            if utt.end <= last_end + 1e-6 or not utt.text.strip():
                continue
            last_end = utt.end
            out.append((i, utt))
        self._last_end_by_session[session_id] = last_end
        return out
