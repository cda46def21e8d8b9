"""The single-cell pipeline: source -> builder image -> container build -> archive + metadata.

Each stage lives in its own module; this one only hands values from one to the next and
makes sure a failure leaves nothing half-written in the artifacts directory.
"""

from __future__ import annotations

import datetime as dt
import os
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from docker import DockerClient

from orchestrator.archive import ArchiveInfo, pack_tree, write_sha256_file
from orchestrator.cellbuild import run_build_container
from orchestrator.errors import SourceError
from orchestrator.fsutil import remove_tree, write_atomic
from orchestrator.images import BuiltImage, ensure_image, plan_image
from orchestrator.layout import Layout
from orchestrator.matrix import Cell, Matrix
from orchestrator.metadata import build_record, tree_sizes, write_json_atomic
from orchestrator.prepare import BuildOptions, PreparedCell, prepare_cell
from orchestrator.publish.sbom import SBOM_FORMAT, build_sbom, sbom_name
from orchestrator.publish.store import sha256_hex
from orchestrator.sources.bundled import bundled_components
from orchestrator.sources.fetch import FetchedSource, fetch_source
from orchestrator.sources.signatures import policy_for
from orchestrator.verify.cpulevel import engine_cpu_flags, require_level
from orchestrator.verify.runtime import VerificationReport, raise_for_failures, verify_archive

Progress = Callable[[str], None]


@dataclass(frozen=True, kw_only=True)
class BuildResult:
    cell: Cell
    archive: ArchiveInfo
    sha256_path: Path
    metadata_path: Path
    log_path: Path
    seconds: float
    fingerprint: str


def source_date_epoch(tarball: Path) -> int:
    """Clamp time for the archive: SOURCE_DATE_EPOCH if set, else the source release's mtime
    (its first member), so equal inputs give equal bytes on any machine, any day."""
    if env := os.environ.get("SOURCE_DATE_EPOCH"):
        return int(env)
    try:
        with tarfile.open(tarball, mode="r|*") as archive:
            first = archive.next()
    except (tarfile.TarError, OSError) as exc:
        raise SourceError(f"{tarball}: not a readable tar archive: {exc}") from None
    if first is None:
        raise SourceError(f"{tarball}: empty tar archive")
    return int(first.mtime)


def build_cell(
    matrix: Matrix,
    cell: Cell,
    *,
    client: DockerClient,
    layout: Layout,
    options: BuildOptions,
    progress: Progress,
    echo: Progress | None = None,
    prepared: PreparedCell | None = None,
    docker_host: str | None = None,
) -> BuildResult:
    started = time.monotonic()
    prepared = prepared or prepare_cell(matrix, cell, client=client, options=options)
    spec = prepared.spec

    # A CPU level cell is built where its level runs: the recipe runs the new interpreter.
    if cell.cpu_level is not None:
        flags = (
            options.cpu_flags()
            if options.cpu_flags is not None
            else engine_cpu_flags(
                client, image=prepared.builder.base_image, arch=cell.arch, cell_id=cell.id
            )
        )
        require_level(cell, flags)
        progress(f"the engine's CPU has {cell.cpu_level.march}")

    # Source first: a missing pin or a bad hash stops the cell before any container starts.
    source = fetch_source(
        cell.python,
        mirrors=matrix.model.sources.mirrors,
        cache_dir=matrix.source_cache,
        deadline=matrix.model.sources.download_deadline_seconds,
        progress=progress,
        signatures=policy_for(
            matrix.model.signatures, root=matrix.root, version=cell.python.parsed
        ),
    )
    progress(f"source proven by {source.proof.describe()}")
    log = layout.image_log(prepared.builder.tag)
    progress(f"builder image {prepared.builder.tag}")
    builder = ensure_image(
        client, prepared.builder, log_path=log, echo=echo, docker_host=docker_host
    )
    progress("builder image reused" if builder.reused else f"builder image built (log: {log})")

    work = layout.work(cell.id)
    if work.exists():
        remove_tree(work)
    prefix = work / "prefix"
    log_path = layout.cell_log(cell.id)
    progress(f"building in a container ({spec.profile_name} profile, log: {log_path})")
    run = run_build_container(
        client,
        image_id=builder.image_id,
        spec=spec,
        source=source.path,
        prefix_dir=prefix,
        spec_dir=work / "spec",
        log_path=log_path,
        jobs=options.jobs,
        source_date_epoch=source_date_epoch(source.path),
        limits=options.limits,
        echo=echo,
        on_phase=lambda phase: progress(phase),
        transfer=options.transfer,
        timeout=60 * (options.timeout_minutes or spec.profile.timeout_minutes),
        stall_after=60 * spec.profile.stall_minutes,
    )

    result = _package(
        prepared,
        builder,
        source,
        prefix=prefix,
        layout=layout,
        log_path=log_path,
        build_seconds=run.seconds,
        progress=progress,
        started=started,
        verify=lambda archive, record: _verify(
            client,
            matrix,
            prepared,
            builder,
            archive,
            record,
            layout=layout,
            options=options,
            progress=progress,
            docker_host=docker_host,
        ),
    )
    if not options.keep_work:
        remove_tree(work, ignore_errors=True)
    return result


