"""`orchestrator verify`: check runtimes, optionally rebuild and compare bytes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from orchestrator.cli.app import Context, allow_skip_option, cell_progress, cli, pass_context
from orchestrator.errors import VerificationError


@cli.command()
@click.argument("targets", nargs=-1, required=True)
@click.option(
    "--rebuild",
    is_flag=True,
    help="Also rebuild each CELL from the same inputs and compare the two archives.",
)
@click.option(
    "--jobs",
    type=click.IntRange(min=1, max=1024),
    default=os.cpu_count() or 1,
    show_default="number of cores",
    help="make -j for --rebuild.",
)
@allow_skip_option
@pass_context
def verify(
    context: Context,
    /,
    targets: tuple[str, ...],
    rebuild: bool,
    jobs: int,
    allowed_skips: tuple[str, ...],
) -> None:
    """Verify runtimes: ARCHIVE paths (.tar.zst, with their .json beside them) or CELL ids
    and globs (their archives in OUT/artifacts). Builds run this automatically.

    \b
    In a clean container of the stack's run image, at a fresh random path, without
    LD_LIBRARY_PATH: python, python3, python3.X, python3-config run; bin/ holds only the
    expected entries; ldd resolves every library of the executable, libpython and each
    lib-dynload module (their apt packages are recorded); the expected modules import;
    sqlite3/lzma/bz2/zlib (and compression.zstd) round-trip; deep recursion in a thread
    ends in RecursionError; venv with bundled pip works offline (skipped without the
    wheel); Py_ENABLE_SHARED is 1 and sysconfig carries none of our build flags; the ABI
    tag and the GIL are the variant's (a free-threaded runtime, bin/python3.Xt: GIL off at
    start, and CPU-bound threads run in parallel: under 0.8x the serial time, or seen
    running at the same moment, which a GIL makes impossible). In the
    builder image: a C extension and an embedding program build against the runtime. On
    the host: no RPATH/RUNPATH but $ORIGIN/../lib on the executable, every ELF file
    stripped, no static libpython; build-host paths in the tree are reported.

    A runtime built for an x86-64 level (cell ...-amd64v3) also needs that level's ISA
    marker on every ELF file (elf:isa-level); its container checks run only where the
    engine's CPU has the level (cpu:level). Elsewhere they are reported as skipped with the
    missing CPU features, and the runtime is not verified (exit 9) unless --allow-skip
    cpu:level.

    With --rebuild: the cell is built again from the same inputs and the two archives are
    compared; differing members are listed with what differs (size, content, mode, mtime).

    \b
    A skipped check is not a passed one. Required of every runtime: extract, exec:python3,
    abi:tag, gil:state, sysconfig:relocated, recursion:thread, cext:import, embed:run; of a
    profile that ships pip (or its wheel): venv:pip; of a free-threaded runtime:
    threads:parallel. A required check that was skipped (e.g. threads:parallel on a
    one-CPU host) or never reported fails, unless --allow-skip names it.
    """
    from packaging.version import Version

    from orchestrator.archive import MAX_HASHED_BYTES
    from orchestrator.engine import connect
    from orchestrator.fsutil import check_regular
    from orchestrator.images import ensure_image, plan_image
    from orchestrator.matrix import Arch
    from orchestrator.verify.runtime import (
        audit_archive,
        load_metadata,
        metadata_path_for,
        raise_for_failures,
        summary_lines,
        verify_archive,
    )

    matrix = context.matrix
    archives: list[Path] = []
    for target in targets:
        if target.endswith(".tar.zst"):
            archives.append(Path(target))
        else:
            archives.extend(
                context.layout.artifacts / c.archive_name for c in matrix.select([target])
            )
    # Everything read on the host first, for every archive: a file that is not an archive
    # (a fifo, /dev/zero), a damaged record, or an archive that is not safe to unpack is
    # refused before the engine is even asked (and before --rebuild spends an hour).
    checked: list[tuple[Path, dict[str, Any], Any]] = []
    for archive in archives:
        check_regular(archive, limit=MAX_HASHED_BYTES)
        record = load_metadata(archive)
        if record["stack"] not in matrix.model.stacks:
            raise VerificationError(
                f"{metadata_path_for(archive)}: stack {record['stack']!r} is not in "
                f"{matrix.path.name}",
                hint="verify with the matrix the runtime was built from (--matrix)",
            )
        if rebuild:
            if not isinstance(record.get("cell"), str):
                raise VerificationError(
                    f"{metadata_path_for(archive)}: the record names no cell to rebuild",
                    hint="--rebuild needs the .json the build wrote; rebuild the cell",
                )
            matrix.cell(record["cell"])  # SelectionError naming it, before the engine
        checked.append((archive, record, audit_archive(archive, record)))
    client = None
    for archive, record, audit in checked:
        if client is None:
            client = connect()
        arch = Arch(record["arch"])
        images = {}
        for kind in ("run", "builder", "consumer"):
            plan = plan_image(client, matrix, record["stack"], arch, kind)
            log = context.layout.image_log(plan.tag)
            images[kind] = ensure_image(client, plan, log_path=log).image_id
        cell_id = record.get("cell", archive.name)
        report = verify_archive(
            client,
            archive=archive,
            metadata=record,
            run_image=images["run"],
            builder_image=images["builder"],
            consumer_image=images["consumer"],
            expected_modules=record["expected_modules"],
            log_path=context.layout.logs / f"{cell_id}.verify.log",
            stack_packages=matrix.model.stacks[record["stack"]].run_packages_for(
                [Version(record["version"])]
            ),
            audit=audit,
            allowed_skips=allowed_skips,
        )
        for line in summary_lines(report):
            click.echo(line)
        raise_for_failures(report, what=cell_id)
        if rebuild:
            _rebuild_and_compare(context, archive, record, jobs=jobs)


def _rebuild_and_compare(
    context: Context, archive: Path, record: dict[str, Any], *, jobs: int
) -> None:
    import tempfile

    from orchestrator.build import build_cell
    from orchestrator.engine import connect
    from orchestrator.layout import Layout
    from orchestrator.prepare import BuildOptions
    from orchestrator.verify.reproduce import compare_archives

    matrix = context.matrix
    cell = matrix.cell(record["cell"])
    progress, _ = cell_progress(cell)
    with tempfile.TemporaryDirectory(
        prefix="farm-rebuild-",
        dir=context.layout.out_dir.parent if context.layout.out_dir.exists() else None,
    ) as tmp:
        layout = Layout(out_dir=Path(tmp))
        progress(f"rebuilding from the same inputs into {tmp}")
        result = build_cell(
            matrix,
            cell,
            client=connect(),
            layout=layout,
            options=BuildOptions(profile=record["profile"], jobs=jobs),
            progress=progress,
        )
        if result.fingerprint != record.get("fingerprint"):
            click.echo(
                f"note: the inputs changed since {archive.name} was built "
                f"(fingerprint {record.get('fingerprint', '?')[:16]} -> {result.fingerprint[:16]})",
                err=True,
            )
        diffs = compare_archives(archive, result.archive.path)
    if not diffs:
        click.echo(
            f"reproducible: the rebuild of {cell.id} is byte-identical (sha256 {record['sha256']})"
        )
        return
    for diff in diffs:
        click.echo(f"differs: {diff}")
    raise VerificationError(
        f"{cell.id} is not reproducible: {len(diffs)} member(s) differ (first: {diffs[0]})",
        hint="see docs/REPRODUCIBILITY.md for known causes (PGO)",
    )
