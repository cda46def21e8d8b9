"""S3 implementation of ObjectStore (boto3), with the guarantees publishing needs.

- Create-only and compare-and-swap writes: PutObject / CompleteMultipartUpload with
  If-None-Match: * or If-Match: ETAG, so two publishers can race without losing anything.
- Integrity: every PUT carries a SHA-256 checksum that S3 verifies on receipt (per part for
  multipart uploads); the hex sha256 is also stored as object metadata for read-back.
- Large files go multipart with boto3's TransferConfig sizes. s3transfer cannot send
  If-None-Match, so the parts are driven here: bounded memory (one chunk per worker), and
  the upload is aborted on any failure so no partial object ever appears.
- Retries with tenacity (exponential backoff with jitter) on throttling, 5xx, timeouts and
  connection resets; botocore's own retries are off so that this is the one policy. Other
  4xx (AccessDenied, NoSuchBucket...) fail at once with one line naming bucket and key.
- The records: every object carries its sha256 as metadata. An object without it (synced or
  restored into the bucket by other tools), or whose metadata names other bytes than S3's own
  SHA-256 checksum of it, is refused (StoreRecordsError) until `check-manifest --repair`
  rebuilds the record from the object's bytes, by re-uploading them with If-Match.
- A deadline per operation (publish.deadline_seconds): no retry starts, and no backoff sleeps,
  past it, and the connect/read timeouts of one attempt are at most the deadline; so an
  endpoint that accepts connections and never answers fails in one line instead of retrying
  for minutes.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import functools
import hashlib
import re
import tempfile
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import boto3
import botocore.config
import botocore.exceptions
from boto3.s3.transfer import TransferConfig
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
    wait_exponential_jitter,
)

from orchestrator.errors import PublishError
from orchestrator.matrix.schema import DEFAULT_S3_DEADLINE_SECONDS
from orchestrator.publish.store import (
    MAX_DOCUMENT_BYTES,
    RECORDS_HINT,
    Judge,
    ObjectExists,
    PreconditionFailed,
    StoredObject,
    StoreRecordsError,
    sha256_hex,
    too_large,
)

T = TypeVar("T")

LEASE_NAME = ".farm-run-lease.json"
# What repair downloads to re-record one object (a runtime archive is tens of MB).
MAX_REPAIR_BYTES = 5 * 1024**3
_SHA256 = re.compile(r"[0-9a-f]{64}")

# botocore's per-attempt timeouts; never longer than the operation's deadline.
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 60.0

RETRYABLE_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalError",
        "ServiceUnavailable",
        "ConditionalRequestConflict",  # 409: a concurrent conditional write; try again
    }
)


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def attempt_timeouts(deadline: float) -> tuple[float, float]:
    """(connect, read) timeouts for one attempt of an operation with `deadline` seconds."""
    return min(CONNECT_TIMEOUT, deadline), min(READ_TIMEOUT, deadline)


def is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, botocore.exceptions.ClientError):
        error = exc.response.get("Error", {})
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        return error.get("Code") in RETRYABLE_CODES or status >= 500
    # Connection refused/reset, read/connect timeouts, truncated responses.
    return isinstance(
        exc,
        botocore.exceptions.ConnectionError
        | botocore.exceptions.HTTPClientError
        | botocore.exceptions.ResponseStreamingError,
    )


class S3Store:
    def __init__(
        self,
        *,
        bucket: str,
        region: str | None = None,
        endpoint_url: str | None = None,
        public_base_url: str | None = None,
        transfer: TransferConfig | None = None,
        attempts: int = 6,
        max_wait: float = 10.0,
        deadline: float = DEFAULT_S3_DEADLINE_SECONDS,
        on_retry: Callable[[str], None] | None = None,
    ) -> None:
        self.bucket = bucket
        self.region = region
        self.endpoint_url = endpoint_url
        self.public_base_url = public_base_url
        self.transfer = transfer or TransferConfig()
        self.attempts = attempts
        self.max_wait = max_wait
        self.deadline = deadline
        self.on_retry = on_retry
        connect_timeout, read_timeout = attempt_timeouts(deadline)
        config = botocore.config.Config(
            retries={"total_max_attempts": 1},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            s3={"addressing_style": "path"} if endpoint_url else None,
            max_pool_connections=max(10, self.transfer.max_request_concurrency + 2),
        )
        self.client: Any = boto3.session.Session().client(
            "s3", region_name=region, endpoint_url=endpoint_url, config=config
        )

    # --- locations -------------------------------------------------------------------------

    def describe(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{key}"

    def public_url(self, key: str) -> str:
        quoted = quote(key)
        if self.public_base_url:
            return f"{self.public_base_url.rstrip('/')}/{quoted}"
        if self.endpoint_url:
            return f"{self.endpoint_url.rstrip('/')}/{self.bucket}/{quoted}"
        region = self.region or "us-east-1"
        return f"https://{self.bucket}.s3.{region}.amazonaws.com/{quoted}"

    # --- calls with one retry policy -------------------------------------------------------

    def _call(self, operation: str, key: str, fn: Callable[[], T]) -> T:
        def before_sleep(state: RetryCallState) -> None:
            if self.on_retry and state.outcome is not None:
                exc = state.outcome.exception()
                self.on_retry(
                    f"{operation} {self.describe(key)}: {_reason(exc)}; "
                    f"retry {state.attempt_number}/{self.attempts - 1}"
                )

        retrying = Retrying(
            retry=retry_if_exception(is_retryable),
            # stop_before_delay counts the coming backoff sleep: nothing starts past the deadline.
            stop=stop_after_attempt(self.attempts) | stop_before_delay(self.deadline),
            wait=wait_exponential_jitter(multiplier=0.2, max=self.max_wait),
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            return retrying(fn)
        except botocore.exceptions.ClientError as exc:
            raise self._translate(exc, operation, key, self._gave_up(retrying)) from None
        except (botocore.exceptions.BotoCoreError, OSError) as exc:
            raise PublishError(
                f"{operation} {self.describe(key)} failed: {_reason(exc)}",
                hint=f"{self._gave_up(retrying)}; check the endpoint URL and network",
            ) from None

    def _gave_up(self, retrying: Retrying) -> str:
        attempts = int(retrying.statistics.get("attempt_number", 1))
        return (
            f"gave up after {attempts} attempt{'' if attempts == 1 else 's'} within the "
            f"{self.deadline:g}s deadline per operation (publish.deadline_seconds)"
        )

    def _translate(
        self, exc: botocore.exceptions.ClientError, operation: str, key: str, gave_up: str
    ) -> PublishError:
        code = exc.response.get("Error", {}).get("Code", "")
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        where = self.describe(key)
        if code == "PreconditionFailed" or status == 412:
            return PreconditionFailed(f"{operation} {where}: precondition failed")
        hints = {
            "AccessDenied": "check the credentials (boto3's standard chain) and bucket policy",
            "InvalidAccessKeyId": "check the credentials (boto3's standard chain)",
            "SignatureDoesNotMatch": "check the secret key and the region",
            "NoSuchBucket": "create the bucket or fix --bucket / publish.bucket",
        }
        message = exc.response.get("Error", {}).get("Message", "")
        detail = f"{code or status} ({message})" if message else f"{code or status}"
        if is_retryable(exc):
            return PublishError(
                f"{operation} {where} failed: {detail}",
                hint=f"{gave_up}; try again later",
            )
        return PublishError(
            f"{operation} {where} refused: {detail}",
            hint=hints.get(code, "not retried: a client error does not go away by itself"),
        )

    # --- ObjectStore -----------------------------------------------------------------------

    def _head_raw(self, key: str) -> StoredObject | None:
        """HEAD as S3 answers it, records unchecked (metadata carries S3's checksum too)."""

        def call() -> dict[str, Any] | None:
            try:
                result: dict[str, Any] = self.client.head_object(
                    Bucket=self.bucket, Key=key, ChecksumMode="ENABLED"
                )
                return result
            except botocore.exceptions.ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                    return None
                raise

        found = self._call("HeadObject", key, call)
        if found is None:
            return None
        metadata = found.get("Metadata", {})
        return StoredObject(
            key=key,
            size=int(found["ContentLength"]),
            etag=found["ETag"],
            sha256=metadata.get("sha256"),
            metadata={
                **metadata,
                "checksum-sha256": found.get("ChecksumSHA256", ""),
                "checksum-type": found.get("ChecksumType", ""),
            },
        )

    def _record_problem(self, found: StoredObject) -> str | None:
        """Why `found`'s record (its sha256 metadata) does not describe it, or None."""
        if not found.sha256:
            return (
                "has no sha256 record (object metadata 'sha256'): it was written or copied "
                "into the bucket by something other than the farm"
            )
        if not _SHA256.fullmatch(found.sha256):
            return f"has a damaged sha256 record {found.sha256[:70]!r}"
        checksum = found.metadata.get("checksum-sha256", "")
        # A multipart object's SHA-256 checksum is composite (of its parts' checksums), not
        # the object's sha256; servers differ on marking it ("-N", ChecksumType), but its
        # ETag always ends in -N. A single-part object's checksum is its sha256.
        composite = (
            "-" in found.etag.strip('"')
            or "-" in checksum
            or found.metadata.get("checksum-type") == "COMPOSITE"
        )
        if checksum and not composite:
            try:
                actual = base64.b64decode(checksum, validate=True).hex()
            except ValueError:
                actual = ""
            if actual and actual != found.sha256:
                return (
                    f"has a sha256 record ({found.sha256}) that describes other bytes: S3's own "
                    f"SHA-256 of the object is {actual}"
                )
        return None

    def head(self, key: str) -> StoredObject | None:
        found = self._head_raw(key)
        if found is not None and (problem := self._record_problem(found)):
            raise StoreRecordsError(f"{self.describe(key)} {problem}", hint=RECORDS_HINT)
        return found

    def _get_raw(self, key: str, *, max_bytes: int) -> tuple[bytes, str, dict[str, str]] | None:
        """(body, etag, metadata), reading at most `max_bytes` (DocumentTooLarge past it)."""

        def call() -> tuple[bytes, str, dict[str, str]] | None:
            try:
                response = self.client.get_object(Bucket=self.bucket, Key=key)
            except botocore.exceptions.ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in {"NoSuchKey", "404"}:
                    return None
                raise
            stream = response["Body"]
            try:
                length = int(response.get("ContentLength") or 0)
                if length > max_bytes:
                    raise too_large(self.describe(key), length, max_bytes)
                body: bytes = stream.read(max_bytes + 1)
                if len(body) > max_bytes:
                    raise too_large(self.describe(key), len(body), max_bytes)
            finally:
                stream.close()
            return body, str(response["ETag"]), dict(response.get("Metadata") or {})

        return self._call("GetObject", key, call)

    def get(self, key: str, *, max_bytes: int = MAX_DOCUMENT_BYTES) -> tuple[bytes, str] | None:
        found = self._get_raw(key, max_bytes=max_bytes)
        if found is None:
            return None
        body, etag, metadata = found
        recorded = metadata.get("sha256")
        seen = StoredObject(key=key, size=len(body), etag=etag, sha256=recorded)
        problem = self._record_problem(seen)
        if problem is None and recorded != sha256_hex(body):
            problem = (
                f"has a sha256 record ({recorded}) that describes other bytes: its body's is "
                f"{sha256_hex(body)}"
            )
        if problem:
            raise StoreRecordsError(f"{self.describe(key)} {problem}", hint=RECORDS_HINT)
        return body, etag

    def put(
        self,
        key: str,
        source: Path | bytes,
        *,
        sha256: str,
        content_type: str,
        if_match: str | None = None,
        create_only: bool = False,
        metadata: Mapping[str, str] | None = None,
        cache_control: str | None = None,
    ) -> StoredObject:
        conditions: dict[str, str] = {}
        if create_only:
            conditions["IfNoneMatch"] = "*"
        if if_match is not None:
            conditions["IfMatch"] = if_match
        meta = {**(metadata or {}), "sha256": sha256}
        headers = {"CacheControl": cache_control} if cache_control else {}
        size = len(source) if isinstance(source, bytes) else source.stat().st_size
        try:
            if isinstance(source, Path) and size >= self.transfer.multipart_threshold:
                etag = self._multipart(key, source, content_type, meta, conditions, headers)
            else:
                etag = self._single(key, source, sha256, content_type, meta, conditions, headers)
        except PreconditionFailed:
            if create_only:
                raise ObjectExists(f"{self.describe(key)} already exists") from None
            raise
        return StoredObject(key=key, size=size, etag=etag, sha256=sha256, metadata=meta)

    def expected_checksum(self, source: Path | bytes) -> str:
        """The ChecksumSHA256 S3 reports for `source` as we upload it: the object's sha256
        for a single PUT, sha256-of-part-sha256s with a -N suffix for multipart."""
        if isinstance(source, bytes) or source.stat().st_size < self.transfer.multipart_threshold:
            data = source if isinstance(source, bytes) else source.read_bytes()
            return _b64(hashlib.sha256(data).digest())
        chunk = self.transfer.multipart_chunksize
        digests = []
        with source.open("rb") as handle:
            while data := handle.read(chunk):
                digests.append(hashlib.sha256(data).digest())
        return f"{_b64(hashlib.sha256(b''.join(digests)).digest())}-{len(digests)}"

    def verify(self, key: str, source: Path | bytes, *, sha256: str) -> StoredObject:
        found = self.head(key)
        size = len(source) if isinstance(source, bytes) else source.stat().st_size
        if found is None:
            raise PublishError(f"read-back: {self.describe(key)} is missing after upload")
        problems = []
        if found.size != size:
            problems.append(f"size {found.size} != {size}")
        if found.sha256 != sha256:
            problems.append(f"recorded sha256 {found.sha256} != {sha256}")
        reported = found.metadata.get("checksum-sha256", "")
        expected = self.expected_checksum(source)
        # S3 computed this itself on receipt; an empty value means the server keeps none.
        # Compare the digest only: servers differ on echoing the composite's -N suffix.
        if reported and reported.split("-")[0] != expected.split("-")[0]:
            problems.append(f"S3 checksum {reported} != {expected}")
        if problems:
            raise PublishError(f"read-back: {self.describe(key)}: {'; '.join(problems)}")
        return found

    def _single(
        self,
        key: str,
        source: Path | bytes,
        sha256: str,
        content_type: str,
        metadata: dict[str, str],
        conditions: dict[str, str],
        headers: dict[str, str],
    ) -> str:
        checksum = _b64(bytes.fromhex(sha256))

        def call() -> str:
            body = source if isinstance(source, bytes) else source.read_bytes()
            response = self.client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=body,
                ContentType=content_type,
                ChecksumAlgorithm="SHA256",
                ChecksumSHA256=checksum,
                Metadata=metadata,
                **headers,
                **conditions,
            )
            return str(response["ETag"])

        return self._call("PutObject", key, call)

    def _multipart(
        self,
        key: str,
        path: Path,
        content_type: str,
        metadata: dict[str, str],
        conditions: dict[str, str],
        headers: dict[str, str],
    ) -> str:
        created = self._call(
            "CreateMultipartUpload",
            key,
            lambda: self.client.create_multipart_upload(
                Bucket=self.bucket,
                Key=key,
                ContentType=content_type,
                ChecksumAlgorithm="SHA256",
                Metadata=metadata,
                **headers,
            ),
        )
        upload_id = created["UploadId"]
        chunk = self.transfer.multipart_chunksize
        size = path.stat().st_size
        numbers = list(range(1, (size + chunk - 1) // chunk + 1))

        def upload_part(number: int) -> dict[str, Any]:
            with path.open("rb") as handle:
                handle.seek((number - 1) * chunk)
                data = handle.read(chunk)
            digest = _b64(hashlib.sha256(data).digest())
            response = self._call(
                f"UploadPart {number}",
                key,
                lambda: self.client.upload_part(
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=data,
                    ChecksumAlgorithm="SHA256",
                    ChecksumSHA256=digest,
                ),
            )
            return {"PartNumber": number, "ETag": response["ETag"], "ChecksumSHA256": digest}

        try:
            with ThreadPoolExecutor(max_workers=self.transfer.max_request_concurrency) as pool:
                parts = list(pool.map(upload_part, numbers))
            completed = self._call(
                "CompleteMultipartUpload",
                key,
                lambda: self.client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                    **conditions,
                ),
            )
        except BaseException:
            # Nothing half-published: drop the parts (best effort, the error that got us
            # here is the one to report).
            with contextlib.suppress(
                botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError
            ):
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            raise
        return str(completed["ETag"])

    def delete(self, key: str, *, if_match: str) -> None:
        # S3 has conditional deletes only in some regions/servers: check, then delete.
        current = self.head(key)
        if current is None:
            return
        if current.etag != if_match:
            raise PreconditionFailed(f"{self.describe(key)} changed since it was written")
        self._call(
            "DeleteObject",
            key,
            functools.partial(self.client.delete_object, Bucket=self.bucket, Key=key),
        )

    def sweep_stale(self, prefix: str, *, older_than: float) -> list[str]:
        """Abort multipart uploads of farm archives (`python-*` keys under `prefix`) that were
        started more than `older_than` seconds ago and never completed: a publisher killed
        mid-upload leaves their parts billed and invisible. The bucket's lifecycle rule
        (README, Publishing) is the backstop for everything else."""
        cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=older_than)
        stale: list[tuple[str, str]] = []
        pages = self._call(
            "ListMultipartUploads",
            prefix,
            lambda: list(
                self.client.get_paginator("list_multipart_uploads").paginate(
                    Bucket=self.bucket, Prefix=prefix
                )
            ),
        )
        for page in pages:
            for upload in page.get("Uploads", []):
                key, initiated = upload["Key"], upload["Initiated"]
                if key.rsplit("/", 1)[-1].startswith("python-") and initiated < cutoff:
                    stale.append((key, upload["UploadId"]))
        for key, upload_id in stale:
            abort = functools.partial(
                self.client.abort_multipart_upload, Bucket=self.bucket, Key=key, UploadId=upload_id
            )
            self._call("AbortMultipartUpload", key, abort)
        return [key for key, _ in stale]

    # --- a whole run's hold on the store (nightly) -------------------------------------

    def run_lock(
        self, holder: str, *, prefix: str, on_lost: Callable[[str], None]
    ) -> AbstractContextManager[None]:
        from orchestrator.publish.lease import hold_lease

        return hold_lease(self, f"{prefix}{LEASE_NAME}", holder=holder, on_lost=on_lost)

    # --- repair --------------------------------------------------------------------------

    def maintenance(self) -> AbstractContextManager[None]:
        # No lock to take: every record rebuilt is written with If-Match on what was read.
        return contextlib.nullcontext()

    def list_keys(self, prefix: str) -> list[str]:
        pages = self._call(
            "ListObjectsV2",
            prefix,
            lambda: list(
                self.client.get_paginator("list_objects_v2").paginate(
                    Bucket=self.bucket, Prefix=prefix
                )
            ),
        )
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def record_problem(self, key: str) -> str | None:
        found = self._head_raw(key)
        return None if found is None else self._record_problem(found)

    def read_unrecorded(self, key: str, *, max_bytes: int) -> bytes | None:
        found = self._get_raw(key, max_bytes=max_bytes)
        return None if found is None else found[0]

    def rebuild_record(
        self, key: str, *, content_type: str, cache_control: str | None, judge: Judge
    ) -> str | None:
        """Download the object (to a temp file, hashing), and if `judge` accepts its bytes,
        upload them again with their record, If-Match on the ETag read: an object changed
        meanwhile is left alone. S3 checks the upload's SHA-256 on receipt."""
        with tempfile.TemporaryDirectory(prefix="farm-repair-") as scratch:
            path = Path(scratch) / "object"
            fetched = self._download(key, path)
            if fetched is None:
                return f"{key} vanished while being repaired"
            etag, sha256 = fetched
            if (refused := judge(path.stat().st_size, sha256)) is not None:
                return refused
            try:
                self.put(
                    key, path, sha256=sha256, content_type=content_type, if_match=etag,
                    cache_control=cache_control,
                )  # fmt: skip
            except PreconditionFailed:
                return f"{key} changed while being repaired; run the repair again"
        return None

    def _download(self, key: str, path: Path) -> tuple[str, str] | None:
        """(etag, sha256) of the object, its bytes written to `path`; None when absent."""

        def call() -> tuple[str, str] | None:
            try:
                response = self.client.get_object(Bucket=self.bucket, Key=key)
            except botocore.exceptions.ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in {"NoSuchKey", "404"}:
                    return None
                raise
            stream = response["Body"]
            digest = hashlib.sha256()
            total = 0
            try:
                with path.open("wb") as out:
                    for chunk in iter(lambda: stream.read(1 << 20), b""):
                        total += len(chunk)
                        if total > MAX_REPAIR_BYTES:
                            raise PublishError(
                                f"{self.describe(key)} is over {MAX_REPAIR_BYTES} bytes; "
                                "not a runtime the farm published, so not repaired",
                                hint="remove it from the bucket",
                            )
                        digest.update(chunk)
                        out.write(chunk)
            finally:
                stream.close()
            return str(response["ETag"]), digest.hexdigest()

        return self._call("GetObject", key, call)

    def drop_orphan_records(self, prefix: str) -> list[str]:
        return []  # an S3 record lives on its object, and goes with it


def _reason(exc: BaseException | None) -> str:
    if isinstance(exc, botocore.exceptions.ClientError):
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "")
        return f"{error.get('Code') or status} {error.get('Message', '')}".strip()
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


__all__ = ["S3Store", "is_retryable", "sha256_hex"]
