"""Release feed data in the real formats, written by tests into a directory they then serve
(file:// or a local HTTP server): a Debian archive's dists/ tree, and python.org's API."""

from __future__ import annotations

import hashlib
import json
import lzma
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.gpg_support import ThrowawayKey


@dataclass(frozen=True, kw_only=True)
class DebianPackage:
    """One python3.X source stanza: Debian version and its orig tarball's sha256."""

    package: str
    version: str  # Debian's, e.g. 3.13.18-1 or 3.15.0~rc1-1
    orig_sha256: str
    orig_ext: str = "tar.xz"
    orig_size: int = 23243936
    with_asc: bool = False


def sources_stanza(pkg: DebianPackage) -> str:
    """A Sources paragraph shaped like Debian's own (fields trimmed to what matters)."""
    upstream = pkg.version.rsplit("-", 1)[0]
    orig = f"{pkg.package}_{upstream}.orig.{pkg.orig_ext}"
    files = [
        (
            hashlib.sha256(f"{pkg.version}.dsc".encode()).hexdigest(),
            3704,
            f"{pkg.package}_{pkg.version}.dsc",
        ),
        (pkg.orig_sha256, pkg.orig_size, orig),
    ]
    if pkg.with_asc:
        files.append((hashlib.sha256(orig.encode()).hexdigest(), 833, f"{orig}.asc"))
    files.append(
        (
            hashlib.sha256(pkg.version.encode()).hexdigest(),
            262280,
            f"{pkg.package}_{pkg.version}.debian.tar.xz",
        )
    )
    checksums = "".join(f" {sha} {size} {name}\n" for sha, size, name in files)
    return (
        f"Package: {pkg.package}\n"
        f"Binary: {pkg.package}, lib{pkg.package}-stdlib, {pkg.package}-minimal\n"
        f"Version: {pkg.version}\n"
        "Maintainer: Matthias Klose <doko@debian.org>\n"
        "Build-Depends: debhelper (>= 11), dpkg-dev (>= 1.17.11), quilt, autoconf,\n"
        " libreadline-dev | libeditreadline-dev, libncurses-dev, zlib1g-dev\n"
        "Architecture: any all\n"
        "Format: 3.0 (quilt)\n"
        f"Checksums-Sha256:\n{checksums}"
        f"Directory: pool/main/p/{pkg.package}\n"
        "Priority: optional\n"
        "Section: misc\n"
    )


def other_stanza(name: str) -> str:
    return (
        f"Package: {name}\nVersion: 1.0-1\nDirectory: pool/main/{name[0]}/{name}\nSection: misc\n"
    )


def write_debian_suite(
    archive: Path,
    suite: str,
    packages: Sequence[DebianPackage],
    *,
    signer: ThrowawayKey | None = None,
    sources_bytes: bytes | None = None,
) -> Path:
    """archive/dists/SUITE/{InRelease, main/source/Sources.xz}; returns the Sources.xz path.

    `sources_bytes` replaces the xz file after InRelease was written (to test tampering)."""
    text = "\n".join(
        [other_stanza("pyasn1"), *(sources_stanza(p) for p in packages), other_stanza("zlib")]
    )
    dists = archive / "dists" / suite
    index = dists / "main" / "source" / "Sources.xz"
    index.parent.mkdir(parents=True, exist_ok=True)
    index.write_bytes(lzma.compress(text.encode()))
    if signer is not None:
        digest = hashlib.sha256(index.read_bytes()).hexdigest()
        release = dists / "Release"
        release.write_text(
            "Origin: Debian\nLabel: Debian\nSuite: unstable\nCodename: sid\n"
            "Date: Fri, 30 Oct 2026 08:08:01 UTC\n"
            "SHA256:\n"
            f" {hashlib.sha256(b'other').hexdigest()}   123 main/binary-all/Packages.xz\n"
            f" {digest} {index.stat().st_size} main/source/Sources.xz\n"
        )
        signer.clearsign(release, dists / "InRelease")
    if sources_bytes is not None:
        index.write_bytes(sources_bytes)
    return index


# --- python.org's release API (python/pythondotorg apps/downloads/serializers.py) -----------

API = "https://www.python.org/api/v2/downloads"


@dataclass(frozen=True, kw_only=True)
class PythonOrgRelease:
    version: str
    xz_sha256: str  # "" as the API answers for files published before sha256_sum existed
    tgz_sha256: str = ""
    filesize: int = 23243936  # 0: what the API answers when the size is unknown
    rid: int = 0
    signed_with: str = "sigstore"  # "sigstore", "openpgp+sigstore" or "" (nothing)


def python_org_api(releases: Sequence[PythonOrgRelease]) -> dict[str, bytes]:
    """The two documents the feed reads, keyed by request path: release/ and release_file/
    answers shaped like the live API (absolute hyperlinks, "" for missing values)."""
    release_objects: list[dict[str, object]] = [
        # Not CPython releases, but in the same list on the live site.
        {"name": "Python install manager 25.0", "slug": "pymanager-250", "version": 100,
         "is_published": True, "is_latest": False, "release_date": "2025-10-07T12:00:00Z",
         "pre_release": False, "release_page": None, "release_notes_url": "",
         "show_on_download_page": True, "resource_uri": f"{API}/release/9001/"},
    ]  # fmt: skip
    files: list[dict[str, object]] = []
    for index, release in enumerate(releases):
        rid = release.rid or 1000 + index
        slug = release.version.replace(".", "")
        pre = any(tag in release.version for tag in ("a", "b", "rc"))
        release_objects.append(
            {"name": f"Python {release.version}", "slug": f"python-{slug}", "version": 3,
             "is_published": True, "is_latest": False, "release_date": "2026-08-05T15:30:00Z",
             "pre_release": pre, "release_page": None, "release_notes_url": "",
             "show_on_download_page": True, "resource_uri": f"{API}/release/{rid}/"}
        )  # fmt: skip
        base = release.version.split("a")[0].split("b")[0].split("rc")[0]
        for fid, (ext, description, sha) in enumerate(
            (
                ("tar.xz", "XZ compressed source tarball", release.xz_sha256),
                ("tgz", "Gzipped source tarball", release.tgz_sha256),
            )
        ):
            url = f"https://www.python.org/ftp/python/{base}/Python-{release.version}.{ext}"
            sigstore = "sigstore" in release.signed_with
            files.append(
                {"name": description, "slug": f"{slug}-{description.replace(' ', '-')}",
                 "os": f"{API}/os/3/", "release": f"{API}/release/{rid}/", "description": "",
                 "is_source": True, "url": url,
                 "gpg_signature_file": f"{url}.asc" if "openpgp" in release.signed_with else "",
                 "md5_sum": "", "sha256_sum": sha, "filesize": release.filesize,
                 "download_button": ext == "tar.xz",
                 "resource_uri": f"{API}/release_file/{rid * 10 + fid}/",
                 "sigstore_signature_file": f"{url}.sig" if sigstore else "",
                 "sigstore_cert_file": f"{url}.crt" if sigstore else "",
                 "sigstore_bundle_file": f"{url}.sigstore" if sigstore else "",
                 "sbom_spdx2_file": f"{url}.spdx.json"}
            )  # fmt: skip
    return {
        "/api/v2/downloads/release/?is_published=true&version=3": json.dumps(
            release_objects
        ).encode(),
        "/api/v2/downloads/release_file/?os=3": json.dumps(files).encode(),
    }
