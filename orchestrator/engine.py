"""Connection to the Docker engine, with failures turned into one clear DockerError."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence

import docker
import docker.errors
from docker import DockerClient
from pydantic import TypeAdapter, ValidationError

from orchestrator.errors import ConfigError, DockerError
from orchestrator.matrix import Arch
from orchestrator.matrix.schema import EngineUrl


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


class EnginePool:
    """One client per Docker endpoint; each arch maps to an endpoint (default: the local one).

    Mapping arm64 to a native arm64 host (`ssh://arm64-builder`) compiles there at full
    speed; without a mapping arm64 cells run on the default engine under qemu emulation.
    """

    def __init__(self, endpoints: Mapping[Arch, str] | None = None) -> None:
        self.endpoints = dict(endpoints or {})
        self._clients: dict[str | None, DockerClient] = {}
        self._lock = threading.Lock()

    def url(self, arch: Arch) -> str | None:
        return self.endpoints.get(arch)

    def client(self, arch: Arch) -> DockerClient:
        url = self.url(arch)
        with self._lock:
            if url not in self._clients:
                self._clients[url] = connect(url)
            return self._clients[url]


def parse_engine_options(values: Sequence[str]) -> dict[Arch, str]:
    """`--engine arm64=ssh://host` values -> {Arch.ARM64: 'ssh://host'}."""
    result: dict[Arch, str] = {}
    for value in values:
        arch, sep, url = value.partition("=")
        if not sep or not url or arch not in {a.value for a in Arch}:
            raise ConfigError(
                f"--engine {value!r}: expected ARCH=URL with ARCH one of "
                f"{', '.join(a.value for a in Arch)}",
                hint="e.g. --engine arm64=ssh://arm64-builder",
            )
        try:
            _ENGINE_URL.validate_python(url)  # the rule matrix.yaml `engines:` follows
        except ValidationError:
            raise ConfigError(
                f"--engine {value!r}: {url[:80]!r} is not a Docker endpoint URL",
                hint="unix://, tcp://, ssh:// or npipe:// without spaces, quotes or shell "
                "characters, e.g. --engine arm64=ssh://arm64-builder",
            ) from None
        result[Arch(arch)] = url
    return result


_ENGINE_URL: TypeAdapter[str] = TypeAdapter(EngineUrl)
