"""Malformed matrices, generated: whatever the file holds, `plan` answers with a result or
one error line and a non-zero exit, never a traceback (finding 9 of the hostile-input review)."""

from __future__ import annotations

import copy
import io
import tempfile
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from orchestrator.cli.main import main

REPO = Path(__file__).resolve().parents[2]
REAL: dict[str, Any] = yaml.safe_load((REPO / "matrix.yaml").read_text())


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*prefix, index))
    return found


PATHS = _paths(REAL)
scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True)
    | st.text(max_size=30) | st.sampled_from(["", "../x", "{{x}}", "3.13.5; id", "\n", "*"])
)  # fmt: skip
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def mutated_matrix(draw: st.DrawFn) -> str:
    data = copy.deepcopy(REAL)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(PATHS))
        parent: Any = data
        try:
            for key in path[:-1]:
                parent = parent[key]
            if draw(st.booleans()) and isinstance(parent, dict):
                parent.pop(path[-1], None)
            else:
                parent[path[-1]] = draw(values)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed or retyped this path
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


raw_files = (
    mutated_matrix().map(str.encode)
    | st.binary(max_size=200)
    | st.sampled_from(
        [b"\xff\xfe\x00", b"[" * 50_000, b"? [a]\n: 1\n", b"- 1\n- 2\n", b"a: &x\n  b: *x\n"]
    )
    | st.text(max_size=200).map(str.encode)
)  # fmt: skip


COMMANDS = [["plan"], ["plan", "--format", "github-matrix"], ["plan", "--format", "json"]]


def _known(mutate: Any) -> bytes:
    data = copy.deepcopy(REAL)
    mutate(data)
    return yaml.safe_dump(data, sort_keys=False).encode()


# The review's cases come first (explicit examples run every time), then 200 generated ones.
@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    # Shrinking a 50 KB input takes minutes; the failing example is printed as found.
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    report_multiple_bugs=True,
)
@example(content=_known(lambda d: d.update(excludes=[{}])), command=["plan"])
@example(content=_known(lambda d: d.update(excludes=[{"python": "*"}])), command=["plan"])
@example(
    content=_known(lambda d: d.update(runners={"amd64": "ubuntu-24.04"})),
    command=["plan", "--format", "github-matrix"],
)
@example(content=b"a: " + b"[" * 100_000, command=["plan"])
@example(content=b"? [a]\n: 1\n", command=["plan"])
@given(content=raw_files, command=st.sampled_from(COMMANDS))
def test_any_matrix_gives_a_result_or_one_line(content: bytes, command: list[str]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "matrix.yaml"
        path.write_bytes(content)
        err, out = io.StringIO(), io.StringIO()
        with redirect_stderr(err), redirect_stdout(out):
            code = main(["--matrix", str(path), *command])
    text = err.getvalue()
    assert "Traceback" not in text, text
    if code != 0:
        errors = [line for line in text.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, text
        assert len(errors[0]) < 2000
