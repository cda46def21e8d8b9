"""Helpers shared by the benchmark scripts (bench.py, bench_runtimes.py)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

DOC = REPO / "docs" / "BENCHMARKS.md"
ORCHESTRATOR = [sys.executable, "-m", "orchestrator"]
BENCH_OUT = REPO / "out" / "bench"


def machine() -> str:
    memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 1024**3
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    docker = subprocess.run(
        ["docker", "version", "--format", "{{.Server.Version}}"],
        capture_output=True, text=True, check=False,
    ).stdout.strip()  # fmt: skip
    return (
        f"{os.cpu_count()} cores ({cpu}), {memory:.0f} GiB, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}, Docker engine {docker}"
    )


def write_section(name: str, body: str) -> None:
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n\nWritten by `make bench`.\n"
    block = f"{start}\n{body.rstrip()}\n{end}"
    if start in text:
        before, rest = text.split(start, 1)
        text = before + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    DOC.write_text(text)


@dataclass(frozen=True, kw_only=True)
class BuiltRuntime:
    profile: str
    archive: Path
    record: dict[str, Any]
    fresh: bool  # its fingerprint equals what the current inputs give


def built_runtime(cell_id: str, profile: str, *, reuse_stale: bool = False) -> BuiltRuntime:
    """The cell built with `profile` under out/bench/<profile>: reused while its fingerprint
    matches the current inputs (or, with reuse_stale, whenever it exists), else rebuilt."""
    from orchestrator.engine import connect
    from orchestrator.matrix import load_matrix
    from orchestrator.prepare import BuildOptions, prepare_cell

    matrix = load_matrix(REPO / "matrix.yaml")
    cell = matrix.cell(cell_id)
    out = BENCH_OUT / profile
    archive = out / "artifacts" / cell.archive_name
    record_path = archive.with_name(archive.name.removesuffix(".tar.zst") + ".json")
    client = connect()
    current = prepare_cell(
        matrix, cell, client=client, options=BuildOptions(profile=profile)
    ).fingerprint
    client.close()
    if record_path.is_file():
        record: dict[str, Any] = json.loads(record_path.read_text())
        if record["fingerprint"] == current or reuse_stale:
            return BuiltRuntime(
                profile=profile, archive=archive, record=record,
                fresh=record["fingerprint"] == current,
            )  # fmt: skip
    print(f"[bench] building {cell_id} with the {profile} profile into {out}", flush=True)
    subprocess.run(
        [*ORCHESTRATOR, "--out", str(out), "build", cell_id, "--profile", profile, "--quiet"],
        cwd=REPO, check=True,
    )  # fmt: skip
    return BuiltRuntime(
        profile=profile, archive=archive, record=json.loads(record_path.read_text()), fresh=True
    )


def run_image(stack: str, arch: str) -> str:
    """Image id of the stack's run image (base + runtime libraries, no compilers)."""
    from orchestrator.engine import connect
    from orchestrator.images import ensure_image, plan_image
    from orchestrator.layout import Layout
    from orchestrator.matrix import Arch, load_matrix

    matrix = load_matrix(REPO / "matrix.yaml")
    client = connect()
    plan = plan_image(client, matrix, stack, Arch(arch), "run")
    log = Layout(out_dir=REPO / "out").image_log(plan.tag)
    image = ensure_image(client, plan, log_path=log).image_id
    client.close()
    return image
