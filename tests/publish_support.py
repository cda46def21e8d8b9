"""Fake-but-consistent artifact sets for publishing tests (the publisher never untars)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from orchestrator.matrix import Cell
from orchestrator.publish.sbom import build_sbom, sbom_name
from orchestrator.publish.store import ObjectStore


def make_artifact(
    directory: Path,
    *,
    version: str = "3.13.5",
    stack: str = "debian-12",
    arch: str = "amd64",
    content: bytes = b"runtime bytes",
    size_bytes: int | None = None,
    built_at: str = "2026-11-24T10:00:00Z",
    variant: str = "default",
    fingerprint: str | None = None,
    cpu_level: str | None = None,
) -> str:
    """Write archive + .sha256 + SBOM + .json for one cell into `directory`; return the name."""
    distro, distro_version = stack.split("-", 1)
    label = version + ("t" if variant == "freethreaded" else "")
    name = f"python-{label}-{distro}-{distro_version}-{arch}{cpu_level or ''}.tar.zst"
    body = (
        content if size_bytes is None else (content * (size_bytes // len(content) + 1))[:size_bytes]
    )
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_bytes(body)
    digest = hashlib.sha256(body).hexdigest()
    (directory / f"{name}.sha256").write_text(f"{digest}  {name}\n")
    major, minor, patch = (int(p) for p in version.split("."))
    record: dict[str, Any] = {
        "name": name,
        "version": version,
        "variant": variant,
        "cpu_level": cpu_level,
        "major": major,
        "minor": minor,
        "patch": patch,
        "prerelease": "",
        "stack": stack,
        "distro": distro,
        "distro_version": distro_version,
        "arch": arch,
        "profile": "fast",
        "sha256": digest,
        "size": len(body),
        "fingerprint": fingerprint or hashlib.sha256(name.encode() + body).hexdigest(),
        "built_at": built_at,
        "source": {
            "filename": f"Python-{version}.tar.xz",
            "sha256": hashlib.sha256(f"source of {version}".encode()).hexdigest(),
            "url": None,
            "verification": {"methods": ["sha256"], "openpgp": None, "sigstore": None},
        },
        "runtime_packages": [],
        "run_image_packages": {},
        "verification": {"ok": True, "failures": [], "checks": 49},
    }
    sbom = build_sbom(record, bundled=[], ships_pip_wheel=False).encode()
    (directory / sbom_name(name)).write_bytes(sbom)
    record["sbom"] = {"file": sbom_name(name), "sha256": hashlib.sha256(sbom).hexdigest()}
    (directory / name.replace(".tar.zst", ".json")).write_text(json.dumps(record))
    return name


def store_write(store: ObjectStore, key: str, body: bytes) -> None:
    """Replace (or create) `key` through the store's own API, so its record describes the new
    bytes: a document damaged by whatever wrote it, not a record out of date."""
    current = store.head(key)
    store.put(
        key, body, sha256=hashlib.sha256(body).hexdigest(), content_type="application/json",
        if_match=current.etag if current else None, create_only=current is None,
    )  # fmt: skip


def published_entry(cell: Cell, fingerprint: str) -> dict[str, Any]:
    """A valid manifest.json entry (publish/record.py's ManifestEntry) for `cell` built with
    `fingerprint`, as a finished nightly leaves it: for tests and the no-op benchmark, which
    need a store where everything is published without building anything."""
    name = cell.archive_name
    url = f"file:///published/{name}"
    return {
        "name": name, "version": cell.version, "variant": cell.variant.value,
        "stack": cell.stack_name, "distro": cell.stack.distro,
        "distro_version": cell.stack.distro_version, "arch": cell.arch.value,
        "profile": "release", "url": url, "metadata_url": url.replace(".tar.zst", ".json"),
        "sha256": hashlib.sha256(name.encode()).hexdigest(), "size": 1,
        "fingerprint": fingerprint, "published_at": "2026-11-24T10:00:00Z",
        **({"cpu_level": cell.cpu_level.value} if cell.cpu_level else {}),
    }  # fmt: skip
