"""orchestrator.sources.fetch offline: mirrors are file:// directories under tmp_path."""

from __future__ import annotations

import hashlib
import shutil
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from tenacity import wait_none

from orchestrator.errors import SourceError
from orchestrator.matrix import PythonSource, load_matrix
from orchestrator.sources import fetch as sources
from orchestrator.sources import http as sources_http
from orchestrator.sources.fetch import (
    SourceChecksumError,
    fetch_source,
    mirror_urls,
    verify_file,
)

REPO = Path(__file__).resolve().parents[2]
GOOD = b"pretend this is CPython's source tarball\n" * 100
EVIL = b"something else entirely\n" * 100
TARBALL = "Python-3.13.5.tar.xz"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_python(data: bytes = GOOD, **kwargs: Any) -> PythonSource:
    kwargs.setdefault("version", "3.13.5")
    return PythonSource(sha256=sha(data), **kwargs)


def make_mirror(tmp_path: Path, name: str, files: dict[str, bytes] | None = None) -> str:
    """A directory acting as a mirror; returns its URL template."""
    directory = tmp_path / "mirrors" / name
    directory.mkdir(parents=True)
    for filename, data in (files or {}).items():
        (directory / filename).write_bytes(data)
    return directory.as_uri() + "/{filename}"


def cache_entries(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources, "RETRY_WAIT", wait_none())


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache" / "sources"  # does not exist yet: fetch_source creates it


# --- mirror_urls ---------------------------------------------------------------------------


def test_mirror_urls_fills_every_placeholder() -> None:
    python = make_python(version="3.13.5")
    urls = mirror_urls(
        python,
        [
            "https://www.python.org/ftp/python/{version}/{filename}",
            "http://deb.debian.org/debian/pool/main/p/python{major_minor}/"
            "python{major_minor}_{version}.orig.{ext}",
        ],
    )
    assert urls == [
        "https://www.python.org/ftp/python/3.13.5/Python-3.13.5.tar.xz",
        "http://deb.debian.org/debian/pool/main/p/python3.13/python3.13_3.13.5.orig.tar.xz",
    ]


def test_mirror_urls_tgz_filename_gives_tar_gz_ext() -> None:
    python = make_python(version="3.11.2", filename="Python-3.11.2.tgz")
    urls = mirror_urls(
        python,
        [
            "https://www.python.org/ftp/python/{version}/{filename}",
            "http://deb.debian.org/debian/pool/main/p/python{major_minor}/"
            "python{major_minor}_{version}.orig.{ext}",
        ],
    )
    assert urls == [
        "https://www.python.org/ftp/python/3.11.2/Python-3.11.2.tgz",
        "http://deb.debian.org/debian/pool/main/p/python3.11/python3.11_3.11.2.orig.tar.gz",
    ]


def test_mirror_urls_with_the_real_matrix() -> None:
    matrix = load_matrix(REPO / "matrix.yaml")
    by_version = {p.version: p for p in matrix.model.pythons}
    urls = mirror_urls(by_version["3.11.2"], matrix.model.sources.mirrors)
    assert "https://www.python.org/ftp/python/3.11.2/Python-3.11.2.tgz" in urls
    assert (
        "http://deb.debian.org/debian/pool/main/p/python3.11/python3.11_3.11.2.orig.tar.gz" in urls
    )


def test_mirror_urls_rejects_unknown_placeholder() -> None:
    with pytest.raises(SourceError, match="bad mirror template"):
        mirror_urls(make_python(), ["https://example.invalid/{nope}"])


# --- verify_file ---------------------------------------------------------------------------


