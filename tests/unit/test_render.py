from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from orchestrator.errors import ConfigError
from orchestrator.matrix import load_matrix
from orchestrator.render import render_stack, stale_files, write_rendered


@pytest.fixture
def project(tmp_path: Path, repo_root: Path) -> Path:
    """A copy of the data parts of the repository, to render into freely."""
    for name in ("matrix.yaml", "templates", "dockerfiles"):
        source = repo_root / name
        if source.is_dir():
            shutil.copytree(source, tmp_path / name)
        else:
            shutil.copy(source, tmp_path / name)
    return tmp_path


def test_committed_dockerfiles_are_current(repo_root: Path) -> None:
    assert stale_files(load_matrix(repo_root / "matrix.yaml")) == []


def test_every_stack_rendered_with_header(repo_root: Path) -> None:
    matrix = load_matrix(repo_root / "matrix.yaml")
    for name, stack in matrix.model.stacks.items():
        text = render_stack(matrix, name)
        assert text.startswith("# DO NOT EDIT")
        assert f"ARG BASE_IMAGE={stack.base_image}\n" in text
        assert "FROM ${BASE_IMAGE} AS run" in text
        assert "FROM run AS builder" in text
    trixie = render_stack(matrix, "debian-13")
    assert "libssl3t64" in trixie
    assert "libzstd-dev" in trixie  # 3.14 is in the matrix on this stack


def test_edit_makes_check_fail_and_render_fixes(project: Path) -> None:
    matrix = load_matrix(project / "matrix.yaml")
    assert stale_files(matrix) == []
    target = project / "dockerfiles" / "debian-12" / "Dockerfile"
    target.write_text(target.read_text() + "RUN echo edited\n")
    assert stale_files(matrix) == [target]
    assert write_rendered(matrix) == [target]
    assert stale_files(matrix) == []


def test_missing_and_orphan_files_are_stale(project: Path) -> None:
    matrix = load_matrix(project / "matrix.yaml")
    (project / "dockerfiles" / "debian-13" / "Dockerfile").unlink()
    orphan = project / "dockerfiles" / "debian-11" / "Dockerfile"
    orphan.parent.mkdir()
    orphan.write_text("FROM debian:bullseye\n")
    stale = stale_files(matrix)
    assert project / "dockerfiles" / "debian-13" / "Dockerfile" in stale
    assert orphan in stale


def test_template_typo_is_a_clear_error(project: Path) -> None:
    template = project / "templates" / "Dockerfile.j2"
    template.write_text(template.read_text().replace("stack.codename", "stack.code_name"))
    with pytest.raises(ConfigError, match=r"Dockerfile\.j2.*code_name"):
        render_stack(load_matrix(project / "matrix.yaml"), "debian-12")
