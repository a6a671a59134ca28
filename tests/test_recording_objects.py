"""The recordings' object storage client (bridge.recording.objects) against a real S3-compatible server
(moto's, on a loopback port), with a plain boto3 client of the same server, or raw HTTP, as the oracle."""

from __future__ import annotations

import os
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from bridge.recording.objects import ObjectMissing, ObjectStore, ObjectStoreError, S3Location, parse_s3_url
from tests.support.process import free_port
from tests.support.s3_server import S3Server

BUCKET = "recordings"
DATA = bytes(range(256)) * 40 + b"end"  # 10243 bytes, every offset's value known


def store(s3: S3Server, url: str = f"s3://{BUCKET}/fleet/a") -> ObjectStore:
    return ObjectStore(parse_s3_url(url), endpoint_url=s3.endpoint_url)


@pytest.mark.parametrize(
    ("url", "bucket", "prefix"),
    [
        ("s3://recordings", "recordings", ""),
        ("s3://recordings/", "recordings", ""),
        ("s3://recordings/calls", "recordings", "calls"),
        ("s3://recordings/fleet/calls/", "recordings", "fleet/calls"),
        ("s3://my.bucket-01/x", "my.bucket-01", "x"),
        ("s3://abc/a_b", "abc", "a_b"),
    ],
)
def test_parse_accepts_bucket_and_prefix(url: str, bucket: str, prefix: str) -> None:
    """An s3:// URL gives the bucket and the prefix without surrounding slashes."""
    assert parse_s3_url(url) == S3Location(bucket, prefix)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("https://recordings/calls", "scheme is 'https'"),
        ("S3://recordings", "scheme is 'S3'"),
        ("recordings/calls", "scheme is 'missing'"),
        ("s3://", "no bucket name"),
        ("s3:///calls", "no bucket name"),
        ("s3://ab", "3 to 63"),
        ("s3://" + "a" * 64, "3 to 63"),
        ("s3://Recordings", "lowercase"),
        ("s3://rec_ordings", "lowercase"),
        ("s3://-recordings", "lowercase"),
        ("s3://recordings-", "lowercase"),
        ("s3://rec..ordings", "adjacent dots"),
        ("s3://192.168.1.10", "IP address"),
        ("s3://xn--recordings", "reserves"),
        ("s3://recordings-s3alias", "reserves"),
        ("s3://recordings/calls?versionId=1", "query"),
        ("s3://recordings/calls#part", "fragment"),
        ("s3://recordings/calls?", "query"),
        ("s3://AKIAEXAMPLE:hunter2@recordings/calls", "credentials"),
        ("s3://recordings:9000/calls", "port"),
        ("s3://recordings/a//b", "empty path segment"),
        ("s3://recordings/a b", "whitespace"),
        ("s3://recordings/a\nb", "whitespace"),
    ],
)
def test_parse_refuses_with_a_message_naming_the_setting(url: str, why: str) -> None:
    """Anything but s3://bucket[/prefix] with a valid bucket is refused, naming BRIDGE_RECORDINGS_URL and the
    problem, and never repeating credentials."""
    with pytest.raises(ValueError) as caught:
        parse_s3_url(url)
    message = str(caught.value)
    assert message.startswith("BRIDGE_RECORDINGS_URL must look like s3://bucket/prefix"), message
    assert why in message
    assert "hunter2" not in message and "AKIAEXAMPLE" not in message


def test_keys_are_joined_under_the_prefix(s3_server: S3Server) -> None:
    """key() puts parts under the location's prefix, and under nothing when there is none."""
    assert store(s3_server).key("calls", "CA1", "000001.ogg") == "fleet/a/calls/CA1/000001.ogg"
    assert store(s3_server, f"s3://{BUCKET}").key("CA1") == "CA1"
    with pytest.raises(ValueError):
        store(s3_server).key("calls", "")
    with pytest.raises(ValueError):
        store(s3_server).key()


