"""Hostile files and the places the farm reads files from, for the hostile-input suite.

KINDS are what a path can be that is not the small regular file the farm expects; PLACES are
every file argument and every file the farm reads on its own (matrix.yaml, --extra-ca, an
archive and its record for `verify`, the artifacts `publish` reads, the source cache, cached
signatures, pinned keys, a file:// mirror, the template and the committed Dockerfiles).
Each place puts the hostile file where it belongs in a case's work dir and returns the argv.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.hostile_support import Work
from tests.publish_support import make_artifact

CELL = "3.13.5-debian-12-amd64"
ARCHIVE = "python-3.13.5-debian-12-amd64.tar.zst"
FAKE_VERSION = "3.13.99"  # a pin of the work dir's own: a fake tarball, no network
FAKE_TARBALL = b"not really CPython\n" * 64
KEY = "7169605F62C751356D054A26A821E680E5FA6305"


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file() or (path.exists() and not path.is_dir()):
        path.unlink()
    elif path.is_dir():
        import shutil

        shutil.rmtree(path)


def make_hostile(path: Path, kind: str) -> None:
    """Turn `path` into a hostile file of `kind` (whatever was there is replaced)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove(path)
    if kind == "dev-zero":
        path.symlink_to("/dev/zero")
    elif kind == "dev-urandom":
        path.symlink_to("/dev/urandom")
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":
        os.mknod(path, 0o600 | stat.S_IFSOCK)
    elif kind == "directory":
        path.mkdir()
    elif kind == "missing":
        pass
    elif kind == "dangling-symlink":
        path.symlink_to(path.parent / "gone")
    elif kind == "symlink-loop":
        path.symlink_to(path.name)
    elif kind == "huge":  # sparse: 3 GiB of nothing, over every limit the farm has
        with path.open("wb") as handle:
            handle.truncate(3 * 1024**3)
    elif kind == "not-utf8":
        path.write_bytes(b"\xff\xfe\xfd garbage \x80\x81\n" * 10)
    elif kind == "nul-bytes":
        path.write_bytes(b"\0" * 4096)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "proc-file":  # a regular file whose size says 0 (its contents are not)
        path.symlink_to("/proc/self/status")
    else:
        raise AssertionError(kind)


KINDS = ("dev-zero", "dev-urandom", "fifo", "socket", "directory", "missing",
         "dangling-symlink", "symlink-loop", "huge", "not-utf8", "nul-bytes", "empty",
         "proc-file")  # fmt: skip


# --- what the places need --------------------------------------------------------------------


def runtime_archive(work: Work) -> tuple[Path, dict[str, Any]]:
    """A small, real runtime-shaped .tar.zst in OUT/artifacts and a record `verify` accepts
    (so only the hostile part of a case is wrong)."""
    from orchestrator.archive import pack_tree, sha256_of

    tree = work.root / "tree"
    (tree / "bin").mkdir(parents=True)
    (tree / "lib" / "python3.13").mkdir(parents=True)
    (tree / "include").mkdir()
    (tree / "bin" / "python3.13").write_bytes(b"#!/bin/sh\n")
    (tree / "lib" / "python3.13" / "os.py").write_text("import sys\n")
    work.artifacts.mkdir(parents=True, exist_ok=True)
    archive = pack_tree(tree, work.artifacts / ARCHIVE, source_date_epoch=0, level=1).path
    record = {
        "name": ARCHIVE, "cell": CELL, "version": "3.13.5", "major": 3, "minor": 13,
        "patch": 5, "stack": "debian-12", "arch": "amd64", "profile": "fast",
        "sha256": sha256_of(archive), "expected_modules": ["ssl"],
    }  # fmt: skip
    record_path(archive).write_text(json.dumps(record))
    return archive, record


def record_path(archive: Path) -> Path:
    return archive.with_name(archive.name.removesuffix(".tar.zst") + ".json")


def fake_release(work: Work) -> None:
    """Pin FAKE_VERSION in the work dir's matrix, its tarball in the mirror: `fetch` checks
    it (sha256, size, then the OpenPGP signature pinned for 3.12-3.13, required) without the
    network."""
    tarball = f"Python-{FAKE_VERSION}.tar.xz"
    (work.mirror / tarball).write_bytes(FAKE_TARBALL)
    pin = {
        "version": FAKE_VERSION,
        "sha256": hashlib.sha256(FAKE_TARBALL).hexdigest(),
        "size": len(FAKE_TARBALL),
    }

    def change(data: dict[str, Any]) -> None:
        data["pythons"].append(pin)
        data["signatures"]["required"] = True  # a missing signature is refused too

    work.edit_matrix(change)


def _cache(work: Work) -> Path:
    return work.project / ".cache" / "sources"


# --- the places ------------------------------------------------------------------------------

Place = Callable[[Work, str], list[str]]


