"""Make an installed runtime describe the directory it is unpacked in; run by build-cpython.sh.

    python3 -I -B relocate.py BUILD_PREFIX BUILD_DIR TREE

BUILD_PREFIX is configure's --prefix, BUILD_DIR where the sources were compiled, TREE the
installed runtime (its root is what BUILD_PREFIX named). Runs after `make install`, before
bytecode compilation, so the .pyc files match the rewritten sources. Rewrites, in place:

  lib/pythonX.Y/_sysconfigdata_*.py  every value naming BUILD_PREFIX becomes an expression on
        `_prefix`, computed at import time from the module's own __file__ (so a copy of the
        data read by cross-compiling tools names the copy's tree); without __file__ (the text
        exec'd on its own, as PyO3 does) it falls back to sys.base_prefix. Values naming
        neither path keep their source bytes. BUILD_DIR becomes the config directory (LIBPL):
        upstream's sysconfig already answers `srcdir` with that directory for an installed
        Python, since the build tree is gone.
  lib/pkgconfig/*.pc  `prefix=${pcfiledir}/../..`; pkg-config and pkgconf resolve ${pcfiledir}
        to the .pc file's real directory (what uv writes for python-build-standalone).
  bin/pythonX.Y-config  upstream's shell script already works out its prefix from its own
        location and seds the configured one into it; the configured one becomes a marker
        that is no path, so nothing names BUILD_PREFIX.
  lib/pythonX.Y/config-*/python-config.py  an absolute shebang to BUILD_PREFIX's interpreter;
        it becomes a /bin/sh line that execs the interpreter of this tree.
  lib/pythonX.Y/config-*/Makefile  `prefix` is computed by GNU make from the Makefile's own
        path; BUILD_DIR becomes $(LIBPL).

The result depends only on the inputs (reproducible builds). Prints one line per rewritten file;
exits 1 with one line when something still names BUILD_PREFIX or BUILD_DIR afterwards.
Runs on every supported CPython (3.11+): standard library only.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

# In the shell config script, where the configured prefix was: not a path, no sed specials.
SH_MARKER = "@farm-configured-prefix@"
# A GNU make expression for the directory three levels above this Makefile
# (lib/pythonX.Y/config-*/Makefile); `:=` evaluates it while the Makefile is being read,
# when it is the last word of MAKEFILE_LIST.
MAKE_PREFIX = "$(abspath $(dir $(lastword $(MAKEFILE_LIST)))../../..)"


class RelocationError(Exception):
    """Something in the tree could not be made relocatable."""


def _occurrences(value: str, path: str) -> list[int]:
    """Start offsets of `path` in `value` where it is a whole path (not /opt/pyX for /opt/py)."""
    found = []
    for match in re.finditer(re.escape(path), value):
        end = match.end()
        if end == len(value) or not (value[end].isalnum() or value[end] in "._-"):
            found.append(match.start())
    return found


def _expression(value: str, *, prefix: str, build_dir: str, libpl_suffix: str) -> str | None:
    """`value` as Python source on `_prefix`, or None when it names neither path."""
    matches: list[tuple[int, int, str | None]] = []  # (start, end, literal after _prefix)
    matches += [(s, s + len(prefix), None) for s in _occurrences(value, prefix)]
    matches += [(s, s + len(build_dir), libpl_suffix) for s in _occurrences(value, build_dir)]
    if not matches:
        return None
    tokens: list[str | None] = []  # None stands for `_prefix`, a str for a literal
    position = 0
    for start, end, suffix in sorted(matches):
        if start < position:  # one path inside the other: the first match wins
            continue
        tokens += [value[position:start], None, suffix or ""]
        position = end
    tokens.append(value[position:])
    parts: list[str] = []
    literal = ""
    for token in tokens:
        if token is None:
            if literal:
                parts.append(repr(literal))
            parts.append("_prefix")
            literal = ""
        else:
            literal += token
    if literal:
        parts.append(repr(literal))
    return " + ".join(parts)


def _sysconfig_header(depth: int) -> str:
    location = "__file__"
    for _ in range(depth + 1):  # the file's own directory, then `depth` levels up
        location = f"_dirname({location})"
    return (
        "# Relocatable (python-farm, recipe/relocate.py): paths in the install tree are\n"
        "# computed from where this file is, so they name wherever the runtime was unpacked.\n"
        "from os.path import abspath as _abspath, dirname as _dirname\n"
        "try:\n"
        f"    _prefix = {location.replace('__file__', '_abspath(__file__)')}\n"
        "except NameError:  # the text exec'd without a file: the running interpreter's tree\n"
        "    import sys as _sys\n"
        "\n"
        "    _prefix = _sys.base_prefix\n"
    )


def relocate_sysconfigdata(
    text: str, *, prefix: str, build_dir: str, depth: int, libpl: str
) -> str:
    """Rewrite a `_sysconfigdata_*.py` module (see the module docstring).

    `depth` is how many directories the file sits below the tree's root (2 for
    lib/pythonX.Y/), `libpl` the config directory relative to the root.
    """
    try:
        module = ast.parse(text)
    except SyntaxError as exc:
        raise RelocationError(f"not Python source: {exc}") from None
    assignments = [
        node
        for node in module.body
        if isinstance(node, ast.Assign)
        and [getattr(t, "id", None) for t in node.targets] == ["build_time_vars"]
        and isinstance(node.value, ast.Dict)
    ]
    if len(assignments) != 1:
        raise RelocationError("no single `build_time_vars = {...}` assignment")
    assignment = assignments[0]
    assert isinstance(assignment.value, ast.Dict)
    data = text.encode("utf-8")
    line_starts = [0]
    for line in data.splitlines(keepends=True):
        line_starts.append(line_starts[-1] + len(line))
    edits: list[tuple[int, int, bytes]] = []
    for node in assignment.value.values:
        try:
            value = ast.literal_eval(node)
        except ValueError:  # an expression: relocated already
            continue
        if not isinstance(value, str):
            continue
        expression = _expression(
            value, prefix=prefix, build_dir=build_dir, libpl_suffix="/" + libpl
        )
        if expression is None:
            continue
        assert node.end_lineno is not None and node.end_col_offset is not None
        start = line_starts[node.lineno - 1] + node.col_offset
        end = line_starts[node.end_lineno - 1] + node.end_col_offset
        # pprint wraps long strings in parentheses: keep them, they are harmless.
        edits.append((start, end, expression.encode("utf-8")))
    for start, end, replacement in sorted(edits, reverse=True):
        data = data[:start] + replacement + data[end:]
    statement_start = line_starts[assignment.lineno - 1]
    data = data[:statement_start] + _sysconfig_header(depth).encode() + data[statement_start:]
    # Helpers out of the module's namespace once the dict is built.
    data += b"del _abspath, _dirname, _prefix\n"
    return data.decode("utf-8")


def relocate_pc(text: str, *, prefix: str) -> str:
    """A .pc file in lib/pkgconfig/: `prefix` relative to the file, other uses through it."""
    lines = []
    seen = False
    for line in text.splitlines(keepends=True):
        body = line.rstrip("\r\n")
        if body == f"prefix={prefix}":
            line = "prefix=${pcfiledir}/../.." + line[len(body) :]
            seen = True
        elif _occurrences(body, prefix):
            line = _replace_whole(line, prefix, "${prefix}")
        lines.append(line)
    if not seen:
        raise RelocationError(f"no `prefix={prefix}` line")
    return "".join(lines)


def relocate_config_sh(text: str, *, prefix: str) -> str:
    """bin/pythonX.Y-config, upstream's Misc/python-config.sh.in (see the module docstring)."""
    # 3.5+ write `prefix="..."`; the script of older releases `prefix_build="..."`.
    assigned = re.search(rf'^(prefix|prefix_build)="{re.escape(prefix)}"$', text, re.MULTILINE)
    if assigned is None or "installed_prefix" not in text:
        raise RelocationError("not upstream's python-config.sh (no prefix=/installed_prefix)")
    return _replace_whole(text, prefix, SH_MARKER)


