"""Fingerprints stay what they were unless a change means to rebuild: every cell of the
shipped matrix in every profile against tests/unit/data/fingerprints.json (how it is made and
regenerated: tests/fingerprint_fixture.py). A changed fingerprint makes the next nightly run
rebuild and republish that cell."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator.buildspec import build_spec, installed_recipe_digest
from orchestrator.fingerprint import fingerprint_inputs
from orchestrator.matrix import load_matrix
from tests.fingerprint_fixture import FIXTURE, REGENERATE, STAND_INS, cell_entry, current

REGENERATE_HINT = f"if the change means to rebuild these cells, regenerate: {REGENERATE}"


@pytest.fixture(scope="module")
def recorded() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(FIXTURE.read_text())
    return data


def test_the_fixture_covers_every_cell_and_profile(
    recorded: dict[str, Any], repo_root: Path
) -> None:
    matrix = load_matrix(repo_root / "matrix.yaml")
    cells = [cell.id for cell in matrix.cells()]
    assert sorted(recorded["cells"]) == sorted(cells), REGENERATE_HINT
    for entry in recorded["cells"].values():
        assert sorted(entry["fingerprints"]) == sorted(matrix.model.profiles), REGENERATE_HINT
    # 68 default cells x 3 profiles were the "204 unchanged" of the size pins; the
    # free-threaded and CPU level cells came later.
    default = [c for c in matrix.cells() if c.variant.value == "default" and c.cpu_level is None]
    assert len(default) * len(matrix.model.profiles) == 204


def test_no_cell_fingerprint_changed(recorded: dict[str, Any], repo_root: Path) -> None:
    matrix = load_matrix(repo_root / "matrix.yaml")
    changed: list[str] = []
    for cell_id, entry in recorded["cells"].items():
        now = cell_entry(matrix, cell_id)
        if now["fingerprints"] != entry["fingerprints"]:
            inputs = sorted(k for k, v in now["inputs"].items() if entry["inputs"].get(k) != v)
            profiles = [p for p, f in now["fingerprints"].items() if entry["fingerprints"][p] != f]
            changed.append(f"{cell_id} ({', '.join(profiles)}; inputs: {', '.join(inputs)})")
    assert not changed, (
        f"{len(changed)} cells changed fingerprint: {changed[:5]}; {REGENERATE_HINT}"
    )


def test_the_recipe_and_dockerfiles_are_the_recorded_ones(recorded: dict[str, Any]) -> None:
    """Editing orchestrator/recipe/ changes every cell's fingerprint; a rendered Dockerfile,
    every cell of its stack."""
    now = current()
    assert now["recipe_sha256"] == installed_recipe_digest()
    assert recorded["recipe_sha256"] == now["recipe_sha256"], (
        f"orchestrator/recipe/ changed: every cell rebuilds; {REGENERATE_HINT}"
    )
    stale = [
        stack
        for stack, digest in now["dockerfile_sha256"].items()
        if recorded["dockerfile_sha256"].get(stack) != digest
    ]
    assert not stale, f"Dockerfiles of {stale} changed: their cells rebuild; {REGENERATE_HINT}"
    assert recorded["stand_ins"] == STAND_INS


def test_a_pinned_size_is_not_a_build_input_of_any_cell(repo_root: Path) -> None:
    """`size` only bounds a download: for every cell and profile, the inputs are the same
    with and without it."""
    matrix = load_matrix(repo_root / "matrix.yaml")
    checked = 0
    for cell in matrix.cells():
        if cell.python.size is None:
            continue
        unsized = replace(cell, python=cell.python.model_copy(update={"size": None}))
        for profile in matrix.model.profiles:
            base = {"recipe_version": matrix.model.recipe_version, **STAND_INS}
            sized_inputs = fingerprint_inputs(build_spec(matrix, cell, profile), **base)  # type: ignore[arg-type]
            unsized_inputs = fingerprint_inputs(build_spec(matrix, unsized, profile), **base)  # type: ignore[arg-type]
            assert sized_inputs == unsized_inputs, (cell.id, profile)
            assert "size" not in json.dumps(sized_inputs)
            checked += 1
    assert checked >= 204


def test_the_fixture_notices_a_change(
    recorded: dict[str, Any], repo_root: Path, tmp_path: Path
) -> None:
    """The comparison can fail: one more build flag changes a recorded fingerprint and names
    the input that changed."""
    data = yaml.safe_load((repo_root / "matrix.yaml").read_text())
    data["build_flags"]["extra_cflags"] += " -g"
    edited = tmp_path / "matrix.yaml"
    edited.write_text(yaml.safe_dump(data))
    some = next(iter(recorded["cells"]))
    now = cell_entry(load_matrix(edited), some)
    assert now["fingerprints"] != recorded["cells"][some]["fingerprints"]
    assert now["inputs"]["extra_cflags"] != recorded["cells"][some]["inputs"]["extra_cflags"]