def test_verify_file(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(GOOD)
    assert verify_file(path, sha(GOOD)) == sha(GOOD)
    assert verify_file(path, sha(GOOD).upper()) == sha(GOOD)
    with pytest.raises(SourceChecksumError) as info:
        verify_file(path, sha(EVIL))
    assert info.value.actual == sha(GOOD)
    assert info.value.expected == sha(EVIL)


def test_verify_file_missing(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="cannot read"):
        verify_file(tmp_path / "absent", sha(GOOD))


# --- fetch_source --------------------------------------------------------------------------


def test_fetch_from_first_mirror(tmp_path: Path, cache: Path) -> None:
    first = make_mirror(tmp_path, "a", {TARBALL: GOOD})
    lines: list[str] = []
    got = fetch_source(make_python(), mirrors=[first], cache_dir=cache, progress=lines.append)
    assert got.path == cache / TARBALL
    assert got.path.read_bytes() == GOOD
    assert got.sha256 == sha(GOOD)
    assert got.size == len(GOOD)
    assert got.url == first.format(filename=TARBALL)
    assert any(line.startswith("fetching ") for line in lines)
    assert any(line.startswith("verified sha256") for line in lines)
    assert cache_entries(cache) == [TARBALL]


def test_fetch_without_progress_callback(tmp_path: Path, cache: Path) -> None:
    mirror = make_mirror(tmp_path, "a", {TARBALL: GOOD})
    assert fetch_source(make_python(), mirrors=[mirror], cache_dir=cache).url is not None


def test_second_mirror_used_when_first_lacks_file(tmp_path: Path, cache: Path) -> None:
    empty = make_mirror(tmp_path, "empty")
    full = make_mirror(tmp_path, "full", {TARBALL: GOOD})
    lines: list[str] = []
    got = fetch_source(make_python(), mirrors=[empty, full], cache_dir=cache, progress=lines.append)
    assert got.url == full.format(filename=TARBALL)
    assert got.path.read_bytes() == GOOD
    assert any("no such file" in line for line in lines)


def test_missing_file_is_not_retried(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    real = sources._download

    # Attempts, not urlopen calls: a missing file:// path is refused before urllib opens it.
    def counting(url: str, **kwargs: Any) -> Any:
        calls.append(url)
        return real(url, **kwargs)

    monkeypatch.setattr(sources, "_download", counting)
    empty = make_mirror(tmp_path, "empty")
    full = make_mirror(tmp_path, "full", {TARBALL: GOOD})
    fetch_source(make_python(), mirrors=[empty, full], cache_dir=cache)
    assert len(calls) == 2  # one per mirror


def test_wrong_hash_then_right_hash(tmp_path: Path, cache: Path) -> None:
    evil = make_mirror(tmp_path, "evil", {TARBALL: EVIL})
    good = make_mirror(tmp_path, "good", {TARBALL: GOOD})
    lines: list[str] = []
    got = fetch_source(make_python(), mirrors=[evil, good], cache_dir=cache, progress=lines.append)
    assert got.url == good.format(filename=TARBALL)
    assert got.path.read_bytes() == GOOD
    assert any(f"got {sha(EVIL)}" in line and "mismatch" in line for line in lines)
    assert cache_entries(cache) == [TARBALL]


def test_wrong_hash_everywhere_caches_nothing(tmp_path: Path, cache: Path) -> None:
    evil1 = make_mirror(tmp_path, "evil1", {TARBALL: EVIL})
    evil2 = make_mirror(tmp_path, "evil2", {TARBALL: EVIL + b"x"})
    with pytest.raises(SourceError) as info:
        fetch_source(make_python(), mirrors=[evil1, evil2], cache_dir=cache)
    text = str(info.value)
    assert "could not fetch Python-3.13.5.tar.xz for 3.13.5" in text
    assert "MISMATCH" in text
    assert f"sha256 mismatch at {evil1.format(filename=TARBALL)}: got {sha(EVIL)}" in text
    assert f"expected {sha(GOOD)}" in text
    assert "matrix.yaml" in (info.value.hint or "")
    assert "\n" not in info.value.message
    assert cache_entries(cache) == []  # no final file, no .part leftovers


def test_every_mirror_missing_names_each_and_hints(tmp_path: Path, cache: Path) -> None:
    a = make_mirror(tmp_path, "a")
    b = make_mirror(tmp_path, "b")
    with pytest.raises(SourceError) as info:
        fetch_source(make_python(), mirrors=[a, b], cache_dir=cache)
    err = info.value
    assert err.message.startswith("could not fetch Python-3.13.5.tar.xz for 3.13.5: ")
    assert f"{a.format(filename=TARBALL)}: no such file" in err.message
    assert f"{b.format(filename=TARBALL)}: no such file" in err.message
    assert "MISMATCH" not in err.message
    assert err.hint is not None
    assert "sources.mirrors" in err.hint
    assert str(cache / TARBALL) in err.hint
    assert err.exit_code == 4
    assert cache_entries(cache) == []


def test_no_mirrors_at_all(cache: Path) -> None:
    with pytest.raises(SourceError, match="no mirrors configured"):
        fetch_source(make_python(), mirrors=[], cache_dir=cache)


def test_cache_reused_without_network(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mirror = make_mirror(tmp_path, "a", {TARBALL: GOOD})
    first = fetch_source(make_python(), mirrors=[mirror], cache_dir=cache)
    assert first.url is not None
    shutil.rmtree(tmp_path / "mirrors")

    def no_network(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the network was used despite a verified cache")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    lines: list[str] = []
    second = fetch_source(make_python(), mirrors=[mirror], cache_dir=cache, progress=lines.append)
    assert second.url is None
    assert second.path == first.path
    assert second.sha256 == sha(GOOD)
    assert second.size == len(GOOD)
    assert any(line.startswith("reusing cached") for line in lines)


def test_tarball_dropped_into_cache_by_hand(cache: Path) -> None:
    cache.mkdir(parents=True)
    (cache / TARBALL).write_bytes(GOOD)
    got = fetch_source(make_python(), mirrors=["file:///nonexistent/{filename}"], cache_dir=cache)
    assert got.url is None


def test_corrupted_cache_is_replaced(tmp_path: Path, cache: Path) -> None:
    cache.mkdir(parents=True)
    (cache / TARBALL).write_bytes(GOOD[:100])  # e.g. a truncated copy
    mirror = make_mirror(tmp_path, "a", {TARBALL: GOOD})
    lines: list[str] = []
    got = fetch_source(make_python(), mirrors=[mirror], cache_dir=cache, progress=lines.append)
    assert got.url is not None
    assert (cache / TARBALL).read_bytes() == GOOD
    assert any("fetching again" in line for line in lines)


def test_corrupted_cache_removed_even_when_no_mirror_has_it(tmp_path: Path, cache: Path) -> None:
    cache.mkdir(parents=True)
    (cache / TARBALL).write_bytes(EVIL)
    with pytest.raises(SourceError):
        fetch_source(make_python(), mirrors=[make_mirror(tmp_path, "a")], cache_dir=cache)
    assert cache_entries(cache) == []


def test_tgz_is_cached_under_its_own_name(tmp_path: Path, cache: Path) -> None:
    python = make_python(version="3.11.2", filename="Python-3.11.2.tgz")
    mirror = make_mirror(tmp_path, "a", {"Python-3.11.2.tgz": GOOD})
    assert fetch_source(python, mirrors=[mirror], cache_dir=cache).path == (
        cache / "Python-3.11.2.tgz"
    )


class _Interrupting:
    """Wraps a real response; the second read1() is a Ctrl-C in the middle of the download."""

    def __init__(self, response: Any, cache: Path) -> None:
        self._response = response
        self._cache = cache
        self.headers = response.headers
        self.reads = 0
        self.partial_seen: list[str] = []

    def read1(self, amount: int) -> bytes:
        self.reads += 1
        if self.reads == 2:
            self.partial_seen = [p.name for p in self._cache.iterdir() if ".part-" in p.name]
            raise KeyboardInterrupt
        data: bytes = self._response.read1(amount)
        return data

    def __enter__(self) -> _Interrupting:
        return self

    def __exit__(self, *exc: object) -> None:
        self._response.close()


def test_interrupt_mid_stream_leaves_nothing(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = bytes(range(256)) * (10 * 1024)  # 2.5 MiB: several 1 MiB chunks
    mirror = make_mirror(tmp_path, "a", {TARBALL: big})
    # file:// mirrors are opened by sources.http.LocalFile (the safe reader), not urllib.
    real = sources_http.LocalFile
    wrappers: list[_Interrupting] = []

    def interrupting(path: Path) -> Any:
        wrapper = _Interrupting(real(path), cache)
        wrappers.append(wrapper)
        return wrapper

    monkeypatch.setattr(sources_http, "LocalFile", interrupting)
    with pytest.raises(KeyboardInterrupt):
        fetch_source(make_python(big), mirrors=[mirror, mirror], cache_dir=cache)
    assert len(wrappers) == 1  # Ctrl-C stops everything: no retry, no next mirror
    assert wrappers[0].partial_seen  # a temp file really was being written...
    assert cache_entries(cache) == []  # ...and it is gone, with no final file either


def test_transient_errors_are_retried(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mirror = make_mirror(tmp_path, "a", {TARBALL: GOOD})
    real = sources_http.LocalFile
    calls: list[Path] = []

    def flaky(path: Path) -> Any:
        calls.append(path)
        if len(calls) <= 2:
            reset = urllib.error.URLError(ConnectionResetError(104, "Connection reset by peer"))
            raise sources_http.classify(reset, 30)
        return real(path)

    monkeypatch.setattr(sources_http, "LocalFile", flaky)
    lines: list[str] = []
    got = fetch_source(make_python(), mirrors=[mirror], cache_dir=cache, progress=lines.append)
    assert got.url == mirror.format(filename=TARBALL)
    assert len(calls) == 3
    assert sum("retrying" in line for line in lines) == 2


def test_retries_are_bounded(tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def always_timing_out(request: urllib.request.Request, **kwargs: Any) -> Any:
        calls.append(request.full_url)
        raise urllib.error.URLError(TimeoutError("timed out"))

    monkeypatch.setattr(urllib.request, "urlopen", always_timing_out)
    with pytest.raises(SourceError, match=r"timed out after 7s"):
        fetch_source(
            make_python(), mirrors=["https://mirror.invalid/{filename}"], cache_dir=cache, timeout=7
        )
    assert len(calls) == sources.RETRY_ATTEMPTS


def test_dns_failure_is_not_retried(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    calls: list[str] = []

    def no_such_host(request: urllib.request.Request, **kwargs: Any) -> Any:
        calls.append(request.full_url)
        raise urllib.error.URLError(socket.gaierror(-2, "Name or service not known"))

    monkeypatch.setattr(urllib.request, "urlopen", no_such_host)
    with pytest.raises(SourceError, match=r"mirror\.invalid/Python-3\.13\.5\.tar\.xz: host not"):
        fetch_source(make_python(), mirrors=["https://mirror.invalid/{filename}"], cache_dir=cache)
    assert len(calls) == 1


def test_dangling_symlink_in_cache_is_replaced(tmp_path: Path, cache: Path) -> None:
    cache.mkdir(parents=True)
    (cache / TARBALL).symlink_to(tmp_path / "gone")
    mirror = make_mirror(tmp_path, "a", {TARBALL: GOOD})
    got = fetch_source(make_python(), mirrors=[mirror], cache_dir=cache)
    assert got.url is not None
    assert not got.path.is_symlink()
    assert got.path.read_bytes() == GOOD
