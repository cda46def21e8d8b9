"""Upstream signatures on source tarballs, checked on top of the sha256 pin.

`policy_for` says which signers matrix.yaml pins for a version (OpenPGP keys by fingerprint,
a Sigstore identity and issuer). `prove_source` finds the signatures upstream publishes
beside the tarball (`<tarball URL>.asc`, `<tarball URL>.sigstore`, at any mirror), keeps
them in the source cache, checks them and returns a SourceProof: what was verified, which
goes into the metadata and the manifests. A bad signature is always fatal; a missing one
only when `signatures.required` is true.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.version import Version

from orchestrator.errors import ConfigError, FileRefused, SignatureError
from orchestrator.fsutil import check_regular, write_atomic
from orchestrator.matrix.schema import SignatureSettings, SigstoreSigner
from orchestrator.sources.http import TransferFailed, read_url
from orchestrator.sources.signatures.openpgp import (
    KEY_FILE_LIMIT,
    GoodSignature,
    Keyring,
    verify_detached,
)
from orchestrator.sources.signatures.sigstore_bundles import (
    SigstoreProof,
    SigstoreUnavailable,
    verify_bundle,
)

Progress = Callable[[str], None]
SIGNATURE_LIMIT = 1024 * 1024  # an .asc is ~1 KB, a Sigstore bundle ~10 KB
SIGNATURE_TIMEOUT = 30.0


@dataclass(frozen=True, kw_only=True)
class SignaturePolicy:
    """What must or may sign one version's tarball."""

    version: str
    required: bool
    openpgp_fingerprints: tuple[str, ...] = ()
    key_files: tuple[Path, ...] = ()
    sigstore: SigstoreSigner | None = None

    @property
    def pins_anything(self) -> bool:
        return bool(self.openpgp_fingerprints) or self.sigstore is not None


def policy_for(settings: SignatureSettings, *, root: Path, version: Version) -> SignaturePolicy:
    """The signers pinned for `version`; a pinned key without its file is a ConfigError."""
    fingerprints: list[str] = []
    for entry in settings.openpgp:
        if entry.applies_to(version):
            fingerprints.extend(fp for fp in entry.fingerprints if fp not in fingerprints)
    keys_dir = root / settings.keys_dir
    key_files = tuple(keys_dir / f"{fingerprint}.asc" for fingerprint in fingerprints)
    for path in key_files:
        try:
            check_regular(path, limit=KEY_FILE_LIMIT)
        except FileRefused as exc:
            if not exc.missing:
                raise
            raise ConfigError(
                f"{path}: no such key file (pinned in matrix.yaml signatures.openpgp)",
                hint="add the release manager's public key there, named by its fingerprint",
            ) from None
    sigstore = next((entry for entry in settings.sigstore if entry.applies_to(version)), None)
    return SignaturePolicy(
        version=str(version),
        required=settings.required,
        openpgp_fingerprints=tuple(fingerprints),
        key_files=key_files,
        sigstore=sigstore,
    )


@dataclass(frozen=True, kw_only=True)
class SourceProof:
    """What is known about a tarball beyond its name: always its pinned sha256, and the
    upstream signatures that verified."""

    sha256: str
    openpgp: GoodSignature | None = None
    openpgp_url: str | None = None
    sigstore: SigstoreProof | None = None
    sigstore_url: str | None = None
    notes: tuple[str, ...] = ()

    @property
    def methods(self) -> list[str]:
        methods = ["sha256"]
        if self.openpgp:
            methods.append("openpgp")
        if self.sigstore:
            methods.append("sigstore")
        return methods

    def describe(self) -> str:
        parts = [f"sha256 {self.sha256[:16]}..."]
        if self.openpgp:
            parts.append(f"OpenPGP: {self.openpgp.describe()}")
        if self.sigstore:
            parts.append(f"Sigstore: {self.sigstore.describe()}")
        if len(parts) == 1:
            parts.append("no upstream signature checked")
        return "; ".join(parts)

    def record(self) -> dict[str, Any]:
        """For the metadata's source.verification."""
        openpgp = None
        if self.openpgp:
            openpgp = {
                "fingerprint": self.openpgp.fingerprint,
                "signing_key": self.openpgp.signing_key,
                "signer": self.openpgp.signer,
                "signed_at": self.openpgp.signed_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "key_expires": self.openpgp.key_expires.strftime("%Y-%m-%dT%H:%M:%SZ")
                if self.openpgp.key_expires
                else None,
                "signature_url": self.openpgp_url,
            }
        sigstore = None
        if self.sigstore:
            sigstore = {
                "identity": self.sigstore.identity,
                "issuer": self.sigstore.issuer,
                "bundle_url": self.sigstore_url,
            }
        return {
            "methods": self.methods,
            "openpgp": openpgp,
            "sigstore": sigstore,
            "notes": list(self.notes),
        }


