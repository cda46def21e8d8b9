"""Bounded downloads, offline: the pinned size (and the cap without one), what a file:// mirror
may be, the cache's own entries, and sizes carried from the feeds into matrix.yaml."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from tenacity import wait_none

from orchestrator.errors import FeedError, SourceError
from orchestrator.matrix import PythonSource, load_matrix
from orchestrator.matrix.editor import NewPin, edited_text
from orchestrator.matrix.schema import DebianSourcesFeedSettings, PublishSettings, SourceSettings
from orchestrator.sources import fetch as sources
from orchestrator.sources import http
from orchestrator.sources.feeds import Release
from orchestrator.sources.feeds.debian import DebianSourcesFeed
from orchestrator.sources.fetch import fetch_source
from orchestrator.sources.versions import FeedReport, merge, pin_conflicts
from tests.feeds_support import DebianPackage, write_debian_suite

REPO = Path(__file__).resolve().parents[2]
GOOD = b"pretend this is CPython's source tarball\n" * 100
TARBALL = "Python-3.13.5.tar.xz"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pin(data: bytes = GOOD, size: int | None = len(GOOD)) -> PythonSource:
    return PythonSource(version="3.13.5", sha256=sha(data), size=size)


def mirror(tmp_path: Path, name: str, data: bytes | None = None) -> str:
    directory = tmp_path / "mirrors" / name
    directory.mkdir(parents=True)
    if data is not None:
        (directory / TARBALL).write_bytes(data)
    return directory.as_uri() + "/{filename}"


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources, "RETRY_WAIT", wait_none())


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def entries(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir())


# --- the schema --------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, -1, True, "123", 2.0e7, 2 * 1024**3])
def test_a_pinned_size_is_a_positive_integer(size: object) -> None:
    with pytest.raises(ValidationError, match="size"):
        PythonSource(version="3.13.5", sha256="a" * 64, size=size)


def test_size_is_optional_so_older_matrices_load() -> None:
    assert PythonSource(version="3.13.5", sha256="a" * 64).size is None


def test_every_shipped_pin_has_a_size() -> None:
    pythons = load_matrix(REPO / "matrix.yaml").model.pythons
    assert [p.version for p in pythons if p.size is None] == []


def test_deadlines_have_defaults_and_bounds() -> None:
    settings = SourceSettings(mirrors=["https://example.org/{filename}"])
    assert settings.download_deadline_seconds == 600
    assert PublishSettings().deadline_seconds == 60
    for bad in (0, -1, 10**9):
        with pytest.raises(ValidationError, match="download_deadline_seconds"):
            SourceSettings(mirrors=["https://x/{filename}"], download_deadline_seconds=bad)
        with pytest.raises(ValidationError, match="deadline_seconds"):
            PublishSettings(deadline_seconds=bad)


# --- the pinned size ---------------------------------------------------------------------------


def test_a_file_larger_than_the_pin_is_not_read_and_the_next_mirror_is_used(
    tmp_path: Path, cache: Path
) -> None:
    big = mirror(tmp_path, "big", GOOD + b"more")
    good = mirror(tmp_path, "good", GOOD)
    lines: list[str] = []
    got = fetch_source(pin(), mirrors=[big, good], cache_dir=cache, progress=lines.append)
    assert got.url == good.format(filename=TARBALL)
    assert entries(cache) == [TARBALL]
    big_url = big.format(filename=TARBALL)
    assert any(
        line.startswith(f"{big_url}: announces {len(GOOD) + 4} bytes, more than the pinned "
                        f"size of {len(GOOD)} bytes; not read")
        for line in lines
    )  # fmt: skip


def test_only_oversized_mirrors_fail_with_the_sizes_and_a_hint(tmp_path: Path, cache: Path) -> None:
    big = mirror(tmp_path, "big", GOOD + b"more")
    with pytest.raises(SourceError) as info:
        fetch_source(pin(), mirrors=[big], cache_dir=cache)
    assert "1 mirror(s) sent more than the pinned size; nothing was cached" in info.value.message
    assert f"more than the pinned size of {len(GOOD)} bytes" in info.value.message
    assert info.value.hint is not None and "check the size pinned for 3.13.5" in info.value.hint
    assert entries(cache) == []


def test_without_a_pinned_size_the_cap_applies(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sources, "UNPINNED_SIZE_CAP", len(GOOD) - 1)
    with pytest.raises(SourceError, match=rf"the {len(GOOD) - 1} byte cap for a tarball with no"):
        fetch_source(pin(size=None), mirrors=[mirror(tmp_path, "a", GOOD)], cache_dir=cache)
    assert entries(cache) == []


def test_the_right_hash_with_another_size_is_a_mismatch(tmp_path: Path, cache: Path) -> None:
    # Only a wrong pin can do this; it is refused all the same, naming both sizes.
    wrong = PythonSource(version="3.13.5", sha256=sha(GOOD), size=len(GOOD) + 1)
    with pytest.raises(SourceError, match="MISMATCH") as info:
        fetch_source(wrong, mirrors=[mirror(tmp_path, "a", GOOD)], cache_dir=cache)
    assert f"got {len(GOOD)} bytes, pinned {len(GOOD) + 1}" in info.value.message
    assert entries(cache) == []


def test_a_cached_file_of_the_wrong_size_is_fetched_again(tmp_path: Path, cache: Path) -> None:
    cache.mkdir()
    (cache / TARBALL).write_bytes(GOOD + b"!")
    lines: list[str] = []
    got = fetch_source(
        pin(), mirrors=[mirror(tmp_path, "a", GOOD)], cache_dir=cache, progress=lines.append
    )
    assert got.url is not None and got.path.read_bytes() == GOOD
    assert any(f"has {len(GOOD) + 1} bytes, expected the pinned {len(GOOD)}" in x for x in lines)


# --- what a file:// mirror and a cache entry may be ---------------------------------------------


def test_a_directory_as_a_file_mirror_is_refused(tmp_path: Path, cache: Path) -> None:
    odd = mirror(tmp_path, "odd")
    (tmp_path / "mirrors" / "odd" / TARBALL).mkdir()
    good = mirror(tmp_path, "good", GOOD)
    lines: list[str] = []
    got = fetch_source(pin(), mirrors=[odd, good], cache_dir=cache, progress=lines.append)
    assert got.url == good.format(filename=TARBALL)
    assert any("is a directory, not a regular file; not read" in x for x in lines)


def test_a_fifo_in_the_cache_is_refused_without_opening_it(cache: Path) -> None:
    cache.mkdir()
    os.mkfifo(cache / TARBALL)
    result: list[Any] = []

    def run() -> None:
        try:
            fetch_source(pin(), mirrors=["https://mirror.invalid/{filename}"], cache_dir=cache)
        except SourceError as exc:
            result.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(30)  # a guard against hanging the suite, not a timing assertion
    if worker.is_alive():  # it opened the fifo: release it, then fail
        os.close(os.open(cache / TARBALL, os.O_WRONLY))
        pytest.fail("fetch_source opened a fifo in the cache")
    (error,) = result
    assert "not a regular file; not read (expected the source tarball)" in str(error)


# --- sizes from the feeds into matrix.yaml ------------------------------------------------------


def test_debian_index_sizes_reach_the_releases(tmp_path: Path) -> None:
    write_debian_suite(
        tmp_path,
        "sid",
        [DebianPackage(package="python3.13", version="3.13.18-1", orig_sha256="a" * 64,
                       orig_size=23243936),
         DebianPackage(package="python3.11", version="3.11.2-6", orig_sha256="b" * 64,
                       orig_ext="tar.gz", orig_size=26437858)],
    )  # fmt: skip
    settings = DebianSourcesFeedSettings(
        kind="debian-sources", name="debian-sid", archive=tmp_path.as_uri(), suite="sid"
    )
    releases = {r.version: r for r in DebianSourcesFeed(settings, root=tmp_path).releases()}
    assert releases["3.13.18"].size == 23243936
    assert releases["3.11.2"].size == 26437858


@pytest.mark.parametrize("size", [0, -5, 2**40, True])
def test_a_feed_size_that_is_not_a_byte_count_is_refused(size: int) -> None:
    with pytest.raises(FeedError, match="is not a tarball size"):
        _release("python.org", size)


def _release(feed: str, size: int | None, sha256: str = "a" * 64) -> Release:
    return Release(
        version="3.13.18",
        filename="Python-3.13.18.tar.xz",
        sha256=sha256,
        size=size,
        feed=feed,
        origin=f"{feed} fixture",
    )


def _report(*releases: Release) -> FeedReport:
    return FeedReport(name=releases[0].feed, source="fixture", releases=releases)


def test_a_size_only_a_later_feed_states_is_kept() -> None:
    index = merge([_report(_release("python.org", None)), _report(_release("debian-sid", 123))])
    best = index.best("3.13.18")
    assert (best.feed, best.size) == ("python.org", 123)


def test_feeds_that_disagree_on_a_size_stop_everything() -> None:
    with pytest.raises(FeedError, match=r"Python-3\.13\.18\.tar\.xz's size: python.org says 1"):
        merge([_report(_release("python.org", 1)), _report(_release("debian-sid", 2))])


def test_a_pinned_size_that_differs_from_a_feed_is_reported() -> None:
    index = merge([_report(_release("debian-sid", 123))])
    matching = PythonSource(version="3.13.18", sha256="a" * 64, size=123)
    unsized = PythonSource(version="3.13.18", sha256="a" * 64)
    assert pin_conflicts([matching], index) == [] == pin_conflicts([unsized], index)
    (problem,) = pin_conflicts([matching.model_copy(update={"size": 124})], index)
    assert "as 124 bytes, but debian-sid publishes 123" in problem


def test_the_editor_writes_the_size_after_the_sha256() -> None:
    text = (REPO / "matrix.yaml").read_text()
    new = NewPin(version="3.13.99", sha256="ab" * 32, size=23243936, filename=None, comment="c")
    after = edited_text(text, add=[new], drop=[])
    assert f'  - version: "3.13.99"\n    sha256: {"ab" * 32}\n    size: 23243936\n' in after


# --- the body copy itself ------------------------------------------------------------------------


def _file_response(tmp_path: Path, data: bytes) -> Any:
    import urllib.request

    path = tmp_path / "body"
    path.write_bytes(data)
    return urllib.request.urlopen(path.as_uri(), timeout=5)


def test_a_body_of_exactly_the_limit_is_accepted(tmp_path: Path) -> None:
    chunks: list[bytes] = []
    with _file_response(tmp_path, GOOD) as response:
        size = http._copy_body(
            response, chunks.append, timeout=5, limit=len(GOOD), deadline=60,
            started=time.monotonic(),
        )  # fmt: skip
    assert size == len(GOOD) and b"".join(chunks) == GOOD


def test_a_copy_past_its_deadline_stops_before_reading(tmp_path: Path) -> None:
    chunks: list[bytes] = []
    with _file_response(tmp_path, GOOD) as response, pytest.raises(http.DeadlineExceeded) as info:
        http._copy_body(
            response, chunks.append, timeout=5, limit=len(GOOD), deadline=1,
            started=time.monotonic() - 2,  # begun two seconds ago: one over the deadline
        )  # fmt: skip
    assert (info.value.received, chunks) == (0, [])
    assert not info.value.retryable  # the next mirror is the better bet
