"""Upstream signatures on top of the sha256 pin, through fetch_source with file:// mirrors
(no network): policy per version, OpenPGP, Sigstore bundles as far as they can be checked
offline, and what is recorded."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from packaging.version import Version

from orchestrator.errors import ConfigError, SignatureError
from orchestrator.matrix import PythonSource
from orchestrator.matrix.schema import SignatureSettings
from orchestrator.sources.fetch import fetch_source
from orchestrator.sources.signatures import SignaturePolicy, policy_for
from orchestrator.sources.signatures.sigstore_bundles import verify_bundle
from tests.gpg_support import ThrowawayKey, make_key

TARBALL = b"pretend this is Python-3.13.5.tar.xz\n" * 200


@pytest.fixture(scope="module")
def rm_key(tmp_path_factory: pytest.TempPathFactory) -> ThrowawayKey:
    return make_key(tmp_path_factory.mktemp("rm"))


def _setup(tmp_path: Path, rm_key: ThrowawayKey, *, sign: bool = True) -> tuple[Path, Path]:
    """A mirror with the tarball (and its .asc), and a project root with keys/."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    tarball = mirror / "Python-3.13.5.tar.xz"
    tarball.write_bytes(TARBALL)
    if sign:
        rm_key.sign_detached(tarball, mirror / "Python-3.13.5.tar.xz.asc")
    root = tmp_path / "project"
    (root / "keys").mkdir(parents=True)
    (root / "keys" / f"{rm_key.fingerprint}.asc").write_bytes(rm_key.public_key.read_bytes())
    return mirror, root


def _settings(rm_key: ThrowawayKey, **extra: object) -> SignatureSettings:
    return SignatureSettings.model_validate(
        {"openpgp": [{"python": ">=3.12,<3.14", "fingerprints": [rm_key.fingerprint]}], **extra}
    )


def _fetch(mirror: Path, cache: Path, policy: SignaturePolicy, data: bytes = TARBALL) -> object:
    python = PythonSource(version="3.13.5", sha256=hashlib.sha256(data).hexdigest())
    return fetch_source(
        python,
        mirrors=[f"{mirror.as_uri()}/{{filename}}"],
        cache_dir=cache,
        signatures=policy,
    )


def test_policy_is_chosen_by_version(rm_key: ThrowawayKey, tmp_path: Path) -> None:
    _, root = _setup(tmp_path, rm_key)
    settings = _settings(
        rm_key,
        sigstore=[
            {
                "python": ">=3.14,<3.15",
                "identity": "hugo@python.org",
                "issuer": "https://github.com/login/oauth",
            }
        ],
    )
    assert policy_for(settings, root=root, version=Version("3.13.5")).openpgp_fingerprints == (
        rm_key.fingerprint,
    )
    later = policy_for(settings, root=root, version=Version("3.14.10"))
    assert later.openpgp_fingerprints == () and later.sigstore is not None
    assert later.sigstore.identity == "hugo@python.org"
    assert not policy_for(settings, root=root, version=Version("3.11.2")).pins_anything
    (root / "keys" / f"{rm_key.fingerprint}.asc").unlink()
    with pytest.raises(ConfigError, match="no such key file"):
        policy_for(settings, root=root, version=Version("3.13.5"))


def test_good_signature_is_recorded(rm_key: ThrowawayKey, tmp_path: Path) -> None:
    mirror, root = _setup(tmp_path, rm_key)
    policy = policy_for(_settings(rm_key), root=root, version=Version("3.13.5"))
    fetched = _fetch(mirror, tmp_path / "cache", policy)
    proof = fetched.proof  # type: ignore[attr-defined]
    assert proof.methods == ["sha256", "openpgp"]
    record = proof.record()
    assert record["openpgp"]["fingerprint"] == rm_key.fingerprint
    assert record["openpgp"]["signature_url"].endswith("Python-3.13.5.tar.xz.asc")
    assert (tmp_path / "cache" / "Python-3.13.5.tar.xz.asc").is_file()
    # From the cache next time, verified again, no mirror needed.
    (mirror / "Python-3.13.5.tar.xz.asc").unlink()
    again = _fetch(mirror, tmp_path / "cache", policy)
    assert again.proof.methods == ["sha256", "openpgp"]  # type: ignore[attr-defined]


def test_missing_signature_is_fatal_only_when_required(
    rm_key: ThrowawayKey, tmp_path: Path
) -> None:
    mirror, root = _setup(tmp_path, rm_key, sign=False)
    relaxed = policy_for(_settings(rm_key), root=root, version=Version("3.13.5"))
    proof = _fetch(mirror, tmp_path / "cache1", relaxed).proof  # type: ignore[attr-defined]
    assert proof.methods == ["sha256"] and "no OpenPGP signature" in proof.notes[0]
    strict = policy_for(_settings(rm_key, required=True), root=root, version=Version("3.13.5"))
    with pytest.raises(SignatureError, match="no upstream signature could be checked"):
        _fetch(mirror, tmp_path / "cache2", strict)
    assert not (tmp_path / "cache2" / "Python-3.13.5.tar.xz").exists()


def test_bad_signature_is_always_fatal_and_nothing_is_kept(
    rm_key: ThrowawayKey, tmp_path: Path
) -> None:
    mirror, root = _setup(tmp_path, rm_key)
    # An attacker who controls the mirror and the pin (say, a compromised feed): the hash
    # matches, the signature does not.
    evil = TARBALL.replace(b"pretend", b"backdoor")
    (mirror / "Python-3.13.5.tar.xz").write_bytes(evil)
    policy = policy_for(_settings(rm_key), root=root, version=Version("3.13.5"))
    with pytest.raises(SignatureError, match="BAD OpenPGP signature"):
        _fetch(mirror, tmp_path / "cache", policy, data=evil)
    assert list((tmp_path / "cache").iterdir()) == []


def test_sigstore_bundle_that_is_not_one_is_refused(tmp_path: Path) -> None:
    bundle = tmp_path / "Python-3.14.0.tar.xz.sigstore"
    bundle.write_text(json.dumps({"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json"}))
    with pytest.raises(SignatureError, match="is not a Sigstore bundle"):
        verify_bundle(
            "0" * 64,
            bundle,
            identity="hugo@python.org",
            issuer="https://github.com/login/oauth",
            what="3.14.0",
        )
