"""Throwaway OpenPGP keys for tests, made with the real GnuPG in a private home directory.

`faked_time` (gpg's --faked-system-time) lets a test make a key that expired before it
signed, which is how an expired-key refusal is tested without waiting for a key to expire.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, kw_only=True)
class ThrowawayKey:
    home: Path
    fingerprint: str
    public_key: Path  # armored export

    def _gpg(self, *args: str, faked_time: str | None = None) -> None:
        command = ["gpg", "--homedir", str(self.home), "--batch", "--no-options"]
        command += ["--pinentry-mode", "loopback", "--passphrase", ""]
        if faked_time:
            command += ["--faked-system-time", faked_time, "--ignore-time-conflict"]
        subprocess.run([*command, *args], check=True, capture_output=True)

    def sign_detached(self, data: Path, signature: Path, *, faked_time: str | None = None) -> Path:
        self._gpg(
            "--local-user", self.fingerprint, "--armor", "--output", str(signature),
            "--detach-sign", str(data), faked_time=faked_time,
        )  # fmt: skip
        return signature

    def clearsign(self, data: Path, signed: Path) -> Path:
        self._gpg(
            "--local-user", self.fingerprint, "--output", str(signed), "--clearsign", str(data)
        )
        return signed

    def set_expiry(self, date: str, *, faked_time: str) -> None:
        """Give the key an expiry date (new self-signature), and re-export the public key."""
        self._gpg("--quick-set-expire", self.fingerprint, date, faked_time=faked_time)
        self._gpg(
            "--yes", "--armor", "--output", str(self.public_key), "--export", self.fingerprint
        )

    def export_binary(self, keyring: Path) -> Path:
        self._gpg("--output", str(keyring), "--export", self.fingerprint)
        return keyring


def make_key(
    directory: Path,
    *,
    name: str = "Test Release Manager <rm@example.org>",
    expire: str = "never",
    faked_time: str | None = None,
) -> ThrowawayKey:
    """A new ed25519 signing key in its own GnuPG home under `directory`."""
    home = directory / "gnupg"
    home.mkdir(parents=True)
    home.chmod(0o700)
    base = ["gpg", "--homedir", str(home), "--batch", "--no-options"]
    base += ["--pinentry-mode", "loopback", "--passphrase", ""]
    if faked_time:
        base += ["--faked-system-time", faked_time]
    subprocess.run([*base, "--quick-gen-key", name, "ed25519", "sign", expire], check=True,
                   capture_output=True)  # fmt: skip
    listing = subprocess.run(
        ["gpg", "--homedir", str(home), "--with-colons", "--list-keys"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    fingerprint = next(
        line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr")
    )
    public_key = directory / f"{fingerprint}.asc"
    subprocess.run(
        ["gpg", "--homedir", str(home), "--batch", "--armor", "--output", str(public_key),
         "--export", fingerprint],
        check=True, capture_output=True,
    )  # fmt: skip
    return ThrowawayKey(home=home, fingerprint=fingerprint, public_key=public_key)
