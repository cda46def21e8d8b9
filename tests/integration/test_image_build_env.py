"""Image builds see only an allow-list of the host's environment, and the engine's own builder.

A tiny Dockerfile (no apt, seconds) through the real ensure_image and buildx: the host sets
SOURCE_DATE_EPOCH (buildx would pass it into the build as an argument, so one content-hash
tag could name different images), BUILDX_BUILDER (would pick another builder) and fake AWS
credentials; none of them reaches the build."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from docker import DockerClient

from orchestrator.images import ImagePlan, base_image_id, ensure_image
from orchestrator.matrix import Arch
from tests.integration.conftest import FAKE_AWS_ENV

pytestmark = pytest.mark.integration

DOCKERFILE = """\
ARG BASE_IMAGE
FROM ${BASE_IMAGE} AS builder
ARG SOURCE_DATE_EPOCH
ARG AWS_SECRET_ACCESS_KEY
COPY extra-ca.crt /tmp/extra-ca.crt
RUN echo "epoch=${SOURCE_DATE_EPOCH:-unset} aws=${AWS_SECRET_ACCESS_KEY:-unset}" > /seen
"""


@pytest.fixture
def plan(tmp_path: Path, docker_client: DockerClient) -> Iterator[ImagePlan]:
    dockerfile = tmp_path / "Dockerfile"
    # A unique file, so the tag is new and buildx really runs.
    dockerfile.write_text(DOCKERFILE + f"# {uuid.uuid4()}\n")
    image = "amd64/debian:bookworm"
    planned = ImagePlan(
        stack_name="envtest",
        arch=Arch.AMD64,
        target="builder",
        base_image=image,
        base_image_id=base_image_id(docker_client, image, Arch.AMD64),
        dockerfile=dockerfile,
        dockerfile_sha256=hashlib.sha256(dockerfile.read_bytes()).hexdigest(),
        extra_ca=b"",
    )
    yield planned
    docker_client.images.remove(planned.tag, force=True)


def test_the_host_environment_does_not_reach_an_image_build(
    plan: ImagePlan,
    tmp_path: Path,
    docker_client: DockerClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "123")
    monkeypatch.setenv("BUILDX_BUILDER", "no-such-builder")
    for name, value in FAKE_AWS_ENV.items():
        monkeypatch.setenv(name, value)
    built = ensure_image(docker_client, plan, log_path=tmp_path / "image.log")
    assert not built.reused
    seen = docker_client.containers.run(built.image_id, ["cat", "/seen"], remove=True)
    assert seen.decode().strip() == "epoch=unset aws=unset"
    log = (tmp_path / "image.log").read_text()
    assert "--builder default" in log
    for secret in FAKE_AWS_ENV.values():
        assert secret not in log
