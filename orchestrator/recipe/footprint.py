"""Shape an installed runtime's footprint; run by build-cpython.sh with the new interpreter.

    python3 -I -B footprint.py SETTINGS_JSON STDLIB_DIR

SETTINGS_JSON holds the profile's footprint settings (orchestrator.matrix.Footprint); this runs
after bytecode compilation, before the expected-module check. The default settings change
nothing. The options are the ideas of Fedora's Python minimization study that keep Python whole:

  sourceless        listed stdlib modules/packages ship as bytecode only: each level-0 pyc moves
                    from __pycache__/NAME.TAG.pyc to NAME.pyc beside where its source was (the
                    import system loads such a file when no source exists) and the source goes.
                    Meant for data modules (encodings, pydoc_data); their tracebacks show no
                    source lines.
  ensurepip_wheels  false: delete ensurepip's bundled wheels. `python -m venv` then needs
                    --without-pip (or uv); ensurepip reports the missing wheel itself.
  drop_unusable     delete stdlib packages whose extension module was not built: they cannot
                    import anyway (tkinter and what needs it, without _tkinter).

Prints one line per action with the bytes it removed; exits 1 with one line on a problem.
Runs on every supported CPython (3.11+): standard library only.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

# Extension module -> the stdlib modules that cannot import without it.
NEEDS_EXTENSION: dict[str, tuple[str, ...]] = {
    "_tkinter": ("tkinter", "idlelib", "turtledemo", "turtle"),
    "_curses": ("curses",),
}
SETTINGS = {"sourceless", "ensurepip_wheels", "drop_unusable"}


class FootprintError(Exception):
    pass


def tree_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def module_paths(stdlib: Path, name: str) -> list[Path]:
    """The package directory or the .py file (plus its cached pycs) of a stdlib module."""
    *parents, leaf = name.split(".")
    directory = stdlib.joinpath(*parents)
    package = directory / leaf
    if package.is_dir():
        return [package]
    source = directory / f"{leaf}.py"
    if source.is_file():
        cached = sorted((directory / "__pycache__").glob(f"{leaf}.*.pyc"))
        return [source, *cached]
    return []


def make_sourceless(stdlib: Path, name: str, cache_tag: str) -> int:
    paths = module_paths(stdlib, name)
    if not paths:
        raise FootprintError(f"sourceless: no module {name!r} in {stdlib}")
    root = paths[0]
    sources = sorted(root.rglob("*.py")) if root.is_dir() else [root]
    removed = 0
    for source in sources:
        cached = source.parent / "__pycache__" / f"{source.stem}.{cache_tag}.pyc"
        if not cached.is_file():
            raise FootprintError(
                f"sourceless: {cached} missing; bytecode must be compiled before this step"
            )
        removed += source.stat().st_size
        cached.replace(source.with_suffix(".pyc"))
        source.unlink()
    # Whatever stays in __pycache__ (other optimization levels) is never read without a source.
    if root.is_dir():
        for pycache in sorted(root.rglob("__pycache__")):
            removed += tree_bytes(pycache)
            shutil.rmtree(pycache)
    else:
        pycache = root.parent / "__pycache__"
        for stale in sorted(pycache.glob(f"{root.stem}.*.pyc")):
            removed += stale.stat().st_size
            stale.unlink()
        if pycache.is_dir() and not any(pycache.iterdir()):
            pycache.rmdir()
    return removed


def extension_built(stdlib: Path, extension: str) -> bool:
    dynload = stdlib / "lib-dynload"
    return any(dynload.glob(f"{extension}.*so")) or extension in sys.builtin_module_names


def drop_module(stdlib: Path, name: str) -> int:
    removed = 0
    for path in module_paths(stdlib, name):
        removed += tree_bytes(path)
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    return removed


def drop_ensurepip_wheels(stdlib: Path) -> int:
    removed = 0
    for wheel in sorted((stdlib / "ensurepip" / "_bundled").glob("*.whl")):
        removed += wheel.stat().st_size
        wheel.unlink()
    return removed


def load_settings(path: Path) -> dict[str, object]:
    # The orchestrator writes every field (orchestrator.matrix.Footprint holds the defaults).
    settings = json.loads(path.read_text())
    if not isinstance(settings, dict) or set(settings) != SETTINGS:
        raise FootprintError(f"{path}: expected an object with keys {sorted(SETTINGS)}")
    return settings


def apply(settings: dict[str, object], stdlib: Path, cache_tag: str) -> list[str]:
    """Apply the settings to the stdlib directory; return one report line per action."""
    if not stdlib.is_dir():
        raise FootprintError(f"{stdlib}: no such stdlib directory")
    report: list[str] = []
    if settings["drop_unusable"]:
        # Dropped before sourceless, so a module both dropped and listed is not reshaped first.
        for extension, modules in NEEDS_EXTENSION.items():
            if extension_built(stdlib, extension):
                continue
            for name in modules:
                removed = drop_module(stdlib, name)
                if removed:
                    report.append(f"dropped {name} (no {extension}): {removed} bytes")
    if not settings["ensurepip_wheels"]:
        removed = drop_ensurepip_wheels(stdlib)
        report.append(f"dropped ensurepip wheels: {removed} bytes")
    sourceless = settings["sourceless"]
    if not isinstance(sourceless, list):
        raise FootprintError("sourceless: expected a list of module names")
    for name in sourceless:
        removed = make_sourceless(stdlib, str(name), cache_tag)
        report.append(f"{name} as bytecode only: {removed} bytes")
    return report


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: footprint.py SETTINGS_JSON STDLIB_DIR", file=sys.stderr)
        return 2
    cache_tag = sys.implementation.cache_tag
    if cache_tag is None:
        print("footprint: this interpreter writes no bytecode cache", file=sys.stderr)
        return 1
    try:
        report = apply(load_settings(Path(argv[0])), Path(argv[1]), cache_tag)
    except (FootprintError, OSError, ValueError) as exc:
        print(f"footprint: {exc}", file=sys.stderr)
        return 1
    for line in report or ["nothing to do"]:
        print(f"footprint: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
