"""OpenPGP checks with the real GnuPG (gpg, gpgv) and throwaway keys: no network, no Docker."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from orchestrator.errors import FileRefused, SignatureError
from orchestrator.sources.signatures.openpgp import (
    KEY_FILE_LIMIT,
    Keyring,
    verify_clearsigned,
    verify_detached,
)
from tests.gpg_support import ThrowawayKey, make_key


@pytest.fixture(scope="module")
def release_key(tmp_path_factory: pytest.TempPathFactory) -> ThrowawayKey:
    return make_key(tmp_path_factory.mktemp("rm"))


@pytest.fixture(scope="module")
def other_key(tmp_path_factory: pytest.TempPathFactory) -> ThrowawayKey:
    return make_key(tmp_path_factory.mktemp("other"), name="Someone Else <x@example.org>")


@pytest.fixture
def tarball(tmp_path: Path) -> Path:
    path = tmp_path / "Python-3.13.5.tar.xz"
    path.write_bytes(b"pretend tarball\n" * 1000)
    return path


def test_good_signature_names_the_pinned_key(
    release_key: ThrowawayKey, tarball: Path, tmp_path: Path
) -> None:
    signature = release_key.sign_detached(tarball, tmp_path / "sig.asc")
    with Keyring([release_key.public_key]) as keyring:
        good = verify_detached(
            tarball, signature, keyring=keyring, allowed=[release_key.fingerprint], what="t"
        )
    assert good.fingerprint == release_key.fingerprint
    assert good.signer == "Test Release Manager <rm@example.org>"


def test_one_changed_byte_is_a_bad_signature(
    release_key: ThrowawayKey, tarball: Path, tmp_path: Path
) -> None:
    signature = release_key.sign_detached(tarball, tmp_path / "sig.asc")
    data = bytearray(tarball.read_bytes())
    data[100] ^= 1
    tarball.write_bytes(bytes(data))
    with Keyring([release_key.public_key]) as keyring, pytest.raises(SignatureError, match="BAD"):
        verify_detached(
            tarball, signature, keyring=keyring, allowed=[release_key.fingerprint], what="t"
        )


def test_a_key_that_is_not_pinned_is_refused(
    release_key: ThrowawayKey, other_key: ThrowawayKey, tarball: Path, tmp_path: Path
) -> None:
    signature = other_key.sign_detached(tarball, tmp_path / "sig.asc")
    # Not in the keyring at all: gpgv cannot even find the key.
    with (
        Keyring([release_key.public_key]) as keyring,
        pytest.raises(SignatureError, match=f"{other_key.fingerprint}.*not pinned"),
    ):
        verify_detached(
            tarball, signature, keyring=keyring, allowed=[release_key.fingerprint], what="t"
        )
    # In the keyring (pinned for another version), but not for this one.
    with (
        Keyring([release_key.public_key, other_key.public_key]) as keyring,
        pytest.raises(SignatureError, match="not pinned for it"),
    ):
        verify_detached(
            tarball, signature, keyring=keyring, allowed=[release_key.fingerprint], what="t"
        )


def test_expiry_is_judged_at_signing_time(tmp_path: Path, tarball: Path) -> None:
    """Signed while valid, key expired since: good. Signed after the expiry date: refused."""
    key = make_key(tmp_path / "k", faked_time="20200101T000000")
    early = key.sign_detached(tarball, tmp_path / "early.asc", faked_time="20200601T000000")
    late = key.sign_detached(tarball, tmp_path / "late.asc", faked_time="20220101T000000")
    # Only now does the key get an expiry date (1 January 2021) that both signatures postdate
    # or predate: a self-signature dated mid-2020 sets it.
    key.set_expiry("2021-01-01", faked_time="20200701T000000")
    with Keyring([key.public_key]) as keyring:
        good = verify_detached(tarball, early, keyring=keyring, allowed=[key.fingerprint], what="t")
        assert good.key_expires is not None and good.signed_at < good.key_expires
        assert "expired 2021-01-01 after signing" in good.describe()
        with pytest.raises(SignatureError, match="which had expired 2021-01-01"):
            verify_detached(tarball, late, keyring=keyring, allowed=[key.fingerprint], what="t")


def test_clearsigned_content_is_only_the_signed_part(
    release_key: ThrowawayKey, tmp_path: Path
) -> None:
    content = tmp_path / "Release"
    content.write_text("Origin: Test\nSHA256:\n abc 1 main/source/Sources.xz\n")
    signed = release_key.clearsign(content, tmp_path / "InRelease")
    keyring = release_key.export_binary(tmp_path / "keyring.gpg")
    assert verify_clearsigned(signed, keyring=keyring, what="t") == content.read_bytes()
    # Text added outside the signature is not returned, and text changed inside it fails.
    tampered = signed.read_text().replace("Origin: Test", "Origin: Evil")
    (tmp_path / "Tampered").write_text(tampered)
    with pytest.raises(SignatureError, match="does not verify"):
        verify_clearsigned(tmp_path / "Tampered", keyring=keyring, what="t")


def test_a_file_that_is_not_a_key_is_one_clear_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.asc"
    junk.write_text("not a key\n")
    with pytest.raises(SignatureError, match="not an OpenPGP public key"), Keyring([junk]):
        pass
    # gpg's own reason is in the line, not a guess of ours.
    with (
        pytest.raises(SignatureError, match=r"gpg: .*no valid OpenPGP data found"),
        Keyring([junk]),
    ):
        pass


def _long_directory(base: Path, length: int = 200) -> Path:
    stem = str(base / "t")
    path = Path(stem + "x" * (length - len(stem)))
    path.mkdir()
    assert len(str(path)) == length
    return path


def test_no_agent_is_needed_under_a_200_character_tmpdir(
    release_key: ThrowawayKey, tarball: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Finding 2 of issue 16: `gpg --import` into a home under a deep TMPDIR asked gpg-agent,
    # whose socket path is limited to ~107 bytes; exit 2 was reported as "not an OpenPGP
    # public key". The keyring is now built without importing (no agent at all).
    signature = release_key.sign_detached(tarball, tmp_path / "sig.asc")
    tmpdir = _long_directory(tmp_path)
    monkeypatch.setattr(tempfile, "tempdir", str(tmpdir))
    with Keyring([release_key.public_key]) as keyring:
        assert keyring.path.is_relative_to(tmpdir)
        good = verify_detached(
            tarball, signature, keyring=keyring, allowed=[release_key.fingerprint], what="t"
        )
    assert good.fingerprint == release_key.fingerprint
    assert list(tmpdir.iterdir()) == []


def test_a_binary_key_file_works_too(
    release_key: ThrowawayKey, tarball: Path, tmp_path: Path
) -> None:
    signature = release_key.sign_detached(tarball, tmp_path / "sig.asc")
    binary = release_key.export_binary(tmp_path / "key.gpg")
    with Keyring([binary]) as keyring:
        verify_detached(
            tarball, signature, keyring=keyring, allowed=[release_key.fingerprint], what="t"
        )


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "directory", "too-big"])
def test_a_key_file_that_is_not_a_small_regular_file_is_refused_unread(
    kind: str, tmp_path: Path
) -> None:
    path = tmp_path / "key.asc"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "dev-zero":
        path.symlink_to("/dev/zero")
    elif kind == "directory":
        path.mkdir()
    else:
        path.write_bytes(b"x" * (KEY_FILE_LIMIT + 1))
    with pytest.raises(FileRefused, match=r"not a regular file|over the limit"), Keyring([path]):
        pass
