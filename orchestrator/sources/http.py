"""HTTP(S)/file:// reads shared by the source fetcher and the release feeds.

Network trouble becomes TransferFailed with a short reason and whether a retry could help;
trouble with the local disk stays a SourceError, because no other server would do better.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from orchestrator.errors import FileRefused, SourceError
from orchestrator.fsutil import open_regular

CHUNK_SIZE = 1024 * 1024
USER_AGENT = "python-runtime-farm/0.1 (source fetcher)"


class TransferFailed(Exception):
    """A server did not deliver; `reason` is a short phrase for the final error message."""

    def __init__(self, reason: str, *, retryable: bool, truncated: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.truncated = truncated  # the server answered, but the body ended early


class TooLarge(TransferFailed):
    """The body is longer than the caller's limit; reading stopped there (never retried)."""

    def __init__(self, *, limit: int, received: int, announced: int | None = None) -> None:
        if announced is not None:
            reason = f"announces {announced} bytes, more than {limit}; not read"
        else:
            reason = f"sent more than {limit} bytes; stopped after {received}"
        super().__init__(reason, retryable=False)
        self.limit = limit
        self.received = received
        self.announced = announced


class DeadlineExceeded(TransferFailed):
    """The whole transfer took longer than its deadline (never retried: the next server is a
    better bet than the same slow one)."""

    def __init__(self, *, deadline: float, received: int) -> None:
        super().__init__(
            f"still sending after the {deadline:g}s deadline; stopped after {received} bytes",
            retryable=False,
        )
        self.deadline = deadline
        self.received = received


def classify(exc: BaseException, timeout: float) -> TransferFailed:
    """Turn a urllib/socket error into a short reason and whether a retry could help."""
    if isinstance(exc, urllib.error.HTTPError):
        # 5xx, 408 and 429 are the server's way of saying "try again"; 404 and friends are not.
        retryable = exc.code >= 500 or exc.code in (408, 429)
        text = f"HTTP {exc.code} {exc.reason}" if exc.reason else f"HTTP {exc.code}"
        return TransferFailed(text.strip(), retryable=retryable)
    if isinstance(exc, urllib.error.URLError):
        # urllib wraps the socket error; classify what is inside.
        if isinstance(exc.reason, BaseException):
            return classify(exc.reason, timeout)
        return TransferFailed(str(exc.reason), retryable=False)
    if isinstance(exc, socket.gaierror):
        return TransferFailed("host not found", retryable=False)
    if isinstance(exc, ConnectionRefusedError):
        return TransferFailed("connection refused", retryable=False)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return TransferFailed(f"TLS certificate rejected: {exc.verify_message}", retryable=False)
    if isinstance(exc, TimeoutError):
        return TransferFailed(f"timed out after {timeout:g}s", retryable=True)
    if isinstance(exc, ConnectionError | http.client.HTTPException):
        return TransferFailed(f"connection dropped ({type(exc).__name__})", retryable=True)
    if isinstance(exc, FileNotFoundError):
        return TransferFailed("no such file", retryable=False)
    if isinstance(exc, OSError):
        return TransferFailed(exc.strerror or str(exc) or type(exc).__name__, retryable=False)
    return TransferFailed(str(exc) or type(exc).__name__, retryable=False)


class LocalFile:
    """A file:// URL's body, opened through fsutil.open_regular like every file the farm did
    not write: a regular file (not /dev/zero, a fifo or a directory), checked before a
    non-blocking open and again on what was opened. What _copy_body needs of a response."""

    def __init__(self, path: Path) -> None:
        try:
            self._handle = open_regular(path, limit=None)  # the caller's limit bounds the read
        except FileRefused as exc:
            raise TransferFailed(
                "no such file" if exc.missing else str(exc), retryable=False
            ) from None
        self.headers = {"Content-Length": str(os.fstat(self._handle.fileno()).st_size)}

    def read1(self, size: int = -1) -> bytes:
        return self._handle.read(size)

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> LocalFile:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _local_path(url: str) -> Path:
    parts = urllib.parse.urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise TransferFailed(f"file URL names another host ({parts.netloc})", retryable=False)
    return Path(urllib.request.url2pathname(parts.path))


