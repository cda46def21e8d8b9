"""Helpers shared by the integration tests (fixtures live in conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from docker import DockerClient

from orchestrator.cellbuild import OWNER_LABEL, owner

REPO_ROOT = Path(__file__).resolve().parents[2]
E2E_CELL = "3.13.5-debian-12-amd64"
# Its free-threaded twin (variant freethreaded: --disable-gil, bin/python3.13t).
E2E_CELL_T = "3.13.5t-debian-12-amd64"
# Its x86-64-v3 twin (matrix.yaml cpu_levels: -march=x86-64-v3, uv's x86_64_v3).
E2E_CELL_V3 = "3.13.5-debian-12-amd64v3"


@dataclass(frozen=True, kw_only=True)
class CliRun:
    returncode: int
    stdout: str
    stderr: str
    pid: int  # to find the containers this run owned (label org.python-farm.owner)


def run_cli(
    args: Sequence[str],
    *,
    cwd: Path = REPO_ROOT,
    env: dict[str, str] | None = None,
    timeout: float = 3600,
) -> CliRun:
    """Run the real CLI in a child process, as a user would."""
    process = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return CliRun(returncode=process.returncode, stdout=stdout, stderr=stderr, pid=process.pid)


@dataclass(frozen=True, kw_only=True)
class E2EBuild:
    out_dir: Path
    archive: Path
    sha256_file: Path
    metadata: Path
    tree: Path
    log: Path
    stderr: str


def container_creates(client: DockerClient, since: float, until: float, pid: int) -> list[str]:
    """Names of the containers the CLI run with `pid` created between `since` and `until`."""
    events = client.events(
        since=int(since),
        until=int(until) + 1,
        decode=True,
        filters={"type": "container", "event": "create", "label": f"{OWNER_LABEL}={owner(pid)}"},
    )
    return [e.get("Actor", {}).get("Attributes", {}).get("name", "?") for e in events]
