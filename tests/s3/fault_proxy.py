"""A small HTTP proxy in front of the test S3 server that can inject S3-style failures.

Tests point a boto3 client (or the CLI) at `FaultProxy.url` instead of the server, program
faults, and check what was seen:

    proxy.fail_next(1, "503")                              # next request of any kind
    proxy.fail_always("500", method="PUT", path_contains="manifest.json")
    ...
    assert proxy.injected == 1
    assert ("PUT", "/bucket/key", 200) in proxy.requests

Requests are forwarded byte for byte: method, target (path + query), every end-to-end header
(Host included, so SigV4 signatures still match what the client signed) and the body, whether
it came with Content-Length or `Transfer-Encoding: chunked`. The proxy only ever connects to
the loopback upstream it was given.
"""

from __future__ import annotations

import http.client
import io
import ipaddress
import socket
import struct
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Literal, get_args
from urllib.parse import unquote, urlsplit
from xml.sax.saxutils import escape

FaultKind = Literal["503", "slowdown", "reset", "500"]
FAULT_KINDS: tuple[FaultKind, ...] = get_args(FaultKind)

# Status recorded in FaultProxy.requests for a request answered with a connection reset.
RESET_STATUS = 0

# (status, S3 error code, message) for the faults answered with an error document.
_ERROR_RESPONSES: dict[FaultKind, tuple[int, str, str]] = {
    "503": (503, "ServiceUnavailable", "Please reduce your request rate."),
    "slowdown": (503, "SlowDown", "Please reduce your request rate."),
    "500": (500, "InternalError", "We encountered an internal error. Please try again."),
}

# Hop-by-hop headers belong to one connection and are not forwarded. Expect is answered by
# this proxy itself (it sends 100 Continue and buffers the body), so it is not passed on.
# Transfer-Encoding is *not* here: a chunked request body is forwarded as the same raw chunks.
_HOP_BY_HOP_REQUEST = frozenset(
    {"connection", "keep-alive", "proxy-connection", "proxy-authorization", "te", "upgrade"}
    | {"expect"}
)
# Responses are read whole and re-sent with a Content-Length, so their framing headers go.
_HOP_BY_HOP_RESPONSE = frozenset(
    {"connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade"}
    | {"transfer-encoding", "content-length"}
)


@dataclass
class _Rule:
    kind: FaultKind
    remaining: int | None  # None: fires on every matching request
    method: str | None
    path_contains: str | None

    def matches(self, method: str, target: str) -> bool:
        if self.remaining == 0:
            return False
        if self.method is not None and self.method != method:
            return False
        return self.path_contains is None or self.path_contains in unquote(target)


def _error_body(code: str, message: str, target: str) -> bytes:
    # The shape S3 sends, so botocore parses the code the same way it would from AWS. Escaped:
    # a multipart target has "&" in its query, and unparsable XML would hide the code.
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{escape(code)}</Code><Message>{escape(message)}</Message>"
        f"<Resource>{escape(target)}</Resource>"
        f"<RequestId>{uuid.uuid4().hex[:16].upper()}</RequestId></Error>"
    ).encode()


def _read_chunked(rfile: io.BufferedIOBase) -> bytes:
    """Read a chunked body (chunks, last chunk, trailers) and return its raw bytes unchanged."""
    raw = bytearray()
    while True:
        size_line = rfile.readline(65537)
        if not size_line:
            raise ConnectionError("client closed the connection inside a chunked body")
        raw += size_line
        size = int(size_line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            break
        raw += rfile.read(size + 2)  # chunk data and its CRLF
    while True:  # trailer fields, then the empty line that ends the message
        line = rfile.readline(65537)
        raw += line
        if line in (b"\r\n", b"\n", b""):
            return bytes(raw)


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True
    proxy: FaultProxy


class _Handler(BaseHTTPRequestHandler):
    server: _ProxyServer
    protocol_version = "HTTP/1.1"  # keep-alive with the client, and 100 Continue for Expect
    timeout = 60  # an idle keep-alive connection frees its thread eventually

    def setup(self) -> None:
        super().setup()
        self.server.proxy._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.proxy._track(self.connection, add=False)

    def log_message(self, format: str, *args: object) -> None:
        pass  # FaultProxy.requests is the log; stderr noise would drown test output

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return _read_chunked(self.rfile)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        proxy = self.server.proxy
        method, target = self.command, self.path
        try:
            body = self._read_body()
        except (OSError, ValueError):  # client went away, or a malformed chunk size
            self.close_connection = True
            return
        kind = proxy._take_fault(method, target)
        if kind == "reset":
            proxy._record(method, target, RESET_STATUS)
            self._reset()
        elif kind is not None:
            status, code, message = _ERROR_RESPONSES[kind]
            proxy._record(method, target, status)
            self._send(
                status, [("Content-Type", "application/xml")], _error_body(code, message, target)
            )
        else:
            self._forward(method, target, body)

    def _reset(self) -> None:
        # SO_LINGER with a zero timeout makes close() send RST instead of FIN: the client sees
        # "connection reset by peer", as on a dropped load-balancer connection.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        # The fd is only released (and the RST sent) once the buffered rfile lets go of it;
        # close both now, or socketserver's own teardown would send a FIN first.
        self.rfile.close()
        self.connection.close()

    def _forward(self, method: str, target: str, body: bytes) -> None:
        proxy = self.server.proxy
        upstream = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=120)
        try:
            upstream.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():
                if name.lower() not in _HOP_BY_HOP_REQUEST:
                    upstream.putheader(name, value)
            upstream.putheader("Connection", "close")  # one upstream connection per request
            upstream.endheaders(body or None)
            response = upstream.getresponse()
            # read() copes with Content-Length, chunked, and read-until-close responses alike.
            payload = response.read()
            headers = [
                (name, value)
                for name, value in response.getheaders()
                if name.lower() not in _HOP_BY_HOP_RESPONSE
            ]
            length = response.getheader("Content-Length")
        except (OSError, http.client.HTTPException) as exc:
            proxy._record(method, target, 502)
            message = f"proxy could not reach upstream: {exc}"
            self._send(
                502,
                [("Content-Type", "application/xml")],
                _error_body("BadGateway", message, target),
            )
            return
        finally:
            upstream.close()
        proxy._record(method, target, response.status)
        # A HEAD answer has no body but announces the object's length: keep that number.
        self._send(response.status, headers, payload, reason=response.reason, head_length=length)

    def _send(
        self,
        status: int,
        headers: list[tuple[str, str]],
        body: bytes,
        *,
        reason: str | None = None,
        head_length: str | None = None,
    ) -> None:
        self.send_response_only(status, reason)
        for name, value in headers:
            self.send_header(name, value)
        no_body = self.command == "HEAD" or status in (204, 304) or 100 <= status < 200
        if self.command == "HEAD":
            if head_length is not None:
                self.send_header("Content-Length", head_length)
        elif not no_body:
            self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if not no_body:
            self.wfile.write(body)
        self.wfile.flush()

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = do_PATCH = do_OPTIONS = _handle


