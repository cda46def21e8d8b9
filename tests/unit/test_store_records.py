"""Issue 16, findings 1 and 4, against the local store: a store whose record area
(`.farm-meta/`) is deleted, partial, symlinked out of the store or out of date keeps every
manifest entry and every published archive; publishing stops in one line naming what is
missing and the repair command, and `check-manifest --repair` rebuilds the records from the
published bytes. Lock files that are fifos, symlinks or directories are refused at once.

Through the real CLI (in process), on fabricated artifact sets (tests/publish_support.py).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator.cli import main
from orchestrator.publish.store import DirectoryStore, StoreRecordsError
from tests.publish_support import make_artifact

ARM = "3.13.5-debian-12-arm64"
AMD = "3.13.5-debian-12-amd64"
ARM_ARCHIVE = "python-3.13.5-debian-12-arm64.tar.zst"
AMD_ARCHIVE = "python-3.13.5-debian-12-amd64.tar.zst"
REPO_ROOT = Path(__file__).resolve().parents[2]


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(list(args))
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return code, err


def _error_line(err: str) -> str:
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    return errors[0]


def _published(store: Path) -> dict[str, bytes]:
    """Every published file (records and lock files aside), with its bytes."""
    return {
        str(p.relative_to(store)): p.read_bytes()
        for p in sorted(store.rglob("*"))
        if p.is_file() and not p.is_symlink() and not p.name.startswith(".")
        and ".farm-meta" not in p.relative_to(store).parts
    }  # fmt: skip


def _tree(store: Path) -> dict[str, bytes | str]:
    """Every file, record and link under the store (links not followed)."""
    return {
        str(p.relative_to(store)): (
            f"-> {os.readlink(p)}" if p.is_symlink() else p.read_bytes() if p.is_file() else "dir"
        )
        for p in sorted(store.rglob("*"))
    }


def _manifest_names(store: Path) -> list[str]:
    runtimes = json.loads((store / "manifest.json").read_text())["runtimes"]
    return sorted(r["name"] for r in runtimes)


def _delete(meta: Path, tmp_path: Path) -> None:
    shutil.rmtree(meta)


def _partial(meta: Path, tmp_path: Path) -> None:
    # An rsync cut short: the manifest's and the archive's records are gone, the rest is there.
    (meta / "manifest.json.json").unlink()
    (meta / f"{ARM_ARCHIVE}.json").unlink()


def _symlinked(meta: Path, tmp_path: Path) -> None:
    # The records moved out of the store and linked back: the store must not use them.
    elsewhere = tmp_path / "elsewhere"
    shutil.move(meta, elsewhere)
    meta.symlink_to(elsewhere)


DAMAGE: dict[str, Callable[[Path, Path], None]] = {
    "deleted": _delete,
    "partial": _partial,
    "symlinked": _symlinked,
}


@pytest.mark.parametrize("damage", DAMAGE.values(), ids=DAMAGE.keys())
def test_entry_and_archive_survive_a_damaged_record_area(
    damage: Callable[[Path, Path], None], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    store = out / "publish"
    artifacts = out / "artifacts"
    make_artifact(artifacts, arch="arm64", content=b"arm64 runtime, first build ")
    make_artifact(artifacts, arch="amd64", content=b"amd64 runtime ")
    assert _cli(capsys, "--out", str(out), "publish", ARM)[0] == 0
    published_arm = (store / ARM_ARCHIVE).read_bytes()
    damage(store / ".farm-meta", tmp_path)
    outside = {p: p.read_bytes() for p in tmp_path.joinpath("elsewhere").rglob("*") if p.is_file()}
    before = _published(store)

    # The repro of finding 1: publishing another cell dropped the arm64 entry (exit 0).
    code, err = _cli(capsys, "--out", str(out), "publish", AMD)
    line = _error_line(err)
    assert code == 10, err
    assert ".farm-meta" in line and "check-manifest --repair" in line, line
    assert _published(store) == before  # nothing written, not even the amd64 archive
    # ...and a different arm64 build, without --force, replaced the published archive.
    make_artifact(artifacts, arch="arm64", content=b"arm64 runtime, other bytes ")
    code, err = _cli(capsys, "--out", str(out), "publish", ARM)
    assert code == 10 and "check-manifest --repair" in _error_line(err), err
    assert (store / ARM_ARCHIVE).read_bytes() == published_arm
    check, err = _cli(capsys, "--out", str(out), "check-manifest", ARM)
    assert check == 10 and "--repair" in err, err

    if damage is _symlinked:
        # Repair does not write through the link either; it says to remove it.
        code, err = _cli(capsys, "--out", str(out), "check-manifest", "--repair", ARM)
        assert code == 10 and "symlink" in _error_line(err), err
        (store / ".farm-meta").unlink()
    everything = _tree(store)
    code, err = _cli(capsys, "--out", str(out), "check-manifest", "--repair", "--dry-run", ARM)
    assert code == 0 and "would rebuild the record of" in err, err
    assert _tree(store) == everything  # records included: a dry run writes nothing
    code, err = _cli(capsys, "--out", str(out), "check-manifest", "--repair", ARM)
    assert code == 0, err
    assert "record(s) rebuilt" in err
    assert _published(store) == before  # repair writes records only

    # Repaired: the catalogue grows instead of being replaced, and immutability holds.
    assert _cli(capsys, "--out", str(out), "publish", AMD)[0] == 0
    assert _manifest_names(store) == [AMD_ARCHIVE, ARM_ARCHIVE]
    code, err = _cli(capsys, "--out", str(out), "publish", ARM)
    assert code == 10 and "use --force" in _error_line(err), err
    assert (store / ARM_ARCHIVE).read_bytes() == published_arm
    assert _cli(capsys, "--out", str(out), "check-manifest", ARM, AMD)[0] == 0
    if outside:
        assert {p: p.read_bytes() for p in outside} == outside  # the link's target untouched


def test_a_manifest_restored_alone_is_refused_until_repaired(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    store = out / "publish"
    make_artifact(out / "artifacts", arch="arm64")
    make_artifact(out / "artifacts", arch="amd64")
    make_artifact(out / "artifacts", arch="amd64", stack="debian-13")
    assert _cli(capsys, "--out", str(out), "publish", ARM)[0] == 0
    backup = (store / "manifest.json").read_bytes()  # lists arm64 only
    assert _cli(capsys, "--out", str(out), "publish", AMD)[0] == 0
    (store / "manifest.json").write_bytes(backup)  # restored from a backup, by hand

    code, err = _cli(capsys, "--out", str(out), "publish", "3.13.5-debian-13-amd64")
    assert code == 10, err
    line = _error_line(err)
    assert "manifest.json" in line and "describes other bytes" in line, line
    assert (store / "manifest.json").read_bytes() == backup
    assert _cli(capsys, "--out", str(out), "check-manifest", "--repair", ARM)[0] == 0
    assert _cli(capsys, "--out", str(out), "publish", "3.13.5-debian-13-amd64")[0] == 0
    # What the restored manifest listed is kept, the new cell added; amd64 3.13.5, which the
    # restore dropped, comes back by publishing it again (its archive is unchanged).
    assert _manifest_names(store) == [ARM_ARCHIVE, "python-3.13.5-debian-13-amd64.tar.zst"]
    assert _cli(capsys, "--out", str(out), "publish", AMD)[0] == 0
    assert len(_manifest_names(store)) == 3


def test_repair_leaves_bytes_that_contradict_what_is_published_without_a_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    store = out / "publish"
    make_artifact(out / "artifacts", arch="arm64")
    make_artifact(out / "artifacts", arch="amd64")
    assert _cli(capsys, "--out", str(out), "publish", ARM)[0] == 0
    shutil.rmtree(store / ".farm-meta")
    (store / ARM_ARCHIVE).write_bytes(b"an archive swapped in by hand")

    code, err = _cli(capsys, "--out", str(out), "check-manifest", "--repair", ARM)
    assert code == 10, err
    assert f"{ARM_ARCHIVE}: its bytes" in err and ".sha256" in err and "manifest.json" in err
    assert not (store / ".farm-meta" / f"{ARM_ARCHIVE}.json").exists()
    # The other cell publishes; the contradicted archive stays refused, whatever is tried.
    assert _cli(capsys, "--out", str(out), "publish", AMD)[0] == 0
    for extra in ([], ["--force"]):
        code, err = _cli(capsys, "--out", str(out), "publish", ARM, *extra)
        assert code == 10 and "no record" in _error_line(err), err
    assert (store / ARM_ARCHIVE).read_bytes() == b"an archive swapped in by hand"
    assert _manifest_names(store) == [AMD_ARCHIVE, ARM_ARCHIVE]


def test_repair_drops_records_of_objects_that_are_gone(tmp_path: Path) -> None:
    from orchestrator.publish.repair import repair_records

    store = DirectoryStore(tmp_path / "store")
    body = b"{}"
    store.put("manifest.json", body, sha256=_sha(body), content_type="application/json")
    (store.root / "manifest.json").unlink()
    report = repair_records(store, "", progress=lambda _line: None)
    assert report.dropped == ["manifest.json"] and not report.problems
    assert not (store.root / ".farm-meta" / "manifest.json.json").exists()


def test_a_record_area_that_is_a_file_is_refused(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "store")
    store.root.mkdir()
    (store.root / ".farm-meta").write_text("not a directory")
    with pytest.raises(StoreRecordsError, match="not the store's record directory"):
        store.head("manifest.json")


def test_a_published_file_that_is_a_fifo_or_symlink_is_refused(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "store")
    store.root.mkdir()
    os.mkfifo(store.root / "manifest.json")
    (store.root / ARM_ARCHIVE).symlink_to("/etc/hostname")
    for key, kind in (("manifest.json", "a fifo"), (ARM_ARCHIVE, "a symlink")):
        with pytest.raises(Exception, match=kind) as raised:
            store.get(key)
        assert "\n" not in str(raised.value)


def _sha(body: bytes) -> str:
    import hashlib

    return hashlib.sha256(body).hexdigest()


# --- finding 4: lock files that are not regular files --------------------------------------

LOCK_DAMAGE: dict[str, Callable[[Path], None]] = {
    "fifo": lambda path: os.mkfifo(path),
    "symlink": lambda path: path.symlink_to("/dev/zero"),
    "directory": lambda path: path.mkdir(),
}


@pytest.mark.parametrize("name", [".farm-lock", ".farm-run-lock"])
@pytest.mark.parametrize("kind", LOCK_DAMAGE.keys())
def test_a_lock_file_that_is_not_a_regular_file_is_refused_without_blocking(
    name: str, kind: str, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    make_artifact(out / "artifacts")
    assert main(["--out", str(out), "publish", AMD]) == 0
    LOCK_DAMAGE[kind](_replace(out / "publish" / name))
    commands = {
        ".farm-lock": [["publish", AMD], ["check-manifest", AMD]],
        # nightly takes the run lock before it plans anything (no Docker reached).
        ".farm-run-lock": [["nightly", AMD]],
    }[name]
    for command in commands:
        # A fifo held publish and check-manifest forever: the timeout fails the test.
        result = _run(["--out", str(out), *command], timeout=60)
        assert result.returncode == 10, result.stderr
        line = _error_line(result.stderr)
        assert name in line and "not a regular file" in line, line
        assert "Traceback" not in result.stderr


def _replace(path: Path) -> Path:
    if path.exists() or path.is_symlink():
        path.unlink()
    return path


def _run(args: list[str], *, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
