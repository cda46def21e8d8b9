"""What is known about a cell before anything runs: its build spec, its builder image plan and
its fingerprint.

A nightly run decides on this alone (skip a cell published with the same fingerprint), so this
module and what it imports stay light: no container, archive, verification or SBOM code. The
pipeline that builds a cell is orchestrator.build, imported only when a cell is built.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from docker import DockerClient

from orchestrator.buildspec import BuildSpec, build_spec, installed_recipe_digest
from orchestrator.cellbuild import Limits, Transfer
from orchestrator.fingerprint import fingerprint, fingerprint_inputs
from orchestrator.images import ImagePlan, plan_image
from orchestrator.matrix import Cell, Matrix

if TYPE_CHECKING:  # the verify package is not loaded to plan a nightly
    from orchestrator.verify.cpulevel import CpuFlagsReader


@dataclass(frozen=True, kw_only=True)
class BuildOptions:
    profile: str | None = None
    jobs: int = os.cpu_count() or 1
    keep_work: bool = False
    extra_ca: bytes = b""  # a PEM bundle (images.read_extra_ca) for the images' trust store
    limits: Limits = field(default_factory=Limits)
    transfer: Transfer = "auto"
    # Overrides the profile's timeout_minutes (matrix.yaml) for every cell of the run.
    timeout_minutes: float | None = None
    # Required verification checks that may be skipped (--allow-skip; verify/required.py).
    allowed_skips: tuple[str, ...] = ()
    # Reads the CPU features of the machine the containers run on, for CPU level cells
    # (verify/cpulevel.py); None: /proc/cpuinfo of the engine's machine. Tests inject one.
    cpu_flags: CpuFlagsReader | None = None


@dataclass(frozen=True, kw_only=True)
class PreparedCell:
    """A cell with everything known before building: spec, builder image plan, fingerprint."""

    cell: Cell
    spec: BuildSpec
    builder: ImagePlan
    fingerprint: str
    fingerprint_inputs: dict[str, Any]


def prepare_cell(
    matrix: Matrix,
    cell: Cell,
    *,
    client: DockerClient,
    options: BuildOptions,
    builder: ImagePlan | None = None,
) -> PreparedCell:
    """Compute the fingerprint without starting anything (a nightly run skips on it)."""
    spec = build_spec(matrix, cell, options.profile)
    plan = builder or plan_image(
        client, matrix, cell.stack_name, cell.arch, "builder", extra_ca=options.extra_ca
    )
    inputs = fingerprint_inputs(
        spec,
        recipe_version=matrix.model.recipe_version,
        dockerfile_sha256=plan.dockerfile_sha256,
        base_image_id=plan.base_image_id,
        recipe_sha256=installed_recipe_digest(),
    )
    return PreparedCell(
        cell=cell, spec=spec, builder=plan, fingerprint=fingerprint(inputs),
        fingerprint_inputs=inputs,
    )  # fmt: skip
