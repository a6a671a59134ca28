"""The send path of a call's Gladia session: what goes out on the current connection.

:class:`AudioSender` writes what the :class:`~bridge.stt.replay.ReplayBuffer` has for the connection
as soon as it is there (never blocking: a paused transport keeps the audio buffered), sends
``stop_recording`` once everything is out at hang-up (again after any reconnect), and during long
stretches without phone audio sends silence every ``keepalive_seconds`` so Gladia's inactivity
timeout (about 30 s) never closes the session: one timer per connection, not one per frame.
The connection loop (:mod:`bridge.stt.stream`) attaches each new connection and detaches it when it
closes.
"""

from __future__ import annotations

import asyncio

import structlog

from bridge.audio import AudioFormat, silence
from bridge.stt.connection import SessionConnection
from bridge.stt.counters import SttCounters
from bridge.stt.protocol import STOP_RECORDING
from bridge.stt.replay import ReplayBuffer

log = structlog.get_logger("bridge.stt")


class AudioSender:
    """See the module docstring. ``stopping`` is set at hang-up (:meth:`stop`); ``stop_sent`` is per
    connection (the loop clears it before connecting)."""

    # fmt: off
    __slots__ = (
        "_appended_at_last_check", "_counters", "_format", "_keepalive", "_timer", "conn", "replay",
        "stop_sent", "stopping"
    )
    # fmt: on

    def __init__(
        self, replay: ReplayBuffer, audio_format: AudioFormat, keepalive_seconds: float, counters: SttCounters
    ) -> None:
        self.replay = replay
        self._format = audio_format
        self._keepalive = keepalive_seconds
        self._counters = counters
        self.conn: SessionConnection | None = None
        self.stopping = False
        self.stop_sent = False  # on the current connection
        self._appended_at_last_check = -1
        self._timer: asyncio.TimerHandle | None = None

    def stop(self) -> None:
        """Hang-up: flush what is buffered, then ``stop_recording``."""
        self.stopping = True
        self.pump()

    def attach(self, conn: SessionConnection) -> None:
        """``conn`` carries the session from now on: send what is waiting, start the keepalive timer."""
        if self._keepalive > 0:
            self._timer = asyncio.get_running_loop().call_later(self._keepalive, self._keepalive_check)
        self.conn = conn
        self.pump()

    def detach(self) -> None:
        """The connection closed (or is being closed): nothing more goes out until the next one."""
        self.conn = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def pump(self) -> None:
        """Send what the replay buffer has for the current connection, then ``stop_recording`` once
        everything is out at hang-up. Never blocks: a paused transport keeps the audio buffered."""
        conn = self.conn
        if conn is None or not conn.writable:
            return
        for piece in self.replay.pieces(flush=self.stopping):
            conn.send_binary(piece)
        if self.stopping and not self.stop_sent and self.replay.pending == 0:
            conn.send_text(STOP_RECORDING)
            self.stop_sent = True

    def _keepalive_check(self) -> None:
        """Every ``keepalive_seconds``: if no phone audio came meanwhile, send silence (a hold, a stalled
        carrier) so Gladia's inactivity timeout never closes the session."""
        if not self.stopping and self.replay.appended_bytes == self._appended_at_last_check:
            fill = silence(self._format, 100)
            self._counters.keepalive_bytes += len(fill)
            self.replay.append(fill)
            self.pump()
            log.debug("stt.keepalive", bytes=len(fill))
        self._appended_at_last_check = self.replay.appended_bytes
        self._timer = asyncio.get_running_loop().call_later(self._keepalive, self._keepalive_check)
