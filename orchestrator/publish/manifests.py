"""The two manifest formats: the farm's index of everything, and uv's download metadata.

Both are pure functions from (current document, new entry) to the next document, so the
publisher can re-read, merge and retry on a lost race (optimistic concurrency).
docs/MANIFESTS.md documents both formats with examples.
"""

from __future__ import annotations

import json
from typing import Any

from orchestrator.errors import PublishError

MANIFEST_FORMAT = 1
MANIFEST_NAME = "manifest.json"
UV_METADATA_NAME = "download-metadata.json"
# uv's spelling of each arch (its keys look like cpython-3.13.5-linux-x86_64-gnu).
UV_ARCH = {"amd64": "x86_64", "arm64": "aarch64"}
# uv's spelling of each variant, from its own parser (crates/uv-python: PythonVariant's
# FromStr and Display, PythonInstallationKey's Display): the `variant` field of an entry, and
# `+freethreaded` after the version in its key (cpython-3.13.5+freethreaded-linux-x86_64-gnu);
# the default variant is null there and absent from the key.
UV_VARIANT: dict[str, str | None] = {"default": None, "freethreaded": "freethreaded"}
# uv's spelling of a CPU level, from crates/uv-platform/src/arch.rs (ArchVariant's FromStr and
# Display: "v2", "v3", "v4"; x86_64 only) and crates/uv-python/src/downloads.rs (JsonArch
# {family, variant}; parse_json_downloads joins them as `{family}_{variant}`): the entry's
# arch is {"family": "x86_64", "variant": "v3"} and its key cpython-3.13.5-linux-x86_64_v3-gnu.
UV_ARCH_VARIANT: dict[str, str] = {"v2": "v2", "v3": "v3", "v4": "v4"}


def normalize_prefix(prefix: str) -> str:
    prefix = prefix.strip("/")
    return f"{prefix}/" if prefix else ""


def manifest_key(prefix: str) -> str:
    return f"{normalize_prefix(prefix)}{MANIFEST_NAME}"


def uv_metadata_key(prefix: str, stack: str, arch: str) -> str:
    return f"{normalize_prefix(prefix)}{stack}/{arch}/{UV_METADATA_NAME}"


def build_number(record: dict[str, Any]) -> str:
    """What uv compares to tell an upgrade: the UTC time the archive was built, as digits
    (YYYYMMDDHHMMSS). uv orders builds numerically when both are integers, so a rebuild of
    the same version always reads as newer; a fingerprint would order them at random."""
    built_at = str(record.get("built_at") or "")
    digits = "".join(ch for ch in built_at if ch.isdigit())[:14]
    if len(digits) != 14:
        raise PublishError(
            f"{record.get('name')}: built_at {built_at!r} is not a UTC timestamp",
            hint="rebuild the cell; its metadata predates build numbers",
        )
    return digits


def source_summary(record: dict[str, Any]) -> dict[str, Any]:
    """What proved the source tarball, for the manifest (details are in the .json)."""
    source = record["source"]
    verification = source.get("verification") or {}
    openpgp = verification.get("openpgp") or {}
    sigstore = verification.get("sigstore") or {}
    return {
        "filename": source["filename"],
        "sha256": source["sha256"],
        "verified_by": verification.get("methods", ["sha256"]),
        "openpgp_fingerprint": openpgp.get("fingerprint"),
        "sigstore_identity": sigstore.get("identity"),
        "sigstore_issuer": sigstore.get("issuer"),
    }


def manifest_entry(
    record: dict[str, Any], *, url: str, metadata_url: str, sbom_url: str, published_at: str
) -> dict[str, Any]:
    return {
        "name": record["name"],
        "version": record["version"],
        "variant": record.get("variant", "default"),
        "stack": record["stack"],
        "distro": record["distro"],
        "distro_version": record["distro_version"],
        "arch": record["arch"],
        "profile": record["profile"],
        "url": url,
        "metadata_url": metadata_url,
        "sbom_url": sbom_url,
        "sha256": record["sha256"],
        "size": record["size"],
        "build": build_number(record),
        "source": source_summary(record),
        "fingerprint": record.get("fingerprint"),
        "published_at": published_at,
        # Only on runtimes built with the experimental JIT available (PYTHON_JIT=1 turns it on).
        **({"jit": True} if record.get("jit") is True else {}),
        # Only on runtimes built for an x86-64 level above the baseline (v2, v3, v4).
        **({"cpu_level": record["cpu_level"]} if record.get("cpu_level") else {}),
    }


def merge_manifest(current: dict[str, Any] | None, entry: dict[str, Any]) -> dict[str, Any]:
    """Insert or replace `entry` (by archive name); entries stay sorted for stable diffs."""
    runtimes = {r["name"]: r for r in (current or {}).get("runtimes", [])}
    runtimes[entry["name"]] = entry
    ordered = sorted(runtimes.values(), key=lambda r: (r["stack"], r["arch"], r["name"]))
    return {"format": MANIFEST_FORMAT, "runtimes": ordered}


def uv_variant(record: dict[str, Any]) -> str | None:
    variant = record.get("variant", "default")
    if variant not in UV_VARIANT:
        raise PublishError(f"{record.get('name')}: variant {variant!r} has no uv spelling")
    return UV_VARIANT[variant]


def uv_arch_variant(record: dict[str, Any]) -> str | None:
    """uv's arch variant of the runtime's CPU level; None for a baseline one."""
    level = record.get("cpu_level")
    if level is None:
        return None
    if level not in UV_ARCH_VARIANT or UV_ARCH.get(record.get("arch", "")) != "x86_64":
        raise PublishError(
            f"{record.get('name')}: cpu_level {level!r} on arch {record.get('arch')!r} has no "
            "uv spelling (uv reads v2, v3 and v4 for x86_64 only)"
        )
    return UV_ARCH_VARIANT[level]


def uv_arch(record: dict[str, Any]) -> str:
    """The arch part of uv's key: x86_64, aarch64, or x86_64_v3 (Arch's Display)."""
    variant = uv_arch_variant(record)
    family = UV_ARCH[record["arch"]]
    return f"{family}_{variant}" if variant else family


def uv_key(record: dict[str, Any]) -> str:
    version = record["version"]
    variant = uv_variant(record)
    suffix = f"+{variant}" if variant else ""
    return f"cpython-{version}{suffix}-linux-{uv_arch(record)}-gnu"


def uv_entry(record: dict[str, Any], *, url: str, sbom_url: str) -> dict[str, Any]:
    return {
        "name": "cpython",
        "arch": {"family": UV_ARCH[record["arch"]], "variant": uv_arch_variant(record)},
        "os": "linux",
        "libc": "gnu",
        "major": record["major"],
        "minor": record["minor"],
        "patch": record["patch"],
        "prerelease": record.get("prerelease", ""),
        "url": url,
        "sha256": record["sha256"],
        "variant": uv_variant(record),
        # Monotonic: uv treats a higher build of the same version as an upgrade.
        "build": build_number(record),
        # Not a field uv reads (it ignores unknown fields); for people and scanners.
        "sbom_url": sbom_url,
    }


def merge_uv_metadata(
    current: dict[str, Any] | None, key: str, entry: dict[str, Any]
) -> dict[str, Any]:
    merged = dict(current or {})
    merged[key] = entry
    return dict(sorted(merged.items()))


def dumps(document: dict[str, Any]) -> bytes:
    return (json.dumps(document, indent=2, sort_keys=False) + "\n").encode()


REPAIR_HINT = (
    "nothing was changed; restore it from the bucket's versioning, or delete it and publish "
    "every cell again (docs/RELIABILITY.md, repairing a store)"
)
