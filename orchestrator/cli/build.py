"""`orchestrator build`: cells end to end, optionally published."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from orchestrator.cli.app import (
    DEFAULT_CELL,
    Context,
    FiniteRange,
    allow_skip_option,
    cell_progress,
    cli,
    memory_option,
    pass_context,
    publish_options,
    resolve_publish_target,
    timeout_option,
)
from orchestrator.cli.publish import publish_cells


@cli.command()
@click.argument("cells", nargs=-1)
@click.option("--profile", help="Build profile from matrix.yaml (default: default_profile).")
@click.option(
    "--jobs",
    type=click.IntRange(min=1, max=1024),
    default=os.cpu_count() or 1,
    show_default="number of cores",
    help="make -j inside the container.",
)
@click.option("--cpus", type=FiniteRange(min=0.1, max=1024), help="CPU limit for the container.")
@memory_option("Memory limit of the build container, GB (no swap beyond it).")
@timeout_option
@click.option(
    "--extra-ca",
    type=click.Path(path_type=Path),
    envvar="FARM_EXTRA_CA",
    help="PEM bundle added to builder/run images' trust store (TLS-intercepting proxies).",
)
@click.option("--keep-work", is_flag=True, help="Keep OUT/work/<cell> (the install tree).")
@click.option("--quiet", "-q", is_flag=True, help="Show phases only; full output in the log.")
@click.option("--publish", "then_publish", is_flag=True, help="Publish each cell once built.")
@click.option(
    "--engine",
    multiple=True,
    metavar="ARCH=URL",
    help="Docker endpoint for an arch, e.g. arm64=ssh://arm64-builder (repeatable).",
)
@click.option(
    "--skip-unchanged",
    is_flag=True,
    help="With --publish: skip a cell whose published fingerprint equals its own.",
)
@allow_skip_option
@publish_options
@pass_context
def build(
    context: Context,
    /,
    cells: tuple[str, ...],
    profile: str | None,
    jobs: int,
    cpus: float | None,
    memory_gb: float | None,
    timeout_minutes: float | None,
    extra_ca: Path | None,
    keep_work: bool,
    quiet: bool,
    then_publish: bool,
    skip_unchanged: bool,
    engine: tuple[str, ...],
    allowed_skips: tuple[str, ...],
    **target: Any,
) -> None:
    """Build CELLS (ids or glob selectors) end to end; with --publish, publish each.

    For each cell: fetch and verify the source, build (or reuse) the stack's builder image
    with buildx, compile CPython in one container (no network, source read-only), check the
    expected modules, pack OUT/artifacts/python-...tar.zst with .sha256, verify the runtime
    (see `orchestrator verify --help`), then write the .json. Live output also goes to
    OUT/logs/<cell>.log. A published archive with other bytes is only replaced with
    --force. Cells of an arch mapped to another engine (matrix.yaml `engines:` or --engine)
    build there. With no CELLS, builds the default cell
    """
    # Imported here so `plan` and `render` start fast without the docker SDK.
    from orchestrator.build import build_cell
    from orchestrator.cellbuild import Limits
    from orchestrator.engine import EnginePool, parse_engine_options
    from orchestrator.images import read_extra_ca
    from orchestrator.prepare import BuildOptions, prepare_cell

    ca_bundle = read_extra_ca(extra_ca)
    matrix = context.matrix
    matrix.profile(profile)  # an unknown profile is refused before the engine is asked
    selected = matrix.select(cells or (DEFAULT_CELL,))
    engines = EnginePool({**matrix.model.engines, **parse_engine_options(engine)})
    options = BuildOptions(
        profile=profile,
        jobs=jobs,
        keep_work=keep_work,
        extra_ca=ca_bundle,
        limits=Limits(cpus=cpus, memory_bytes=int(memory_gb * 1024**3) if memory_gb else None),
        timeout_minutes=timeout_minutes,
        allowed_skips=allowed_skips,
    )
    published: dict[str, str] = {}
    if then_publish:
        # A bad target (region, bucket, URL) is refused now, not after an hour of building.
        resolved = resolve_publish_target(context, target)
    if skip_unchanged and then_publish:
        from orchestrator.nightly import published_fingerprints
        from orchestrator.publish.target import open_store

        published = published_fingerprints(open_store(resolved), resolved.prefix)
    for cell in selected:
        progress, echo = cell_progress(cell)
        client = engines.client(cell.arch)
        prepared = prepare_cell(matrix, cell, client=client, options=options)
        if published.get(cell.archive_name) == prepared.fingerprint and not target["force"]:
            progress(f"skipped: published with the same fingerprint {prepared.fingerprint[:16]}")
            continue
        result = build_cell(
            matrix,
            cell,
            client=client,
            layout=context.layout,
            options=options,
            progress=progress,
            echo=None if quiet else echo,
            prepared=prepared,
            docker_host=engines.url(cell.arch),
        )
        click.echo(
            f"{result.archive.path}  {result.archive.size / 1e6:.1f} MB  "
            f"sha256 {result.archive.sha256}  ({result.seconds:.0f} s)"
        )
        if then_publish:
            publish_cells(context, [cell], **dict(target))


build.help = (build.help or "").rstrip() + f" ({DEFAULT_CELL}).\n"
