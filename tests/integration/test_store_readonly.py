"""Finding 9: a local store on a read-only filesystem (a real tmpfs remounted read-only, which
stops root too) is one line and exit 13; what was published before stays consistent."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.integration.support import REPO_ROOT, run_cli
from tests.privileged import as_root, mount_tmpfs, unmount
from tests.publish_support import make_artifact

# Mounting a tmpfs needs root: as root, or through sudo (tests/privileged.py); never skipped.
pytestmark = [pytest.mark.integration]


@pytest.fixture
def store_mount(tmp_path: Path) -> Iterator[Path]:
    where = tmp_path / "store"
    where.mkdir()
    mount_tmpfs(where, 8)
    yield where
    unmount(where)


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_a_read_only_store_is_one_line_exit_13(tmp_path: Path, store_mount: Path) -> None:
    data = yaml.safe_load((REPO_ROOT / "matrix.yaml").read_text())
    data.setdefault("publish", {})["local_dir"] = str(store_mount)
    matrix = tmp_path / "matrix.yaml"
    matrix.write_text(yaml.safe_dump(data, sort_keys=False))
    for directory in ("templates", "dockerfiles", "keys"):
        (tmp_path / directory).symlink_to(REPO_ROOT / directory)
    out = tmp_path / "out"
    make_artifact(out / "artifacts", stack="debian-12")
    make_artifact(out / "artifacts", stack="debian-13")
    base = ["--matrix", str(matrix), "--out", str(out)]
    first = run_cli([*base, "publish", "3.13.5-debian-12-amd64"], timeout=120)
    assert first.returncode == 0, first.stderr

    as_root(["mount", "-o", "remount,ro", str(store_mount)])
    before = _snapshot(store_mount)
    second = run_cli([*base, "publish", "3.13.5-debian-13-amd64"], timeout=120)
    errors = [line for line in second.stderr.splitlines() if line.startswith("error:")]
    assert second.returncode == 13, second.stderr
    assert len(errors) == 1 and "Read-only file system" in errors[0], second.stderr
    assert str(store_mount) in errors[0] and "Traceback" not in second.stderr
    assert _snapshot(store_mount) == before
    # What was there is still whole and consistent (reading needs no write).
    check = run_cli([*base, "check-manifest", "3.13.5-debian-12-amd64"], timeout=120)
    assert check.returncode == 0, check.stderr
