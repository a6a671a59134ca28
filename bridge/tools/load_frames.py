"""The load test's frames, shared by its processes: a 20 ms mu-law frame whose first bytes are its send
time (``time.monotonic``, the same clock in every process), read back from a Gladia session's stream by
:class:`FirstChannel`; the final period of the stand-in; ``--tracks``; and the free loopback port each
load server picks."""

from __future__ import annotations

import socket
import struct

FRAME = 160  # 20 ms of mu-law
FINAL_EVERY = 16000  # bytes of a session's stream: a final every 2 s of one track, every 1 s of two
TRACKS = {"inbound": ["inbound"], "both": ["inbound", "outbound"]}  # --tracks -> Twilio's start.tracks
SEND_TIME = struct.Struct("<d")  # the first bytes of every load frame: when it was sent (time.monotonic)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class FirstChannel:
    """The send times in a Gladia session's stream, one per frame of channel 0 (the caller's track),
    from the chunks as they come.

    Mu-law is a byte a sample, so a two-channel stream is L0 R0 L1 R1 ...: which byte of a chunk is
    channel 0 follows the running byte offset (its parity for two channels). A timestamp cut between
    two chunks is put back together, so no frame goes uncounted whatever size the chunks are.
    """

    def __init__(self, channels: int = 1) -> None:
        self.channels = channels
        self.received = 0  # bytes of the session's stream
        self._position = 0  # bytes of channel 0
        self._stamp = bytearray()  # the start of a timestamp cut at the end of the last chunk

    def feed(self, data: bytes) -> list[float]:
        """The send times of the channel-0 frames whose timestamp ends in ``data``."""
        first = data if self.channels == 1 else data[(-self.received) % self.channels :: self.channels]
        self.received += len(data)
        pos = self._position
        self._position += len(first)
        stamps = []
        i = 0
        while i < len(first):
            into = (pos + i) % FRAME
            if into >= SEND_TIME.size:
                i += FRAME - into  # to the next frame boundary
                continue
            take = min(SEND_TIME.size - into, len(first) - i)
            if take == SEND_TIME.size:
                stamps.append(SEND_TIME.unpack_from(first, i)[0])
            else:
                self._stamp += first[i : i + take]
                if len(self._stamp) == SEND_TIME.size:
                    stamps.append(SEND_TIME.unpack(self._stamp)[0])
                    self._stamp.clear()
            i += take
        return stamps
