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
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from orchestrator import nightly
from orchestrator.build import PreparedCell
from orchestrator.cli.main import main
from orchestrator.matrix import Cell
from orchestrator.progress import CellOutcome
from tests.publish_support import make_artifact


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
    nightly.build_cell = build_cell  # type: ignore[assignment]
    return main(argv)


if __name__ == "__main__":
    separator = sys.argv.index("--")
    builds, release_file = (Path(a) for a in sys.argv[1:separator])
    sys.exit(run(builds, release_file, sys.argv[separator + 1 :]))
