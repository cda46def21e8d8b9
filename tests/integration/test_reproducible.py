"""Two fast builds of the same cell from the same inputs give byte-identical archives."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.verify.reproduce import compare_archives
from tests.integration.support import E2E_CELL, E2EBuild, run_cli

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


def test_two_fast_builds_are_byte_identical(e2e_build: E2EBuild, tmp_path: Path) -> None:
    second = run_cli(["--out", str(tmp_path), "build", E2E_CELL, "--profile", "fast", "--quiet"])
    assert second.returncode == 0, second.stderr[-3000:]
    rebuilt = tmp_path / "artifacts" / e2e_build.archive.name
    first_record = json.loads(e2e_build.metadata.read_text())
    second_record = json.loads((tmp_path / "artifacts" / e2e_build.metadata.name).read_text())
    assert first_record["fingerprint"] == second_record["fingerprint"], "inputs differ"
    diffs = compare_archives(e2e_build.archive, rebuilt)
    assert diffs == [], "members differ: " + "; ".join(str(d) for d in diffs[:20])
    assert rebuilt.read_bytes() == e2e_build.archive.read_bytes()
