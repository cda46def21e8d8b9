"""The limits of a verification stage on the real engine: a stage that hangs past its time
limit and one that goes over its memory cap each fail as `script:<stage>`, naming the limit,
and leave no container behind. The runtime under test is a tiny stand-in whose `bin/python`
hangs or allocates; the real verify-runtime.sh runs it in the debian-12 run image."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from docker import DockerClient

from orchestrator.archive import pack_tree
from orchestrator.matrix import Arch
from orchestrator.verify.runtime import ScriptOutput, _run_stage, leftover_verify_containers

pytestmark = [pytest.mark.integration]

HANG = "#!/bin/sh\nsleep 3600\n"
# The allocation stays in the child (bash holding a 512 MiB string), so the script outlives
# the kill and reaches its end: the stage must still fail, naming the memory limit.
HOG = "#!/bin/bash\nx=$(head -c 536870912 /dev/zero | tr '\\0' a)\necho ${#x}\n"
MEMORY = 64 * 1024**2


def _runtime(tmp_path: Path, python: str) -> Path:
    """A .tar.zst holding a flat tree whose bin/python is `python`."""
    tree = tmp_path / "tree"
    (tree / "bin").mkdir(parents=True)
    (tree / "bin" / "python").write_text(python)
    (tree / "bin" / "python").chmod(0o755)
    info = pack_tree(tree, tmp_path / "python-3.13.5-debian-12-amd64.tar.zst", source_date_epoch=0)
    return info.path


def _stage(
    client: DockerClient, image: str, archive: Path, log: Path, **limits: float
) -> ScriptOutput:
    with log.open("w") as handle:
        return _run_stage(
            client,
            stage="runtime",
            image=image,
            archive=archive,
            arch=Arch.AMD64,
            major_minor="3.13",
            modules=[],
            cell_id="limits-test",
            copy=False,
            log=handle,
            **limits,  # type: ignore[arg-type]
        )


def test_a_stage_hanging_past_its_time_limit_is_killed_and_fails_by_name(
    docker_client: DockerClient, run_image_debian12: str, tmp_path: Path
) -> None:
    archive = _runtime(tmp_path, HANG)
    started = time.monotonic()
    log = tmp_path / "log"
    output = _stage(docker_client, run_image_debian12, archive, log, timeout_seconds=15)
    seconds = time.monotonic() - started
    assert seconds < 120, seconds  # killed at the limit, not after the check's own 300 s
    failed = [c for c in output.checks if c.name == "script:runtime"]
    assert len(failed) == 1 and not failed[0].ok
    assert "stopped early (timed out after 0.25 min (killed))" in failed[0].detail
    assert not output.done
    assert leftover_verify_containers(docker_client, owner_pid=os.getpid()) == []


def test_a_stage_over_its_memory_cap_fails_by_name(
    docker_client: DockerClient, run_image_debian12: str, tmp_path: Path
) -> None:
    archive = _runtime(tmp_path, HOG)
    output = _stage(
        docker_client,
        run_image_debian12,
        archive,
        tmp_path / "log",
        timeout_seconds=300,
        memory_bytes=MEMORY,
    )
    (killed,) = [c for c in output.checks if c.name == "exec:python"]
    assert not killed.ok and "137" in killed.detail, killed.detail
    failed = [c for c in output.checks if c.name == "script:runtime"]
    assert len(failed) == 1 and not failed[0].ok
    assert "ran out of memory (64 MiB limit)" in failed[0].detail, failed[0].detail
    assert leftover_verify_containers(docker_client, owner_pid=os.getpid()) == []
