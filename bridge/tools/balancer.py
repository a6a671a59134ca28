"""``bridge loadtest --instances N``: a loopback TCP balancer in front of N bridges, as a load balancer in
front of a fleet: each new connection goes to the next bridge in turn (round robin), and its bytes are
copied both ways as they come, so a WebSocket upgrade and everything after it pass through untouched.

A plain ``asyncio.Protocol`` pair per connection (no streams: the load test measures its CPU, so it does
the least it can): reading from one side pauses while the other side's write buffer is full, and an
end of stream on one side is passed on as a half-close. It runs in its own process
(:func:`balancer`), started by :mod:`bridge.tools.loadtest`.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any, cast

from bridge.loop import run_loop


class _Half(asyncio.Protocol):
    """One side of a proxied connection: what it reads is written to :attr:`peer`."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: _Half | None = None
        self.early = bytearray()  # read before the other side was connected
        self.eof = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not asyncio.Transport subclasses

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None:
            peer.transport.write(data)
        else:
            self.early += data

    def eof_received(self) -> bool:
        self.eof = True
        peer = self.peer
        if peer is None or peer.transport is None:
            return False
        if peer.eof or not peer.transport.can_write_eof():
            peer.transport.close()
            return False
        peer.transport.write_eof()  # a half-close, passed on
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None:
            peer.transport.close()  # after what is buffered is written

    # The other side writes into our transport: when its buffer fills, stop reading from the other side.
    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()


class _Front(_Half):
    """The caller's side: at connect, opens the back side to the next bridge."""

    def __init__(self, pick: Any, counts: list[int], tasks: set[asyncio.Task[None]]) -> None:
        super().__init__()
        self._pick = pick
        self._counts = counts
        self._tasks = tasks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        assert self.transport is not None
        self.transport.pause_reading()  # until the back side is connected
        task = asyncio.get_running_loop().create_task(self._connect())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect(self) -> None:
        index, (host, port) = next(self._pick)
        back = _Half()
        try:
            await asyncio.get_running_loop().create_connection(lambda: back, host, port)
        except OSError:
            if self.transport is not None:
                self.transport.close()
            return
        self._counts[index] += 1
        back.peer, self.peer = self, back
        assert back.transport is not None and self.transport is not None
        if self.transport.is_closing():
            back.transport.close()
            return
        if self.early:
            back.transport.write(bytes(self.early))
            self.early.clear()
        if self.eof:
            back.transport.write_eof()
        self.transport.resume_reading()


def balancer(port: int, backends: list[tuple[str, int]], ready: Any, stop: Any, results: Any) -> None:
    """Serve ``127.0.0.1:port`` until ``stop`` (a multiprocessing Event) is set; puts ``True`` on ``ready``
    once listening, then the connections each backend got (a list, in ``backends`` order) on ``results``."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        counts = [0] * len(backends)
        tasks: set[asyncio.Task[None]] = set()
        pick = itertools.cycle(enumerate(backends))
        server = await loop.create_server(lambda: _Front(pick, counts, tasks), "127.0.0.1", port, backlog=4096)
        ready.put(True)
        while not stop.is_set():
            await asyncio.sleep(0.1)
        server.close()
        results.put(counts)

    run_loop(main())
