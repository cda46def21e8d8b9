"""How every container the farm starts is confined.

A build container runs upstream's build scripts for many minutes; a verify container runs the
runtime we just built. Neither needs privileges, the network or the host's environment, so
none of them get any: a non-root uid even when the farm runs as root, no capabilities,
`no-new-privileges`, a pids limit, no network, and a scratch `/tmp` that is bounded (a tmpfs)
or on the host's work dir, never the image layer.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.fsutil import walk_tree

# The uid/gid build and verify containers run as when the farm itself runs as root (CI, the
# README's set-up). Outside the range distributions give to system or login users, so a file
# left behind by mistake is recognisable; ownership is mapped back to the caller afterwards.
SANDBOX_UID = 10001
SANDBOX_GID = 10001
# Enough for `make -j` plus LTO's parallel link jobs; a fork bomb stops here.
PIDS_LIMIT = 4096
# tmpfs for /tmp where no host directory can be mounted (a remote engine, verification).
DEFAULT_TMPFS_BYTES = 4 * 1024**3


@dataclass(frozen=True)
class SandboxUser:
    uid: int
    gid: int

    @property
    def spec(self) -> str:
        return f"{self.uid}:{self.gid}"

    @property
    def maps_back(self) -> bool:
        """True when files the container writes must be handed back to the caller."""
        return (self.uid, self.gid) != (os.getuid(), os.getgid())


def sandbox_user() -> SandboxUser:
    """The caller's own uid when it is not root (files land owned by them, nothing to map);
    the fixed sandbox uid when it is."""
    if os.getuid() == 0:
        return SandboxUser(SANDBOX_UID, SANDBOX_GID)
    return SandboxUser(os.getuid(), os.getgid())


def confinement(
    user: SandboxUser,
    *,
    scratch_dir: Path | None = None,
    tmpfs_bytes: int = DEFAULT_TMPFS_BYTES,
    memory_bytes: int | None = None,
) -> dict[str, Any]:
    """Keyword arguments for `containers.create`: the same confinement for every container.

    `scratch_dir` (a host directory the sandbox user owns) becomes `/tmp` when given; otherwise
    `/tmp` is a tmpfs of `tmpfs_bytes` (it counts against the container's memory limit).
    `memory_bytes` caps memory with no swap beyond it (memory + swap = the limit).
    """
    options: dict[str, Any] = {
        "user": user.spec,
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true"],
        "pids_limit": PIDS_LIMIT,
        "network_disabled": True,
        # Tools that look for a home (pip, gcc's caches) find a writable one.
        "working_dir": "/tmp",
    }
    if memory_bytes is not None:
        options["mem_limit"] = memory_bytes
        options["memswap_limit"] = memory_bytes
    if scratch_dir is None:
        # `exec`: Docker mounts a tmpfs noexec unless told; verification runs the runtime there.
        options["tmpfs"] = {"/tmp": f"rw,exec,nosuid,nodev,size={tmpfs_bytes},mode=1777"}
    return options


def hand_over(path: Path, user: SandboxUser) -> None:
    """Make an (empty) host directory writable by the sandbox user before a container runs."""
    if user.maps_back:
        os.chown(path, user.uid, user.gid)


def take_back(path: Path, user: SandboxUser) -> None:
    """Give a tree the sandbox user wrote back to the caller (root mapping ownership back)."""
    if not user.maps_back or not path.exists():
        return
    uid, gid = os.getuid(), os.getgid()
    os.lchown(path, uid, gid)
    for child, _relative, _st in walk_tree(os.fspath(path)):  # any depth, no recursion
        os.lchown(child, uid, gid)
