"""The fingerprint of every cell of the shipped matrix in every profile, recorded once in
tests/unit/data/fingerprints.json so that a change altering any of them fails a test
(tests/unit/test_fingerprint_stability.py): a changed fingerprint rebuilds (and republishes)
that cell in the next nightly run.

Per cell and profile the file keeps the fingerprint of fingerprint_inputs() computed with fixed
stand-ins for the three hashes that are not the matrix's (the base image id depends on the
machine; the rendered Dockerfile and the recipe are files of their own), and a short hash of
each input, to name what changed. The real Dockerfile hash of each stack and the recipe digest
are kept once at the top: editing templates/ or orchestrator/recipe/ changes every
fingerprint of that stack (or all of them), and the test says so.

Regenerate, after a change that is meant to alter fingerprints (say why in the commit):

    .venv/bin/python -m tests.fingerprint_fixture
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from orchestrator.buildspec import build_spec, installed_recipe_digest
from orchestrator.fingerprint import fingerprint, fingerprint_inputs
from orchestrator.matrix import Matrix, load_matrix
from orchestrator.render import render_stack

REPO_ROOT = Path(__file__).resolve().parent.parent
FIXTURE = REPO_ROOT / "tests" / "unit" / "data" / "fingerprints.json"
REGENERATE = ".venv/bin/python -m tests.fingerprint_fixture"
STAND_INS = {
    "dockerfile_sha256": "d" * 64,
    "base_image_id": "sha256:" + "b" * 64,
    "recipe_sha256": "r" * 64,
}


def _short(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def inputs_of(matrix: Matrix, cell_id: str, profile: str) -> dict[str, Any]:
    return fingerprint_inputs(
        build_spec(matrix, matrix.cell(cell_id), profile),
        recipe_version=matrix.model.recipe_version,
        **STAND_INS,
    )


def cell_entry(matrix: Matrix, cell_id: str) -> dict[str, Any]:
    """{"fingerprints": {profile: fingerprint}, "inputs": {input: short hash}}, the inputs
    those of the default profile, to name what changed."""
    fingerprints = {
        profile: fingerprint(inputs_of(matrix, cell_id, profile))
        for profile in sorted(matrix.model.profiles)
    }
    inputs = inputs_of(matrix, cell_id, matrix.model.default_profile)
    return {
        "fingerprints": fingerprints,
        "inputs": {k: _short(v) for k, v in sorted(inputs.items()) if k not in STAND_INS},
    }


def current(matrix_path: Path = REPO_ROOT / "matrix.yaml") -> dict[str, Any]:
    matrix = load_matrix(matrix_path)
    return {
        "regenerate": REGENERATE,
        "stand_ins": STAND_INS,
        "recipe_sha256": installed_recipe_digest(),
        "dockerfile_sha256": {
            stack: hashlib.sha256(render_stack(matrix, stack).encode()).hexdigest()
            for stack in sorted(matrix.model.stacks)
        },
        "cells": {cell.id: cell_entry(matrix, cell.id) for cell in matrix.cells()},
    }


def write(path: Path = FIXTURE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = current()
    # One line per cell: a change shows as the lines of the cells it touched.
    cells = data.pop("cells")
    head = json.dumps(data, indent=1, sort_keys=True)[:-2]
    body = ",\n".join(
        f"  {json.dumps(cell_id)}: {json.dumps(entry, sort_keys=True)}"
        for cell_id, entry in cells.items()
    )
    path.write_text(f'{head},\n "cells": {{\n{body}\n }}\n}}\n')


if __name__ == "__main__":
    write()
    print(f"wrote {FIXTURE.relative_to(REPO_ROOT)}")
