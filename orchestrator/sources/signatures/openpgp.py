"""OpenPGP signatures, checked with GnuPG's gpgv against keys pinned by full fingerprint.

Only the pinned key files go into the keyring gpgv sees, so "good signature" already means
"made by one of these keys"; the fingerprint check then narrows it to the keys pinned for the
version at hand. Expiry is judged at the time of signing, as OpenPGP intends: a release
manager's key that expired after it signed a release still proves that release (GnuPG
reports such a signature as EXPKEYSIG plus VALIDSIG), while a signature made after the key
expired, or by a revoked key, is refused.
"""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import tempfile
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import SignatureError

GPG_TIMEOUT = 120.0


@dataclass(frozen=True, kw_only=True)
class KeyInfo:
    """A (sub)key as `gpg --with-colons` lists it."""

    fingerprint: str
    primary: str  # fingerprint of its primary key (itself for a primary key)
    expires: dt.datetime | None
    revoked: bool
    uid: str


@dataclass(frozen=True, kw_only=True)
class GoodSignature:
    fingerprint: str  # the primary key's full fingerprint (what the matrix pins)
    signing_key: str  # the (sub)key that made the signature
    signed_at: dt.datetime
    key_expires: dt.datetime | None
    signer: str  # the key's primary user id, for humans

    def describe(self) -> str:
        expiry = ""
        if self.key_expires and self.key_expires <= dt.datetime.now(dt.UTC):
            expiry = f", key expired {self.key_expires:%Y-%m-%d} after signing"
        return f"{self.signer} {self.fingerprint} signed {self.signed_at:%Y-%m-%d}{expiry}"


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise SignatureError(
            f"{name} is not installed; OpenPGP signatures cannot be checked",
            hint="install GnuPG (`apt-get install gpg gpgv`); `make setup` does",
        )
    return path