def test_put_then_ranged_get_returns_exactly_the_bytes_asked(s3_server: S3Server) -> None:
    """get(key, start, end) is data[start:end] for the first byte, the middle, the last byte, end=None, an
    end past the size and a start at the size; the oracle client reads back the same object."""
    s3_server.create_bucket(BUCKET)
    objects = store(s3_server)
    key = objects.key("CA1", "000001.ogg")
    objects.put(key, DATA)
    n = len(DATA)
    for start, end in [(0, None), (0, 1), (1, 2), (4000, 6001), (n - 1, n), (n - 1, None), (5, None), (0, n + 100)]:
        assert objects.get(key, start, end) == DATA[start:end], (start, end)
    assert objects.get(key, n) == b""
    assert objects.get(key, n + 10, n + 20) == b""
    assert objects.get(key, 7, 7) == b""
    assert s3_server.client().get_object(Bucket=BUCKET, Key=key)["Body"].read() == DATA
    # Raw HTTP, through a URL the oracle signed: the object is at the path-style address, and the server's own
    # answer to an inclusive Range header is the slice get() turned [start, end) into.
    url = s3_server.client().generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": key}, ExpiresIn=60)
    assert url.startswith(f"{s3_server.endpoint_url}/{BUCKET}/{key}?")
    request = urllib.request.Request(url, headers={"Range": "bytes=4000-6000"})
    with urllib.request.urlopen(request, timeout=5) as raw:
        assert raw.status == 206 and raw.read() == DATA[4000:6001] == objects.get(key, 4000, 6001)
    with pytest.raises(ValueError):
        objects.get(key, -1)


def test_put_replaces_and_empty_objects_work(s3_server: S3Server) -> None:
    """A second put replaces the object; an empty object has size 0 and reads as b""."""
    s3_server.create_bucket(BUCKET)
    objects = store(s3_server)
    key = objects.key("CA1", "part")
    objects.put(key, b"first")
    objects.put(key, b"")
    assert objects.size(key) == 0
    assert objects.get(key) == b""


def test_size_is_the_length_or_none_when_absent(s3_server: S3Server) -> None:
    """size() is the stored length, None for a key never written; get() of it raises ObjectMissing."""
    s3_server.create_bucket(BUCKET)
    objects = store(s3_server)
    objects.put(objects.key("here"), DATA)
    assert objects.size(objects.key("here")) == len(DATA)
    assert objects.size(objects.key("absent")) is None
    with pytest.raises(ObjectMissing) as caught:
        objects.get(objects.key("absent"))
    assert not caught.value.retryable and "no such object" in caught.value.reason


def test_list_follows_the_pages_and_stays_under_the_prefix(s3_server: S3Server) -> None:
    """list() returns every (key, size) under the prefix across several pages, in key order, and no key
    outside it (CA1/ does not match CA10/)."""
    s3_server.create_bucket(BUCKET)
    objects = store(s3_server)
    mine = [(objects.key("CA1", f"{i:06d}.ogg"), i) for i in range(23)]
    for key, size in mine:
        objects.put(key, b"x" * size)
    objects.put(objects.key("CA10", "000000.ogg"), b"other")
    objects.put("outside/CA1/000000.ogg", b"other")
    assert objects.list(objects.key("CA1") + "/", page_size=5) == mine
    assert objects.list(objects.key("CA1") + "/") == mine
    assert objects.list(objects.key("CA2") + "/") == []
    oracle = s3_server.client().list_objects_v2(Bucket=BUCKET, Prefix="fleet/a/CA1/")
    assert [(o["Key"], o["Size"]) for o in oracle["Contents"]] == mine
    # The server does page at that size (so the five pages above were followed, not one answer).
    first = s3_server.client().list_objects_v2(Bucket=BUCKET, Prefix="fleet/a/CA1/", MaxKeys=5)
    assert first["KeyCount"] == 5 and first["IsTruncated"]


def test_one_store_serves_several_threads_at_once(s3_server: S3Server) -> None:
    """One store (one boto3 client) used by eight threads at once: every part lands whole under its key."""
    s3_server.create_bucket(BUCKET)
    objects = store(s3_server)

    def upload(n: int) -> bytes:
        key = objects.key("CA1", f"{n:06d}.ogg")
        objects.put(key, DATA[n:] * 3)
        return objects.get(key, n, n + 100)

    with ThreadPoolExecutor(max_workers=8) as pool:
        heads = list(pool.map(upload, range(32)))
    assert heads == [(DATA[n:] * 3)[n : n + 100] for n in range(32)]
    assert [size for _, size in objects.list(objects.key("CA1") + "/")] == [len(DATA[n:]) * 3 for n in range(32)]


