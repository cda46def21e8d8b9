"""orchestrator.sources.fetch against a real HTTP server on 127.0.0.1 (loopback only)."""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from orchestrator.errors import SourceError
from orchestrator.matrix import PythonSource
from orchestrator.sources.fetch import fetch_source

pytestmark = pytest.mark.integration

TARBALL = "Python-3.13.5.tar.xz"
DATA = bytes(range(256)) * (12 * 1024)  # 3 MiB: streamed in several 1 MiB chunks


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


PYTHON = PythonSource(version="3.13.5", sha256=sha(DATA))


@dataclass
class ServerState:
    # URL path -> what to do for the next requests of it: "503", "drop", "truncate", "slow".
    plan: dict[str, list[str]] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)


class _Server(ThreadingHTTPServer):
    state: ServerState

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # broken pipes after a client timeout are expected here


class _Handler(SimpleHTTPRequestHandler):
    def do_GET(self) -> None:
        assert isinstance(self.server, _Server)
        state = self.server.state
        state.requests.append(self.path)
        pending = state.plan.get(self.path)
        action = pending.pop(0) if pending else None
        if action == "503":
            self.send_error(503, "Service Unavailable")
        elif action == "drop":
            self.close_connection = True  # no status line at all
        elif action == "truncate":
            body = Path(self.translate_path(self.path)).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 3])
            self.close_connection = True
        elif action == "slow":
            state.release.wait(2.0)  # longer than the client's timeout
            super().do_GET()
        else:
            super().do_GET()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class Mirror:
    root: Path
    base: str
    state: ServerState

    def template(self, prefix: str = "") -> str:
        return f"{self.base}{prefix}/{{filename}}"

    def path(self, prefix: str = "") -> str:
        return f"{prefix}/{TARBALL}"


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # An http_proxy in the environment must not route these loopback requests elsewhere.
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[Mirror]:
    root = tmp_path / "www"
    root.mkdir()
    (root / TARBALL).write_bytes(DATA)
    state = ServerState()

    def handler(*args: Any, **kwargs: Any) -> _Handler:
        return _Handler(*args, directory=str(root), **kwargs)

    server = _Server(("127.0.0.1", 0), handler)
    server.state = state
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        yield Mirror(root=root, base=f"http://{host!s}:{port}", state=state)
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def leftovers(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir() if p.name != TARBALL)


def test_fetch_over_http(mirror: Mirror, cache: Path) -> None:
    lines: list[str] = []
    got = fetch_source(PYTHON, mirrors=[mirror.template()], cache_dir=cache, progress=lines.append)
    assert got.url == f"{mirror.base}/{TARBALL}"
    assert got.path.read_bytes() == DATA
    assert got.size == len(DATA)
    assert got.sha256 == PYTHON.sha256
    assert mirror.state.requests == [mirror.path()]
    assert leftovers(cache) == []
    again = fetch_source(PYTHON, mirrors=[mirror.template()], cache_dir=cache)
    assert again.url is None
    assert mirror.state.requests == [mirror.path()]  # the cache answered


def test_404_then_fallback(mirror: Mirror, cache: Path) -> None:
    lines: list[str] = []
    got = fetch_source(
        PYTHON,
        mirrors=[mirror.template("/missing"), mirror.template()],
        cache_dir=cache,
        progress=lines.append,
    )
    assert got.url == f"{mirror.base}/{TARBALL}"
    assert mirror.state.requests == [mirror.path("/missing"), mirror.path()]  # 404: no retry
    assert any("HTTP 404" in line for line in lines)


def test_503_then_success(mirror: Mirror, cache: Path) -> None:
    mirror.state.plan[mirror.path()] = ["503", "503"]
    lines: list[str] = []
    got = fetch_source(PYTHON, mirrors=[mirror.template()], cache_dir=cache, progress=lines.append)
    assert got.url is not None
    assert got.path.read_bytes() == DATA
    assert mirror.state.requests == [mirror.path()] * 3
    assert sum("HTTP 503" in line and "retrying" in line for line in lines) == 2


def test_503_forever_moves_to_next_mirror(mirror: Mirror, cache: Path) -> None:
    mirror.state.plan[mirror.path("/busy")] = ["503"] * 10
    (mirror.root / "busy").mkdir()
    (mirror.root / "busy" / TARBALL).write_bytes(DATA)
    got = fetch_source(
        PYTHON, mirrors=[mirror.template("/busy"), mirror.template()], cache_dir=cache
    )
    assert got.url == f"{mirror.base}/{TARBALL}"
    assert mirror.state.requests.count(mirror.path("/busy")) == 3


def test_dropped_connection_is_retried(mirror: Mirror, cache: Path) -> None:
    mirror.state.plan[mirror.path()] = ["drop"]
    got = fetch_source(PYTHON, mirrors=[mirror.template()], cache_dir=cache)
    assert got.path.read_bytes() == DATA
    assert mirror.state.requests == [mirror.path()] * 2


def test_truncated_body_is_retried_not_reported_as_mismatch(mirror: Mirror, cache: Path) -> None:
    mirror.state.plan[mirror.path()] = ["truncate"]
    lines: list[str] = []
    got = fetch_source(PYTHON, mirrors=[mirror.template()], cache_dir=cache, progress=lines.append)
    assert got.path.read_bytes() == DATA
    assert any("connection dropped after" in line for line in lines)
    assert not any("mismatch" in line for line in lines)
    assert leftovers(cache) == []


def test_timeout_is_retried(mirror: Mirror, cache: Path) -> None:
    mirror.state.plan[mirror.path()] = ["slow"]
    lines: list[str] = []
    got = fetch_source(
        PYTHON, mirrors=[mirror.template()], cache_dir=cache, progress=lines.append, timeout=0.3
    )
    assert got.path.read_bytes() == DATA
    assert any("timed out" in line for line in lines)


def test_wrong_hash_over_http_is_never_cached(mirror: Mirror, cache: Path) -> None:
    (mirror.root / TARBALL).write_bytes(DATA[:-1] + b"!")
    with pytest.raises(SourceError, match="MISMATCH"):
        fetch_source(PYTHON, mirrors=[mirror.template()], cache_dir=cache)
    assert list(cache.iterdir()) == []
    assert mirror.state.requests == [mirror.path()]  # a mismatch is not retried


def _unused_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port  # closed again: nothing listens here now


def test_connection_refused_is_skipped_quickly(mirror: Mirror, cache: Path) -> None:
    refused = f"http://127.0.0.1:{_unused_port()}/{{filename}}"
    lines: list[str] = []
    started = time.monotonic()
    got = fetch_source(
        PYTHON, mirrors=[refused, mirror.template()], cache_dir=cache, progress=lines.append
    )
    elapsed = time.monotonic() - started
    assert got.url == f"{mirror.base}/{TARBALL}"
    assert elapsed < 2.0
    assert any("connection refused" in line for line in lines)
    assert not any("retrying" in line for line in lines)


def test_all_http_mirrors_fail(mirror: Mirror, cache: Path) -> None:
    refused = f"http://127.0.0.1:{_unused_port()}/{{filename}}"
    with pytest.raises(SourceError) as info:
        fetch_source(PYTHON, mirrors=[refused, mirror.template("/missing")], cache_dir=cache)
    message = info.value.message
    assert message.startswith(f"could not fetch {TARBALL} for 3.13.5: ")
    assert ": connection refused; " in message
    assert message.endswith(f"{mirror.base}/missing/{TARBALL}: HTTP 404 File not found")
    assert list(cache.iterdir()) == []
