"""What one cell's build does: configure arguments, make flags, expected modules, recipe files.

Everything the container needs is computed here, in one place, so it can be unit-tested,
recorded in the metadata and hashed into the cell's fingerprint.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

from orchestrator.jit import CONFIGURE_ARG as JIT_CONFIGURE_ARG
from orchestrator.jit import jit_enabled
from orchestrator.matrix import Cell, Matrix, Profile

RECIPE_DIR = Path(__file__).parent / "recipe"
BUILD_SCRIPT = "build-cpython.sh"
# configure's --prefix unless the profile or stack sets install_prefix. The runtime is
# relocatable (recipe/relocate.py); this path is left only in libpython, as the last place
# CPython's getpath looks for the stdlib (an embedding program outside the tree, no home set).
INSTALL_PREFIX = "/opt/python-farm"


@dataclass(frozen=True, kw_only=True)
class BuildSpec:
    cell: Cell
    profile_name: str
    profile: Profile
    configure_args: tuple[str, ...]
    expected_modules: tuple[str, ...]
    extra_cflags: str
    ldflags: str
    install_prefix: str = INSTALL_PREFIX
    jit: bool = False  # built with the experimental JIT available (off until PYTHON_JIT=1)

    def container_environment(
        self, *, source_path: str, jobs: int, source_date_epoch: int
    ) -> dict[str, str]:
        return {
            "SOURCE_DATE_EPOCH": str(source_date_epoch),
            "FARM_VERSION": self.cell.version,
            "FARM_SOURCE": source_path,
            "FARM_PREFIX": self.install_prefix,
            "FARM_JOBS": str(jobs),
            "FARM_BUILD_TYPE": self.cell.arch.gnu_type,
            "FARM_EXTRA_CFLAGS": self.extra_cflags,
            "FARM_LDFLAGS": self.ldflags,
            "LANG": "C.UTF-8",
        }

    def write_spec_files(self, directory: Path) -> None:
        """The list inputs of the build script, one item per line (no quoting games)."""
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "configure-args").write_text("\n".join(self.configure_args) + "\n")
        (directory / "expected-modules").write_text("\n".join(self.expected_modules) + "\n")
        (directory / "footprint.json").write_text(self.profile.footprint.model_dump_json() + "\n")


def install_prefix(cell: Cell, profile: Profile) -> str:
    """configure's --prefix: the profile's install_prefix, else the stack's, else the default."""
    return profile.install_prefix or cell.stack.install_prefix or INSTALL_PREFIX


def configure_args(cell: Cell, profile: Profile, *, jit: bool = False) -> tuple[str, ...]:
    """./configure arguments of the recipe in DESIGN.md for this cell and profile."""
    version = cell.python.parsed
    args = [
        f"--build={cell.arch.gnu_type}",
        f"--prefix={install_prefix(cell, profile)}",
        "--enable-shared",
        "--without-static-libpython",
        "--enable-loadable-sqlite-extensions",
        "--enable-option-checking=fatal",
        f"--with-ensurepip={'install' if profile.ensurepip else 'no'}",
    ]
    if profile.pgo:
        args.append("--enable-optimizations")
    if profile.lto:
        args.append("--with-lto")
    # On 3.10 --disable-test-modules breaks the PGO training run; from 3.11 it is safe.
    if (version.major, version.minor) >= (3, 11):
        args.append("--disable-test-modules")
    if jit:
        args.append(JIT_CONFIGURE_ARG)
    # Last, so the default variant's arguments (and fingerprints) are exactly as before.
    args.extend(cell.variant_args)
    return tuple(args)


def make_flags(matrix: Matrix, cell: Cell) -> tuple[str, str]:
    """(CFLAGS_NODIST, LDFLAGS_NODIST): matrix.yaml's build_flags, then, for a CPU level
    cell, -march=x86-64-vN and -Wl,-z,x86-64-vN. Make-time only, like python-build-standalone's
    -march but kept out of sysconfig (PBS puts it in CFLAGS): extensions users build with a
    v3 runtime still run on any x86-64 CPU. A baseline cell's flags are exactly the matrix's."""
    cflags = matrix.model.build_flags.extra_cflags
    ldflags = matrix.model.build_flags.ldflags
    if cell.cpu_level is None:
        return cflags, ldflags
    return (
        f"{cflags} {cell.cpu_level.cflags}".strip(),
        f"{ldflags} {cell.cpu_level.ldflags}".strip(),
    )


def build_spec(matrix: Matrix, cell: Cell, profile_name: str | None) -> BuildSpec:
    name, profile = matrix.profile(profile_name)
    jit = jit_enabled(cell, name, profile)
    cflags, ldflags = make_flags(matrix, cell)
    return BuildSpec(
        cell=cell,
        profile_name=name,
        profile=profile,
        configure_args=configure_args(cell, profile, jit=jit),
        expected_modules=tuple(matrix.expected_modules(cell.python.parsed)),
        extra_cflags=cflags,
        ldflags=ldflags,
        install_prefix=install_prefix(cell, profile),
        jit=jit,
    )


def recipe_digest(directory: Path = RECIPE_DIR) -> str:
    """sha256 over the recipe files (names and contents): any edit changes fingerprints."""
    digest = hashlib.sha256()
    for path in sorted(
        p for p in directory.rglob("*") if p.is_file() and "__pycache__" not in p.parts
    ):
        digest.update(path.relative_to(directory).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


@functools.cache
def installed_recipe_digest() -> str:
    """recipe_digest() of this installation's recipe, computed once per process."""
    return recipe_digest(RECIPE_DIR)
