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
from orchestrator.fsutil import read_regular

GPG_TIMEOUT = 120.0
KEY_FILE_LIMIT = 1024 * 1024  # an armoured 4096-bit key with its signatures is ~10-100 KB


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


def _run(
    args: Sequence[str], *, what: str, data: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(
            list(args),
            capture_output=True,
            timeout=GPG_TIMEOUT,
            check=False,
            input=data,
            stdin=subprocess.DEVNULL if data is None else None,
        )
    except subprocess.TimeoutExpired:
        raise SignatureError(f"{what}: gpg did not finish in {GPG_TIMEOUT:g}s") from None
    except OSError as exc:
        raise SignatureError(f"{what}: cannot run {args[0]}: {exc.strerror or exc}") from None


def gpg_reason(result: subprocess.CompletedProcess[bytes]) -> str:
    """What gpg (or gpgv) itself said went wrong, as it said it ("gpgv: no signature found"):
    its last line that names the tool (the lines after it are advice), else its last line,
    else its exit status."""
    lines = [line.strip() for line in result.stderr.decode(errors="replace").splitlines()]
    lines = [line for line in lines if line]
    own = [line for line in lines if line.startswith(("gpg: ", "gpgv: "))]
    if own or lines:
        return (own or lines)[-1]
    return f"gpg exit status {result.returncode}"


def _timestamp(field: str) -> dt.datetime | None:
    if not field:
        return None
    if field.isdigit():
        return dt.datetime.fromtimestamp(int(field), dt.UTC)
    # ISO 8601 basic form, which gpg prints for dates past 2038 on some builds.
    return dt.datetime.strptime(field, "%Y%m%dT%H%M%S").replace(tzinfo=dt.UTC)


class Keyring:
    """The given key files as one binary keyring for gpgv, and what they hold (`keys`).

    No GnuPG state is involved: the keys are never imported, so no agent is started or
    asked. (Importing does ask gpg-agent, whose socket lives in the GnuPG home; under a temp
    directory longer than a socket path allows, about 107 bytes, the import then fails.) gpg
    only lists the keys (`--show-keys`) and removes their ASCII armour (`--dearmor`), reading
    them on stdin; gpgv checks self-signatures and expiry when it uses the keyring.

    Use as a context manager; `path` is then the keyring file.
    """

    def __init__(self, key_files: Sequence[Path]) -> None:
        self.key_files = list(key_files)
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.path = Path()
        self.keys: dict[str, KeyInfo] = {}

    def __enter__(self) -> Keyring:
        gpg = _tool("gpg")
        self._tmp = tempfile.TemporaryDirectory(prefix="farm-gnupg-")
        try:
            self._build(gpg, Path(self._tmp.name))
        except BaseException:
            self._tmp.cleanup()
            raise
        return self

    def _build(self, gpg: str, home: Path) -> None:
        home.chmod(0o700)
        # A home of its own so nothing of the user's (gpg.conf, keys) is read; gpg writes an
        # empty keybox there, which no command below uses.
        base = [gpg, "--homedir", str(home), "--batch", "--no-options", "--no-autostart"]
        keyring = bytearray()
        for key_file in self.key_files:
            data = read_regular(key_file, limit=KEY_FILE_LIMIT)
            what = str(key_file)
            listed = _run([*base, "--with-colons", "--fixed-list-mode", "--show-keys"],
                          what=what, data=data)  # fmt: skip
            keys = _parse_key_listing(listed.stdout.decode(errors="replace"))
            if listed.returncode != 0 or not keys:
                raise SignatureError(
                    f"{key_file}: not an OpenPGP public key ({gpg_reason(listed)})",
                    hint="put the release manager's public key there (ASCII-armoured or binary)",
                )
            binary = _run([*base, "--dearmor"], what=what, data=data)
            if binary.returncode != 0 or not binary.stdout:
                raise SignatureError(f"{key_file}: cannot read the key ({gpg_reason(binary)})")
            keyring += binary.stdout
            self.keys.update(keys)
        self.path = home / "pinned.gpg"
        self.path.write_bytes(bytes(keyring))

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
        raise SignatureError(
            f"{what}: {signature.name} could not be checked ({gpg_reason(result)})"
        )
    valid = [p for p in status if p[0] == "VALIDSIG"]
    if not valid or "REVKEYSIG" in words or "EXPSIG" in words:
        why = "revoked key" if "REVKEYSIG" in words else "expired signature"
        if not valid:
            why = gpg_reason(result)
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
            raise SignatureError(
                f"{what}: its signature does not verify with {keyring} ({gpg_reason(result)})",
                hint="the index may have been altered in transit, or the keyring is outdated",
            )
        return output.read_bytes()
