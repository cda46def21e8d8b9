"""Whether the machine that runs a runtime's containers has the x86-64 level it was built for.

A runtime built for x86-64-v3 cannot start on a CPU without AVX2 (glibc's loader refuses it:
"CPU ISA level is lower than required"). Nothing of it can be compiled against, trained (PGO) or
verified there, so a build of a level cell on such a machine stops before anything runs, and
verification reports the checks it cannot run as skipped, with this reason.

The features come from /proc/cpuinfo's `flags`: the host's own when the engine is local, else
read in a container on the engine's machine (a container sees its host's /proc/cpuinfo). Tests
inject a reader (CpuFlagsReader) instead.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path

import docker.errors
from docker import DockerClient
from docker.models.containers import Container

from orchestrator.cellbuild import (
    CELL_LABEL,
    OWNER_LABEL,
    ROLE_LABEL,
    is_local_engine,
    owner,
    remove_container,
)
from orchestrator.errors import CellBuildError, DockerError
from orchestrator.matrix import Arch, Cell, CpuLevel
from orchestrator.sandbox import confinement, sandbox_user

CpuFlagsReader = Callable[[], frozenset[str]]
CPUINFO = Path("/proc/cpuinfo")
_CPUINFO_LIMIT = 4 * 1024 * 1024  # hundreds of CPUs' entries fit; a runaway file does not


class HostCpuError(CellBuildError):
    """The machine that would build or run a cell lacks the x86-64 level the cell is for."""


def parse_cpu_flags(text: str) -> frozenset[str]:
    """The features every CPU in /proc/cpuinfo's text reports (`flags : a b c` per CPU);
    empty when there is no `flags` line (not an x86 CPU)."""
    found: frozenset[str] | None = None
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "flags":
            flags = frozenset(value.split())
            found = flags if found is None else found & flags
    return found or frozenset()


def host_cpu_flags(path: Path = CPUINFO) -> frozenset[str]:
    """This machine's CPU features (/proc/cpuinfo); empty when it cannot be read."""
    try:
        with path.open("rb") as handle:
            text = handle.read(_CPUINFO_LIMIT).decode("utf-8", errors="replace")
    except OSError:
        return frozenset()
    return parse_cpu_flags(text)


def engine_cpu_flags(
    client: DockerClient, *, image: str, arch: Arch, cell_id: str
) -> frozenset[str]:
    """The CPU features of the machine `client`'s containers run on: this one's for a local
    engine, else /proc/cpuinfo read in a confined container of `image` on the engine."""
    if is_local_engine(client):
        return host_cpu_flags()
    container: Container | None = None
    try:
        container = client.containers.create(
            image,
            command=["cat", str(CPUINFO)],
            name=f"python-farm-cpuinfo-{secrets.token_hex(4)}",
            labels={CELL_LABEL: cell_id, ROLE_LABEL: "verify", OWNER_LABEL: owner()},
            environment={},
            **confinement(sandbox_user()),
            platform=arch.docker_platform,
            detach=True,
        )
        container.start()
        container.wait()
        raw = container.logs(stdout=True, stderr=False)[:_CPUINFO_LIMIT]
    except docker.errors.APIError as exc:
        raise DockerError(
            f"the engine refused the container reading its CPU features: {exc.explanation or exc}"
        ) from None
    finally:
        if container is not None:
            remove_container(container)
    return parse_cpu_flags(raw.decode("utf-8", errors="replace"))


def lacks(level: CpuLevel, flags: frozenset[str]) -> str | None:
    """Why a CPU with `flags` cannot run `level` code ("host CPU lacks x86-64-v4: avx512f,
    avx512bw"), or None when it can."""
    missing = level.missing_flags(flags)
    if not missing:
        return None
    return f"host CPU lacks {level.march}: {', '.join(missing)}"


def has_level(level: CpuLevel) -> str:
    """The detail of a host that has `level`."""
    return f"host CPU has {level.march} ({' '.join(level.cpu_flags)})"


def require_level(cell: Cell, flags: frozenset[str]) -> None:
    """Refuse to build a level cell on a machine without its level: the recipe runs the new
    interpreter (bytecode, module checks, PGO training), which cannot start there."""
    if cell.cpu_level is None:
        return
    why = lacks(cell.cpu_level, flags)
    if why is None:
        return
    raise HostCpuError(
        f"{cell.id} is built for {cell.cpu_level.march}, and the build's {why}",
        hint=f"build it on an amd64 machine with {cell.cpu_level.march} (matrix.yaml `engines:` "
        "or --engine amd64=ssh://HOST), or leave the level out of the selection",
    )
