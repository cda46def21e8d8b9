"""The debian-12 arm64 builder image, built through buildx under qemu emulation.

About 1.5 minutes here (plus 1.5 for the arm64 base image), so it runs by default;
set FARM_SKIP_ARM64=1 to leave it out on a machine without binfmt/qemu.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from docker import DockerClient

from orchestrator.images import ensure_image, plan_image
from orchestrator.matrix import Arch, Matrix

pytestmark = [
    pytest.mark.integration,
    pytest.mark.arm64,
    pytest.mark.skipif(os.environ.get("FARM_SKIP_ARM64") == "1", reason="FARM_SKIP_ARM64=1"),
]


def test_debian12_arm64_builder_image(
    docker_client: DockerClient, repo_matrix: Matrix, tmp_path: Path
) -> None:
    plan = plan_image(docker_client, repo_matrix, "debian-12", Arch.ARM64, "builder")
    assert plan.base_image == "arm64v8/debian:bookworm"
    built = ensure_image(docker_client, plan, log_path=tmp_path / "image.log")
    image = docker_client.images.get(built.image_id)
    assert image.attrs["Architecture"] == "arm64"
    assert plan.tag in image.tags
    output = docker_client.containers.run(
        built.image_id,
        ["sh", "-c", "dpkg-architecture -qDEB_BUILD_GNU_TYPE && uname -m && gcc -dumpmachine"],
        platform="linux/arm64",
        network_disabled=True,
        remove=True,
    ).decode()
    assert output.split() == ["aarch64-linux-gnu", "aarch64", "aarch64-linux-gnu"]
    # Same inputs, same tag: the second call reuses the image instead of rebuilding.
    again = ensure_image(docker_client, plan, log_path=tmp_path / "again.log")
    assert again.reused and again.image_id == built.image_id
