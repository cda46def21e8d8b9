"""How nightly splits the machine between cells, and what --memory changes."""

from __future__ import annotations

from orchestrator.nightly import Machine, with_limits
from orchestrator.prepare import BuildOptions

GIB = 1024**3


def test_the_machine_is_split_over_the_jobs() -> None:
    options = with_limits(BuildOptions(), Machine(cpus=4, memory_bytes=16 * GIB), 2)
    assert options.limits.cpus == 2 and options.jobs == 2
    assert options.limits.memory_bytes == int(16 * GIB * 0.9 / 2)


def test_memory_replaces_the_memory_share_only() -> None:
    machine = Machine(cpus=4, memory_bytes=16 * GIB)
    options = with_limits(BuildOptions(), machine, 2, memory_bytes=GIB)
    assert options.limits.memory_bytes == GIB
    assert options.limits.cpus == 2 and options.jobs == 2