def test_delete_prefix_removes_only_that_prefix(s3_server: S3Server) -> None:
    """delete_prefix() deletes every object under it in batches and returns the count; a neighbour with a
    longer name, another prefix and an object outside the store's prefix are left."""
    s3_server.create_bucket(BUCKET)
    objects = store(s3_server)
    for i in range(12):
        objects.put(objects.key("CA1", f"{i:06d}.ogg"), b"x")
    kept = [objects.key("CA10", "000000.ogg"), objects.key("CA2", "000000.ogg"), "elsewhere/CA1/000000.ogg"]
    for key in kept:
        objects.put(key, b"y")
    assert objects.delete_prefix(objects.key("CA1") + "/", batch_size=5) == 12
    remaining = s3_server.client().list_objects_v2(Bucket=BUCKET)["Contents"]
    assert sorted(o["Key"] for o in remaining) == sorted(kept)
    assert objects.delete_prefix(objects.key("CA1") + "/") == 0


def test_delete_prefix_refuses_to_leave_the_store(s3_server: S3Server) -> None:
    """An empty prefix, the store's own root or a prefix outside it is a ValueError, not a wiped bucket."""
    objects = store(s3_server)
    for prefix in ["", "fleet/a/", "fleet/", "other/CA1/"]:
        with pytest.raises(ValueError):
            objects.delete_prefix(prefix)


def test_check_passes_and_names_a_missing_bucket(s3_server: S3Server) -> None:
    """check() is quiet for an existing bucket and names a missing one; a put into it says so too."""
    s3_server.create_bucket(BUCKET)
    store(s3_server).check()
    missing = store(s3_server, "s3://no-such-bucket/calls")
    with pytest.raises(ObjectStoreError) as caught:
        missing.check()
    assert "no such bucket 'no-such-bucket'" in caught.value.reason and not caught.value.retryable
    with pytest.raises(ObjectStoreError) as caught:
        missing.put(missing.key("k"), b"x")
    assert "no such bucket 'no-such-bucket'" in caught.value.reason


def test_missing_credentials_are_reported_without_a_request(
    s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no credentials anywhere in the chain the reason says so (and is not retryable)."""
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    with pytest.raises(ObjectStoreError) as caught:
        store(s3_server).check()
    assert "no complete AWS credentials" in caught.value.reason and not caught.value.retryable


def test_an_unreachable_endpoint_fails_quickly_and_says_where(monkeypatch: pytest.MonkeyPatch) -> None:
    """A closed loopback port gives a retryable ObjectStoreError naming host:port within the retries'
    backoff, with neither the userinfo of the endpoint URL nor the secret key in the reason."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-to-be-seen")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    port = free_port()  # bound and released: nothing listens there
    objects = ObjectStore(
        S3Location(BUCKET, "calls"), endpoint_url=f"http://user:hunter2@127.0.0.1:{port}", connect_timeout=1.0
    )
    for call in (objects.check, lambda: objects.put(objects.key("k"), b"x"), lambda: objects.get("k", 5, 9)):
        began = time.monotonic()
        with pytest.raises(ObjectStoreError) as caught:
            call()
        assert time.monotonic() - began < 10
        assert caught.value.retryable
        assert f"cannot connect to 127.0.0.1:{port}" in caught.value.reason
        for secret in ("hunter2", "not-to-be-seen", "AKIAEXAMPLE"):
            assert secret not in str(caught.value)


def test_a_stopped_server_is_an_error_and_a_restarted_one_serves_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The harness's own server stops and starts on the same port; the store made before keeps working."""
    with S3Server(tmp_path / "s3") as s3:
        for name, value in s3.env.items():
            monkeypatch.setenv(name, value)  # before the store: boto3 resolves credentials when it makes a client
        s3.create_bucket(BUCKET)
        objects = ObjectStore(S3Location(BUCKET, ""), endpoint_url=s3.endpoint_url, max_attempts=1)
        objects.put("k", b"v")
        s3.stop()
        with pytest.raises(ObjectStoreError) as caught:
            objects.size("k")
        assert caught.value.retryable
        s3.start()  # moto keeps nothing: an empty server
        with pytest.raises(ObjectMissing):
            objects.check()
        s3.create_bucket(BUCKET)
        objects.put("k", b"again")
        assert objects.get("k") == b"again"