def _matrix_for(command: list[str]) -> Place:
    def place(work: Work, kind: str) -> list[str]:
        target = work.root / "hostile.yaml"
        make_hostile(target, kind)
        return ["--matrix", str(target), *command]

    return place


def _farm_matrix_env(work: Work, kind: str) -> list[str]:
    target = work.root / "hostile.yaml"
    make_hostile(target, kind)
    work.env["FARM_MATRIX"] = str(target)
    return ["plan"]


def _extra_ca(command: list[str]) -> Place:
    def place(work: Work, kind: str) -> list[str]:
        target = work.root / "ca.pem"
        make_hostile(target, kind)
        return [*command, "--extra-ca", str(target)]

    return place


def _farm_extra_ca_env(work: Work, kind: str) -> list[str]:
    target = work.root / "ca.pem"
    make_hostile(target, kind)
    work.env["FARM_EXTRA_CA"] = str(target)
    return ["build", CELL]


def _verify_archive(work: Work, kind: str) -> list[str]:
    archive, _ = runtime_archive(work)
    make_hostile(archive, kind)
    return ["verify", str(archive)]


def _verify_record(work: Work, kind: str) -> list[str]:
    archive, _ = runtime_archive(work)
    make_hostile(record_path(archive), kind)
    return ["verify", str(archive)]


def _published_file(which: str) -> Place:
    def place(work: Work, kind: str) -> list[str]:
        name = make_artifact(work.artifacts)
        paths = {
            "archive": work.artifacts / name,
            "record": record_path(work.artifacts / name),
            "sha256": work.artifacts / f"{name}.sha256",
            "sbom": work.artifacts / name.replace(".tar.zst", ".sbom.cdx.json"),
        }
        make_hostile(paths[which], kind)
        return ["publish", CELL]

    return place


def _fetch_cached_tarball(work: Work, kind: str) -> list[str]:
    fake_release(work)
    (work.mirror / f"Python-{FAKE_VERSION}.tar.xz").unlink()  # only the cache could serve it
    make_hostile(_cache(work) / f"Python-{FAKE_VERSION}.tar.xz", kind)
    return ["fetch", FAKE_VERSION]


def _fetch_mirror_file(work: Work, kind: str) -> list[str]:
    fake_release(work)
    make_hostile(work.mirror / f"Python-{FAKE_VERSION}.tar.xz", kind)
    return ["fetch", FAKE_VERSION]


def _fetch_cached_signature(work: Work, kind: str) -> list[str]:
    fake_release(work)
    make_hostile(_cache(work) / f"Python-{FAKE_VERSION}.tar.xz.asc", kind)
    return ["fetch", FAKE_VERSION]


def _fetch_key_file(work: Work, kind: str) -> list[str]:
    fake_release(work)
    (work.mirror / f"Python-{FAKE_VERSION}.tar.xz.asc").write_text("not a signature\n")
    make_hostile(work.project / "keys" / f"{KEY}.asc", kind)
    return ["fetch", FAKE_VERSION]


def _render_template(work: Work, kind: str) -> list[str]:
    make_hostile(work.project / "templates" / "Dockerfile.j2", kind)
    return ["render", "--check"]


def _render_dockerfile(work: Work, kind: str) -> list[str]:
    make_hostile(work.project / "dockerfiles" / "debian-12" / "Dockerfile", kind)
    return ["render", "--check"]


PLACES: dict[str, Place] = {
    "--matrix (plan)": _matrix_for(["plan"]),
    "--matrix (render --check)": _matrix_for(["render", "--check"]),
    "--matrix (versions)": _matrix_for(["versions"]),
    "--matrix (fetch)": _matrix_for(["fetch"]),
    "--matrix (build)": _matrix_for(["build", CELL]),
    "--matrix (publish)": _matrix_for(["publish", CELL]),
    "--matrix (nightly --dry-run)": _matrix_for(["nightly", "--dry-run"]),
    "--matrix (check-manifest)": _matrix_for(["check-manifest"]),
    "--matrix (verify)": _matrix_for(["verify", CELL]),
    "FARM_MATRIX (plan)": _farm_matrix_env,
    "build --extra-ca": _extra_ca(["build", CELL]),
    "nightly --extra-ca": _extra_ca(["nightly", "--dry-run"]),
    "FARM_EXTRA_CA (build)": _farm_extra_ca_env,
    "verify ARCHIVE": _verify_archive,
    "verify: the record beside ARCHIVE": _verify_record,
    "publish: the archive": _published_file("archive"),
    "publish: the record": _published_file("record"),
    "publish: the .sha256": _published_file("sha256"),
    "publish: the SBOM": _published_file("sbom"),
    "fetch: the cached tarball": _fetch_cached_tarball,
    "fetch: a file:// mirror's tarball": _fetch_mirror_file,
    "fetch: the cached signature": _fetch_cached_signature,
    "fetch: a pinned key file": _fetch_key_file,
    "render --check: the template": _render_template,
    "render --check: a committed Dockerfile": _render_dockerfile,
}
