"""A full disk under --out: a clear error, and nothing partial left behind (real tmpfs mounts)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from docker import DockerClient

from orchestrator.archive import pack_tree
from orchestrator.cellbuild import leftover_containers
from orchestrator.errors import OutputError, PackagingError
from orchestrator.fsutil import write_atomic
from tests.integration.support import E2E_CELL, E2EBuild, run_cli
from tests.privileged import mount_tmpfs, unmount

# Mounting a small tmpfs needs root: as root, or through sudo (tests/privileged.py); never
# skipped.
pytestmark = [pytest.mark.integration]

SmallDisk = Callable[[int], Path]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    mounts: list[Path] = []

    def mount(megabytes: int) -> Path:
        where = tmp_path / f"disk{len(mounts)}"
        where.mkdir()
        mount_tmpfs(where, megabytes)
        mounts.append(where)
        return where

    yield mount
    for where in mounts:
        unmount(where)


def _fill(disk: Path) -> None:
    with (disk / "filler").open("wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * (1 << 16))
        except OSError:
            pass


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.rglob("*") if ".tmp-" in p.name or ".part-" in p.name)


def test_build_with_a_full_out_dir_fails_in_one_line(
    small_disk: SmallDisk, docker_client: DockerClient, e2e_build: E2EBuild
) -> None:
    # e2e_build first: the builder image and the source are cached, so the disk is what fails.
    out = small_disk(40)
    result = run_cli(["--out", str(out), "build", E2E_CELL, "--profile", "fast"], timeout=1800)
    assert result.returncode in (7, 13), result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert "No space left on device" in errors[0]
    assert not any((out / "artifacts").glob("*"))
    assert _leftovers(out) == []
    assert leftover_containers(docker_client, owner_pid=result.pid) == []


def test_packing_onto_a_full_disk_leaves_no_partial_archive(
    small_disk: SmallDisk, e2e_build: E2EBuild
) -> None:
    disk = small_disk(4)  # the fast tree packs to about 11 MB
    with pytest.raises(PackagingError, match="No space left on device"):
        pack_tree(e2e_build.tree, disk / "python.tar.zst", source_date_epoch=0)
    assert list(disk.iterdir()) == []


def test_metadata_on_a_full_disk_keeps_the_old_file(small_disk: SmallDisk) -> None:
    disk = small_disk(1)
    record = disk / "python-3.13.5-debian-12-amd64.json"
    record.write_text('{"old": true}\n')
    _fill(disk)
    with pytest.raises(OutputError, match="No space left on device"):
        write_atomic(record, b'{"new": true}\n' * 100_000)
    assert record.read_text() == '{"old": true}\n'
    assert _leftovers(disk) == []
