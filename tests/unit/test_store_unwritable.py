"""Finding 9: a local store that cannot be written is one line and exit 13 (OutputError), not a
traceback. Here the store's directory would sit below a regular file (ENOTDIR), which stops
root too; a read-only mount is tested in tests/integration/test_store_readonly.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from orchestrator.cli import main
from tests.publish_support import make_artifact

CELL = "3.13.5-debian-12-amd64"


def test_a_store_below_a_regular_file_is_one_line_exit_13(
    tmp_path: Path, repo_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    make_artifact(out / "artifacts")
    (tmp_path / "a-file").write_text("not a directory\n")
    store = tmp_path / "a-file" / "store"
    data = yaml.safe_load((repo_root / "matrix.yaml").read_text())
    data.setdefault("publish", {})["local_dir"] = str(store)
    matrix = tmp_path / "matrix.yaml"
    matrix.write_text(yaml.safe_dump(data, sort_keys=False))
    for directory in ("templates", "dockerfiles", "keys"):
        (tmp_path / directory).symlink_to(repo_root / directory)

    code = main(["--matrix", str(matrix), "--out", str(out), "publish", CELL])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 13, err
    assert len(errors) == 1 and str(store) in errors[0] and "Not a directory" in errors[0], err
    assert "Traceback" not in err
    assert (tmp_path / "a-file").read_text() == "not a directory\n"
