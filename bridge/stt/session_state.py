"""Where a call's Gladia session stands, as another process can carry it on (fleet mode): the session's
id and URL, where its byte 0 sits in the call's audio, what Gladia acknowledged, and the last finals
delivered. :class:`SessionState` is written to and read from Redis as flat string fields. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SessionState:
    """Where a call's Gladia session stands, so that another process (fleet mode) can carry it on:
    reconnect to the same URL and send from the acknowledged offset."""

    session_id: str
    url: str
    origin_bytes: int  # call-audio byte position of the session's byte 0
    acked: int  # session bytes Gladia acknowledged
    inclusive_ranges: bool | None = None  # the byte_range convention, once learnt
    last_final_ends: tuple[tuple[int, float], ...] = ()  # (channel, end) of the last finals delivered

    def fields(self) -> dict[str, str]:
        return {
            "gladia_id": self.session_id,
            "gladia_url": self.url,
            "gladia_origin": str(self.origin_bytes),
            "gladia_acked": str(self.acked),
            "gladia_inclusive": "" if self.inclusive_ranges is None else str(int(self.inclusive_ranges)),
            "gladia_finals": ",".join(f"{c}:{e:.3f}" for c, e in self.last_final_ends),
        }

    @classmethod
    def from_fields(cls, record: dict[str, str]) -> SessionState | None:
        """The state recorded in Redis, or None when there is none (or it does not parse)."""
        try:
            finals = tuple(
                (int(c), float(e))
                for c, _, e in (p.partition(":") for p in record.get("gladia_finals", "").split(",") if p)
            )
            inclusive = record.get("gladia_inclusive", "")
            return cls(
                record["gladia_id"],
                record["gladia_url"],
                int(record["gladia_origin"]),
                int(record["gladia_acked"]),
                None if inclusive == "" else inclusive == "1",
                finals,
            )
        except (KeyError, ValueError):
            return None
