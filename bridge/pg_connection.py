"""A PostgreSQL connection that is remade when it is lost (for :mod:`bridge.transcripts_pg`, and any
store of the fleet's shared record after it).

:class:`Reconnecting` holds one psycopg connection for one thread at a time (the writer thread's, or the
readers' under their lock): :meth:`~Reconnecting.connection` makes it when there is none (then runs
``setup`` on it, e.g. the schema), :meth:`~Reconnecting.lost` forgets a connection found broken, and
with a ``backoff`` the attempts after a failed one wait out an exponential, jittered delay
(:class:`bridge.backoff.Backoff`), cut short by ``stop`` (the store closing).
:meth:`~Reconnecting.run` does a piece of work on it, and once more on a new connection when the one it
had turned out dead (the server restarted since it was last used).

Every connection is in autocommit (transactions are explicit: ``connection.transaction()``), with a lock
and a statement timeout, TCP keepalives and a TCP user timeout: a server that vanished is noticed
instead of waited on forever.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict

from bridge.backoff import Backoff

# Worth trying again: the connection or the server (restart, failover, deadlock, a timeout), not the data.
TRANSIENT: tuple[type[Exception], ...] = (psycopg.OperationalError, psycopg.InterfaceError, OSError)

T = TypeVar("T")
Connection = psycopg.Connection[Any]


def connect_options(
    url: str, *, application_name: str, busy_timeout: float, connect_timeout: float, statement_timeout: float
) -> dict[str, Any]:
    """``psycopg.connect`` keyword arguments (seconds in, libpq's units out). What ``url`` sets itself wins
    (its ``options``, e.g. ``-c search_path=bridge``, come after these, so they win too).

    Raises:
        psycopg.ProgrammingError: ``url`` is not a connection string.
    """
    given = conninfo_to_dict(url)
    options = f"-c lock_timeout={int(busy_timeout * 1000)} -c statement_timeout={int(statement_timeout * 1000)}"
    ours: dict[str, Any] = {
        "connect_timeout": max(1, round(connect_timeout)),
        "application_name": application_name,
        "options": f"{options} {given['options']}" if given.get("options") else options,
        "keepalives": 1,
        "keepalives_idle": 10,
        "keepalives_interval": 5,
        "keepalives_count": 3,
        "tcp_user_timeout": int((statement_timeout + connect_timeout) * 1000),
    }
    return {"autocommit": True, **{k: v for k, v in ours.items() if k == "options" or k not in given}}


class Reconnecting:
    """See the module docstring. ``backoff`` None: every :meth:`connection` without a connection tries
    at once (the readers: a read fails fast rather than waiting)."""

    def __init__(
        self,
        url: str,
        options: dict[str, Any],
        *,
        setup: Callable[[Connection], None] | None = None,
        backoff: Backoff | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.url = url
        self._options = options
        self._setup = setup
        self._backoff = backoff
        self._stop = stop or threading.Event()
        self._db: Connection | None = None
        self._failures = 0
        self._next_attempt = 0.0  # monotonic

    @property
    def connected(self) -> bool:
        return self._db is not None and not self._db.closed

    @property
    def due(self) -> bool:
        """No connection, and the backoff allows an attempt now."""
        return not self.connected and time.monotonic() >= self._next_attempt

    def connection(self) -> Connection:
        """The connection, made (and set up) when there is none.

        Raises:
            psycopg.OperationalError and the rest of :data:`TRANSIENT`: no connection could be made (or
                ``stop`` was set while waiting out the backoff).
        """
        if self._db is not None and not self._db.closed:
            return self._db
        wait = self._next_attempt - time.monotonic()
        if wait > 0 and self._stop.wait(wait):
            raise psycopg.OperationalError("closing")
        try:
            db = psycopg.connect(self.url, **self._options)
            try:
                if self._setup is not None:
                    self._setup(db)
            except BaseException:
                db.close()
                raise
        except TRANSIENT:
            self._failures += 1
            if self._backoff is not None:
                self._next_attempt = time.monotonic() + self._backoff.delay(self._failures)
            raise
        self._failures = 0
        self._db = db
        return db

    def lost(self, db: Connection) -> None:
        """After an error on ``db``: forget it if it is no longer usable (the next use makes another)."""
        if db.closed or db.broken:
            db.close()
            if self._db is db:
                self._db = None

    def run(self, work: Callable[[Connection], T]) -> T:
        """``work(connection)``; when it fails because the connection it had was dead (not one just
        made), once more on a new one. Raises what ``work`` or :meth:`connection` raise."""
        for attempt in (1, 2):
            reused = self.connected
            db = self.connection()
            try:
                return work(db)
            except TRANSIENT:
                self.lost(db)
                if attempt == 2 or not (reused and db.closed):
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