Response = http.client.HTTPResponse | LocalFile


def _open(url: str, timeout: float, accept: str | None = None) -> Response:
    try:
        if urllib.parse.urlsplit(url).scheme.lower() == "file":
            return LocalFile(_local_path(url))
        headers = {"User-Agent": USER_AGENT}
        if accept:
            headers["Accept"] = accept
        request = urllib.request.Request(url, headers=headers)
        response: http.client.HTTPResponse = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        raise classify(exc, timeout) from None
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise classify(exc, timeout) from None
    return response


def _announced(response: Response) -> int | None:
    value = response.headers.get("Content-Length")
    return int(value) if value is not None and value.isdigit() else None


def _copy_body(
    response: Response,
    sink: Callable[[bytes], None],
    *,
    timeout: float,
    limit: int,
    deadline: float,
    started: float,
) -> int:
    """Feed the body to `sink`; stop with TooLarge past `limit` bytes, DeadlineExceeded when
    `deadline` seconds have passed since `started`. Returns the size.

    read1 returns what one recv brought: read() would loop until its whole chunk arrived, so a
    server dripping a byte per (timeout - 1) seconds would never be noticed. The deadline is
    checked between reads, so it can be overrun by at most one read timeout."""
    announced = _announced(response)
    if announced is not None and announced > limit:
        raise TooLarge(limit=limit, received=0, announced=announced)
    size = 0
    while True:
        if time.monotonic() - started > deadline:
            raise DeadlineExceeded(deadline=deadline, received=size)
        try:
            # One byte past the limit is enough to know it was exceeded.
            chunk = response.read1(min(CHUNK_SIZE, limit - size + 1))
        except (OSError, http.client.HTTPException) as exc:
            raise classify(exc, timeout) from None
        if not chunk:
            break
        size += len(chunk)
        if size > limit:
            raise TooLarge(limit=limit, received=size)
        sink(chunk)
    # http.client ends a short body silently; call it a dropped connection, not bad content.
    if announced is not None and size < announced:
        raise TransferFailed(
            f"connection dropped after {size} of {announced} bytes",
            retryable=True,
            truncated=True,
        )
    return size


def stream_url(
    url: str, out: BinaryIO, *, timeout: float, dest: Path, limit: int, deadline: float
) -> tuple[str, int]:
    """Copy `url` into `out` (a file for `dest`), returning (sha256, size). At most `limit`
    bytes are written (TooLarge beyond), within `deadline` seconds (DeadlineExceeded)."""
    started = time.monotonic()
    per_read = min(timeout, deadline)
    digest = hashlib.sha256()

    def sink(chunk: bytes) -> None:
        digest.update(chunk)
        try:
            out.write(chunk)
        except OSError as exc:
            raise SourceError(f"cannot write {dest}: {exc.strerror or exc}") from None

    response = _open(url, per_read, None)
    with response:
        size = _copy_body(
            response, sink, timeout=per_read, limit=limit, deadline=deadline, started=started
        )
    return digest.hexdigest(), size


def read_url(
    url: str, *, timeout: float, limit: int, accept: str | None = None, deadline: float = 600.0
) -> bytes:
    """The whole body of a small document (an API page, a signature), at most `limit` bytes."""
    started = time.monotonic()
    per_read = min(timeout, deadline)
    parts: list[bytes] = []
    response = _open(url, per_read, accept)
    with response:
        try:
            _copy_body(
                response, parts.append, timeout=per_read, limit=limit, deadline=deadline,
                started=started,
            )  # fmt: skip
        except TooLarge:
            raise TransferFailed(
                f"larger than {limit} bytes; refusing to read it", retryable=False
            ) from None
    return b"".join(parts)
