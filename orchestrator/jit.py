"""The experimental JIT (PEP 744): which cells get it and what their builder image needs.

`--enable-experimental-jit=yes-off` builds the JIT in but leaves it off; `PYTHON_JIT=1` turns
it on at run time (configure.ac and Python/pylifecycle.c of 3.13). Building it runs
Tools/jit/build.py with a Python >= 3.11 (configure's PYTHON_FOR_REGEN), which needs one exact
LLVM major: `clang-N` and `llvm-readobj-N` (`llvm-objdump-N` for readable listings), all in
Debian's clang-N and llvm-N packages. See docs/JIT.md.
"""

from __future__ import annotations

from packaging.version import Version

from orchestrator.errors import ConfigError
from orchestrator.matrix import Cell, Matrix, Profile
from orchestrator.matrix.schema import VariantName

CONFIGURE_ARG = "--enable-experimental-jit=yes-off"
# What Tools/jit/build.py runs on (configure looks for python3.X ... python3): the stack's own.
BUILD_PYTHON_PACKAGE = "python3"

# The LLVM major each CPython minor's Tools/jit/_llvm.py pins (_LLVM_VERSION) and its
# Tools/jit/README.md names ("LLVM version N is required"):
#   3.13: 18, read in Python-3.13.5.tar.xz itself.
#   3.14: 19, python/cpython c29bbe2 (GH-125498, "Update JIT builds to use LLVM 19") landed
#         for 3.14.0; its _llvm.py pins 19 (_EXTERNALS_LLVM_TAG llvm-19.1.7.0).
# 3.15 is not listed: main moved on to LLVM 20 and then 21 during its cycle, and no 3.15
# release's own file was read here; a 3.15 cell is refused until one is.
REQUIRED_LLVM: dict[tuple[int, int], int] = {(3, 13): 18, (3, 14): 19}
FIRST_JIT_MINOR = (3, 13)


def required_llvm(version: Version) -> int | None:
    """The LLVM major `version`'s JIT build needs; None when none is on record."""
    return REQUIRED_LLVM.get((version.major, version.minor))


def refusal(cell: Cell) -> str | None:
    """Why `cell` cannot be built with the JIT (one line), or None when it can."""
    version = cell.python.parsed
    minor = f"{version.major}.{version.minor}"
    if (version.major, version.minor) < FIRST_JIT_MINOR:
        return f"CPython {cell.version} has no JIT (it came with 3.13)"
    if cell.variant is VariantName.FREETHREADED:
        # 3.13's JUMP_BACKWARD enters tier 2 only under ENABLE_SPECIALIZATION, 0 without the
        # GIL: the JIT would never run. Not re-checked for 3.14+, so refused there too.
        return "the free-threaded build does not run the JIT (tier 2 never starts without the GIL)"
    needed = required_llvm(version)
    if needed is None:
        known = ", ".join(f"{a}.{b}: {n}" for (a, b), n in sorted(REQUIRED_LLVM.items()))
        return f"no LLVM major is on record for {minor}'s JIT (orchestrator/jit.py knows {known})"
    if needed not in cell.stack.llvm:
        listed = ", ".join(str(n) for n in cell.stack.llvm) or "none"
        return f"{minor}'s JIT needs LLVM {needed}, stacks.{cell.stack_name}.llvm lists {listed}"
    return None


def jit_enabled(cell: Cell, profile_name: str, profile: Profile) -> bool:
    """Whether `cell` gets the JIT under this profile; ConfigError for `jit: true` on a cell
    that cannot have it (auto leaves such cells without the JIT)."""
    if profile.jit is False:
        return False
    why = refusal(cell)
    if why is None:
        return True
    if profile.jit == "auto":
        return False
    raise ConfigError(
        f"profile {profile_name!r} has jit: true, but {cell.id} cannot have the JIT: {why}",
        hint="use jit: auto to build it only where the stack has the LLVM the version needs",
    )


def builder_packages(matrix: Matrix, stack_name: str) -> list[str]:
    """What the stack's builder image gets for the JIT: clang-N and llvm-N for every version
    on the stack that can have it, and the Python build.py runs on. Nothing when no profile
    asks for the JIT or no version on the stack can have it (the image stays as it was)."""
    if all(profile.jit is False for profile in matrix.model.profiles.values()):
        return []
    majors = {
        required_llvm(cell.python.parsed)
        for cell in matrix.cells()
        if cell.stack_name == stack_name and refusal(cell) is None
    }
    packages = [
        f"{tool}-{major}" for major in sorted(m for m in majors if m) for tool in ("clang", "llvm")
    ]
    return [*packages, BUILD_PYTHON_PACKAGE] if packages else []
