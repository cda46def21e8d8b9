"""Connection to the Docker engine, with failures turned into one clear DockerError."""

from __future__ import annotations

import docker
import docker.errors
from docker import DockerClient

from orchestrator.errors import DockerError


def connect(base_url: str | None = None, *, timeout: int = 120) -> DockerClient:
    """A client for `base_url` (DOCKER_HOST style) or the environment's default engine."""
    try:
        client = (
            docker.DockerClient(base_url=base_url, version="auto", timeout=timeout)
            if base_url
            else docker.from_env(version="auto", timeout=timeout)
        )
        client.ping()
    except docker.errors.DockerException as exc:
        where = base_url or "the default socket (DOCKER_HOST)"
        raise DockerError(
            f"cannot reach the Docker engine at {where}: {_short(exc)}",
            hint="start it (`make setup` installs and starts dockerd on Debian/Ubuntu)",
        ) from None
    return client


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
