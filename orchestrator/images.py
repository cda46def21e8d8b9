"""Builder and run images: one per (stack, arch, target), tagged by a hash of their inputs.

An unchanged image is never rebuilt: the tag is a content hash of the rendered Dockerfile,
the base image's id, the target, the platform and the build context (the extra CA bundle).
Images are built with `docker buildx build --load`; the docker SDK cannot drive buildx.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import docker.errors
from docker import DockerClient

from orchestrator.errors import ConfigError, FileRefused, ImageBuildError
from orchestrator.fsutil import read_regular
from orchestrator.matrix import Arch, Matrix
from orchestrator.render import dockerfile_path, is_current, render_stack

Target = Literal["builder", "run", "consumer"]
IMAGE_REPOSITORY = "python-farm"
LABEL_PREFIX = "org.python-farm"


@dataclass(frozen=True, kw_only=True)
class ImagePlan:
    """Everything needed to build (or find) one image."""

    stack_name: str
    arch: Arch
    target: Target
    base_image: str
    base_image_id: str
    dockerfile: Path
    dockerfile_sha256: str
    extra_ca: bytes

    @property
    def content_hash(self) -> str:
        digest = hashlib.sha256()
        for part in (
            self.target,
            self.arch.docker_platform,
            self.base_image_id,
            self.dockerfile_sha256,
            hashlib.sha256(self.extra_ca).hexdigest(),
        ):
            digest.update(part.encode() + b"\0")
        return digest.hexdigest()

    @property
    def tag(self) -> str:
        name = f"{self.stack_name}-{self.arch.value}-{self.content_hash[:16]}"
        return f"{IMAGE_REPOSITORY}/{self.target}:{name}"


@dataclass(frozen=True, kw_only=True)
class BuiltImage:
    plan: ImagePlan
    image_id: str
    reused: bool


def base_image_id(client: DockerClient, image: str, arch: Arch) -> str:
    """Id of the base image, pulling it only when it is not present locally."""
    try:
        return str(client.images.get(image).id)
    except docker.errors.ImageNotFound:
        pass
    try:
        return str(client.images.pull(image, platform=arch.docker_platform).id)
    except docker.errors.APIError:
        raise ImageBuildError(
            f"base image {image} is not present locally and cannot be pulled",
            hint="create local Debian bases with `make base-images` "
            "(scripts/make-base-images.sh SUITE:ARCH), or set base_image_per_arch in matrix.yaml",
        ) from None


def plan_image(
    client: DockerClient,
    matrix: Matrix,
    stack_name: str,
    arch: Arch,
    target: Target,
    *,
    extra_ca: bytes = b"",
) -> ImagePlan:
    stack = matrix.model.stacks[stack_name]
    path = dockerfile_path(matrix, stack_name)
    expected = render_stack(matrix, stack_name)
    if not is_current(path, expected):
        raise ConfigError(
            f"{path} is out of date with templates/ and matrix.yaml",
            hint="run `orchestrator render` and commit the result",
        )
    image = stack.image_for(arch)
    return ImagePlan(
        stack_name=stack_name,
        arch=arch,
        target=target,
        base_image=image,
        base_image_id=base_image_id(client, image, arch),
        dockerfile=path,
        dockerfile_sha256=hashlib.sha256(expected.encode()).hexdigest(),
        extra_ca=extra_ca,
    )


# A system's whole trust store (Debian's ca-certificates.crt) is ~220 KB.
MAX_EXTRA_CA_BYTES = 4 * 1024 * 1024


def read_extra_ca(path: Path | None) -> bytes:
    """--extra-ca's PEM bundle, read like every file the farm did not write (a regular file,
    size-limited: /dev/zero, /dev/stdin or a fifo are refused unread). Called by the commands
    before anything else, so a bad bundle stops them before the engine is contacted."""
    if path is None:
        return b""
    try:
        data = read_regular(path, limit=MAX_EXTRA_CA_BYTES)
    except FileRefused as exc:
        raise ConfigError(f"extra CA bundle {exc}") from None
    if data and b"-----BEGIN CERTIFICATE-----" not in data:
        raise ConfigError(f"extra CA bundle {path} holds no PEM certificate")
    return data


def ensure_image(
    client: DockerClient,
    plan: ImagePlan,
    *,
    log_path: Path,
    echo: Callable[[str], None] | None = None,
    docker_host: str | None = None,
) -> BuiltImage:
    """Return the image for `plan`, building it with buildx only when its tag is missing.
    `docker_host` points buildx at the same engine as `client` when that is not the default."""
    try:
        return BuiltImage(plan=plan, image_id=str(client.images.get(plan.tag).id), reused=True)
    except docker.errors.ImageNotFound:
        pass
    if shutil.which("docker") is None:
        raise ImageBuildError("the docker CLI is not on PATH", hint="`make setup` installs it")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="farm-context-") as context:
        # A minimal context: only what the Dockerfile COPYs, so nothing else can change images.
        (Path(context) / "extra-ca.crt").write_bytes(plan.extra_ca)
        _run_logged(
            buildx_command(plan, context=context),
            log_path=log_path,
            echo=echo,
            what=plan.tag,
            env=buildx_environment(os.environ, docker_host=docker_host),
        )
    try:
        image_id = str(client.images.get(plan.tag).id)
    except docker.errors.ImageNotFound:
        raise ImageBuildError(f"buildx reported success but {plan.tag} is not loaded") from None
    return BuiltImage(plan=plan, image_id=image_id, reused=False)


# What the buildx client may see of the host's environment: enough to reach the engine (a
# local socket, TLS or ssh) and a proxy. Nothing else: credentials have no business there,
# buildx passes SOURCE_DATE_EPOCH into the build as an argument (images would then differ
# under one content-hash tag), and BUILDX_BUILDER or DOCKER_CONTEXT would pick another builder.
BUILDX_ENVIRONMENT = (
    "PATH", "HOME", "USER", "LANG", "LC_ALL", "TMPDIR", "XDG_RUNTIME_DIR",
    "DOCKER_HOST", "DOCKER_CONFIG", "DOCKER_CERT_PATH", "DOCKER_TLS_VERIFY", "SSH_AUTH_SOCK",
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
)  # fmt: skip


def buildx_command(plan: ImagePlan, *, context: str) -> list[str]:
    """`docker buildx build` for one image, with no more privilege than apt needs.

    `--builder default` is the engine's own BuildKit (the docker driver): no separate
    buildkitd container, which buildx runs privileged, and no entitlements a builder created
    elsewhere may allow. No `--allow`: no host network, no insecure (privileged) RUN steps.
    The RUN steps keep the default network, as apt must download packages; BuildKit offers no
    way to drop their root or capabilities, which dpkg needs."""
    return [
        "docker", "buildx", "build",
        "--builder", "default",
        "--platform", plan.arch.docker_platform,
        "--target", plan.target,
        "--build-arg", f"BASE_IMAGE={plan.base_image}",
        "--label", f"{LABEL_PREFIX}.stack={plan.stack_name}",
        "--label", f"{LABEL_PREFIX}.arch={plan.arch.value}",
        "--label", f"{LABEL_PREFIX}.target={plan.target}",
        "--label", f"{LABEL_PREFIX}.content-hash={plan.content_hash}",
        "--progress", "plain",
        "--load",
        "-t", plan.tag,
        "-f", str(plan.dockerfile),
        context,
    ]  # fmt: skip


def buildx_environment(environ: Mapping[str, str], *, docker_host: str | None) -> dict[str, str]:
    """The allow-listed part of `environ`; `docker_host` (the cell's engine) wins."""
    env = {name: environ[name] for name in BUILDX_ENVIRONMENT if name in environ}
    if docker_host:
        env["DOCKER_HOST"] = docker_host
    return env


def _run_logged(
    command: list[str],
    *,
    log_path: Path,
    echo: Callable[[str], None] | None,
    what: str,
    env: dict[str, str] | None = None,
) -> None:
    tail: list[str] = []
    with log_path.open("w", encoding="utf-8") as log:
        log.write("$ " + " ".join(command) + "\n")
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            env=env,
        )
        try:
            assert process.stdout is not None
            for line in process.stdout:
                log.write(line)
                tail = [*tail[-19:], line.rstrip()]
                if echo:
                    echo(line.rstrip())
            code = process.wait()
        except BaseException:
            process.kill()
            process.wait()
            raise
    if code != 0:
        last = " | ".join(t for t in tail[-5:] if t)
        raise ImageBuildError(
            f"image build for {what} failed (exit {code}): {last}",
            hint=f"full log: {log_path}",
        )
