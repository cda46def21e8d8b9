"""Benchmarks behind `make bench`; results go into docs/BENCHMARKS.md (never asserted in tests).

    python scripts/bench.py noop       (a) no-op nightly over the default matrix and one 3x its size
    python scripts/bench.py overhead   (b) one cell: orchestrator vs a bare `docker run`
    python scripts/bench.py footprint  (c) release vs slim: sizes and start-up time
    python scripts/bench.py speed      (d) release (PGO + LTO) vs fast: pyperformance
    python scripts/bench.py variants   (f) free-threaded vs default: size, start-up, speed,
                                           threads (--profile fast|release; default release)
    python scripts/bench.py jit        (g) PYTHON_JIT=0 vs PYTHON_JIT=1 on one release runtime
    python scripts/bench.py all

(c), (d), (f) and (g) build the runtimes they compare into out/bench/<profile> (a release build takes
about 17 min on 2 cores) and reuse them while their inputs are unchanged.

Each writes its section of docs/BENCHMARKS.md between markers, keeping the others.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

# benchlib puts the repository on sys.path, so it comes before the orchestrator imports.
from benchlib import BENCH_OUT, ORCHESTRATOR, REPO, machine, write_section

from orchestrator.archive import pack_tree
from orchestrator.build import source_date_epoch
from orchestrator.buildspec import BUILD_SCRIPT, INSTALL_PREFIX, RECIPE_DIR, build_spec
from orchestrator.cellbuild import OWNER_LABEL, owner
from orchestrator.engine import connect
from orchestrator.images import ensure_image
from orchestrator.matrix import load_matrix
from orchestrator.prepare import BuildOptions, prepare_cell
from tests.publish_support import published_entry


def container_creates(since: float, until: float, label: str) -> int:
    out = subprocess.run(
        ["docker", "events", "--since", str(int(since)), "--until", str(int(until) + 1),
         "--filter", "type=container", "--filter", "event=create", "--filter", f"label={label}",
         "--format", "{{.ID}}"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return len(out.split())


# --- (a) no-op nightly -----------------------------------------------------------------------

NOOP_TARGETS = {1: 1.0, 3: 3.0}  # matrix scale -> wall-time target, seconds


def noop_matrix(project: Path, *, scale: int) -> Path:
    """The shipped matrix.yaml in `project` (templates and Dockerfiles beside it), grown to
    `scale` times its cells: each stack gets scale - 1 copies (`debian-12` -> `debian-12.1`,
    distro_version `12.1`, same packages and base image), and each exclude that names stacks
    is repeated for the copies, so every stack contributes the same cells as the original."""
    from orchestrator.render import write_rendered

    shutil.copytree(REPO / "templates", project / "templates")
    shutil.copytree(REPO / "dockerfiles", project / "dockerfiles")
    data: dict[str, Any] = yaml.safe_load((REPO / "matrix.yaml").read_text())
    # No registry here: Ubuntu (and arm64 trixie) bases cannot be pulled, so those
    # stacks point at the local Debian images. The fingerprint work is the same.
    for name, stack in data["stacks"].items():
        if name != "debian-12":
            stack["base_image_per_arch"] = {
                "amd64": "amd64/debian:bookworm", "arm64": "arm64v8/debian:bookworm",
            }  # fmt: skip
    stacks, excludes = dict(data["stacks"]), list(data.get("excludes", []))
    for copy in range(1, scale):
        for name, stack in stacks.items():
            data["stacks"][f"{name}.{copy}"] = {
                **stack, "distro_version": f"{stack['distro_version']}.{copy}"
            }  # fmt: skip
        data["excludes"] += [
            {**exclude, "stack": f"{exclude['stack']}.{copy}"}
            for exclude in excludes
            if "stack" in exclude
        ]
    path = project / "matrix.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    write_rendered(load_matrix(path))  # the copies' Dockerfiles, as `orchestrator render` would
    return path


def _seed_manifest(matrix_path: Path, out: Path) -> int:
    """A manifest holding each cell's current fingerprint in the local store under `out`, as
    a finished nightly would leave it (computed by the same code the run uses). Returns the
    number of cells."""
    from orchestrator.engine import EnginePool
    from orchestrator.layout import Layout
    from orchestrator.nightly import Nightly, NightlyOptions
    from orchestrator.progress import PlainReporter
    from orchestrator.publish.manifests import manifest_key
    from orchestrator.publish.store import DirectoryStore, sha256_hex

    matrix = load_matrix(matrix_path)
    seeder = Nightly(
        matrix, engines=EnginePool(), layout=Layout(out_dir=out),
        options=NightlyOptions(build=BuildOptions(), jobs=1),
        reporter=PlainReporter(), publisher=None,
    )  # fmt: skip
    # What `nightly` takes: no CPU level cells (cpu_levels.nightly: false).
    prepared, failed = seeder.prepare(matrix.select([]))
    assert not failed, failed
    runtimes = [published_entry(p.cell, p.fingerprint) for p in prepared]
    body = json.dumps({"format": 1, "runtimes": runtimes}).encode()
    DirectoryStore(out / "publish").put(
        manifest_key(""), body, sha256=sha256_hex(body), content_type="application/json"
    )
    return len(prepared)


@dataclass(frozen=True, kw_only=True)
class NoopRow:
    scale: int
    cells: int
    skipped: int
    timings: list[float]
    creates: int
    writes: int
    load: tuple[float, float]  # 1-minute load average before and after the runs


def _noop_row(work: Path, *, scale: int, runs: int) -> NoopRow:
    matrix_path = noop_matrix(work / "project", scale=scale)
    out = work / "out"
    cells = _seed_manifest(matrix_path, out)
    store_root = out / "publish"
    before = {p: p.stat().st_mtime_ns for p in store_root.rglob("*") if p.is_file()}
    load_before = os.getloadavg()[0]
    timings, creates, reports = [], 0, []
    for index in range(runs):
        report = work / f"report-{index}.json"
        started = time.time()
        process = subprocess.Popen(
            [*ORCHESTRATOR, "--matrix", str(matrix_path), "--out", str(out), "nightly",
             "--report", str(report)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
        )  # fmt: skip
        _, stderr = process.communicate()
        elapsed = time.time() - started
        if process.returncode != 0:
            raise SystemExit(f"nightly failed:\n{stderr[-2000:]}")
        timings.append(elapsed)
        creates += container_creates(started, time.time(), f"{OWNER_LABEL}={owner(process.pid)}")
        reports.append(json.loads(report.read_text())["counts"])
    after = {p: p.stat().st_mtime_ns for p in store_root.rglob("*") if p.is_file()}
    writes = sum(1 for p, m in after.items() if before.get(p) != m) + len(set(before) - set(after))
    return NoopRow(
        scale=scale, cells=cells, skipped=min(r["skipped"] for r in reports), timings=timings,
        creates=creates, writes=writes, load=(load_before, os.getloadavg()[0]),
    )  # fmt: skip


def bench_noop(runs: int = 5) -> None:
    """Everything already published: nightly must decide 'skip' for every cell quickly,
    starting no container and writing nothing; over the shipped matrix and over one three
    times its size."""
    rows = []
    for scale in NOOP_TARGETS:
        with tempfile.TemporaryDirectory(prefix="bench-noop-") as tmp:
            rows.append(_noop_row(Path(tmp), scale=scale, runs=runs))
    base = rows[0].cells
    if any(row.cells != row.scale * base for row in rows):
        raise SystemExit(f"synthetic matrices are not {list(NOOP_TARGETS)} x {base} cells")
    lines = []
    for row in rows:
        name = "shipped matrix" if row.scale == 1 else f"{row.scale}x the shipped matrix"
        t = row.timings
        lines.append(
            f"| {name} | {row.cells} ({row.skipped} skipped) | {statistics.median(t):.2f} s "
            f"(min {min(t):.2f}, max {max(t):.2f}) | <= {NOOP_TARGETS[row.scale]:.0f} s "
            f"| {row.creates} | {row.writes} | {row.load[0]:.2f} / {row.load[1]:.2f} |"
        )
    table = "\n".join(lines)
    body = f"""## (a) No-op nightly over the full default matrix, and one three times its size

