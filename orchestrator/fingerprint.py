"""A cell's fingerprint: a hash of everything that can change its output.

Equal fingerprint means equal output, so a nightly run can skip a cell whose published
metadata carries the same one (Gentoo's wheel-reuse idea applied to the farm).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from orchestrator.buildspec import BuildSpec
from orchestrator.matrix import VariantName

_NOT_OUTPUT = {"description", "timeout_minutes", "stall_minutes"}
# A profile's jit setting is not an output: the cell's JIT is (below), so a cell without the
# JIT keeps the fingerprint it had before the option existed.
_NOT_OUTPUT_PROFILE = _NOT_OUTPUT | {"jit"}


def fingerprint_inputs(
    spec: BuildSpec,
    *,
    recipe_version: int,
    dockerfile_sha256: str,
    base_image_id: str,
    recipe_sha256: str,
) -> dict[str, Any]:
    inputs: dict[str, Any] = {
        "recipe_version": recipe_version,
        "python_version": spec.cell.version,
        "source_sha256": spec.cell.python.sha256,
        "stack": spec.cell.stack_name,
        "arch": spec.cell.arch.value,
        "dockerfile_sha256": dockerfile_sha256,
        "base_image_id": base_image_id,
        "recipe_sha256": recipe_sha256,
        # The description is prose and the limits only say when to give up: changing them
        # must not rebuild every cell.
        "profile": {
            "name": spec.profile_name,
            **spec.profile.model_dump(exclude=_NOT_OUTPUT_PROFILE),
        },
        **({"jit": True} if spec.jit else {}),
        "configure_args": list(spec.configure_args),
        "extra_cflags": spec.extra_cflags,
        "ldflags": spec.ldflags,
        "expected_modules": list(spec.expected_modules),
    }
    # Only for other variants: a default cell's inputs (and so its fingerprint) stay what they
    # were before variants existed, so nothing already published reads as changed.
    if spec.cell.variant is not VariantName.DEFAULT:
        inputs["variant"] = spec.cell.variant.value
    # Likewise only for CPU level cells (their flags differ too; the level says why).
    if spec.cell.cpu_level is not None:
        inputs["cpu_level"] = spec.cell.cpu_level.value
    return inputs


def fingerprint(inputs: dict[str, Any]) -> str:
    canonical = json.dumps(inputs, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()