def _run(args: Sequence[str], *, what: str) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(
            list(args),
            capture_output=True,
            timeout=GPG_TIMEOUT,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise SignatureError(f"{what}: gpg did not finish in {GPG_TIMEOUT:g}s") from None
    except OSError as exc:
        raise SignatureError(f"{what}: cannot run {args[0]}: {exc.strerror or exc}") from None


def _timestamp(field: str) -> dt.datetime | None:
    if not field:
        return None
    if field.isdigit():
        return dt.datetime.fromtimestamp(int(field), dt.UTC)
    # ISO 8601 basic form, which gpg prints for dates past 2038 on some builds.
    return dt.datetime.strptime(field, "%Y%m%dT%H%M%S").replace(tzinfo=dt.UTC)


class Keyring:
    """The given key files imported into a private GnuPG home (no user or system state).

    Use as a context manager; `path` is then a binary keyring for gpgv and `keys` what it holds.
    """

    def __init__(self, key_files: Sequence[Path]) -> None:
        self.key_files = list(key_files)
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.path = Path()
        self.keys: dict[str, KeyInfo] = {}

    def __enter__(self) -> Keyring:
        gpg = _tool("gpg")
        self._tmp = tempfile.TemporaryDirectory(prefix="farm-gnupg-")
        home = Path(self._tmp.name)
        home.chmod(0o700)
        base = [gpg, "--homedir", str(home), "--batch", "--no-options", "--no-autostart"]
        for key_file in self.key_files:
            result = _run([*base, "--import", str(key_file)], what=str(key_file))
            if result.returncode != 0:
                reason = result.stderr.decode(errors="replace").strip().splitlines()[-1:]
                raise SignatureError(f"{key_file}: not an OpenPGP public key ({' '.join(reason)})")
        self.path = home / "pinned.gpg"
        exported = _run([*base, "--export", "--output", str(self.path)], what="keyring")
        if exported.returncode != 0 and self.key_files:
            raise SignatureError(
                f"cannot export the pinned keys: {exported.stderr.decode()[-200:]}"
            )
        self.path.touch()
        listed = _run([*base, "--with-colons", "--fixed-list-mode", "--list-keys"], what="keyring")
        self.keys = _parse_key_listing(listed.stdout.decode(errors="replace"))
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()


def _parse_key_listing(text: str) -> dict[str, KeyInfo]:
    """fingerprint -> KeyInfo for every primary key and subkey in `gpg --with-colons` output
    (--fixed-list-mode: pub, fpr, uid..., then sub, fpr per subkey)."""
    found: dict[str, tuple[list[str], str]] = {}  # fingerprint -> (pub/sub record, primary)
    uids: dict[str, str] = {}
    primary = ""
    pending: list[str] | None = None  # the pub/sub record waiting for its fpr line
    for fields in (line.split(":") for line in text.splitlines()):
        if fields[0] in ("pub", "sub"):
            pending = fields
        elif fields[0] == "fpr" and pending is not None and len(fields) > 9:
            fingerprint = fields[9].upper()
            if pending[0] == "pub":
                primary = fingerprint
            found[fingerprint] = (pending, primary)
            pending = None
        elif fields[0] == "uid" and primary and primary not in uids and len(fields) > 9:
            uids[primary] = fields[9]
    return {
        fingerprint: KeyInfo(
            fingerprint=fingerprint,
            primary=owner,
            expires=_timestamp(record[6]),
            revoked=record[1] == "r",
            uid=uids.get(owner, ""),
        )
        for fingerprint, (record, owner) in found.items()
    }


def verify_detached(
    data: Path,
    signature: Path,
    *,
    keyring: Keyring,
    allowed: Collection[str],
    what: str,
) -> GoodSignature:
    """Check `signature` (an .asc) over `data`; return who signed it, or raise SignatureError.

    `allowed` are the full primary-key fingerprints pinned for this version.
    """
    gpgv = _tool("gpgv")
    result = _run(
        [gpgv, "--status-fd", "1", "--keyring", str(keyring.path), str(signature), str(data)],
        what=what,
    )
    status = [line.split() for line in result.stdout.decode(errors="replace").splitlines()]
    status = [parts[1:] for parts in status if len(parts) > 1 and parts[0] == "[GNUPG:]"]
    words = {parts[0] for parts in status}
    pinned = ", ".join(sorted(allowed)) or "none"
    if "BADSIG" in words:
        raise SignatureError(
            f"{what}: BAD OpenPGP signature ({signature.name}): the file is not what was signed",
            hint="the tarball or its signature was altered; nothing was accepted",
        )
    if "NO_PUBKEY" in words or ("ERRSIG" in words and "VALIDSIG" not in words):
        errsig = next((p for p in status if p[0] == "ERRSIG"), [])
        signer = errsig[7] if len(errsig) > 7 and errsig[7] != "-" else " ".join(errsig[1:2])
        if "NO_PUBKEY" in words and signer.upper() in {fp.upper() for fp in allowed}:
            raise SignatureError(
                f"{what}: signed by pinned key {signer}, but its key file is not in the keyring",
                hint=f"put the public key in the keys directory as {signer}.asc",
            )
        if "NO_PUBKEY" in words:
            raise SignatureError(
                f"{what}: signed by key {signer or '?'}, which is not pinned for it "
                f"(pinned: {pinned})",
                hint="a release is accepted only from the keys matrix.yaml pins for its version",
            )
        raise SignatureError(f"{what}: {signature.name} could not be checked (gpgv: ERRSIG)")
    valid = [p for p in status if p[0] == "VALIDSIG"]
    if not valid or "REVKEYSIG" in words or "EXPSIG" in words:
        why = "revoked key" if "REVKEYSIG" in words else "expired signature"
        if not valid:
            tail = result.stderr.decode(errors="replace").strip().splitlines()[-1:]
            why = " ".join(tail) or f"gpgv exit {result.returncode}"
        raise SignatureError(f"{what}: OpenPGP signature not valid ({why})")
    # VALIDSIG <fpr> <date> <timestamp> <expire> <ver> <reserved> <algo> <hash> <class> <primary>
    fields = valid[0]
    signing_key = fields[1].upper()
    primary = (fields[10] if len(fields) > 10 else fields[1]).upper()
    signed_at = _timestamp(fields[3])
    if signed_at is None:
        raise SignatureError(f"{what}: gpgv reported no signature time")
    if primary not in {fp.upper() for fp in allowed}:
        raise SignatureError(
            f"{what}: signed by {primary}, which is not pinned for it (pinned: {pinned})",
            hint="a release is accepted only from the keys matrix.yaml pins for its version",
        )
    key = keyring.keys.get(signing_key)
    if key is None:
        raise SignatureError(f"{what}: gpgv named key {signing_key}, absent from the keyring")
    if key.revoked:
        raise SignatureError(f"{what}: signed with key {signing_key}, which has been revoked")
    if key.expires is not None and signed_at >= key.expires:
        raise SignatureError(
            f"{what}: signed {signed_at:%Y-%m-%d} with key {signing_key}, which had expired "
            f"{key.expires:%Y-%m-%d}"
        )
    owner = keyring.keys.get(primary)
    return GoodSignature(
        fingerprint=primary,
        signing_key=signing_key,
        signed_at=signed_at,
        key_expires=key.expires,
        signer=owner.uid if owner else "",
    )


def verify_clearsigned(signed: Path, *, keyring: Path, what: str) -> bytes:
    """The content of a clear-signed file (e.g. Debian's InRelease) whose signature gpgv
    accepts with `keyring`; only the signed part is returned."""
    gpgv = _tool("gpgv")
    with tempfile.TemporaryDirectory(prefix="farm-clearsigned-") as tmp:
        output = Path(tmp) / "content"
        result = _run(
            [
                gpgv, "--status-fd", "1", "--keyring", str(keyring),
                "--output", str(output), str(signed),
            ],
            what=what,
        )  # fmt: skip
        status = result.stdout.decode(errors="replace")
        if result.returncode != 0 or "[GNUPG:] VALIDSIG" not in status:
            reason = result.stderr.decode(errors="replace").strip().splitlines()[-1:]
            raise SignatureError(
                f"{what}: its signature does not verify with {keyring} ({' '.join(reason)})",
                hint="the index may have been altered in transit, or the keyring is outdated",
            )
        return output.read_bytes()
