"""pytest fixtures for real-HTTP S3 tests. Register from tests/conftest.py with

    pytest_plugins = ["tests.s3.conftest_plugin"]

Fixtures:
    s3_server    (session)  moto's S3 as a pytest-docker compose service; see S3Server
    s3_bucket    (function) name of a fresh, empty bucket on that server
    fault_proxy  (function) a FaultProxy forwarding to s3_server, for failure injection
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import pytest
from pytest_docker.plugin import Services

from tests.s3.fault_proxy import FaultProxy
from tests.s3.harness import S3Server, answers_http

COMPOSE_FILE = Path(__file__).resolve().parents[1] / "services" / "docker-compose.yml"

__all__ = ["S3Server", "fault_proxy", "s3_bucket", "s3_server"]


@pytest.fixture(scope="session")
def docker_compose_file() -> str:
    """pytest-docker: the test services (tests/services/docker-compose.yml)."""
    return str(COMPOSE_FILE)


@pytest.fixture(scope="session")
def docker_compose_project_name() -> str:
    """One compose project per test run, so two runs on one engine never share a server."""
    return f"farm-tests-{os.getpid()}"


@pytest.fixture(scope="session")
def s3_service_wheels() -> Path:
    """moto (the venv's version) and its dependencies as wheels for the service image, whose
    Python is Debian trixie's 3.13. The host's pip reaches PyPI; the image build then needs
    nothing but Debian's archive. (Debian's own python3-moto, 5.1.1, lacks If-Match and
    checksums on PutObject: 7 of these tests fail against it.)"""
    target = COMPOSE_FILE.parent / "s3" / "wheels"
    wanted = version("moto")
    if not list(target.glob(f"moto-{wanted}-*.whl")):
        with tempfile.TemporaryDirectory() as download:
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--quiet", f"moto[server]=={wanted}",
                 "--python-version", "3.13", "--only-binary=:all:", "--dest", download,
                 "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64",
                 "--platform", "manylinux_2_28_x86_64"],
                check=True,
            )  # fmt: skip
            # Only one complete set in the build context (the image installs whichever moto it
            # finds), and moto's wheel last: its presence is what marks the set complete.
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir(parents=True)
            wheels = sorted(Path(download).glob("*.whl"), key=lambda w: w.name.startswith("moto-"))
            for wheel in wheels:
                shutil.copyfile(wheel, target / wheel.name)
    return target


@pytest.fixture(scope="session")
def s3_service_image(
    s3_service_wheels: Path, docker_compose_command: str, docker_compose_file: str
) -> None:
    """Build the service image before docker_services starts it.

    Compose labels an image it builds with the project's name; built under the per-run
    project, every run would leave the previous image dangling. A fixed project name here
    keeps the image identical, so a cached build re-tags nothing."""
    subprocess.run(
        [*shlex.split(docker_compose_command), "-f", docker_compose_file,
         "-p", "farm-tests-build", "build", "--quiet", "s3"],
        check=True,
    )  # fmt: skip


@pytest.fixture(scope="session")
def docker_setup(s3_service_image: None) -> list[str]:
    """pytest-docker: `up` without --build (s3_service_image built it); --wait waits for
    the compose healthcheck."""
    return ["up --wait"]


@pytest.fixture(scope="session")
def s3_server(docker_ip: str, docker_services: Services) -> S3Server:
    """moto's S3 (behind the harness's write lock) as the compose service `s3`, started by
    pytest-docker's docker_services and shared by the whole session; pytest-docker's
    docker_cleanup (`down -v`) removes it at session end."""
    port = docker_services.port_for("s3", 5000)
    docker_services.wait_until_responsive(
        check=lambda: answers_http(port, host=docker_ip), timeout=120.0, pause=0.5
    )
    return S3Server(endpoint_url=f"http://{docker_ip}:{port}")


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> str:
    """A fresh bucket with a unique name; the server (and its data) goes away at session end."""
    name = f"farm-test-{uuid.uuid4().hex[:16]}"
    s3_server.client().create_bucket(Bucket=name)
    return name


@pytest.fixture
def fault_proxy(s3_server: S3Server) -> Iterator[FaultProxy]:
    """A FaultProxy in front of s3_server; point clients at fault_proxy.url."""
    with FaultProxy(s3_server.endpoint_url) as proxy:
        yield proxy
