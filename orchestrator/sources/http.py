"""HTTP(S)/file:// reads shared by the source fetcher and the release feeds.

Network trouble becomes TransferFailed with a short reason and whether a retry could help;
trouble with the local disk stays a SourceError, because no other server would do better.
"""

from __future__ import annotations

import hashlib
import http.client
import socket
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import BinaryIO

from orchestrator.errors import SourceError

CHUNK_SIZE = 1024 * 1024
USER_AGENT = "python-runtime-farm/0.1 (source fetcher)"


class TransferFailed(Exception):
    """A server did not deliver; `reason` is a short phrase for the final error message."""

    def __init__(self, reason: str, *, retryable: bool, truncated: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.truncated = truncated  # the server answered, but the body ended early


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


def _open(url: str, timeout: float, accept: str | None = None) -> http.client.HTTPResponse:
    headers = {"User-Agent": USER_AGENT}
    if accept:
        headers["Accept"] = accept
    request = urllib.request.Request(url, headers=headers)
    try:
        response: http.client.HTTPResponse = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        raise classify(exc, timeout) from None
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise classify(exc, timeout) from None
    return response


def stream_url(url: str, out: BinaryIO, *, timeout: float, dest: Path) -> tuple[str, int]:
    """Copy `url` into `out` (a file for `dest`), returning (sha256, size)."""
    response = _open(url, timeout)
    digest = hashlib.sha256()
    size = 0
    with response:
        announced = response.headers.get("Content-Length")
        while True:
            try:
                chunk = response.read(CHUNK_SIZE)
            except (OSError, http.client.HTTPException) as exc:
                raise classify(exc, timeout) from None
            if not chunk:
                break
            digest.update(chunk)
            size += len(chunk)
            try:
                out.write(chunk)
            except OSError as exc:
                raise SourceError(f"cannot write {dest}: {exc.strerror or exc}") from None
    # http.client ends a short body silently; call it a dropped connection, not bad content.
    if announced is not None and announced.isdigit() and size < int(announced):
        raise TransferFailed(
            f"connection dropped after {size} of {announced} bytes", retryable=True
        )
    return digest.hexdigest(), size


def read_url(url: str, *, timeout: float, limit: int, accept: str | None = None) -> bytes:
    """The whole body of a small document (an API page, a signature), at most `limit` bytes."""
    response = _open(url, timeout, accept)
    with response:
        announced = response.headers.get("Content-Length")
        try:
            body = response.read(limit + 1)
        except (OSError, http.client.HTTPException) as exc:
            raise classify(exc, timeout) from None
    if len(body) > limit:
        raise TransferFailed(f"larger than {limit} bytes; refusing to read it", retryable=False)
    if announced is not None and announced.isdigit() and len(body) < int(announced):
        raise TransferFailed(
            f"connection dropped after {len(body)} of {announced} bytes",
            retryable=True,
            truncated=True,
        )
    return body
