"""A validated matrix expanded into cells: one build per Python version, variant, stack and
arch."""

from __future__ import annotations

import fnmatch
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from packaging.version import Version

from orchestrator.errors import ConfigError, SelectionError
from orchestrator.matrix.schema import (
    CPU_LEVEL_ARCH,
    Arch,
    CpuLevel,
    MatrixModel,
    Profile,
    PythonSource,
    Stack,
    VariantName,
    select_entries,
)


@dataclass(frozen=True, kw_only=True)
class Cell:
    """One build: a Python version in a variant on a stack for an arch (and, for amd64,
    optionally an x86-64 level above the baseline)."""

    python: PythonSource
    stack_name: str
    stack: Stack
    arch: Arch
    variant: VariantName = VariantName.DEFAULT
    variant_args: tuple[str, ...] = ()  # the variant's configure arguments
    cpu_level: CpuLevel | None = None  # None: the arch's baseline

    @property
    def arch_label(self) -> str:
        """The arch as ids and archive names spell it: amd64, or amd64v3 for a runtime built
        for x86-64-v3 (Ubuntu's name for that architecture variant)."""
        return self.arch.value + (self.cpu_level.value if self.cpu_level else "")

    @property
    def version(self) -> str:
        """The Python version, without the variant: 3.13.5 for 3.13.5t too."""
        return self.python.version

    @property
    def version_label(self) -> str:
        """The version as ids and archive names spell it: 3.13.5, or 3.13.5t for the
        free-threaded variant (uv's `3.13t`, CPython's python3.13t)."""
        return f"{self.python.version}{self.variant.abi_suffix}"

    @property
    def ldversion(self) -> str:
        """CPython's LDVERSION: 3.13 or 3.13t, as in bin/python3.13t and lib/python3.13t/."""
        return f"{self.python.major_minor}{self.variant.abi_suffix}"

    @property
    def id(self) -> str:
        return f"{self.version_label}-{self.stack_name}-{self.arch_label}"

    @property
    def baseline_id(self) -> str:
        """The id of the same cell at the arch's baseline (its own id when it is one)."""
        return f"{self.version_label}-{self.stack_name}-{self.arch.value}"

    @property
    def archive_stem(self) -> str:
        stack = self.stack
        return (
            f"python-{self.version_label}-{stack.distro}-{stack.distro_version}-{self.arch_label}"
        )

    @property
    def archive_name(self) -> str:
        return f"{self.archive_stem}.tar.zst"


@dataclass(frozen=True, kw_only=True)
class Matrix:
    """A validated matrix and the file it came from."""

    path: Path
    model: MatrixModel

    @property
    def root(self) -> Path:
        """Directory of matrix.yaml: relative paths in it are relative to here."""
        return self.path.parent

    @property
    def source_cache(self) -> Path:
        return (self.root / self.model.sources.cache_dir).resolve()

    def profile(self, name: str | None) -> tuple[str, Profile]:
        chosen = name or self.model.default_profile
        if chosen not in self.model.profiles:
            raise ConfigError(
                f"unknown profile {chosen!r}",
                hint=f"choose one of: {', '.join(sorted(self.model.profiles))}",
            )
        return chosen, self.model.profiles[chosen]

    def expected_modules(self, version: Version) -> list[str]:
        return select_entries(self.model.expected_modules, version)

    def versions_on(self, stack_name: str) -> list[Version]:
        return list(self._versions_by_stack.get(stack_name, ()))

    def cells(self) -> list[Cell]:
        """Every cell of the matrix, minus excludes, in a stable order (an amd64 cell's CPU
        level cells right after it)."""
        return list(self._cells)

    # The model is frozen, so its cells are computed once: a nightly run asks for them per
    # stack and per image (renders, JIT packages), which made planning quadratic in the matrix.
    @functools.cached_property
    def _cells(self) -> tuple[Cell, ...]:
        result: list[Cell] = []
        variants = self.model.variants
        cpu_levels = self.model.cpu_levels
        for python in sorted(self.model.pythons, key=lambda p: p.parsed):
            levels: list[CpuLevel | None] = [None]
            if cpu_levels is not None and cpu_levels.applies_to(python.parsed):
                levels.extend(cpu_levels.levels)
            # Enum order (default first), not YAML order: ids keep a stable order.
            for variant in sorted(variants, key=list(VariantName).index):
                if not variants[variant].applies_to(python.parsed):
                    continue
                for stack_name, stack in self.model.stacks.items():
                    for arch in self.model.arches:
                        for level in levels if arch is CPU_LEVEL_ARCH else [None]:
                            if any(
                                ex.matches(
                                    python.version,
                                    stack_name,
                                    arch.value,
                                    variant.value,
                                    level.value if level else "",
                                )
                                for ex in self.model.excludes
                            ):
                                continue
                            result.append(
                                Cell(
                                    python=python,
                                    stack_name=stack_name,
                                    stack=stack,
                                    arch=arch,
                                    variant=variant,
                                    variant_args=tuple(variants[variant].configure_args),
                                    cpu_level=level,
                                )
                            )
        return tuple(result)

    @functools.cached_property
    def _versions_by_stack(self) -> dict[str, tuple[Version, ...]]:
        versions: dict[str, set[Version]] = {}
        for cell in self._cells:
            versions.setdefault(cell.stack_name, set()).add(cell.python.parsed)
        return {name: tuple(sorted(found)) for name, found in versions.items()}

    def select(self, selectors: Sequence[str]) -> list[Cell]:
        """Cells whose id matches any glob selector; all cells when no selector is given.

        CPU level cells are opt-in unless `cpu_levels.nightly` is true: no selector takes
        them, and a selector takes one only when it names the level, i.e. matches the level
        cell's id and not its baseline twin's (`*-amd64v3` or the exact id, not `3.13.5-*`).
        """
        cells = self.cells()
        opt_in = self.model.cpu_levels is not None and not self.model.cpu_levels.nightly
        if not selectors:
            return [c for c in cells if not (opt_in and c.cpu_level)]
        chosen: list[Cell] = []
        for selector in selectors:
            matched = [
                c
                for c in cells
                if fnmatch.fnmatchcase(c.id, selector)
                and not (opt_in and c.cpu_level and fnmatch.fnmatchcase(c.baseline_id, selector))
            ]
            if not matched:
                raise SelectionError(
                    f"{selector!r} matches no cell of {self.path.name}",
                    hint="cell ids look like 3.13.5-debian-12-amd64 (3.13.5t-... for "
                    "free-threaded, ...-amd64v3 for x86-64-v3); `orchestrator plan` lists them",
                )
            chosen.extend(c for c in matched if c not in chosen)
        return chosen

    def cell(self, cell_id: str) -> Cell:
        for cell in self.cells():
            if cell.id == cell_id:
                return cell
        raise SelectionError(
            f"no cell {cell_id!r} in {self.path.name}",
            hint="`orchestrator plan` lists the cell ids",
        )
