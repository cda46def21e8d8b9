"""Make an installed runtime describe the directory it is unpacked in; run by build-cpython.sh.

    python3 -I -B relocate.py BUILD_PREFIX BUILD_DIR TREE
    python3 -I -B relocate.py --uv-format lib/pythonX.Y/_sysconfigdata_*.py   (a check)

BUILD_PREFIX is configure's --prefix, BUILD_DIR where the sources were compiled, TREE the
installed runtime (its root is what BUILD_PREFIX named). Runs after `make install`, before
bytecode compilation, so the .pyc files match the rewritten sources. Rewrites, in place:

  lib/pythonX.Y/_sysconfigdata_*.py  stays in the form uv's parser reads (CPython's header
        line, then a literal `build_time_vars` dict): in every value naming BUILD_PREFIX, the
        prefix becomes python-build-standalone's `/install` placeholder, which
        `uv python install` rewrites to its install directory. A trailer after the dict (run by
        Python, ignored by uv, dropped by uv's rewrite) swaps the placeholder for the tree's
        real root, computed at import time from the module's own __file__ (so a copy of the
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
# python-build-standalone's install prefix, which `uv python install` replaces in
# _sysconfigdata_ (a word starting with it) and in .pc files; our literal dict uses it too.
PLACEHOLDER = "/install"
# CPython's first line of _sysconfigdata_, which uv's parser requires.
UV_HEADER = "# system configuration generated and used by the sysconfig module\n"
TRAILER_MARKER = "# Relocatable (python-farm, recipe/relocate.py)"


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


def _swap_paths(value: str, *, prefix: str, build_dir: str, libpl_suffix: str) -> str | None:
    """`value` with BUILD_PREFIX as the placeholder and BUILD_DIR as the placeholder's config
    directory, or None when it names neither path."""
    matches: list[tuple[int, int, str]] = []
    matches += [(s, s + len(prefix), PLACEHOLDER) for s in _occurrences(value, prefix)]
    matches += [
        (s, s + len(build_dir), PLACEHOLDER + libpl_suffix) for s in _occurrences(value, build_dir)
    ]
    if not matches:
        return None
    out: list[str] = []
    position = 0
    for start, end, replacement in sorted(matches):
        if start < position:  # one path inside the other: the first match wins
            continue
        out += [value[position:start], replacement]
        position = end
    out.append(value[position:])
    return "".join(out)


def _sysconfig_trailer(depth: int, keys: list[str]) -> str:
    location = "abspath(__file__)"
    for _ in range(depth + 1):  # the file's own directory, then `depth` levels up
        location = f"dirname({location})"
    listed = "".join(f"        {key!r},\n" for key in keys)
    return (
        f"{TRAILER_MARKER}\n"
        "# The dict above is what uv and other tools read as text: its paths start with the\n"
        f"# {PLACEHOLDER} placeholder, which `uv python install` rewrites to where it installs\n"
        "# (and drops these lines). Anywhere else, Python runs this: the values naming the\n"
        "# placeholder follow the directory the runtime was unpacked in.\n"
        "def _farm_relocate():\n"
        "    from os.path import abspath, dirname\n"
        "\n"
        "    try:\n"
        f"        prefix = {location}\n"
        "    except NameError:  # the text exec'd without a file: the running interpreter's tree\n"
        "        import sys\n"
        "\n"
        "        prefix = sys.base_prefix\n"
        "    for key in (\n"
        f"{listed}"
        "    ):\n"
        f"        build_time_vars[key] = build_time_vars[key].replace({PLACEHOLDER!r}, prefix)\n"
        "\n"
        "\n"
        "_farm_relocate()\n"
        "del _farm_relocate\n"
    )


def uv_literal_values(text: str) -> dict[str, str | int]:
    """The `build_time_vars` dict as uv's sysconfig parser reads it (crates/uv-python/src/
    sysconfig/parser.rs), raising RelocationError where uv would refuse the file.

    uv needs the header line, then `build_time_vars = {` holding only string (escapes \\\\,
    \\' and \\" only; adjacent literals concatenate) and integer literals; it stops at the
    closing brace. `uv python install` fails on a file it cannot read this way.
    """
    if not text.startswith(UV_HEADER):
        raise RelocationError("uv format: the first line is not CPython's sysconfig header")
    rest = text[len(UV_HEADER) :]
    if not rest.startswith("build_time_vars"):
        raise RelocationError("uv format: no `build_time_vars` on the second line")
    i = len("build_time_vars")
    space = " \t\x0c\n\r"

    def skip(i: int) -> int:
        while i < len(rest) and rest[i] in space:
            i += 1
        return i

    def string(i: int) -> tuple[str, int]:  # rest[i] is the opening quote
        quote, i, out = rest[i], i + 1, []
        while True:
            if i >= len(rest):
                raise RelocationError("uv format: unexpected end of file in a string")
            c = rest[i]
            if c == "\\":
                nxt = rest[i + 1 : i + 2]
                if nxt not in ("\\", "'", '"'):
                    raise RelocationError(f"uv format: escape \\{nxt} uv cannot read")
                out.append(nxt)
                i += 2
            elif c == quote:
                return "".join(out), i + 1
            else:
                out.append(c)
                i += 1

    i = skip(i)
    if rest[i : i + 1] != "=":
        raise RelocationError("uv format: `build_time_vars` is not assigned")
    i = skip(i + 1)
    if rest[i : i + 1] != "{":
        raise RelocationError("uv format: `build_time_vars` is not a literal dict")
    i += 1
    values: dict[str, str | int] = {}
    while True:
        i = skip(i)
        if i >= len(rest):
            raise RelocationError("uv format: unexpected end of file")
        if rest[i] == "}":
            return values
        if rest[i] not in "'\"":
            raise RelocationError(f"uv format: unexpected {rest[i]!r} where a key should be")
        key, i = string(i)
        i = skip(i)
        if rest[i : i + 1] == ":":
            i = skip(i + 1)
        value: str | int
        if rest[i : i + 1] in ("'", '"'):
            parts = []
            while rest[i : i + 1] in ("'", '"'):
                part, i = string(i)
                parts.append(part)
                i = skip(i)
            value = "".join(parts)
        else:
            match = re.compile(r"-?[0-9]+").match(rest, i)
            if match is None:
                raise RelocationError(f"uv format: the value of {key!r} is not a literal")
            value, i = int(match.group(0)), match.end()
        values[key] = value
        i = skip(i)
        if rest[i : i + 1] == ",":
            i += 1


def relocate_sysconfigdata(
    text: str, *, prefix: str, build_dir: str, depth: int, libpl: str
) -> str:
    """Rewrite a `_sysconfigdata_*.py` module (see the module docstring).

    `depth` is how many directories the file sits below the tree's root (2 for
    lib/pythonX.Y/), `libpl` the config directory relative to the root.
    """
    if TRAILER_MARKER in text:
        raise RelocationError("relocated already")
    original = uv_literal_values(text)
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
    if len(module.body) != 1 or len(assignments) != 1:
        raise RelocationError("not a single `build_time_vars = {...}` assignment")
    dictionary = assignments[0].value
    assert isinstance(dictionary, ast.Dict)
    data = text.encode("utf-8")
    line_starts = [0]
    for line in data.splitlines(keepends=True):
        line_starts.append(line_starts[-1] + len(line))
    edits: list[tuple[int, int, bytes]] = []
    keys: list[str] = []
    for key_node, node in zip(dictionary.keys, dictionary.values, strict=True):
        key = ast.literal_eval(key_node) if key_node is not None else None
        value = ast.literal_eval(node)
        if not isinstance(key, str) or not isinstance(value, str):
            continue
        swapped = _swap_paths(value, prefix=prefix, build_dir=build_dir, libpl_suffix="/" + libpl)
        if swapped is None:
            continue
        if PLACEHOLDER in value:  # the trailer's plain replace() would touch it too
            raise RelocationError(f"{key} names {PLACEHOLDER} already: {value!r}")
        assert node.end_lineno is not None and node.end_col_offset is not None
        start = line_starts[node.lineno - 1] + node.col_offset
        end = line_starts[node.end_lineno - 1] + node.end_col_offset
        edits.append((start, end, repr(swapped).encode("utf-8")))
        keys.append(key)
    for start, end, replacement in sorted(edits, reverse=True):
        data = data[:start] + replacement + data[end:]
    new = data.decode("utf-8") + _sysconfig_trailer(depth, keys)
    # What uv will read: the same keys, the placeholder where the builder's paths were.
    literal = uv_literal_values(new)
    if literal.keys() != original.keys():
        raise RelocationError("uv format: the rewritten dict lost or gained keys")
    return new


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


def check_uv_format(path: Path) -> int:
    """`relocate.py --uv-format FILE`, verification's sysconfig:uv-format check."""
    try:
        values = uv_literal_values(path.read_text(encoding="utf-8"))
    except (RelocationError, OSError, UnicodeDecodeError) as exc:
        print(f"{path.name}: {exc}")
        return 1
    print(f"uv reads {len(values)} values; LIBDIR={values.get('LIBDIR')}")
    return 0


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "--uv-format":
        return check_uv_format(Path(argv[1]))
    if len(argv) != 3:
        print(
            "usage: relocate.py BUILD_PREFIX BUILD_DIR TREE | relocate.py --uv-format FILE",
            file=sys.stderr,
        )
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
