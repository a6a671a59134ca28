"""The recordings' object storage in fleet mode (``BRIDGE_RECORDINGS_URL=s3://bucket/prefix``): a small,
blocking S3 client over boto3 that the recording uploader thread and the HTTP read path's worker threads
share.

Why a wrapper at all: the callers need six operations (put a part, read a byte range, size, list, delete a
call's parts, check the bucket at start-up) and one exception, :class:`ObjectStoreError`, whose reason is
short, says what to fix and never carries a secret. botocore's own errors can: a ``SignatureDoesNotMatch``
message holds the string that was signed, an endpoint error repeats the endpoint URL (with any userinfo in it).
So the reasons are built here from the error *code*, the HTTP status and the endpoint's host, never from the
server's message. Nothing here logs; the callers log the reason.

Works with AWS S3 and S3-compatible servers (MinIO, Ceph, moto): with an ``endpoint_url`` the addressing is
path-style (``http://host/bucket/key``: no wildcard DNS needed for the bucket), and request checksums are sent
only where the API requires them (botocore 1.36 started adding CRC32 trailers to every upload by default, which
several S3-compatible servers refuse).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

SETTING = "BRIDGE_RECORDINGS_URL"
# S3's own limits: a ListObjectsV2 page and a DeleteObjects batch hold at most 1000 keys.
MAX_PAGE = 1000

# https://docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html (general purpose buckets)
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_RESERVED_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_RESERVED_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")
# Codes that mean "the object or bucket is not there" (HEAD answers carry only the status, hence "404").
_MISSING = frozenset({"404", "NoSuchKey", "NotFound", "NoSuchBucket"})
# Worth trying the same request again later: the server or the network, not the request.
_RETRYABLE_CODES = frozenset(
    {"RequestTimeout", "RequestTimeTooSkewed", "SlowDown", "ServiceUnavailable", "InternalError", "Throttling"}
)


@dataclass(frozen=True, slots=True)
class S3Location:
    bucket: str
    prefix: str  # "" or without leading/trailing slash


def parse_s3_url(url: str) -> S3Location:
    """``s3://bucket/some/prefix`` or ``s3://bucket`` → :class:`S3Location`; called once, when the settings
    are read, so that a mistyped URL stops the start-up instead of every upload.

    Raises:
        ValueError: anything else, with a message naming :data:`SETTING` and what is wrong (another scheme, a
            bucket name S3 would refuse, a query or fragment, credentials or a port in the URL, an empty path
            segment).
    """

    def refuse(why: str) -> ValueError:
        return ValueError(f"{SETTING} must look like s3://bucket/prefix: {why}")

    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise refuse("it contains whitespace or a control character")
    parts = urlsplit(url)
    if not url.startswith("s3://"):
        scheme = url[: len(parts.scheme)]  # as typed, and only scheme characters (nothing after a colon)
        raise refuse(f"the scheme is {scheme or 'missing'!r}, not 's3'")
    if "?" in url or "#" in url:
        raise refuse("a query (?) or fragment (#) is not allowed")
    if "@" in parts.netloc:
        # Not echoed back: what precedes the @ may be a secret.
        raise refuse("credentials do not belong in the URL (use AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)")
    if ":" in parts.netloc:
        raise refuse("a port is not part of an s3:// URL (an S3-compatible server's address goes elsewhere)")
    bucket = parts.netloc
    why = _bucket_problem(bucket)
    if why is not None:
        raise refuse(f"bucket {bucket!r}: {why}")
    prefix = parts.path.strip("/")
    if "//" in prefix:
        raise refuse(f"prefix {prefix!r} has an empty path segment")
    return S3Location(bucket, prefix)


def _bucket_problem(bucket: str) -> str | None:
    """Why S3 would refuse this bucket name, or None."""
    if not bucket:
        return "no bucket name"
    if not 3 <= len(bucket) <= 63:
        return "a bucket name has 3 to 63 characters"
    if not _BUCKET.fullmatch(bucket):
        return "only lowercase letters, digits, dots and hyphens, beginning and ending with a letter or digit"
    if ".." in bucket:
        return "two adjacent dots"
    try:
        ipaddress.IPv4Address(bucket)
        return "a bucket name cannot look like an IP address"
    except ValueError:
        pass
    if bucket.startswith(_RESERVED_PREFIXES) or bucket.endswith(_RESERVED_SUFFIXES):
        return "a prefix or suffix S3 reserves"
    return None


class ObjectStoreError(Exception):
    """A call of :class:`ObjectStore` failed. ``reason`` is short and safe to log (no credentials, no signed
    strings); ``code`` is S3's error code when the server answered (``NoSuchBucket``, ``AccessDenied``...),
    ``status`` its HTTP status; ``retryable`` says whether the same request may succeed later (the network, a
    timeout, 5xx, throttling) as opposed to never without a fix (denied, missing, no credentials)."""

    def __init__(self, reason: str, *, code: str | None = None, status: int | None = None, retryable: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code
        self.status = status
        self.retryable = retryable


class ObjectMissing(ObjectStoreError):
    """The object (or the bucket) is not there: :meth:`ObjectStore.get` of an absent key."""


class ObjectStore:
    """Blocking; called from worker threads only (never the event loop).

    One boto3 client, made here from a session of its own (boto3's default session is not safe to create
    clients from in several threads at once) and shared by every thread afterwards (clients are thread-safe).
    Credentials come from the standard AWS chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/
    ``AWS_SESSION_TOKEN``, ``AWS_PROFILE``, the instance or pod role), resolved here, when the client is made
    (so set the environment before; a role's temporary credentials then renew themselves); none at all is
    reported by the first request.
    ``max_attempts`` counts the first try (botocore's "standard" retry mode: jittered backoff on throttling,
    5xx and connection errors), so a failure costs at most about ``max_attempts`` times the timeouts.
    """

    def __init__(
        self,
        location: S3Location,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 20.0,
        max_attempts: int = 3,
    ) -> None:
        self.location = location
        self.bucket = location.bucket
        self._root = f"{location.prefix}/" if location.prefix else ""
        endpoint = urlsplit(endpoint_url) if endpoint_url else None
        # For reasons: the host and port only (an endpoint URL may carry userinfo).
        self._where = f"{endpoint.hostname}:{endpoint.port or ''}".rstrip(":") if endpoint else "AWS S3"
        config = Config(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"max_attempts": max_attempts, "mode": "standard"},
            s3={"addressing_style": "path"} if endpoint_url else None,
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        session = boto3.session.Session()
        self._client: S3Client = session.client("s3", endpoint_url=endpoint_url, region_name=region, config=config)

    def key(self, *parts: str) -> str:
        """The object key for ``parts`` under the location's prefix: ``key("calls", "CA1", "000001.ogg")`` is
        ``"<prefix>/calls/CA1/000001.ogg"``. An empty part is refused (it would make ``//`` in the key).

        Raises:
            ValueError: no parts, or an empty one.
        """
        if not parts or any(not p for p in parts):
            raise ValueError(f"an object key needs non-empty parts, got {parts!r}")
        return self._root + "/".join(parts)

    def put(self, key: str, data: bytes) -> None:
        """Store ``data`` at ``key`` (replacing what was there: S3 writes whole objects).

        Raises:
            ObjectStoreError: the upload failed after the retries.
        """
        with self._mapped("put", key):
            self._client.put_object(Bucket=self.bucket, Key=key, Body=data)

    def get(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        """Bytes ``[start, end)`` of the object (``end`` None: to its end), read with a ``Range`` request.
        Like a slice past the end: ``end`` beyond the size gives what there is, ``start`` at or beyond it
        gives ``b""``.

        Raises:
            ValueError: a negative ``start`` or ``end``.
            ObjectMissing: there is no such object.
            ObjectStoreError: any other failure.
        """
        if start < 0 or (end is not None and end < 0):
            raise ValueError(f"byte range [{start}, {end}) has a negative bound")
        if end is not None and end <= start:
            return b""
        ranged = start > 0 or end is not None
        span = f"bytes={start}-{'' if end is None else end - 1}"
        with self._mapped("get", key):
            try:
                if ranged:
                    response = self._client.get_object(Bucket=self.bucket, Key=key, Range=span)
                else:
                    response = self._client.get_object(Bucket=self.bucket, Key=key)
            except ClientError as exc:
                if _code(exc) == "InvalidRange":  # 416: start at or past the end
                    return b""
                raise
            with response["Body"] as body:
                return body.read()

    def size(self, key: str) -> int | None:
        """The object's size in bytes (a HEAD request), None when there is no such object.

        Raises:
            ObjectStoreError: the HEAD failed for another reason (denied, no bucket, unreachable).
        """
        with self._mapped("size", key):
            try:
                head = self._client.head_object(Bucket=self.bucket, Key=key)
            except ClientError as exc:
                if _code(exc) in ("404", "NoSuchKey", "NotFound"):
                    return None
                raise
            return head["ContentLength"]

    def list(self, prefix: str, *, page_size: int = MAX_PAGE) -> list[tuple[str, int]]:
        """``(key, size)`` of every object whose key starts with ``prefix`` (a full key prefix, as made by
        :meth:`key`; end it with ``/`` so that ``.../CA1`` does not also match ``.../CA10``), in key order,
        following the pages. ``page_size`` (at most 1000, S3's limit) is there for the tests.

        Raises:
            ObjectStoreError: a page could not be read.
        """
        found: list[tuple[str, int]] = []
        with self._mapped("list", prefix):
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix, PaginationConfig={"PageSize": min(page_size, MAX_PAGE)}
            )
            for page in pages:
                found.extend((o["Key"], o["Size"]) for o in page.get("Contents", []))
        return found

    def delete_prefix(self, prefix: str, *, batch_size: int = MAX_PAGE) -> int:
        """Delete every object whose key starts with ``prefix`` (DeleteObjects, ``batch_size`` keys a request,
        at most 1000), and return how many there were. Retention calls it with a call's prefix; as with
        :meth:`list`, end that with ``/``.

        Raises:
            ValueError: ``prefix`` is not strictly inside the location's prefix (an empty one would empty the
                whole bucket, someone else's objects too).
            ObjectStoreError: listing or deleting failed, or the server refused some keys (their count in the
                reason); what was deleted before stays deleted.
        """
        if not prefix.startswith(self._root) or len(prefix) <= len(self._root):
            raise ValueError(f"delete_prefix({prefix!r}) is not inside the store's prefix {self._root!r}")
        keys = [k for k, _ in self.list(prefix, page_size=batch_size)]
        step = min(batch_size, MAX_PAGE)
        for i in range(0, len(keys), step):
            batch = keys[i : i + step]
            with self._mapped("delete", prefix):
                answer = self._client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True}
                )
            errors = answer.get("Errors", [])
            if errors:
                codes = sorted({e.get("Code", "?") for e in errors})
                raise ObjectStoreError(
                    f"delete under {prefix!r}: {len(errors)} of {len(batch)} keys refused ({', '.join(codes)})",
                    code=codes[0],
                    retryable=all(c in _RETRYABLE_CODES for c in codes),
                )
        return len(keys)

    def check(self) -> None:
        """HEAD the bucket, at start-up: the bucket exists and these credentials may use it.

        Raises:
            ObjectStoreError: saying what is wrong (no such bucket, access denied, no credentials, the endpoint
                unreachable), naming the bucket.
        """
        with self._mapped("check", None):
            self._client.head_bucket(Bucket=self.bucket)

    def close(self) -> None:
        """Close the client's connection pool (at shutdown; the store is not used afterwards)."""
        self._client.close()

    @contextmanager
    def _mapped(self, operation: str, key: str | None) -> Iterator[None]:
        """botocore's exceptions → :class:`ObjectStoreError`, in one place (style §3.6). ``from None``, not
        ``from exc``, on purpose: the cause's message may hold the signed string or an endpoint's userinfo, and a
        logged traceback would print it."""
        what = f"s3://{self.bucket}/{key}" if key is not None else f"bucket {self.bucket!r}"
        try:
            yield
        except ClientError as exc:
            code = _code(exc)
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in _MISSING:
                # Only a read of one object can miss the object; anything else missed the bucket.
                if code == "NoSuchBucket" or operation not in ("get", "size"):
                    raise ObjectMissing(
                        f"{operation}: no such bucket {self.bucket!r} at {self._where}",
                        code=code,
                        status=status,
                        retryable=False,
                    ) from None
                raise ObjectMissing(
                    f"{operation} {what}: no such object", code=code, status=status, retryable=False
                ) from None
            if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AllAccessDisabled"):
                raise ObjectStoreError(
                    f"{operation} {what}: access denied ({code}; check the credentials and the bucket policy)",
                    code=code,
                    status=status,
                    retryable=False,
                ) from None
            retryable = code in _RETRYABLE_CODES or (status is not None and (status >= 500 or status == 429))
            raise ObjectStoreError(
                f"{operation} {what}: {code} (HTTP {status})", code=code, status=status, retryable=retryable
            ) from None
        except (NoCredentialsError, PartialCredentialsError):
            raise ObjectStoreError(
                f"{operation} {what}: no complete AWS credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, "
                "a profile or a role)",
                retryable=False,
            ) from None
        except (EndpointConnectionError, ConnectTimeoutError):
            raise ObjectStoreError(f"{operation} {what}: cannot connect to {self._where}", retryable=True) from None
        except ReadTimeoutError:
            raise ObjectStoreError(
                f"{operation} {what}: {self._where} did not answer in time", retryable=True
            ) from None
        except BotoCoreError as exc:
            # The rest (a connection cut mid-body, an unparsable answer...): the class name, not the message.
            raise ObjectStoreError(f"{operation} {what}: {type(exc).__name__}", retryable=True) from None


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "Unknown"))
