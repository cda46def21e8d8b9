"""The privileged part of a test (mounting a tmpfs, handing files to another uid, the farm's
root-only code paths), run with the privileges `make setup` uses: directly when the tests run
as root, else through `sudo -n` (the README lets `make test` run as a user with sudo).

When neither works the test FAILS, saying what to do; it never skips: a check that did not
run did not pass. `sudo -n` never prompts: give the user NOPASSWD sudo, or run `sudo -v`
just before `make test` (make setup's own sudo calls do that).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

HINT = (
    "these tests need root: run them as root, or as a user with sudo rights "
    "(NOPASSWD, or `sudo -v` first), as `make setup` does"
)


def is_root() -> bool:
    return os.geteuid() == 0


def as_root(
    argv: Sequence[str], *, check: bool = True, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run `argv` as root and return what it did; pytest.fail when it cannot run or fails."""
    prefix: list[str] = []
    if not is_root():
        sudo = shutil.which("sudo")
        if sudo is None:
            pytest.fail(f"not root and no sudo to run {argv[0]}: {HINT}", pytrace=False)
        prefix = [sudo, "-n", "--"]
    result = subprocess.run(
        [*prefix, *argv], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        why = " ".join((result.stderr or result.stdout).split())[:300]
        pytest.fail(
            f"`{' '.join(argv)}` as root failed (exit {result.returncode}): {why}; {HINT}",
            pytrace=False,
        )
    return result


def mount_tmpfs(where: Path, megabytes: int) -> None:
    """A tmpfs of `megabytes` at `where`, owned by the caller (its uid/gid), mode 1777."""
    options = f"size={megabytes}m,uid={os.getuid()},gid={os.getgid()},mode=1777"
    as_root(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)])


def unmount(where: Path) -> None:
    as_root(["umount", "-l", str(where)], check=False)


def python_as_root(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `code` with this interpreter (the project's venv) as root."""
    return as_root([sys.executable, "-c", code, *args])


def remove_as_root(path: Path) -> None:
    """Remove a tree that root's code left owned by root under the caller's tmp_path."""
    as_root(["rm", "-rf", "--", str(path)], check=False)
