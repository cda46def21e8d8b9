"""`orchestrator nightly` with a fake build, for tests of what nightly does around builds.

    python -m tests.fake_nightly BUILDS_LOG RELEASE_FILE -- [orchestrator args...]

Everything is the real CLI (the store, its lock or lease, planning, skipping, publishing)
except three steps that would need Docker: the builder image plan (prepare), image builds, and
the build itself. A fake build appends the cell id to BUILDS_LOG (so a test counts builds),
waits until RELEASE_FILE exists (so a test decides how long a run holds the store; at most
120 s), then writes a complete, verified artifact set whose fingerprint is the one planning
computed. The fingerprint of a cell is the sha256 of its id: unchanged inputs, so a later
run skips what was published.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from orchestrator import nightly
from orchestrator.cli.main import main
from orchestrator.matrix import Cell
from orchestrator.prepare import PreparedCell
from orchestrator.progress import CellOutcome
from tests.publish_support import make_artifact

REPO_ROOT = Path(__file__).resolve().parents[1]
# Three cells, two uv files, two arches: enough for a run to hold the store a while.
CELLS = ["3.13.5-debian-12-amd64", "3.13.5-debian-12-arm64", "3.13.5t-debian-12-amd64"]


def fingerprint(cell: Cell) -> str:
    return hashlib.sha256(cell.id.encode()).hexdigest()


def run(builds_log: Path, release: Path, argv: list[str]) -> int:
    def prepare(
        self: nightly.Nightly, cells: list[Cell]
    ) -> tuple[list[PreparedCell], list[CellOutcome]]:
        prepared = [
            PreparedCell(
                cell=cell,
                spec=None,  # type: ignore[arg-type]
                builder=None,  # type: ignore[arg-type]
                fingerprint=fingerprint(cell),
                fingerprint_inputs={},
            )
            for cell in cells
        ]
        return prepared, []

    def build_cell(_matrix: Any, cell: Cell, *, layout: Any, **_: Any) -> Any:
        with builds_log.open("a") as log:
            log.write(f"{cell.id} {os.getpid()}\n")
        deadline = time.monotonic() + 120
        while not release.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        name = make_artifact(
            layout.artifacts,
            version=cell.python.version,
            stack=cell.stack_name,
            arch=cell.arch.value,
            variant=cell.variant.value,
            content=f"runtime of {cell.id} ".encode(),
            fingerprint=fingerprint(cell),
        )
        archive = layout.artifacts / name
        digest = hashlib.sha256(archive.read_bytes()).hexdigest()
        return SimpleNamespace(archive=SimpleNamespace(size=archive.stat().st_size, sha256=digest))

    nightly.Nightly.prepare = prepare  # type: ignore[method-assign]
    nightly.Nightly._ensure_images = lambda self, todo: {}  # type: ignore[method-assign]
    # nightly imports the build pipeline when a cell is built (a no-op run never loads it).
    import orchestrator.build

    orchestrator.build.build_cell = build_cell  # type: ignore[assignment]
    return main(argv)


# --- for tests: run two at once ----------------------------------------------------------


def start_fake_nightly(
    builds: Path, release: Path, args: list[str], env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.fake_nightly", str(builds), str(release), "--", *args],
        cwd=REPO_ROOT, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def race(
    builds: Path,
    release: Path,
    first: list[str],
    second: list[str],
    env: dict[str, str],
    *,
    while_held: Callable[[], None] | None = None,
) -> tuple[tuple[subprocess.Popen[str], str], tuple[subprocess.Popen[str], str]]:
    """Start both at once; the one refused must exit while the other holds the store (its
    builds wait for `release`). Returns ((winner, stderr), (loser, stderr))."""
    runs = [start_fake_nightly(builds, release, args, env) for args in (first, second)]
    deadline = time.monotonic() + 120
    while all(run.poll() is None for run in runs) and time.monotonic() < deadline:
        time.sleep(0.1)
    finished = [run for run in runs if run.poll() is not None]
    assert finished, "neither nightly finished while the other held the store"
    loser = finished[0]
    winner = runs[1 - runs.index(loser)]
    loser_err = loser.communicate(timeout=30)[1]
    if while_held is not None:
        while_held()
    release.touch()
    winner_err = winner.communicate(timeout=300)[1]
    return (winner, winner_err), (loser, loser_err)


def builds_by_pid(builds: Path) -> list[tuple[str, int]]:
    if not builds.exists():
        return []
    return [(c, int(p)) for c, p in (line.split() for line in builds.read_text().splitlines())]


def assert_refused_and_built_once(
    winner: tuple[subprocess.Popen[str], str], loser: tuple[subprocess.Popen[str], str],
    builds: Path,
) -> None:  # fmt: skip
    (winner_run, winner_err), (loser_run, loser_err) = winner, loser
    errors = [line for line in loser_err.splitlines() if line.startswith("error:")]
    assert loser_run.returncode == 10, loser_err
    assert len(errors) == 1 and "Traceback" not in loser_err, loser_err
    assert f"nightly pid {winner_run.pid} " in errors[0], errors[0]
    assert winner_run.returncode == 0, winner_err
    built = builds_by_pid(builds)
    assert sorted(cell for cell, _ in built) == sorted(CELLS)  # each once
    assert {pid for _, pid in built} == {winner_run.pid}


if __name__ == "__main__":
    separator = sys.argv.index("--")
    builds, release_file = (Path(a) for a in sys.argv[1:separator])
    sys.exit(run(builds, release_file, sys.argv[separator + 1 :]))