def _obtain(
    name: str, urls: Sequence[str], cache_dir: Path, progress: Progress
) -> tuple[Path | None, str | None, list[str]]:
    """A signature file from the cache, else from the first URL that serves it.

    Returns (path, url it came from or None when cached, reasons per URL that did not).
    """
    cached = cache_dir / name
    try:
        check_regular(cached, limit=SIGNATURE_LIMIT)
    except FileRefused as exc:
        if not exc.missing:
            raise SignatureError(
                str(exc), hint="remove it; the signature is fetched again"
            ) from None
    else:
        return cached, None, []
    reasons: list[str] = []
    for url in urls:
        try:
            body = read_url(url, timeout=SIGNATURE_TIMEOUT, limit=SIGNATURE_LIMIT)
        except TransferFailed as exc:
            reasons.append(f"{url}: {exc.reason}")
            continue
        try:
            write_atomic(cached, body)
        except OSError as exc:
            raise SignatureError(f"cannot write {cached}: {exc.strerror or exc}") from None
        progress(f"fetched {url}")
        return cached, url, reasons
    return None, None, reasons


def prove_source(
    tarball: Path,
    *,
    sha256: str,
    tarball_urls: Sequence[str],
    cache_dir: Path,
    policy: SignaturePolicy,
    progress: Progress,
) -> SourceProof:
    """Check the signatures pinned for this version; raise SignatureError when one is bad, or
    when none could be checked and the matrix requires one."""
    what = f"{tarball.name} ({policy.version})"
    notes: list[str] = []
    openpgp: GoodSignature | None = None
    openpgp_url: str | None = None
    sigstore: SigstoreProof | None = None
    sigstore_url: str | None = None

    if policy.openpgp_fingerprints:
        path, url, reasons = _obtain(
            f"{tarball.name}.asc", [f"{u}.asc" for u in tarball_urls], cache_dir, progress
        )
        if path is None:
            notes.append(f"no OpenPGP signature (.asc) at any mirror ({len(reasons)} tried)")
        else:
            # A key file gpg cannot read is the matrix's problem, not the signature's: only a
            # signature that fails to verify is removed from the cache.
            with Keyring(policy.key_files) as keyring:
                try:
                    openpgp = verify_detached(
                        tarball,
                        path,
                        keyring=keyring,
                        allowed=policy.openpgp_fingerprints,
                        what=what,
                    )
                except SignatureError:
                    path.unlink(missing_ok=True)  # fetched again next time; this run fails
                    raise
            openpgp_url = url or "cache"
            progress(f"OpenPGP signature good: {openpgp.describe()}")

    if policy.sigstore is not None:
        signer = policy.sigstore
        path, url, reasons = _obtain(
            f"{tarball.name}.sigstore",
            [f"{u}.sigstore" for u in tarball_urls],
            cache_dir,
            progress,
        )
        if path is None:
            notes.append(f"no Sigstore bundle (.sigstore) at any mirror ({len(reasons)} tried)")
        else:
            try:
                sigstore = verify_bundle(
                    sha256, path, identity=signer.identity, issuer=signer.issuer, what=what
                )
            except SignatureError:
                path.unlink(missing_ok=True)
                raise
            except SigstoreUnavailable as exc:
                notes.append(f"Sigstore bundle not checked: {exc}")
            else:
                sigstore_url = url or "cache"
                progress(f"Sigstore signature good: {sigstore.describe()}")

    if not policy.pins_anything:
        notes.append(f"no signer pinned for {policy.version} in matrix.yaml signatures")
    if policy.required and openpgp is None and sigstore is None:
        raise SignatureError(
            f"{what}: no upstream signature could be checked ({'; '.join(notes)})",
            hint="signatures.required is true in matrix.yaml; add a mirror that serves the "
            "signature, or pin the signer for this version",
        )
    return SourceProof(
        sha256=sha256,
        openpgp=openpgp,
        openpgp_url=openpgp_url,
        sigstore=sigstore,
        sigstore_url=sigstore_url,
        notes=tuple(notes),
    )
