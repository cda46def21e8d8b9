"""Render templates/Dockerfile.j2 into dockerfiles/<stack>/Dockerfile for every stack.

The rendered files are committed so reviewers see exactly what gets built; `render --check`
keeps them honest (CI fails when they drift from the templates and matrix.yaml).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import jinja2

from orchestrator.errors import ConfigError, FileRefused
from orchestrator.fsutil import read_regular, write_atomic
from orchestrator.jit import builder_packages as jit_builder_packages
from orchestrator.matrix import Matrix

TEMPLATE_NAME = "Dockerfile.j2"


@dataclass(frozen=True, kw_only=True)
class RenderedFile:
    path: Path
    content: str


def templates_dir(matrix: Matrix) -> Path:
    return matrix.root / "templates"


def dockerfiles_dir(matrix: Matrix) -> Path:
    return matrix.root / "dockerfiles"


def dockerfile_path(matrix: Matrix, stack_name: str) -> Path:
    return dockerfiles_dir(matrix) / stack_name / "Dockerfile"


# A template or a rendered Dockerfile is a few KB.
MAX_TEXT_BYTES = 1024 * 1024


def _read_text(path: Path) -> str:
    """A project file read like every file the farm did not write (fsutil.read_regular): a
    template or Dockerfile replaced by a fifo must not hang `render --check`."""
    raw = read_regular(path, limit=MAX_TEXT_BYTES)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 (byte {exc.start})") from None


def _load_template(directory: Path) -> Callable[[str], tuple[str, str, Callable[[], bool]]]:
    def load(name: str) -> tuple[str, str, Callable[[], bool]]:
        path = directory / name
        try:
            text, stamp = _read_text(path), _mtime(path)
        except FileRefused as exc:
            if exc.missing:
                raise jinja2.TemplateNotFound(name) from None
            raise
        # The environment is cached per directory: a template edited since is read again.
        return text, str(path), lambda: _mtime(path) == stamp

    return load


def _mtime(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


# One environment per templates directory, so the template is compiled once per process, not
# once per stack and image (jinja reloads it when the file's mtime changes).
@functools.lru_cache(maxsize=16)
def _environment(directory: Path) -> jinja2.Environment:
    # StrictUndefined: a typo in the template is an error, not an empty string in a Dockerfile.
    return jinja2.Environment(
        loader=jinja2.FunctionLoader(_load_template(directory)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )


def is_current(path: Path, content: str) -> bool:
    """Whether the committed file at `path` holds exactly `content`. Missing, not a regular
    file, too large or not UTF-8: not current (render replaces it)."""
    try:
        return _read_text(path) == content
    except ConfigError:  # FileRefused included
        return False


def render_stack(matrix: Matrix, stack_name: str) -> str:
    """The Dockerfile text for one stack."""
    stack = matrix.model.stacks[stack_name]
    versions = matrix.versions_on(stack_name)
    env = _environment(templates_dir(matrix))
    try:
        template = env.get_template(TEMPLATE_NAME)
        return template.render(
            stack_name=stack_name,
            stack=stack,
            build_packages=stack.build_packages_for(versions),
            run_packages=stack.run_packages_for(versions),
            jit_packages=jit_builder_packages(matrix, stack_name),
        )
    except jinja2.TemplateNotFound:
        raise ConfigError(
            f"template {templates_dir(matrix) / TEMPLATE_NAME} not found",
            hint="run from the repository root or pass --matrix PATH",
        ) from None
    except jinja2.TemplateError as exc:
        line = getattr(exc, "lineno", None)
        where = f":{line}" if line else ""
        raise ConfigError(f"{templates_dir(matrix) / TEMPLATE_NAME}{where}: {exc}") from None


def render_all(matrix: Matrix) -> list[RenderedFile]:
    return [
        RenderedFile(path=dockerfile_path(matrix, name), content=render_stack(matrix, name))
        for name in matrix.model.stacks
    ]


def write_rendered(matrix: Matrix) -> list[Path]:
    """Write every rendered Dockerfile that changed; return the paths written."""
    written: list[Path] = []
    for rendered in render_all(matrix):
        if is_current(rendered.path, rendered.content):
            continue
        # An interrupted render never leaves half a Dockerfile.
        write_atomic(rendered.path, rendered.content.encode())
        written.append(rendered.path)
    return written


def stale_files(matrix: Matrix) -> list[Path]:
    """Rendered files that differ from (or are missing versus) what the templates produce,
    plus Dockerfiles of stacks that are no longer in the matrix."""
    stale: list[Path] = []
    expected = {r.path: r.content for r in render_all(matrix)}
    for path, content in expected.items():
        if not is_current(path, content):
            stale.append(path)
    directory = dockerfiles_dir(matrix)
    if directory.is_dir():
        stale.extend(
            orphan for orphan in sorted(directory.glob("*/Dockerfile")) if orphan not in expected
        )
    return stale
