"""A real PostgreSQL server (Debian's ``postgresql`` package) for the shared transcript store's tests:
``initdb`` in a temporary directory, ``postgres`` on a free loopback port (its Unix socket in that
directory too), a database created for the tests; stoppable and startable again on the same data (the
tests restart it under a writing store).

``initdb`` and ``postgres`` refuse to run as root: under root (CI containers) they run as the
``postgres`` user the Debian package creates (``runuser``), and the directory is given to it.

Without the binaries (``/usr/lib/postgresql/<version>/bin/``, or ``pg_ctl`` on ``PATH``) the tests skip on a
developer's machine and FAIL under ``CI`` (``.ci/run`` installs ``postgresql``), as the Redis tests do.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.support.process import free_port

INSTALL = "PostgreSQL not found: install it (Debian: apt-get install postgresql; the tests start their own server)"
DATABASE = "bridge_test"


def postgres_bin_dir() -> Path:
    """The directory of ``initdb`` and ``postgres`` (the newest Debian version, else ``PATH``)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parent.parent.name))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    if on_path is not None:
        return Path(on_path).parent
    if os.environ.get("CI"):
        pytest.fail(INSTALL)
    pytest.skip(INSTALL)


def _as_user() -> tuple[list[str], int | None, int | None]:
    """The command prefix that runs the server's programs as a user they accept, and that user's ids
    (None: ourselves)."""
    if os.geteuid() != 0:
        return [], None, None
    try:
        user = pwd.getpwnam("postgres")
    except KeyError:
        user = pwd.getpwnam("nobody")
    runuser = shutil.which("runuser") or shutil.which("setpriv")
    if runuser is None:
        pytest.fail("running as root and neither runuser nor setpriv is there to start PostgreSQL as a user")
    if Path(runuser).name == "runuser":
        return [runuser, "-u", user.pw_name, "--"], user.pw_uid, user.pw_gid
    return [runuser, f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups"], user.pw_uid, user.pw_gid


class PostgresServer:
    """One ``postgres`` process on ``127.0.0.1:<port>``, trust authentication for local connections only.
    :meth:`stop` (fast shutdown) or :meth:`kill` (SIGKILL: crash recovery on the next start) and
    :meth:`start` again keep the data."""

    def __init__(self, directory: Path | None = None) -> None:
        self.bin = postgres_bin_dir()
        self.prefix, uid, gid = _as_user()
        # A short path: the Unix socket's path must fit in 107 bytes.
        self.directory = directory or Path(tempfile.mkdtemp(prefix="bridge-pg-"))
        self.data = self.directory / "data"
        self.sockets = self.directory / "run"
        self.sockets.mkdir(parents=True, exist_ok=True)
        if uid is not None and gid is not None:
            for path in (self.directory, self.sockets):
                os.chown(path, uid, gid)
        self.port = free_port()
        self.user = "bridge"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.directory / "postgres.log"
        self._initdb()

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{DATABASE}"

    def _run(self, *args: str, timeout: float = 60) -> None:
        result = subprocess.run([*self.prefix, *args], capture_output=True, text=True, timeout=timeout, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{Path(args[0]).name} failed ({result.returncode}): {result.stderr[-2000:]}")

    def _initdb(self) -> None:
        self._run(
            str(self.bin / "initdb"),
            "-D",
            str(self.data),
            "-U",
            self.user,
            "--auth=trust",  # loopback and the socket directory only: see start()
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )

    def start(self) -> None:
        # Opened by us (root or not), handed to the child: the log needs no permission of its own.
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    *self.prefix,
                    str(self.bin / "postgres"),
                    "-D",
                    str(self.data),
                    "-p",
                    str(self.port),
                    "-h",
                    "127.0.0.1",
                    "-k",
                    str(self.sockets),
                    "-c",
                    "fsync=off",  # the tests kill the server, never the machine
                    "-c",
                    "max_connections=50",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited ({self.proc.returncode}): {self.log.read_text()[-2000:]}")
            if self._ready():
                return
            time.sleep(0.05)
        raise RuntimeError(f"postgres did not answer on port {self.port}: {self.log.read_text()[-2000:]}")

    def _ready(self) -> bool:
        import psycopg  # the test dependency: imported here so that collecting without it still works

        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                pass
            with psycopg.connect(
                f"postgresql://{self.user}@127.0.0.1:{self.port}/postgres", connect_timeout=2, autocommit=True
            ) as db:
                exists = db.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone()
                if exists is None:
                    db.execute(f"CREATE DATABASE {DATABASE}")
            return True
        except (OSError, psycopg.OperationalError):
            return False

    def stop(self) -> None:
        """Fast shutdown (SIGINT): open connections are cut, the data is kept."""
        self._signal(signal.SIGINT)

    def kill(self) -> None:
        """SIGKILL to the postmaster (its backends follow): the next start recovers from the WAL."""
        self._signal(signal.SIGKILL)

    def _signal(self, sig: int) -> None:
        if self.proc is None:
            return
        pid = self._postmaster_pid()
        try:
            if pid is not None:
                os.kill(pid, sig)  # the postmaster itself, not runuser (which does not pass signals on)
            else:
                self.proc.send_signal(sig)
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        finally:
            self.proc = None
        if sig == signal.SIGKILL:  # its backends may outlive it a moment; the next start waits for them
            time.sleep(0.2)

    def _postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def close(self) -> None:
        """Stop the server and delete its directory."""
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)
