"""Proves the real-HTTP S3 harness itself (tests/s3): moto's S3 in a child process, reached by
boto3 over loopback HTTP, and the fault-injecting proxy in front of it. No Docker needed.

What moto does *not* do, so no test here can lean on it: it does not validate a checksum the
client supplies (x-amz-checksum-sha256 with the wrong digest is stored as given).
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import io
import json
import os
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError, ConnectionClosedError

from tests.s3.fault_proxy import RESET_STATUS, FaultKind, FaultProxy
from tests.s3.harness import S3Server, running_s3_server

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef


pytestmark = pytest.mark.integration

MIB = 1024 * 1024
NO_RETRIES = Config(retries={"total_max_attempts": 1})


def _b64_sha256(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def _error(exc: ClientError) -> tuple[int, str]:
    return exc.response["ResponseMetadata"]["HTTPStatusCode"], exc.response["Error"]["Code"]


def _no_proxy_opener() -> urllib.request.OpenerDirector:
    # urllib honours HTTP_PROXY from the environment; loopback traffic must never leave.
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


# --- the server ------------------------------------------------------------------------------


def test_put_then_get_round_trips(s3_server: S3Server, s3_bucket: str) -> None:
    s3 = s3_server.client()
    s3.put_object(Bucket=s3_bucket, Key="dir/hello.txt", Body=b"hello")

    assert s3.get_object(Bucket=s3_bucket, Key="dir/hello.txt")["Body"].read() == b"hello"
    assert s3_server.endpoint_url.startswith("http://127.0.0.1:")


def test_if_none_match_star_refuses_to_overwrite(s3_server: S3Server, s3_bucket: str) -> None:
    s3 = s3_server.client()
    s3.put_object(Bucket=s3_bucket, Key="once", Body=b"first", IfNoneMatch="*")

    with pytest.raises(ClientError) as caught:
        s3.put_object(Bucket=s3_bucket, Key="once", Body=b"second", IfNoneMatch="*")

    assert _error(caught.value) == (412, "PreconditionFailed")
    assert s3.get_object(Bucket=s3_bucket, Key="once")["Body"].read() == b"first"


def test_if_match_with_a_stale_etag_is_refused(s3_server: S3Server, s3_bucket: str) -> None:
    s3 = s3_server.client()
    stale = s3.put_object(Bucket=s3_bucket, Key="doc", Body=b"v1")["ETag"]
    current = s3.put_object(Bucket=s3_bucket, Key="doc", Body=b"v2", IfMatch=stale)["ETag"]

    with pytest.raises(ClientError) as caught:
        s3.put_object(Bucket=s3_bucket, Key="doc", Body=b"v3", IfMatch=stale)

    assert _error(caught.value) == (412, "PreconditionFailed")
    assert current.startswith('"') and current.endswith('"')  # ETags come back quoted
    assert s3.get_object(Bucket=s3_bucket, Key="doc")["Body"].read() == b"v2"


def test_concurrent_read_modify_write_with_if_match_loses_no_update(
    s3_server: S3Server, s3_bucket: str
) -> None:
    # The optimistic-concurrency loop a manifest writer uses: read, change, write If-Match,
    # start over on 412. Every increment must land.
    threads_n, increments = 8, 10
    s3 = s3_server.client()  # boto3 clients are thread-safe
    s3.put_object(Bucket=s3_bucket, Key="counter.json", Body=b'{"n": 0}')
    conflicts = [0] * threads_n
    errors: list[BaseException] = []
    start = threading.Barrier(threads_n)

    def bump(index: int) -> None:
        try:
            start.wait(timeout=30)
            for _ in range(increments):
                for _attempt in range(500):
                    got = s3.get_object(Bucket=s3_bucket, Key="counter.json")
                    doc = json.loads(got["Body"].read())
                    doc["n"] += 1
                    try:
                        s3.put_object(
                            Bucket=s3_bucket,
                            Key="counter.json",
                            Body=json.dumps(doc).encode(),
                            IfMatch=got["ETag"],
                        )
                        break
                    except ClientError as exc:
                        if _error(exc)[0] != 412:
                            raise
                        conflicts[index] += 1
                else:
                    raise AssertionError("no write got through in 500 attempts")
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=bump, args=(i,)) for i in range(threads_n)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)

    assert not errors, errors
    final = json.loads(s3.get_object(Bucket=s3_bucket, Key="counter.json")["Body"].read())
    assert final["n"] == threads_n * increments, f"lost updates ({sum(conflicts)} conflicts)"


@pytest.mark.parametrize("write_lock", [True, False], ids=["locked", "moto-alone"])
def test_write_lock_makes_if_none_match_atomic(tmp_path: Path, write_lock: bool) -> None:
    # --race-window holds each store 0.5 s after its precondition check, so concurrent
    # creates all pass the check unless the server's lock serializes them. The moto-alone
    # case shows the race is real, so the locked case is proof and not luck.
    writers = 4
    args = ["--race-window", "0.5", *([] if write_lock else ["--no-write-lock"])]
    with running_s3_server(tmp_path, *args) as server:
        s3 = server.client()
        s3.create_bucket(Bucket="race")
        start = threading.Barrier(writers)
        statuses: list[int] = []

        def create(index: int) -> None:
            start.wait(timeout=30)
            try:
                s3.put_object(Bucket="race", Key="once", Body=str(index).encode(), IfNoneMatch="*")
                statuses.append(200)
            except ClientError as exc:
                statuses.append(_error(exc)[0])

        workers = [threading.Thread(target=create, args=(i,)) for i in range(writers)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=60)

    if write_lock:
        assert sorted(statuses) == [200] + [412] * (writers - 1)
    else:
        assert statuses.count(200) > 1, (
            f"moto alone let only one create through ({statuses}): it may serialize "
            "conditional writes itself now, and the server's write lock may be redundant"
        )


def test_put_with_sha256_checksum_is_returned_by_head(s3_server: S3Server, s3_bucket: str) -> None:
    s3 = s3_server.client()
    body = b"runtime archive bytes"
    digest = _b64_sha256(body)

    put = s3.put_object(
        Bucket=s3_bucket,
        Key="a.tar.zst",
        Body=body,
        ChecksumAlgorithm="SHA256",
        ChecksumSHA256=digest,
    )
    head = s3.head_object(Bucket=s3_bucket, Key="a.tar.zst", ChecksumMode="ENABLED")

    assert put["ChecksumSHA256"] == digest
    assert head["ChecksumSHA256"] == digest


def test_hand_made_multipart_upload_with_sha256_and_if_none_match(
    s3_server: S3Server, s3_bucket: str
) -> None:
    s3 = s3_server.client()
    key = "big.tar.zst"
    parts_data = [b"a" * (5 * MIB), b"b" * 1000]  # every part but the last must be >= 5 MiB

    upload_id, parts = _upload_parts(s3, s3_bucket, key, parts_data)
    done = s3.complete_multipart_upload(
        Bucket=s3_bucket,
        Key=key,
        UploadId=upload_id,
        MultipartUpload={"Parts": parts},
        IfNoneMatch="*",
    )

    # S3's composite checksum: the SHA-256 of the parts' binary digests, then "-<part count>".
    composite = _b64_sha256(b"".join(hashlib.sha256(p).digest() for p in parts_data))
    head = s3.head_object(Bucket=s3_bucket, Key=key, ChecksumMode="ENABLED")
    got = s3.get_object(Bucket=s3_bucket, Key=key, ChecksumMode="ENABLED")
    assert done["ETag"].endswith('-2"')
    # moto's HEAD leaves out the "-2" suffix (and x-amz-checksum-type); its GET, like S3, has it.
    assert head["ChecksumSHA256"].split("-")[0] == composite
    assert got["ChecksumSHA256"] == f"{composite}-2"
    assert got["ChecksumType"] == "COMPOSITE"
    assert got["Body"].read() == b"".join(parts_data)

    # A second upload to the same key may not complete over the first.
    second, second_parts = _upload_parts(s3, s3_bucket, key, [b"c" * 10])
    with pytest.raises(ClientError) as caught:
        s3.complete_multipart_upload(
            Bucket=s3_bucket,
            Key=key,
            UploadId=second,
            MultipartUpload={"Parts": second_parts},
            IfNoneMatch="*",
        )
    assert _error(caught.value) == (412, "PreconditionFailed")


def _upload_parts(
    s3: S3Client, bucket: str, key: str, parts: list[bytes]
) -> tuple[str, list[CompletedPartTypeDef]]:
    """Start a SHA-256 multipart upload and send `parts`; return its id and the part list."""
    created = s3.create_multipart_upload(Bucket=bucket, Key=key, ChecksumAlgorithm="SHA256")
    upload_id = created["UploadId"]
    completed: list[CompletedPartTypeDef] = []
    for number, data in enumerate(parts, start=1):
        part = s3.upload_part(
            Bucket=bucket,
            Key=key,
            UploadId=upload_id,
            PartNumber=number,
            Body=data,
            ChecksumAlgorithm="SHA256",
        )
        assert part["ChecksumSHA256"] == _b64_sha256(data)
        # Real S3 wants each part's checksum back when the upload declared an algorithm.
        completed.append(
            {"PartNumber": number, "ETag": part["ETag"], "ChecksumSHA256": part["ChecksumSHA256"]}
        )
    return upload_id, completed


def test_anonymous_http_get_needs_a_public_read_policy(s3_server: S3Server, s3_bucket: str) -> None:
    # uv fetches archives with plain unsigned GETs. moto, like S3, answers those with 403
    # unless a bucket policy (or a public-read ACL) allows them.
    s3_server.client().put_object(Bucket=s3_bucket, Key="dist/x.tar.zst", Body=b"payload")
    url = s3_server.object_url(s3_bucket, "dist/x.tar.zst")
    opener = _no_proxy_opener()
    with pytest.raises(urllib.error.HTTPError) as private:
        opener.open(url, timeout=10)

    s3_server.allow_anonymous_reads(s3_bucket)

    with opener.open(url, timeout=10) as response:
        assert response.read() == b"payload"
    with opener.open(urllib.request.Request(url, method="HEAD"), timeout=10) as response:
        assert response.headers["Content-Length"] == str(len(b"payload"))
    with pytest.raises(urllib.error.HTTPError) as missing:
        opener.open(s3_server.object_url(s3_bucket, "dist/missing"), timeout=10)
    assert private.value.code == 403
    assert missing.value.code == 404  # S3 would say 403 without s3:ListBucket; moto says 404


def test_env_lets_a_child_process_reach_the_server(s3_server: S3Server, s3_bucket: str) -> None:
    s3_server.client().put_object(Bucket=s3_bucket, Key="from-parent", Body=b"x")
    script = (
        "import boto3, sys\n"
        "s3 = boto3.client('s3')\n"
        "keys = [o['Key'] for o in s3.list_objects_v2(Bucket=sys.argv[1])['Contents']]\n"
        "print(','.join(keys))\n"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    result = subprocess.run(
        [sys.executable, "-c", script, s3_bucket],
        env={**clean, **s3_server.env()},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "from-parent"


# --- the fault proxy -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "status", "code"),
    [
        ("503", 503, "ServiceUnavailable"),
        ("slowdown", 503, "SlowDown"),
        ("500", 500, "InternalError"),
    ],
)
def test_injected_error_is_seen_once_then_requests_succeed(
    s3_server: S3Server,
    s3_bucket: str,
    fault_proxy: FaultProxy,
    kind: FaultKind,
    status: int,
    code: str,
) -> None:
    s3 = s3_server.client(endpoint_url=fault_proxy.url, config=NO_RETRIES)
    fault_proxy.fail_next(1, kind)

    with pytest.raises(ClientError) as caught:
        s3.put_object(Bucket=s3_bucket, Key="k", Body=b"data")
    s3.put_object(Bucket=s3_bucket, Key="k", Body=b"data")

    assert _error(caught.value) == (status, code)
    assert fault_proxy.injected == 1
    assert fault_proxy.requests == [
        ("PUT", f"/{s3_bucket}/k", status),
        ("PUT", f"/{s3_bucket}/k", 200),
    ]


def test_injected_reset_is_seen_once_then_requests_succeed(
    s3_server: S3Server, s3_bucket: str, fault_proxy: FaultProxy
) -> None:
    s3_server.client().put_object(Bucket=s3_bucket, Key="k", Body=b"data")
    s3 = s3_server.client(endpoint_url=fault_proxy.url, config=NO_RETRIES)
    fault_proxy.fail_next(1, "reset")

    with pytest.raises(ConnectionClosedError):
        s3.get_object(Bucket=s3_bucket, Key="k")
    assert s3.get_object(Bucket=s3_bucket, Key="k")["Body"].read() == b"data"

    assert fault_proxy.injected == 1
    assert [status for _, _, status in fault_proxy.requests] == [RESET_STATUS, 200]


def test_reset_is_a_tcp_rst_not_a_clean_close(fault_proxy: FaultProxy, s3_bucket: str) -> None:
    fault_proxy.fail_next(1, "reset")
    port = int(fault_proxy.url.rsplit(":", 1)[1])

    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET /{s3_bucket}/k HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        # A FIN would read as b""; only an RST raises.
        with pytest.raises(ConnectionResetError):
            sock.recv(1)


def test_botocore_retries_through_transient_faults(
    s3_server: S3Server, s3_bucket: str, fault_proxy: FaultProxy
) -> None:
    s3 = s3_server.client(
        endpoint_url=fault_proxy.url,
        config=Config(retries={"mode": "standard", "total_max_attempts": 3}),
    )
    fault_proxy.fail_next(1, "reset")
    fault_proxy.fail_next(1, "slowdown")

    s3.put_object(Bucket=s3_bucket, Key="k", Body=b"data")

    assert [status for _, _, status in fault_proxy.requests] == [RESET_STATUS, 503, 200]


def test_fail_always_can_target_one_key_and_method(
    s3_server: S3Server, s3_bucket: str, fault_proxy: FaultProxy
) -> None:
    # Retries on (pinned, so AWS_MAX_ATTEMPTS in the environment cannot change the count):
    # the fault outlasts them.
    s3 = s3_server.client(
        endpoint_url=fault_proxy.url,
        config=Config(retries={"mode": "standard", "total_max_attempts": 3}),
    )
    fault_proxy.fail_always("503", method="PUT", path_contains="manifest.json")

    s3.put_object(Bucket=s3_bucket, Key="runtimes/a.tar.zst", Body=b"archive")
    with pytest.raises(ClientError) as caught:
        s3.put_object(Bucket=s3_bucket, Key="runtimes/manifest.json", Body=b"{}")
    s3.get_object(Bucket=s3_bucket, Key="runtimes/a.tar.zst")  # GETs are untouched

    assert _error(caught.value) == (503, "ServiceUnavailable")
    assert fault_proxy.statuses(method="PUT", path_contains="manifest.json") == [503] * 3
    assert fault_proxy.injected == 3

    fault_proxy.clear()
    s3.put_object(Bucket=s3_bucket, Key="runtimes/manifest.json", Body=b"{}")
    assert fault_proxy.statuses(path_contains="manifest.json")[-1] == 200


def test_multipart_sized_upload_through_the_proxy(
    s3_server: S3Server, s3_bucket: str, fault_proxy: FaultProxy
) -> None:
    data = os.urandom(12 * MIB)
    s3 = s3_server.client(endpoint_url=fault_proxy.url)
    config = TransferConfig(multipart_threshold=8 * MIB, multipart_chunksize=8 * MIB)
    fault_proxy.fail_next(1, "slowdown", method="PUT", path_contains="partNumber=2")

    s3.upload_fileobj(io.BytesIO(data), s3_bucket, "big.bin", Config=config)

    got = s3_server.client().get_object(Bucket=s3_bucket, Key="big.bin")["Body"].read()
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    log = fault_proxy.requests
    assert [m for m, target, _ in log if target.endswith("?uploads")] == ["POST"]
    assert fault_proxy.statuses(method="PUT", path_contains="partNumber=1") == [200]
    assert fault_proxy.statuses(method="PUT", path_contains="partNumber=2") == [503, 200]
    assert [m for m, target, _ in log if m == "POST" and "uploadId=" in target] == ["POST"]


def test_injected_error_on_an_upload_part_parses(
    s3_server: S3Server, s3_bucket: str, fault_proxy: FaultProxy
) -> None:
    # The part's URL has "&" in its query; the error document must still be valid XML.
    s3 = s3_server.client(endpoint_url=fault_proxy.url, config=NO_RETRIES)
    upload_id = s3.create_multipart_upload(Bucket=s3_bucket, Key="k")["UploadId"]
    fault_proxy.fail_next(1, "slowdown", path_contains="partNumber=1")

    with pytest.raises(ClientError) as caught:
        s3.upload_part(Bucket=s3_bucket, Key="k", UploadId=upload_id, PartNumber=1, Body=b"x")

    assert _error(caught.value) == (503, "SlowDown")


def test_chunked_request_body_is_forwarded_intact(
    s3_server: S3Server, s3_bucket: str, fault_proxy: FaultProxy
) -> None:
    # botocore sends Content-Length over plain HTTP, but other clients stream chunked bodies.
    # (Unsigned: moto lets anyone create a new key, which S3 would not.)
    chunks = [b"abc", b"defg", os.urandom(100_000)]
    conn = http.client.HTTPConnection(
        "127.0.0.1", int(fault_proxy.url.rsplit(":", 1)[1]), timeout=30
    )
    try:
        conn.request("PUT", f"/{s3_bucket}/chunked", body=iter(chunks), encode_chunked=True)
        response = conn.getresponse()
        response.read()
    finally:
        conn.close()

    assert response.status == 200
    got = s3_server.client().get_object(Bucket=s3_bucket, Key="chunked")["Body"].read()
    assert got == b"".join(chunks)


def test_proxy_refuses_non_loopback_upstreams() -> None:
    with pytest.raises(ValueError, match="only forwards"):
        FaultProxy(f"http://192.0.2.1:9/{uuid.uuid4().hex}")
