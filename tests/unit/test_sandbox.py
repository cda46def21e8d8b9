"""Container confinement and the build watchdog, without Docker."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from orchestrator import sandbox
from orchestrator.sandbox import SANDBOX_UID, SandboxUser, confinement, sandbox_user, take_back
from orchestrator.watchdog import Watchdog
from tests.privileged import as_root, is_root, python_as_root, remove_as_root


def test_root_caller_gets_the_fixed_unprivileged_uid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox.os, "getuid", lambda: 0)
    monkeypatch.setattr(sandbox.os, "getgid", lambda: 0)
    user = sandbox_user()
    assert (user.uid, user.gid) == (SANDBOX_UID, sandbox.SANDBOX_GID)
    assert user.maps_back


def test_other_callers_keep_their_own_uid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox.os, "getuid", lambda: 1234)
    monkeypatch.setattr(sandbox.os, "getgid", lambda: 99)
    user = sandbox_user()
    assert user.spec == "1234:99"
    assert not user.maps_back


def test_confinement_drops_everything() -> None:
    options = confinement(SandboxUser(SANDBOX_UID, SANDBOX_UID), tmpfs_bytes=1024**3)
    assert options["user"] == f"{SANDBOX_UID}:{SANDBOX_UID}"
    assert options["cap_drop"] == ["ALL"]
    assert options["security_opt"] == ["no-new-privileges:true"]
    assert options["network_disabled"] is True
    assert options["pids_limit"] > 0
    assert f"size={1024**3}" in options["tmpfs"]["/tmp"]
    assert "privileged" not in options and "cap_add" not in options


def test_a_scratch_dir_replaces_the_tmpfs(tmp_path: Path) -> None:
    options = confinement(SandboxUser(SANDBOX_UID, SANDBOX_UID), scratch_dir=tmp_path)
    assert "tmpfs" not in options


# take_back only acts when the farm runs as root (it hands the sandbox uid's files back): these
# run it as root, through sudo when the tests do not run as root (tests/privileged.py).
TAKE_BACK = (
    "import sys; from pathlib import Path; "
    "from orchestrator.sandbox import SANDBOX_UID, SandboxUser, take_back; "
    "take_back(Path(sys.argv[1]), SandboxUser(SANDBOX_UID, SANDBOX_UID))"
)


def _take_back_as_root(tree: Path) -> None:
    if is_root():
        take_back(tree, SandboxUser(SANDBOX_UID, SANDBOX_UID))
    else:
        python_as_root(TAKE_BACK, str(tree))


def test_take_back_returns_a_tree_to_the_caller(tmp_path: Path) -> None:
    tree = tmp_path / "prefix"
    (tree / "bin").mkdir(parents=True)
    (tree / "bin" / "python3").write_text("x")
    (tree / "bin" / "python").symlink_to("python3")
    paths = (tree, tree / "bin", tree / "bin" / "python3", tree / "bin" / "python")
    try:
        as_root(["chown", "-hR", f"{SANDBOX_UID}:{SANDBOX_UID}", str(tree)])
        assert all(path.lstat().st_uid == SANDBOX_UID for path in paths)
        _take_back_as_root(tree)
        for path in paths:
            assert path.lstat().st_uid == 0
    finally:
        remove_as_root(tree)


def test_watchdog_kills_at_the_deadline() -> None:
    killed = threading.Event()
    notes: list[str] = []
    with Watchdog(
        kill=killed.set, timeout=0.2, stall_after=None, report=notes.append, poll=0.02
    ) as watchdog:
        assert killed.wait(5)
    assert watchdog.timed_out
    assert notes and "time limit" in notes[0]


def test_watchdog_reports_a_stall_once_and_again_after_output() -> None:
    notes: list[str] = []
    with Watchdog(
        kill=lambda: None, timeout=None, stall_after=0.1, report=notes.append, poll=0.02
    ) as watchdog:
        time.sleep(0.4)
        assert len(notes) == 1 and "no output" in notes[0]
        watchdog.output()
        time.sleep(0.4)
    assert len(notes) == 2
    assert not watchdog.timed_out


def test_watchdog_without_limits_starts_no_thread() -> None:
    before = threading.active_count()
    with Watchdog(kill=lambda: None, timeout=None, stall_after=None, report=print):
        assert threading.active_count() == before


def test_take_back_walks_a_tree_deeper_than_the_recursion_limit(tmp_path: Path) -> None:
    tree = tmp_path / "prefix"
    tree.mkdir()
    here = os.open(tree, os.O_RDONLY)
    for _ in range(1500):
        os.mkdir("d", dir_fd=here)
        below = os.open("d", os.O_RDONLY, dir_fd=here)
        os.close(here)
        here = below
    try:
        as_root(["chown", "-R", f"{SANDBOX_UID}:{SANDBOX_UID}", str(tree)])
        assert os.fstat(here).st_uid == SANDBOX_UID
        _take_back_as_root(tree)
        assert os.fstat(here).st_uid == 0  # the deepest directory
    finally:
        os.close(here)
        remove_as_root(tree)