Everything already published (a manifest holding every cell's current fingerprint, in the
local store); `orchestrator nightly` run {runs} times per matrix as a user would (new process
each time, so the timing includes Python start-up and imports). Targets: every cell skipped,
no container created (asked of the engine: `docker events` for the run's owner label), no
object written to the store.

| matrix | cells | wall time, median of {runs} | target | containers created | store writes | load average (1 min) before / after |
| --- | --- | --- | --- | --- | --- | --- |
{table}

Machine: {machine()}.
The machine is shared; the last column is the host's 1-minute load average when each row
started and ended (2 cores: above 2 the runs were waiting for a core).
Ubuntu bases cannot be pulled here, so for this benchmark the Ubuntu and arm64 trixie stacks
point at the local Debian base images (`base_image_per_arch`); the work per cell (render,
image lookups, fingerprint) is the same. The larger matrix copies each stack twice under new
names (`debian-12` -> `debian-12.1`, `debian-12.2`; excludes repeated for the copies) with
their own rendered Dockerfiles, so image plans, renders and fingerprints all triple.
"""
    write_section("noop", body)
    print(body)


# --- (b) orchestration overhead --------------------------------------------------------------


def bench_overhead(cell_id: str = "3.13.5-debian-12-amd64", runs: int = 2) -> None:
    """The same build script on the same inputs: through `orchestrator build` vs bare
    `docker run`. Both use the same builder image, source and make -j."""
    matrix = load_matrix(REPO / "matrix.yaml")
    cell = matrix.cell(cell_id)
    client = connect()
    options = BuildOptions(profile="fast")
    prepared = prepare_cell(matrix, cell, client=client, options=options)
    image = ensure_image(client, prepared.builder, log_path=Path(tempfile.mktemp())).image_id
    fetched = subprocess.run([*ORCHESTRATOR, "fetch", cell.version], cwd=REPO, check=True,
                             capture_output=True, text=True)  # fmt: skip
    source = Path(fetched.stdout.split()[-1])
    spec = build_spec(matrix, cell, "fast")
    jobs = os.cpu_count() or 1

    orchestrated: list[float] = []
    bare: list[float] = []
    packing: list[float] = []
    verifying: list[float] = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory(prefix="bench-orch-") as out:
            started = time.monotonic()
            subprocess.run(
                [*ORCHESTRATOR, "--out", out, "build", cell_id, "--profile", "fast", "--quiet",
                 "--jobs", str(jobs)],
                cwd=REPO, check=True, capture_output=True,
            )  # fmt: skip
            orchestrated.append(time.monotonic() - started)
            record = json.loads(next((Path(out) / "artifacts").glob("*.json")).read_text())
            verifying.append(float(record["verification"]["seconds"]))
        with tempfile.TemporaryDirectory(prefix="bench-bare-") as out:
            spec_dir, prefix = Path(out) / "spec", Path(out) / "prefix"
            spec.write_spec_files(spec_dir)
            prefix.mkdir()
            env = spec.container_environment(
                source_path=f"/farm/source/{source.name}",
                jobs=jobs,
                source_date_epoch=source_date_epoch(source),
            )
            command = ["docker", "run", "--rm", "--network", "none",
                       "--user", f"{os.getuid()}:{os.getgid()}", "-w", "/tmp",
                       "-v", f"{source}:/farm/source/{source.name}:ro",
                       "-v", f"{RECIPE_DIR}:/farm/recipe:ro", "-v", f"{spec_dir}:/farm/spec:ro",
                       "-v", f"{prefix}:{INSTALL_PREFIX}"]  # fmt: skip
            for key, value in env.items():
                command += ["-e", f"{key}={value}"]
            command += [image, "bash", f"/farm/recipe/{BUILD_SCRIPT}"]
            started = time.monotonic()
            subprocess.run(command, check=True, capture_output=True)
            bare.append(time.monotonic() - started)
            # Packing is product work the bare run does not do: time it on the same tree.
            started = time.monotonic()
            pack_tree(prefix, Path(out) / "x.tar.zst", source_date_epoch=0)
            packing.append(time.monotonic() - started)

    o, b, p = min(orchestrated), min(bare), min(packing)
    v = verifying[orchestrated.index(o)]
    runs_o = ", ".join(f"{t:.1f}" for t in orchestrated)
    runs_b = ", ".join(f"{t:.1f}" for t in bare)
    overhead = o - b - p - v
    body = f"""## (b) Orchestration overhead of one cell

`orchestrator build {cell_id} --profile fast` (source cached, builder image present)
against a bare `docker run` of the same build script with the same image, source, mounts,
environment and `make -j{jobs}`. Best of {runs} each: a compile's run-to-run noise is
larger than the overhead being measured, and the minimum is the least noisy estimate.

| run | wall time |
| --- | --- |
| `orchestrator build` (end to end) | {o:.1f} s (runs: {runs_o}) |
| bare `docker run` (compile and install only) | {b:.1f} s (runs: {runs_b}) |
| packing alone (zstd 22, long window; timed on the bare run's tree) | {p:.1f} s |
| verification (two containers + ELF audit; from that run's metadata) | {v:.1f} s |
| orchestration overhead = end to end - bare - packing - verification | {overhead:+.1f} s = {100 * overhead / b:+.1f} % (target <= 2 %) |
| including packing and verification | {o - b:+.1f} s = {100 * (o - b) / b:+.1f} % |
| run-to-run spread (max - min) | orchestrator {max(orchestrated) - min(orchestrated):.1f} s, bare {max(bare) - min(bare):.1f} s |

{_noise_sentence(overhead, max(max(orchestrated) - min(orchestrated), max(bare) - min(bare)))}

Orchestration covers the fingerprint, source check, image lookup, creating and removing the
container through the SDK, streaming its log, and the metadata. Packing and verification are
not overhead but product work the bare run skips; together a fixed cost (about {p + v:.0f} s
for this tree) that weighs {100 * (p + v) / b:.0f} % on a {b:.0f} s fast build{_release_share(p + v)}.
Machine: {machine()}.
"""
    write_section("overhead", body)
    print(body)


def _release_share(fixed: float) -> str:
    """The same fixed cost against the release build of (c), when one has been measured."""
    records = sorted((BENCH_OUT / "release" / "artifacts").glob("*.json"))
    if not records:
        return ""
    seconds = float(json.loads(records[0].read_text())["build_seconds"])
    return (
        f" and {100 * fixed / seconds:.1f} % on the release (PGO + LTO) build of (c)"
        f" ({seconds / 60:.0f} min)"
    )


def _noise_sentence(overhead: float, spread: float) -> str:
    if abs(overhead) <= spread:
        return (
            f"The overhead ({overhead:+.1f} s) is within the run-to-run spread ({spread:.1f} s) "
            "of the compile itself: it cannot be told apart from noise on this machine, i.e. it "
            "is below what a 2-run measurement resolves."
        )
    return f"The overhead ({overhead:+.1f} s) exceeds the run-to-run spread ({spread:.1f} s)."


def main() -> None:
    import bench_runtimes

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "which", choices=["noop", "overhead", "footprint", "speed", "variants", "jit", "all"]
    )
    parser.add_argument("--profile", default="release", help="(variants) profile of both builds")
    parser.add_argument(
        "--reuse-stale", action="store_true",
        help="(footprint, speed) use runtimes in out/bench even if their inputs changed since",
    )  # fmt: skip
    args = parser.parse_args()
    if args.which in ("noop", "all"):
        bench_noop()
    if args.which in ("overhead", "all"):
        bench_overhead()
    if args.which in ("footprint", "all"):
        bench_runtimes.bench_footprint(reuse_stale=args.reuse_stale)
    if args.which in ("speed", "all"):
        bench_runtimes.bench_speed(reuse_stale=args.reuse_stale)
    if args.which in ("variants", "all"):
        bench_runtimes.bench_variants(profile=args.profile, reuse_stale=args.reuse_stale)
    if args.which in ("jit", "all"):
        bench_runtimes.bench_jit(reuse_stale=args.reuse_stale)


if __name__ == "__main__":
    main()
