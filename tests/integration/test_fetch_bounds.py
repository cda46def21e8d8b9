"""Bounded downloads against real local servers: a mirror that sends more than the pinned size,
one that drips bytes, and file:// mirrors that are not regular files (finding 6 of issue 10).

What is asserted is what the server saw (bytes it managed to send, the client hanging up) and
what the farm printed, never how long anything took."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator.errors import SourceError
from orchestrator.matrix import PythonSource
from orchestrator.sources.fetch import fetch_source
from tests.integration.support import REPO_ROOT, CliRun, run_cli

pytestmark = pytest.mark.integration

TARBALL = "Python-3.13.5.tar.xz"
DATA = bytes(range(256)) * 4096  # 1 MiB
PIN = PythonSource(version="3.13.5", sha256=hashlib.sha256(DATA).hexdigest(), size=len(DATA))
MiB = 1024 * 1024
FLOOD = 512 * MiB  # what the flooding mirror offers; a client reading it all would take it all
# Loopback buffers between the two ends (up to tcp_rmem's max on the client) hold what the
# server "sent" after the client stopped reading; well under FLOOD.
IN_FLIGHT = 64 * MiB
GUARD = 120  # seconds: only so that a broken build fails instead of hanging the suite


@dataclass
class Seen:
    sent: dict[str, int] = field(default_factory=dict)  # path -> bytes written to the socket
    hung_up: dict[str, threading.Event] = field(default_factory=dict)  # client went away
    stop: threading.Event = field(default_factory=threading.Event)
    requests: list[str] = field(default_factory=list)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    seen: Seen

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # broken pipes are the point here


class _Handler(BaseHTTPRequestHandler):
    def setup(self) -> None:
        super().setup()
        # A small send buffer keeps what sits in flight, and so the slack below, small.
        self.request.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)

    def do_GET(self) -> None:
        assert isinstance(self.server, _Server)
        seen = self.server.seen
        kind = self.path.split("/")[1]
        seen.requests.append(self.path)
        seen.sent[self.path] = 0
        hung_up = seen.hung_up.setdefault(self.path, threading.Event())
        if kind == "good":
            self._send(DATA)
            return
        self.send_response(200)
        if kind == "announce":
            self.send_header("Content-Length", str(FLOOD))
        self.end_headers()  # flood and drip: no length, the body ends when the server closes
        block, step = (b"\0", 0.2) if kind == "drip" else (b"\0" * 65536, 0.0)
        try:
            while seen.sent[self.path] < FLOOD and not seen.stop.is_set():
                self.wfile.write(block)
                self.wfile.flush()
                seen.sent[self.path] += len(block)
                if step:
                    seen.stop.wait(step)
        except (BrokenPipeError, ConnectionResetError):
            hung_up.set()
        self.close_connection = True

    def _send(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture
def server() -> Iterator[tuple[str, Seen]]:
    httpd = _Server(("127.0.0.1", 0), _Handler)
    httpd.seen = Seen()
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", httpd.seen
    finally:
        httpd.seen.stop.set()
        httpd.shutdown()
        httpd.server_close()


def _path(kind: str) -> str:
    return f"/{kind}/{TARBALL}"


def _mirror(base: str, kind: str) -> str:
    return f"{base}/{kind}/{{filename}}"


def _cache_files(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


# --- more than the pinned size -----------------------------------------------------------------


def test_a_mirror_sending_more_than_the_pinned_size_is_stopped_early(
    server: tuple[str, Seen], tmp_path: Path
) -> None:
    base, seen = server
    cache = tmp_path / "cache"
    lines: list[str] = []
    got = fetch_source(
        PIN,
        mirrors=[_mirror(base, "flood"), _mirror(base, "good")],
        cache_dir=cache,
        progress=lines.append,
    )
    assert got.url == f"{base}{_path('good')}"
    assert _cache_files(cache) == [TARBALL]  # no .part left behind
    assert seen.hung_up[_path("flood")].wait(GUARD), "the client never hung up"
    assert seen.sent[_path("flood")] < len(DATA) + IN_FLIGHT  # not the 512 MiB on offer
    expected = (
        f"{base}{_path('flood')}: sent more than the pinned size of {len(DATA)} bytes; "
        f"stopped reading after {len(DATA) + 1} bytes"
    )
    assert any(line.startswith(expected) for line in lines), lines
    assert seen.requests == [_path("flood"), _path("good")]  # not retried: next mirror


def test_an_announced_length_above_the_pin_is_not_read(
    server: tuple[str, Seen], tmp_path: Path
) -> None:
    base, seen = server
    with pytest.raises(SourceError) as info:
        fetch_source(PIN, mirrors=[_mirror(base, "announce")], cache_dir=tmp_path / "cache")
    assert (
        f"{base}{_path('announce')}: announces {FLOOD} bytes, more than the pinned size of "
        f"{len(DATA)} bytes; not read"
    ) in info.value.message
    assert _cache_files(tmp_path / "cache") == []
    assert seen.hung_up[_path("announce")].wait(GUARD)
    assert seen.sent[_path("announce")] < IN_FLIGHT


# --- through the CLI, with the matrix's own deadline ---------------------------------------------


def _project(tmp_path: Path, mirrors: list[str], deadline: float) -> Path:
    """The repo's matrix with the test's mirrors, deadline and pin for 3.13.5."""
    data = yaml.safe_load((REPO_ROOT / "matrix.yaml").read_text())
    data["sources"]["mirrors"] = mirrors
    data["sources"]["cache_dir"] = str(tmp_path / "cache")
    data["sources"]["download_deadline_seconds"] = deadline
    data["signatures"] = {}  # the fake tarball has no upstream signature to check
    for python in data["pythons"]:
        if python["version"] == PIN.version:
            python.update(sha256=PIN.sha256, size=PIN.size)
    project = tmp_path / "project"
    project.mkdir()
    (project / "matrix.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return project


def _fetch(project: Path) -> CliRun:
    return run_cli(
        ["--matrix", str(project / "matrix.yaml"), "fetch", PIN.version],
        cwd=project,
        env={"no_proxy": "127.0.0.1", "NO_PROXY": "127.0.0.1"},
        timeout=GUARD,
    )


def test_a_dripping_mirror_is_given_up_at_the_deadline_and_the_next_is_used(
    server: tuple[str, Seen], tmp_path: Path
) -> None:
    base, seen = server
    project = _project(tmp_path, [_mirror(base, "drip"), _mirror(base, "good")], deadline=1)
    result = _fetch(project)
    assert result.returncode == 0, result.stderr
    assert (
        f"{base}{_path('drip')}: still sending after the 1s download deadline "
        "(sources.download_deadline_seconds); stopped after "
    ) in result.stderr
    assert seen.hung_up[_path("drip")].wait(GUARD), "the client never hung up"
    assert 0 < seen.sent[_path("drip")] < 1000  # a byte per 0.2 s, for about a second
    assert _cache_files(tmp_path / "cache") == [TARBALL]
    assert "Traceback" not in result.stderr


def test_only_a_dripping_mirror_is_one_clear_error(
    server: tuple[str, Seen], tmp_path: Path
) -> None:
    base, _seen = server
    project = _project(tmp_path, [_mirror(base, "drip")], deadline=1)
    result = _fetch(project)
    assert result.returncode == 4, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr
    assert errors[0].startswith(f"error: could not fetch {TARBALL} for 3.13.5: ")
    assert "still sending after the 1s download deadline" in errors[0]
    assert _cache_files(tmp_path / "cache") == []


def test_only_a_flooding_mirror_is_one_clear_error(
    server: tuple[str, Seen], tmp_path: Path
) -> None:
    base, seen = server
    result = _fetch(_project(tmp_path, [_mirror(base, "flood")], deadline=600))
    assert result.returncode == 4, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr
    assert f"sent more than the pinned size of {len(DATA)} bytes" in errors[0]
    assert "check the size pinned for 3.13.5 in matrix.yaml" in errors[0]
    assert seen.sent[_path("flood")] < len(DATA) + IN_FLIGHT
    assert _cache_files(tmp_path / "cache") == []


# --- file:// mirrors that are not regular files ------------------------------------------------


def _good_mirror(tmp_path: Path) -> str:
    directory = tmp_path / "good"
    directory.mkdir()
    (directory / TARBALL).write_bytes(DATA)
    return directory.as_uri() + "/{filename}"


@pytest.mark.parametrize("how", ["directly", "through a symlink"])
def test_dev_zero_as_a_mirror_is_refused_before_reading(tmp_path: Path, how: str) -> None:
    if how == "directly":
        zero = "file:///dev/zero"
    else:
        (tmp_path / "odd").mkdir()
        (tmp_path / "odd" / TARBALL).symlink_to("/dev/zero")
        zero = (tmp_path / "odd").as_uri() + "/{filename}"
    cache = tmp_path / "cache"
    lines: list[str] = []
    got = fetch_source(
        PIN, mirrors=[zero, _good_mirror(tmp_path)], cache_dir=cache, progress=lines.append
    )
    assert got.url is not None and got.url.endswith(f"/good/{TARBALL}")
    assert any(
        "is a character device, not a regular file; not read" in line
        or f"{TARBALL}: is a character device, not a regular file" in line
        for line in lines
    ), lines
    assert not any("bytes" in line and "zero" in line for line in lines)  # nothing was read
    assert _cache_files(cache) == [TARBALL]


@pytest.fixture
def fifo_mirror(tmp_path: Path) -> Iterator[str]:
    """A mirror directory whose tarball is a fifo. Should anything open it for reading, a
    writer released at teardown unblocks it (the test then fails instead of hanging)."""
    directory = tmp_path / "fifo"
    directory.mkdir()
    path = directory / TARBALL
    os.mkfifo(path)
    yield directory.as_uri() + "/{filename}"
    try:
        writer = os.open(path, os.O_WRONLY | os.O_NONBLOCK)  # ENXIO: nobody is reading
    except OSError:
        return
    os.close(writer)


def test_a_fifo_as_a_mirror_is_refused_without_blocking(tmp_path: Path, fifo_mirror: str) -> None:
    cache = tmp_path / "cache"
    lines: list[str] = []
    outcome: list[object] = []

    def run() -> None:
        outcome.append(
            fetch_source(
                PIN,
                mirrors=[fifo_mirror, _good_mirror(tmp_path)],
                cache_dir=cache,
                progress=lines.append,
            )
        )

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(GUARD)
    if worker.is_alive():
        os.close(os.open(Path(fifo_mirror.removeprefix("file://")[: -len("/{filename}")]) /
                         TARBALL, os.O_WRONLY))  # fmt: skip
        pytest.fail("fetch_source blocked opening a fifo")
    assert len(outcome) == 1
    assert any("is a fifo, not a regular file; not read" in line for line in lines)
    assert _cache_files(cache) == [TARBALL]


def test_the_matrix_refuses_a_mirror_in_dev(tmp_path: Path) -> None:
    data = yaml.safe_load((REPO_ROOT / "matrix.yaml").read_text())
    data["sources"]["mirrors"] = ["file:///dev/zero"]
    (tmp_path / "matrix.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    result = run_cli(["--matrix", str(tmp_path / "matrix.yaml"), "fetch"], timeout=GUARD)
    assert result.returncode == 2, result.stderr
    assert "not a directory the farm may write into" in result.stderr
