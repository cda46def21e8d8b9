"""The debian-sources feed on a Debian-shaped archive under tmp_path (file://, no network)."""

from __future__ import annotations

import lzma
from pathlib import Path

import pytest

from orchestrator.errors import FeedError
from orchestrator.matrix.schema import DebianSourcesFeedSettings
from orchestrator.sources.feeds import FeedUnavailable, debian
from orchestrator.sources.feeds.debian import DebianSourcesFeed
from tests.feeds_support import DebianPackage, write_debian_suite
from tests.gpg_support import ThrowawayKey, make_key

SHA_A = "a" * 64
SHA_B = "b" * 64
SHA_C = "c" * 64


@pytest.fixture(scope="module")
def archive_key(tmp_path_factory: pytest.TempPathFactory) -> ThrowawayKey:
    return make_key(tmp_path_factory.mktemp("archive-key"), name="Test Archive <ftp@example.org>")


def _feed(archive: Path, keyring: Path | None = None, suite: str = "sid") -> DebianSourcesFeed:
    settings = DebianSourcesFeedSettings(
        kind="debian-sources",
        name=f"debian-{suite}",
        archive=archive.as_uri(),
        suite=suite,
        keyring=keyring,
    )
    return DebianSourcesFeed(settings, root=archive)


PACKAGES = [
    DebianPackage(package="python3.13", version="3.13.18-1", orig_sha256=SHA_A, with_asc=True),
    DebianPackage(
        package="python3.11", version="3.11.2-6+deb12u8", orig_sha256=SHA_B, orig_ext="tar.gz"
    ),
    DebianPackage(package="python3.15", version="3.15.0~rc1-1", orig_sha256=SHA_C),
    # Repacked tarballs are not upstream's: skipped.
    DebianPackage(package="python3.12", version="3.12.3+dfsg-1", orig_sha256=SHA_C),
]


def test_releases_carry_upstream_names_hashes_and_signature_urls(tmp_path: Path) -> None:
    write_debian_suite(tmp_path, "sid", PACKAGES)
    releases = {r.version: r for r in _feed(tmp_path).releases()}
    assert sorted(releases) == ["3.11.2", "3.13.18", "3.15.0rc1"]
    new = releases["3.13.18"]
    assert (new.filename, new.sha256, new.feed) == ("Python-3.13.18.tar.xz", SHA_A, "debian-sid")
    assert new.url == f"{tmp_path.as_uri()}/pool/main/p/python3.13/python3.13_3.13.18.orig.tar.xz"
    assert new.signature_url == f"{new.url}.asc" and new.signature_kind == "openpgp"
    assert "python3.13 3.13.18-1 in " in new.origin
    # Debian's .orig.tar.gz is upstream's .tgz; ~rc1 is upstream's rc1.
    assert releases["3.11.2"].filename == "Python-3.11.2.tgz"
    assert releases["3.11.2"].signature_url is None
    assert releases["3.15.0rc1"].filename == "Python-3.15.0rc1.tar.xz"


def test_signed_inrelease_proves_the_index(tmp_path: Path, archive_key: ThrowawayKey) -> None:
    write_debian_suite(tmp_path, "sid", PACKAGES, signer=archive_key)
    keyring = archive_key.export_binary(tmp_path / "archive-keyring.gpg")
    assert {r.version for r in _feed(tmp_path, keyring).releases()} == {
        "3.11.2",
        "3.13.18",
        "3.15.0rc1",
    }


def test_an_index_that_is_not_what_inrelease_lists_is_refused(
    tmp_path: Path, archive_key: ThrowawayKey
) -> None:
    evil = [DebianPackage(package="python3.13", version="3.13.18-1", orig_sha256=SHA_B)]
    tampered = lzma.compress(b"".join(p.package.encode() for p in evil))
    write_debian_suite(tmp_path, "sid", PACKAGES, signer=archive_key, sources_bytes=tampered)
    keyring = archive_key.export_binary(tmp_path / "archive-keyring.gpg")
    with pytest.raises(FeedError, match="but the signed InRelease lists"):
        _feed(tmp_path, keyring).releases()


def test_inrelease_signed_by_another_key_is_refused(
    tmp_path: Path, archive_key: ThrowawayKey
) -> None:
    write_debian_suite(tmp_path, "sid", PACKAGES, signer=archive_key)
    stranger = make_key(tmp_path / "stranger")
    keyring = stranger.export_binary(tmp_path / "stranger.gpg")
    with pytest.raises(FeedError, match="does not verify"):
        _feed(tmp_path, keyring).releases()


def test_truncated_index_is_one_error(tmp_path: Path) -> None:
    index = write_debian_suite(tmp_path, "sid", PACKAGES)
    index.write_bytes(index.read_bytes()[: index.stat().st_size // 2])
    with pytest.raises(FeedError, match="not a readable xz index"):
        _feed(tmp_path).releases()


def test_an_xz_bomb_stops_at_the_text_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = write_debian_suite(tmp_path, "sid", PACKAGES)
    # Real stanzas, then 64 MiB of blank lines: ~10 KB of xz, far over the (lowered) limit.
    text = lzma.decompress(index.read_bytes()) + b"\n" * (64 * 2**20)
    index.write_bytes(lzma.compress(text, preset=1))
    monkeypatch.setattr(debian, "INDEX_TEXT_LIMIT", 2**20)
    with pytest.raises(FeedError, match="decompresses to more than 1 MiB"):
        _feed(tmp_path).releases()


def test_a_line_without_end_is_refused_before_it_fills_memory(tmp_path: Path) -> None:
    index = write_debian_suite(tmp_path, "sid", PACKAGES)
    index.write_bytes(lzma.compress(b"Package: python3.13\nX: " + b"a" * (3 * 2**20), preset=1))
    with pytest.raises(FeedError, match="has a line over 1 MiB"):
        _feed(tmp_path).releases()


def test_a_stanza_with_a_bad_hash_is_one_error(tmp_path: Path) -> None:
    bad = [DebianPackage(package="python3.13", version="3.13.18-1", orig_sha256="zz" * 32)]
    write_debian_suite(tmp_path, "sid", bad)
    with pytest.raises(FeedError, match="is not a sha256"):
        _feed(tmp_path).releases()


def test_missing_suite_is_unavailable_not_an_error(tmp_path: Path) -> None:
    with pytest.raises(FeedUnavailable, match="no such file"):
        _feed(tmp_path, suite="nosuch").releases()
