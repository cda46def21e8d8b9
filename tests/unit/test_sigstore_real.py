"""Sigstore bundles that were really signed, verified offline with the trust root the
`sigstore` package ships, through the farm's own verify_bundle: the right identity is
accepted; a changed byte, another identity, another issuer and another Sigstore instance are
refused. Data and provenance: tests/unit/data/sigstore/PROVENANCE.md."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from orchestrator.errors import SignatureError
from orchestrator.sources.signatures.sigstore_bundles import SigstoreProof, verify_bundle

DATA = Path(__file__).parent / "data" / "sigstore"
WHEEL = DATA / "rfc8785-0.1.2-py3-none-any.whl"
BUNDLE = DATA / "rfc8785-0.1.2-py3-none-any.whl.sigstore"
IDENTITY = (
    "https://github.com/trailofbits/rfc8785.py/.github/workflows/release.yml@refs/tags/v0.1.2"
)
ISSUER = "https://token.actions.githubusercontent.com"


@pytest.fixture(autouse=True)
def packaged_trust_root_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No TUF cache of the user's: the trust root is the one the package ships."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_the_signed_artifact_is_accepted_for_its_identity() -> None:
    proof = verify_bundle(
        _sha256(WHEEL.read_bytes()), BUNDLE, identity=IDENTITY, issuer=ISSUER, what="rfc8785"
    )
    assert proof == SigstoreProof(identity=IDENTITY, issuer=ISSUER)


@pytest.mark.parametrize("offset", [0, 4096, -1])
def test_a_changed_byte_is_refused(offset: int) -> None:
    data = bytearray(WHEEL.read_bytes())
    data[offset] ^= 0x01
    with pytest.raises(SignatureError, match="REJECTED") as raised:
        verify_bundle(_sha256(bytes(data)), BUNDLE, identity=IDENTITY, issuer=ISSUER, what="x")
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    ("identity", "issuer"),
    [
        # Another identity: the same workflow at another tag, another repository, a person.
        (IDENTITY.replace("v0.1.2", "v0.1.3"), ISSUER),
        (IDENTITY.replace("rfc8785.py", "other.py"), ISSUER),
        ("hugo@python.org", ISSUER),
        # The right identity from another issuer.
        (IDENTITY, "https://accounts.google.com"),
        (IDENTITY, "https://github.com/login/oauth"),
    ],
)
def test_another_identity_or_issuer_is_refused(identity: str, issuer: str) -> None:
    with pytest.raises(SignatureError, match="REJECTED for") as raised:
        verify_bundle(
            _sha256(WHEEL.read_bytes()), BUNDLE, identity=identity, issuer=issuer, what="x"
        )
    assert identity in str(raised.value) and "\n" not in str(raised.value)


def test_a_bundle_of_the_staging_instance_is_refused_by_the_production_trust_root() -> None:
    artifact = DATA / "staging-bundle_v3.txt"
    with pytest.raises(SignatureError, match="REJECTED"):
        verify_bundle(
            _sha256(artifact.read_bytes()),
            DATA / "staging-bundle_v3.txt.sigstore",
            identity="william@yossarian.net",
            issuer="https://github.com/login/oauth",
            what="x",
        )
