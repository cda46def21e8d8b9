"""How builder/run images are built: the buildx command and what it sees of the host."""

from __future__ import annotations

from pathlib import Path

from orchestrator.images import ImagePlan, buildx_command, buildx_environment
from orchestrator.matrix import Arch

PLAN = ImagePlan(
    stack_name="debian-12",
    arch=Arch.AMD64,
    target="builder",
    base_image="amd64/debian:bookworm",
    base_image_id="sha256:" + "0" * 64,
    dockerfile=Path("dockerfiles/debian-12/Dockerfile"),
    dockerfile_sha256="1" * 64,
    extra_ca=b"",
)

HOST = {
    "PATH": "/usr/bin:/bin",
    "HOME": "/root",
    "AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE",
    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "GITHUB_TOKEN": "ghp_example",
    # buildx passes this into the build as an argument: images would differ under one tag.
    "SOURCE_DATE_EPOCH": "1700000000",
    # Would pick another builder, e.g. a docker-container one whose buildkitd is privileged.
    "BUILDX_BUILDER": "some-privileged-builder",
    "DOCKER_CONTEXT": "elsewhere",
    "SSH_AUTH_SOCK": "/run/user/0/ssh-agent",
    "DOCKER_CONFIG": "/root/.docker",
    "HTTPS_PROXY": "http://proxy.example:3128",
}


def test_the_engines_own_builder_and_no_entitlements() -> None:
    command = buildx_command(PLAN, context="/tmp/ctx")
    assert command[:3] == ["docker", "buildx", "build"]
    assert command[command.index("--builder") + 1] == "default"
    assert "--allow" not in command and not any(a.startswith("--allow=") for a in command)
    # apt needs the network at image build time: the default (bridged), never the host's.
    assert "host" not in command and not any("network" in a for a in command)
    assert command[-1] == "/tmp/ctx"


def test_buildx_sees_an_allow_list_of_the_host_environment() -> None:
    env = buildx_environment(HOST, docker_host=None)
    assert env == {
        "PATH": "/usr/bin:/bin",
        "HOME": "/root",
        "SSH_AUTH_SOCK": "/run/user/0/ssh-agent",
        "DOCKER_CONFIG": "/root/.docker",
        "HTTPS_PROXY": "http://proxy.example:3128",
    }


def test_the_engine_of_the_cell_wins() -> None:
    env = buildx_environment({**HOST, "DOCKER_HOST": "unix:///other.sock"}, docker_host="ssh://b")
    assert env["DOCKER_HOST"] == "ssh://b"
    assert buildx_environment({**HOST, "DOCKER_HOST": "unix:///x.sock"}, docker_host=None)[
        "DOCKER_HOST"
    ] == ("unix:///x.sock")
