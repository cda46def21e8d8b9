"""The metadata record written beside every archive (<name>.json).

A superset of what uv's download metadata and actions/python-versions consume, plus what the
farm itself needs: the fingerprint (to skip unchanged cells) and the exact build inputs.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from orchestrator.archive import ArchiveInfo
from orchestrator.buildspec import BuildSpec
from orchestrator.fsutil import walk_tree, write_atomic

METADATA_FORMAT = 1


def tree_sizes(tree: Path, ldversion: str) -> dict[str, int]:
    """Bytes per part of an install tree (regular files only; links count as 0). `ldversion`
    names the stdlib directory: 3.13 (lib/python3.13) or 3.13t (lib/python3.13t)."""
    parts = {
        "bin": 0,
        "libpython": 0,
        "lib_dynload": 0,
        "stdlib_py": 0,
        "pyc": 0,
        "include": 0,
        "other": 0,
    }
    stdlib = Path("lib") / f"python{ldversion}"
    # walk_tree, not rglob: a tree deeper than Python's recursion limit is measured too.
    for _path, relative, st in walk_tree(os.fspath(tree)):
        if not stat.S_ISREG(st.st_mode):
            continue
        rel = Path(relative)
        size = st.st_size
        if rel.parts[0] == "bin":
            key = "bin"
        elif rel.parts[0] == "include":
            key = "include"
        elif rel.parent == Path("lib") and rel.name.startswith("libpython"):
            key = "libpython"
        elif rel.is_relative_to(stdlib / "lib-dynload"):
            key = "lib_dynload"
        elif rel.suffix == ".pyc":
            key = "pyc"
        elif rel.is_relative_to(stdlib) and rel.suffix == ".py":
            key = "stdlib_py"
        else:
            key = "other"
        parts[key] += size
    parts["total"] = sum(parts.values())
    return parts


def build_record(
    *,
    spec: BuildSpec,
    archive: ArchiveInfo,
    source_url: str | None,
    source_verification: dict[str, Any],
    base_image: str,
    base_image_id: str,
    builder_image: str,
    builder_image_id: str,
    fingerprint: str,
    fingerprint_inputs: dict[str, Any],
    build_seconds: float,
    built_at: str,
    sizes: dict[str, int],
) -> dict[str, Any]:
    cell = spec.cell
    version = cell.python.parsed
    prerelease = "".join(f"{kind}{number}" for kind, number in [version.pre]) if version.pre else ""
    return {
        "format": METADATA_FORMAT,
        "name": cell.archive_name,
        "cell": cell.id,
        "implementation": "cpython",
        "version": cell.version,
        # default or freethreaded; the name and cell carry it as a `t` after the version.
        "variant": cell.variant.value,
        "major": version.major,
        "minor": version.minor,
        "patch": version.micro,
        "prerelease": prerelease,
        "stack": cell.stack_name,
        "distro": cell.stack.distro,
        "distro_version": cell.stack.distro_version,
        "codename": cell.stack.codename,
        "arch": cell.arch.value,
        "arch_uname": cell.arch.uname,
        # The x86-64 level it was built for (v2, v3, v4; uv's arch variant), None: baseline.
        # The name and cell carry it after the arch: python-3.13.5-debian-12-amd64v3.
        "cpu_level": cell.cpu_level.value if cell.cpu_level else None,
        "libc": "gnu",
        "profile": spec.profile_name,
        "sha256": archive.sha256,
        "size": archive.size,
        "source": {
            "filename": cell.python.tarball,
            "sha256": cell.python.sha256,
            "url": source_url,
            # What proved the tarball: always the sha256 pin, plus upstream's signatures.
            "verification": source_verification,
        },
        "base_image": base_image,
        "base_image_id": base_image_id,
        "builder_image": builder_image,
        "builder_image_id": builder_image_id,
        "configure_args": list(spec.configure_args),
        # Built with the experimental JIT available (off by default, PYTHON_JIT=1 turns it on).
        "jit": spec.jit,
        "make_flags": {"CFLAGS_NODIST": spec.extra_cflags, "LDFLAGS_NODIST": spec.ldflags},
        "expected_modules": list(spec.expected_modules),
        "fingerprint": fingerprint,
        "fingerprint_inputs": fingerprint_inputs,
        "sizes": sizes,
        "build_seconds": round(build_seconds, 1),
        "built_at": built_at,
    }


def write_json_atomic(path: Path, record: dict[str, Any]) -> None:
    write_atomic(path, (json.dumps(record, indent=2, sort_keys=True) + "\n").encode())
