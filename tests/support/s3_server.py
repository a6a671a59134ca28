"""A real S3-compatible server for the recordings' object storage tests: moto's standalone server
(``python -m moto.server``, the ``moto[server]`` test dependency) on a free loopback port.

A subprocess, not ``ThreadedMotoServer`` in the test process: moto's Flask app then shares nothing with the
tests (no event loop, no GIL contention with the bridge under test, no moto patching of the test's own boto3),
and a test can stop it to see what the bridge does when the storage vanishes. Its log goes to a file: a pipe
nobody reads fills up after a few hundred requests and then the server blocks.

moto keeps everything in memory and needs no network beyond the loopback (checked in a network namespace with
only ``lo`` up). The credentials are dummies; moto accepts any.

    with S3Server() as s3:
        s3.create_bucket("recordings")
        env = {**minimal_env(), **s3.env}  # for a bridge process: BRIDGE_RECORDINGS_URL=s3://recordings/...
        store = ObjectStore(parse_s3_url("s3://recordings/calls"), endpoint_url=s3.endpoint_url)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from tests.support.process import free_port

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

REGION = "us-east-1"
# What the bridge (or boto3 in the test process) needs to talk to this server. AWS_EC2_METADATA_DISABLED:
# a missing credential is reported at once instead of after the instance-metadata lookup's timeouts.
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "test-access-key",
    "AWS_SECRET_ACCESS_KEY": "test-secret-key",
    "AWS_REGION": REGION,
    "AWS_DEFAULT_REGION": REGION,
    "AWS_EC2_METADATA_DISABLED": "true",
}
# Settings from the developer's own AWS setup that would otherwise win over, or add to, the dummies above.
FOREIGN = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
)


class S3Server:
    """One ``moto.server`` process on ``127.0.0.1:<port>``. :meth:`start` waits (at most ``start_timeout``)
    until it answers an S3 request; :meth:`stop` (SIGTERM, then SIGKILL) and :meth:`start` again give an
    empty server on the same port (moto keeps nothing on disk); :meth:`reset` empties it without a restart."""

    def __init__(self, directory: Path | None = None, *, start_timeout: float = 30.0) -> None:
        self._owned = directory is None
        self.directory = directory or Path(tempfile.mkdtemp(prefix="bridge-s3-"))
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.log = self.directory / "moto.log"
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """Dummy credentials and the region, for a bridge process (add them to its environment)."""
        return dict(CREDENTIALS)

    def start(self) -> None:
        environ = {k: v for k, v in os.environ.items() if k not in FOREIGN} | CREDENTIALS
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=environ,
            )
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto.server exited ({self.proc.returncode}): {self._log_tail()}")
            if self._answers():
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"moto.server did not answer on port {self.port}: {self._log_tail()}")

    def _answers(self) -> bool:
        """An S3 ListBuckets (``GET /``) answered with 200: the S3 backend is loaded, not only the socket."""
        try:
            with urllib.request.urlopen(f"{self.endpoint_url}/", timeout=1) as response:
                return bool(response.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def _log_tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"

    def reset(self) -> None:
        """Empty the server (every bucket and object) through moto's own API: between tests sharing it."""
        request = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            if response.status != 200:
                raise RuntimeError(f"moto reset answered {response.status}")

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        finally:
            self.proc = None

    def close(self) -> None:
        """Stop the server and delete its directory when it made it."""
        self.stop()
        if self._owned:
            shutil.rmtree(self.directory, ignore_errors=True)

    def client(self) -> S3Client:
        """A plain boto3 client of this server, independent of :mod:`bridge.recording.objects`: the tests'
        oracle, and the way to make buckets."""
        import boto3
        from botocore.config import Config

        session = boto3.session.Session(
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name=REGION,
        )
        config = Config(connect_timeout=5, read_timeout=10, retries={"max_attempts": 1})
        return session.client("s3", endpoint_url=self.endpoint_url, config=config)

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def __enter__(self) -> S3Server:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()