class FaultProxy:
    """HTTP proxy on 127.0.0.1 (ephemeral port) forwarding to a loopback S3 endpoint."""

    def __init__(self, upstream_url: str) -> None:
        parts = urlsplit(upstream_url)
        host = parts.hostname or ""
        if parts.scheme != "http" or parts.port is None or not _is_loopback(host):
            raise ValueError(
                f"FaultProxy only forwards to http://127.0.0.1:PORT, not {upstream_url!r}"
            )
        self.upstream_host: str = host
        self.upstream_port: int = parts.port
        self.requests: list[tuple[str, str, int]] = []  # (method, path+query, status)
        self.injected = 0
        self._rules: list[_Rule] = []
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._server = _ProxyServer(("127.0.0.1", 0), _Handler)
        self._server.proxy = self
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FaultProxy:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever, name="fault-proxy", daemon=True
            )
            self._thread.start()
        return self

    def close(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        with self._lock:
            open_connections = list(self._connections)
        for conn in open_connections:  # wake handler threads parked on idle keep-alives
            with suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._server.server_close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- programming faults -------------------------------------------------------------

    def fail_next(
        self,
        n: int = 1,
        kind: FaultKind = "503",
        *,
        method: str | None = None,
        path_contains: str | None = None,
    ) -> None:
        """Answer the next `n` matching requests with `kind` instead of forwarding them.

        `method` (e.g. "PUT") and `path_contains` (a substring of the URL-decoded path+query,
        e.g. "manifest.json" or "uploadId=") narrow which requests match.
        """
        if n < 1:
            raise ValueError("n must be at least 1")
        self._add(_Rule(_check_kind(kind), n, _upper(method), path_contains))

    def fail_always(
        self,
        kind: FaultKind = "503",
        *,
        method: str | None = None,
        path_contains: str | None = None,
    ) -> None:
        """Answer every matching request with `kind` until clear()."""
        self._add(_Rule(_check_kind(kind), None, _upper(method), path_contains))

    def clear(self) -> None:
        """Drop all programmed faults (the request log and the counter stay)."""
        with self._lock:
            self._rules.clear()

    @contextmanager
    def failing(
        self,
        kind: FaultKind = "503",
        *,
        method: str | None = None,
        path_contains: str | None = None,
    ) -> Iterator[None]:
        """fail_always for the duration of a with-block (other rules are left alone)."""
        rule = self._add(_Rule(_check_kind(kind), None, _upper(method), path_contains))
        try:
            yield
        finally:
            with self._lock:
                self._rules.remove(rule)

    def statuses(self, method: str | None = None, path_contains: str | None = None) -> list[int]:
        """Statuses of the logged requests that match, in order (RESET_STATUS for resets)."""
        rule = _Rule("503", None, _upper(method), path_contains)
        with self._lock:
            return [status for m, target, status in self.requests if rule.matches(m, target)]

    # --- used by the handler ------------------------------------------------------------

    def _add(self, rule: _Rule) -> _Rule:
        with self._lock:
            self._rules.append(rule)
        return rule

    def _take_fault(self, method: str, target: str) -> FaultKind | None:
        with self._lock:
            for rule in self._rules:
                if rule.matches(method, target):
                    if rule.remaining is not None:
                        rule.remaining -= 1
                    self.injected += 1
                    return rule.kind
        return None

    def _record(self, method: str, target: str, status: int) -> None:
        with self._lock:
            self.requests.append((method, target, status))

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_kind(kind: str) -> FaultKind:
    if kind not in FAULT_KINDS:
        raise ValueError(f"unknown fault kind {kind!r}; expected one of {FAULT_KINDS}")
    return kind


def _upper(method: str | None) -> str | None:
    return method.upper() if method is not None else None
