"""Sigstore bundles (PEP 761: python.org signs 3.14+ with Sigstore only), checked offline.

The `sigstore` package ships Sigstore's production trust root (Fulcio CAs, Rekor and CT log
keys); `Verifier.production(offline=True)` uses it, or a newer copy from its local TUF cache,
without contacting the network. The policy is the release manager's identity and OIDC issuer
pinned per minor in matrix.yaml, as Heroku pins them for `cosign verify-blob`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import FileRefused, SignatureError
from orchestrator.fsutil import read_regular

BUNDLE_LIMIT = 1024 * 1024  # a bundle is ~10 KB (signatures.SIGNATURE_LIMIT)


class SigstoreUnavailable(Exception):
    """The trust root could not be loaded: a signature exists but cannot be judged here."""


@dataclass(frozen=True, kw_only=True)
class SigstoreProof:
    identity: str
    issuer: str

    def describe(self) -> str:
        return f"{self.identity} via {self.issuer}"


def verify_bundle(
    sha256: str, bundle_path: Path, *, identity: str, issuer: str, what: str
) -> SigstoreProof:
    """Check the bundle at `bundle_path` signs the file with this sha256, for this identity.

    Raises SignatureError for a malformed bundle, a signature over other bytes, or another
    signer; SigstoreUnavailable when the trust root cannot be loaded offline.
    """
    # Imported here: sigstore pulls in cryptography, TUF and friends (slow to import).
    from sigstore.errors import Error as SigstoreError
    from sigstore.hashes import Hashed
    from sigstore.models import Bundle
    from sigstore.verify import Verifier
    from sigstore.verify.policy import Identity
    from sigstore_models.common.v1 import HashAlgorithm

    try:
        bundle = Bundle.from_json(read_regular(bundle_path, limit=BUNDLE_LIMIT))
    except FileRefused as exc:
        raise SignatureError(f"{what}: {exc}") from None
    except OSError as exc:
        raise SignatureError(f"{what}: cannot read {bundle_path}: {exc.strerror or exc}") from None
    except Exception as exc:  # the parser raises several kinds for bad JSON/protobuf
        first = str(exc).strip().splitlines()[:1]
        raise SignatureError(
            f"{what}: {bundle_path.name} is not a Sigstore bundle ({' '.join(first)})"
        ) from None
    try:
        verifier = Verifier.production(offline=True)
    except Exception as exc:
        raise SigstoreUnavailable(f"Sigstore trust root not available offline: {exc}") from None
    digest = Hashed(algorithm=HashAlgorithm.SHA2_256, digest=bytes.fromhex(sha256))
    try:
        verifier.verify_artifact(digest, bundle, Identity(identity=identity, issuer=issuer))
    except SigstoreError as exc:
        raise SignatureError(
            f"{what}: Sigstore bundle {bundle_path.name} REJECTED for {identity} via {issuer}: "
            f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}",
            hint="the tarball, the bundle or the signer is not what matrix.yaml pins",
        ) from None
    return SigstoreProof(identity=identity, issuer=issuer)
