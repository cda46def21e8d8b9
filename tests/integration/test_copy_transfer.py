"""The transfer remote engines use (inputs and install tree through the Docker API instead of
bind mounts), forced on the local engine: it must give the very same archive."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.support import E2E_CELL, E2EBuild, run_cli

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


def test_copy_transfer_gives_the_same_archive(e2e_build: E2EBuild, tmp_path: Path) -> None:
    result = run_cli(
        ["--out", str(tmp_path), "nightly", E2E_CELL, "--profile", "fast", "--no-publish",
         "--transfer", "copy", "--report", str(tmp_path / "report.json")]
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    outcome = json.loads((tmp_path / "report.json").read_text())["cells"][0]
    assert outcome["result"] == "built"
    copied = tmp_path / "artifacts" / e2e_build.archive.name
    assert copied.read_bytes() == e2e_build.archive.read_bytes()
    record = json.loads((tmp_path / "artifacts" / e2e_build.metadata.name).read_text())
    assert record["verification"]["ok"] is True
