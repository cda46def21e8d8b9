"""Load matrix.yaml: YAML with duplicate keys refused, then the schema; every problem becomes
one ConfigError line naming the file, the line, the place in the document and what was
expected.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from orchestrator.errors import ConfigError, FileRefused
from orchestrator.fsutil import read_regular
from orchestrator.matrix.cells import Matrix
from orchestrator.matrix.schema import MatrixModel


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate mapping keys (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, str | int | float | bool) and key is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, "a mapping key must be a plain value", key_node.start_mark
                )
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {key!r} (first at line {seen[key] + 1})",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        # PyYAML's scalar constructors call int() and datetime() on the text as written: a
        # 5000-digit integer (Python's int digit limit) or 2025-02-30 raise a bare ValueError
        # from deep inside the loader. Both are this document's fault: say where.
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, OverflowError) as exc:
            raise yaml.constructor.ConstructorError(
                None, None, f"unreadable value ({str(exc).split(';')[0][:100]})", node.start_mark
            ) from None


def _line_of(node: yaml.Node | None, loc: Sequence[int | str]) -> int | None:
    """1-based line of the YAML node at pydantic location `loc` (or its nearest parent)."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            found = None
            for key_node, value_node in node.value:
                if str(key_node.value) == str(part):
                    found = value_node
                    break
            if found is None:
                return line
            node = found
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return line
            node = node.value[part]
        else:
            return line
        line = node.start_mark.line + 1
    return line


def _format_loc(loc: Sequence[int | str]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            name = str(part) if len(str(part)) <= 60 else f"{str(part)[:60]}..."  # a key's echo
            text += f".{name}" if text else name
    return text


def _describe(error: ErrorDetails) -> tuple[tuple[int | str, ...], str]:
    # Drop pydantic's union-branch labels (e.g. 'str', 'ConditionalItem') from the location.
    loc = tuple(
        p
        for p in error["loc"]
        if not (
            isinstance(p, str)
            and (p in {"str", "ConditionalItem"} or p.startswith("constrained-str"))
        )
    )
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown key (check the spelling; see the matrix format in README.md)"
    elif error["type"] == "missing":
        message = "required key is missing"
    elif error["type"] == "string_pattern_mismatch" and loc and loc[-1] == "sha256":
        message = "expected a sha256: 64 lowercase hex digits computed from the real tarball"
    return loc, message


# A real matrix is a few KB; /dev/zero or a 2 GB file is a mistake to stop early.
MAX_MATRIX_BYTES = 1024 * 1024


def load_matrix(path: Path) -> Matrix:
    """Read and validate matrix.yaml; raise ConfigError with one clear line on any problem."""
    try:
        raw = read_regular(path, limit=MAX_MATRIX_BYTES)
    except FileRefused as exc:
        if exc.missing:
            raise ConfigError(
                f"{path}: no such file", hint="run from the repository root or pass --matrix PATH"
            ) from None
        raise
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 (byte {exc.start}): {exc.reason}") from None
    return parse_matrix(text, path)


def parse_matrix(text: str, path: Path) -> Matrix:
    """Validate matrix text as if read from `path` (named in messages; its directory is the
    matrix root)."""
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
        root_node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: invalid YAML: {exc.problem or exc.context}") from None
    except yaml.reader.ReaderError as exc:
        # Characters YAML does not allow (a NUL, most control characters): PyYAML's own text
        # has a second line with the position; the line number says more.
        at = text.count("\n", 0, max(exc.position, 0)) + 1
        raise ConfigError(
            f"{path}:{at}: invalid YAML: character #x{exc.character:04x}: {exc.reason}"
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {str(exc)[:200]}") from None
    except RecursionError:
        raise ConfigError(f"{path}: invalid YAML: nested too deeply") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    try:
        model = MatrixModel.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        loc, message = _describe(errors[0])
        line = _line_of(root_node, loc)
        where = f"{path}:{line}" if line else str(path)
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        place = f"{_format_loc(loc)}: " if loc else ""
        raise ConfigError(f"{where}: {place}{message}{more}") from None
    return Matrix(path=path.resolve(), model=model)
