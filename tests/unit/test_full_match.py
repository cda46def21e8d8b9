"""Finding 7 of issue 16, as a rule on the code: Python's `$` also matches before a trailing
newline, so `re.match("^...$", value)` let "3.13.5\\n" through. Every pattern in orchestrator/
that validates a value is matched whole (re.fullmatch, or pydantic's StringConstraints, whose
Rust engine anchors `$` at the very end); this test reads the source and fails on a Python
regex that ends in `$` without re.MULTILINE, and on any `.match(` of a value."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from pydantic import TypeAdapter, ValidationError

from orchestrator.matrix.schema import ImageRef

PACKAGE = Path(__file__).resolve().parents[2] / "orchestrator"
# Files run inside build containers by their own Python; they parse CPython's files, not input.
CONTAINER_SIDE = {"recipe"}
RE_CALLS = {"compile", "match", "search", "fullmatch", "sub", "subn", "split", "findall"}


def _sources() -> list[Path]:
    return [p for p in sorted(PACKAGE.rglob("*.py")) if not CONTAINER_SIDE & set(p.parts)]


def _multiline(call: ast.Call) -> bool:
    return "MULTILINE" in ast.unparse(call) or "(?m)" in ast.unparse(call)


def test_no_python_regex_ends_in_a_dollar() -> None:
    found = []
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            if not (isinstance(node.func.value, ast.Name) and node.func.value.id == "re"):
                continue
            if node.func.attr not in RE_CALLS or not node.args or _multiline(node):
                continue
            pattern = node.args[0]
            text = pattern.value if isinstance(pattern, ast.Constant) else None
            if isinstance(text, str) and text.endswith("$") and not text.endswith("\\$"):
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {text!r}")
    assert found == [], "use re.fullmatch (or \\Z), not `$`: " + ", ".join(found)


def test_no_value_is_matched_from_its_start_only() -> None:
    found = []
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "match"
            ):
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert found == [], "match values whole with .fullmatch(): " + ", ".join(found)


@pytest.mark.parametrize("value", ["debian:bookworm\n", "debian:bookworm\r\n"])
def test_pydantic_patterns_anchor_at_the_very_end(value: str) -> None:
    # The rule above leaves StringConstraints alone because pydantic's engine is Rust's,
    # where `$` is the end of the text: proven here, on the shipped engine.
    with pytest.raises(ValidationError):
        TypeAdapter(ImageRef).validate_python(value)
    assert re.match(r"^[a-z:]+$", "debian:bookworm\n")  # what Python's `$` would have done
