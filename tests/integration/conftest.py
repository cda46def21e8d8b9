"""Fixtures for tests against the real Docker engine.

These tests need `make setup base-images` (the Makefile's `test` target does it). When the
engine is missing they fail with that hint instead of skipping: a skipped integration test
proves nothing.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from docker import DockerClient

from orchestrator.errors import DockerError
from orchestrator.layout import Layout
from orchestrator.matrix import Arch, Matrix, load_matrix
from tests.integration.support import (
    E2E_CELL,
    E2E_CELL_T,
    E2E_CELL_V3,
    REPO_ROOT,
    E2EBuild,
    run_cli,
)


@pytest.fixture(scope="session")
def docker_client() -> Iterator[DockerClient]:
    from orchestrator.engine import connect

    try:
        client = connect()
    except DockerError as exc:
        pytest.fail(f"{exc} - run `make setup base-images` first", pytrace=False)
    yield client
    client.close()


@pytest.fixture(scope="session")
def repo_matrix() -> Matrix:
    return load_matrix(REPO_ROOT / "matrix.yaml")


@pytest.fixture
def project_copy(tmp_path: Path) -> Path:
    """matrix.yaml, templates/, dockerfiles/ and keys/ copied to a temp dir, to change freely."""
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(REPO_ROOT / "matrix.yaml", project / "matrix.yaml")
    for directory in ("templates", "dockerfiles", "keys"):
        shutil.copytree(REPO_ROOT / directory, project / directory)
    return project


# In the host environment of the e2e build: none of it may reach the container or its log.
# AWS's documented example credentials (they open nothing).
FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE",
    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "AWS_SESSION_TOKEN": "FwoGZXIvYXdzEXAMPLESESSIONTOKEN",
}


@pytest.fixture(scope="session")
def e2e_build(tmp_path_factory: pytest.TempPathFactory, docker_client: DockerClient) -> E2EBuild:
    """One real CPython build (fast profile) shared by every end-to-end check."""
    out = tmp_path_factory.mktemp("e2e-out")
    result = run_cli(
        ["--out", str(out), "build", E2E_CELL, "--profile", "fast", "--keep-work", "--quiet"],
        env=FAKE_AWS_ENV,
    )
    if result.returncode != 0:
        pytest.fail(f"e2e build failed ({result.returncode}):\n{result.stderr[-4000:]}")
    stem = "python-3.13.5-debian-12-amd64"
    return E2EBuild(
        out_dir=out,
        archive=out / "artifacts" / f"{stem}.tar.zst",
        sha256_file=out / "artifacts" / f"{stem}.tar.zst.sha256",
        metadata=out / "artifacts" / f"{stem}.json",
        tree=out / "work" / E2E_CELL / "prefix",
        log=out / "logs" / f"{E2E_CELL}.log",
        stderr=result.stderr,
    )


@pytest.fixture(scope="session")
def e2e_build_freethreaded(
    tmp_path_factory: pytest.TempPathFactory, docker_client: DockerClient
) -> E2EBuild:
    """One real free-threaded build (fast profile) of E2E_CELL's version, stack and arch."""
    out = tmp_path_factory.mktemp("e2e-t-out")
    result = run_cli(
        ["--out", str(out), "build", E2E_CELL_T, "--profile", "fast", "--quiet"],
        env=FAKE_AWS_ENV,
    )
    if result.returncode != 0:
        pytest.fail(
            f"e2e build of {E2E_CELL_T} failed ({result.returncode}):\n{result.stderr[-4000:]}"
        )
    stem = "python-3.13.5t-debian-12-amd64"
    return E2EBuild(
        out_dir=out,
        archive=out / "artifacts" / f"{stem}.tar.zst",
        sha256_file=out / "artifacts" / f"{stem}.tar.zst.sha256",
        metadata=out / "artifacts" / f"{stem}.json",
        tree=out / "work" / E2E_CELL_T / "prefix",
        log=out / "logs" / f"{E2E_CELL_T}.log",
        stderr=result.stderr,
    )