def relocate_config_py(text: str, *, prefix: str, depth: int, interpreter: str) -> str:
    """config-*/python-config.py: its shebang names BUILD_PREFIX's interpreter.

    The new first two lines are both shell and Python: /bin/sh runs `exec` on this tree's
    interpreter (found relative to the script), Python sees one string expression.
    """
    first, _, rest = text.partition("\n")
    if first != f"#!{prefix}/bin/{interpreter}":
        raise RelocationError(f"unexpected shebang {first!r}")
    up = "/".join([".."] * depth)
    shebang = (
        "#!/bin/sh\n"
        f'"exec" "${{0%/*}}/{up}/bin/{interpreter}" "$0" "$@"  # the runtime of this tree\n'
    )
    return shebang + rest


def relocate_makefile(text: str, *, prefix: str, build_dir: str) -> str:
    """config-*/Makefile: `prefix` from the Makefile's location; BUILD_DIR -> $(LIBPL)."""
    pattern = re.compile(rf"^prefix=([ \t]*){re.escape(prefix)}[ \t]*$", re.MULTILINE)
    text, count = pattern.subn(lambda m: f"prefix:={m.group(1)}{MAKE_PREFIX}", text)
    if count != 1:
        raise RelocationError(f"no single `prefix= {prefix}` line")
    text = _replace_whole(text, build_dir, "$(LIBPL)")
    return _replace_whole(text, prefix, "$(prefix)")


