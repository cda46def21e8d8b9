from __future__ import annotations

import os
from pathlib import Path

from orchestrator.archive import pack_tree
from orchestrator.verify.reproduce import compare_archives


def _tree(root: Path, content: bytes) -> Path:
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "python3").write_bytes(content)
    (root / "bin" / "python3").chmod(0o755)
    (root / "lib").mkdir()
    (root / "lib" / "a.txt").write_text("same")
    os.symlink("python3", root / "bin" / "python")
    return root


def test_identical_and_differing_members(tmp_path: Path) -> None:
    a = pack_tree(
        _tree(tmp_path / "a", b"one"), tmp_path / "a.tar.zst", source_date_epoch=1, level=3
    )
    b = pack_tree(
        _tree(tmp_path / "b", b"one"), tmp_path / "b.tar.zst", source_date_epoch=1, level=3
    )
    assert compare_archives(a.path, b.path) == []
    c_tree = _tree(tmp_path / "c", b"two")
    (c_tree / "lib" / "extra").write_text("x")
    c = pack_tree(c_tree, tmp_path / "c.tar.zst", source_date_epoch=1, level=3)
    diffs = {d.name: d.what for d in compare_archives(a.path, c.path)}
    assert diffs == {
        "./bin/python3": "content (same size)",
        "./lib/extra": "only in the second archive",
    }