@pytest.fixture(scope="session")
def e2e_build_v3(tmp_path_factory: pytest.TempPathFactory, docker_client: DockerClient) -> E2EBuild:
    """One real x86-64-v3 build (fast profile) of E2E_CELL's version, stack and arch."""
    out = tmp_path_factory.mktemp("e2e-v3-out")
    result = run_cli(
        ["--out", str(out), "build", E2E_CELL_V3, "--profile", "fast", "--keep-work", "--quiet"],
        env=FAKE_AWS_ENV,
    )
    if result.returncode != 0:
        pytest.fail(
            f"e2e build of {E2E_CELL_V3} failed ({result.returncode}):\n{result.stderr[-4000:]}"
        )
    stem = "python-3.13.5-debian-12-amd64v3"
    return E2EBuild(
        out_dir=out,
        archive=out / "artifacts" / f"{stem}.tar.zst",
        sha256_file=out / "artifacts" / f"{stem}.tar.zst.sha256",
        metadata=out / "artifacts" / f"{stem}.json",
        tree=out / "work" / E2E_CELL_V3 / "prefix",
        log=out / "logs" / f"{E2E_CELL_V3}.log",
        stderr=result.stderr,
    )


@pytest.fixture(scope="session")
def run_image_debian12(docker_client: DockerClient, repo_matrix: Matrix) -> str:
    """The debian-12 run image: base + runtime libraries, no compilers or -dev packages."""
    from orchestrator.images import ensure_image, plan_image

    plan = plan_image(docker_client, repo_matrix, "debian-12", Arch.AMD64, "run")
    log = Layout(out_dir=REPO_ROOT / "out").image_log(plan.tag)
    return ensure_image(docker_client, plan, log_path=log).image_id


@pytest.fixture(scope="session")
def builder_image_debian12(docker_client: DockerClient, repo_matrix: Matrix) -> str:
    """The debian-12 builder image: the run image + gcc and -dev packages."""
    from orchestrator.images import ensure_image, plan_image

    plan = plan_image(docker_client, repo_matrix, "debian-12", Arch.AMD64, "builder")
    log = Layout(out_dir=REPO_ROOT / "out").image_log(plan.tag)
    return ensure_image(docker_client, plan, log_path=log).image_id


@pytest.fixture(scope="session")
def consumer_image_debian12(docker_client: DockerClient, repo_matrix: Matrix) -> str:
    """The debian-12 consumer image: the builder + CMake, meson and ninja."""
    from orchestrator.images import ensure_image, plan_image

    plan = plan_image(docker_client, repo_matrix, "debian-12", Arch.AMD64, "consumer")
    log = Layout(out_dir=REPO_ROOT / "out").image_log(plan.tag)
    return ensure_image(docker_client, plan, log_path=log).image_id


@pytest.fixture(scope="session")
def slim_build(tmp_path_factory: pytest.TempPathFactory, docker_client: DockerClient) -> Path:
    """OUT dir of one build of E2E_CELL with the profile `slim-fast`: slim's footprint with
    fast's compiler settings. Also the "rebuild from changed inputs" test_uv_rebuild needs."""
    project = tmp_path_factory.mktemp("slim-project")
    data = yaml.safe_load((REPO_ROOT / "matrix.yaml").read_text())
    data["profiles"]["slim-fast"] = {
        **data["profiles"]["slim"],
        "pgo": False,
        "lto": False,
        "description": "slim's footprint, fast's compiler settings",
    }
    data["sources"]["cache_dir"] = str(REPO_ROOT / ".cache" / "sources")
    (project / "matrix.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    for directory in ("templates", "dockerfiles", "keys"):
        (project / directory).symlink_to(REPO_ROOT / directory)
    out = tmp_path_factory.mktemp("slim-out")
    result = run_cli(
        ["--matrix", str(project / "matrix.yaml"), "--out", str(out), "build", E2E_CELL,
         "--profile", "slim-fast", "--keep-work", "--quiet"]
    )  # fmt: skip
    if result.returncode != 0:
        pytest.fail(f"slim build failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return out