def _verify(
    client: DockerClient,
    matrix: Matrix,
    prepared: PreparedCell,
    builder: BuiltImage,
    archive: Path,
    record: dict[str, Any],
    *,
    layout: Layout,
    options: BuildOptions,
    progress: Progress,
    docker_host: str | None,
) -> VerificationReport:
    """Check the packed runtime in the stack's run image (the builder for the C extension and
    embedding, the consumer image for CMake/meson/pkg-config) before anything can publish it."""
    cell = prepared.cell
    plan = plan_image(
        client,
        matrix,
        cell.stack_name,
        cell.arch,
        "run",
        extra_ca=options.extra_ca,
    )
    run_image = ensure_image(
        client,
        plan,
        log_path=layout.image_log(plan.tag),
        docker_host=docker_host,
    )
    consumer_plan = plan_image(
        client, matrix, cell.stack_name, cell.arch, "consumer", extra_ca=options.extra_ca
    )
    consumer_image = ensure_image(
        client,
        consumer_plan,
        log_path=layout.image_log(consumer_plan.tag),
        docker_host=docker_host,
    )
    progress(f"verifying in {plan.tag}")
    return verify_archive(
        client,
        archive=archive,
        metadata=record,
        run_image=run_image.image_id,
        builder_image=builder.image_id,
        consumer_image=consumer_image.image_id,
        expected_modules=prepared.spec.expected_modules,
        log_path=layout.logs / f"{cell.id}.verify.log",
        transfer=options.transfer,
        stack_packages=cell.stack.run_packages_for([cell.python.parsed]),
        allowed_skips=options.allowed_skips,
        cpu_flags=options.cpu_flags,
    )


def _package(
    prepared: PreparedCell,
    builder: BuiltImage,
    source: FetchedSource,
    *,
    prefix: Path,
    layout: Layout,
    log_path: Path,
    build_seconds: float,
    progress: Progress,
    started: float,
    verify: Callable[[Path, dict[str, Any]], VerificationReport],
) -> BuildResult:
    spec = prepared.spec
    cell = spec.cell
    dest = layout.artifacts / cell.archive_name
    metadata_path = dest.with_name(cell.archive_stem + ".json")
    sbom_path = dest.with_name(sbom_name(dest.name))
    # Drop the old record first: until the new one lands, the cell reads as "not built".
    metadata_path.unlink(missing_ok=True)
    sbom_path.unlink(missing_ok=True)
    progress(f"packing {dest.name} (zstd level 22, long window)")
    sizes = tree_sizes(prefix, cell.ldversion)
    archive = pack_tree(prefix, dest, source_date_epoch=source_date_epoch(source.path))
    sha256_path = write_sha256_file(archive)
    record = build_record(
        spec=spec,
        archive=archive,
        source_url=source.url,
        source_verification=source.proof.record(),
        base_image=builder.plan.base_image,
        base_image_id=builder.plan.base_image_id,
        builder_image=builder.plan.tag,
        builder_image_id=builder.image_id,
        fingerprint=prepared.fingerprint,
        fingerprint_inputs=prepared.fingerprint_inputs,
        build_seconds=build_seconds,
        built_at=dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        sizes=sizes,
    )
    report = verify(archive.path, record)
    record.update(report.metadata_fields())
    if report.ok:
        # The SBOM needs what verification learnt (linked packages and their versions).
        sbom = build_sbom(
            record,
            bundled=bundled_components(source.path),
            ships_pip_wheel=spec.profile.ensurepip or spec.profile.footprint.ensurepip_wheels,
        ).encode()
        write_atomic(sbom_path, sbom)
        record["sbom"] = {"file": sbom_path.name, "sha256": sha256_hex(sbom), "format": SBOM_FORMAT}
    # Metadata last: its presence means archive and checksum beside it are complete. A
    # failed verification is recorded there too, and publishing refuses such a record.
    write_json_atomic(metadata_path, record)
    raise_for_failures(report, what=cell.id)
    skipped = f", {len(report.skips)} skipped" if report.skips else ""
    progress(
        f"verified: {sum(c.ok for c in report.checks)} checks passed{skipped} "
        f"in {report.seconds:.0f} s"
    )
    progress(f"archive {archive.size / 1e6:.1f} MB, sha256 {archive.sha256[:16]}...")
    return BuildResult(
        cell=cell,
        archive=archive,
        sha256_path=sha256_path,
        metadata_path=metadata_path,
        log_path=log_path,
        seconds=time.monotonic() - started,
        fingerprint=prepared.fingerprint,
    )