def _replace_whole(text: str, path: str, replacement: str) -> str:
    for start in reversed(_occurrences(text, path)):
        text = text[:start] + replacement + text[start + len(path) :]
    return text


def relocate_tree(tree: Path, *, prefix: str, build_dir: str) -> list[str]:
    """Rewrite every file of `tree` that needs it; one line per file for the log."""
    stdlibs = sorted(p for p in (tree / "lib").glob("python3.*") if p.is_dir())
    if len(stdlibs) != 1:
        raise RelocationError(f"expected one lib/python3.X directory, found {len(stdlibs)}")
    stdlib = stdlibs[0]
    major_minor = stdlib.name.removeprefix("python")
    configs = sorted(p for p in stdlib.glob("config-*") if p.is_dir())
    datas = sorted(stdlib.glob("_sysconfigdata_*.py"))
    if len(configs) != 1 or len(datas) != 1:
        raise RelocationError(
            f"{stdlib}: expected one config-* directory and one _sysconfigdata_*.py, "
            f"found {len(configs)} and {len(datas)}"
        )
    libpl = configs[0].relative_to(tree).as_posix()
    done: list[str] = []

    def rewrite(path: Path, new: str) -> None:
        path.write_text(new, encoding="utf-8")
        done.append(f"relocated {path.relative_to(tree).as_posix()}")

    data = datas[0]
    rewrite(
        data,
        relocate_sysconfigdata(
            data.read_text(encoding="utf-8"),
            prefix=prefix,
            build_dir=build_dir,
            depth=len(data.relative_to(tree).parts) - 1,
            libpl=libpl,
        ),
    )
    for pc in sorted((tree / "lib" / "pkgconfig").glob("*.pc")):
        if pc.is_symlink():
            continue
        rewrite(pc, relocate_pc(pc.read_text(encoding="utf-8"), prefix=prefix))
    script = tree / "bin" / f"python{major_minor}-config"
    rewrite(script, relocate_config_sh(script.read_text(encoding="utf-8"), prefix=prefix))
    config_py = configs[0] / "python-config.py"
    rewrite(
        config_py,
        relocate_config_py(
            config_py.read_text(encoding="utf-8"),
            prefix=prefix,
            depth=len(config_py.relative_to(tree).parts) - 1,
            interpreter=f"python{major_minor}",
        ),
    )
    makefile = configs[0] / "Makefile"
    rewrite(
        makefile,
        relocate_makefile(makefile.read_text(encoding="utf-8"), prefix=prefix, build_dir=build_dir),
    )
    return done


def leftovers(tree: Path, paths: tuple[str, ...]) -> list[str]:
    """Text files (no NUL byte) of `tree` that still name one of `paths`."""
    found = []
    needles = [p.encode() for p in paths]
    for path in sorted(tree.rglob("*")):
        if path.is_symlink() or not path.is_file():
            continue
        data = path.read_bytes()
        if b"\0" in data:
            continue  # compiled code: what it names is audited separately
        if any(needle in data for needle in needles):
            found.append(path.relative_to(tree).as_posix())
    return found


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: relocate.py BUILD_PREFIX BUILD_DIR TREE", file=sys.stderr)
        return 2
    prefix, build_dir, tree = argv[0].rstrip("/"), argv[1].rstrip("/"), Path(argv[2])
    try:
        for line in relocate_tree(tree, prefix=prefix, build_dir=build_dir):
            print(line)
    except (RelocationError, OSError, UnicodeDecodeError) as exc:
        print(f"relocate: {exc}", file=sys.stderr)
        return 1
    left = leftovers(tree, (prefix, build_dir))
    if left:
        print(f"relocate: still naming {prefix} or {build_dir}: {', '.join(left)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
