"""`orchestrator publish`: built artifacts to the store, immutably, manifests last."""

from __future__ import annotations

from typing import Any

import click

from orchestrator.cli.app import (
    Context,
    cli,
    pass_context,
    publish_options,
    resolve_publish_target,
    say,
    sweep_orphans,
)
from orchestrator.errors import FarmError
from orchestrator.matrix import Cell


@cli.command()
@click.argument("cells", nargs=-1)
@publish_options
@pass_context
def publish(context: Context, /, cells: tuple[str, ...], **target: Any) -> None:
    """Publish built artifacts of CELLS (ids or globs; default: every built cell).

    \b
    Keys: {prefix}python-{version}-{distro}-{distro_version}-{arch}.tar.zst, with .sha256
    and .json beside it; then {prefix}manifest.json and, per stack and arch,
    {prefix}{stack}/{arch}/download-metadata.json (uv's format).

    Archives are immutable: an existing key is never overwritten (conditional PUT);
    republishing the same archive is a no-op; a different one needs --force. Objects are
    read back before the manifests reference them; manifests are updated last, with
    If-Match, so concurrent publishers never lose an entry. Without a bucket (flag, env or
    matrix.yaml `publish.bucket`), publishes to the local store OUT/publish.
    """
    artifacts = context.layout.artifacts
    # Globs take the cells that are built; a cell named exactly must be built. Without CELLS,
    # every built cell: CPU level cells too, which selections otherwise leave out.
    candidates = context.matrix.select(cells) if cells else context.matrix.cells()
    selected = [
        cell for cell in candidates if (artifacts / cell.archive_name).is_file() or cell.id in cells
    ]
    if not selected:
        raise FarmError(
            f"nothing to publish: no built archive in {artifacts} matches",
            hint="build first: `orchestrator build CELL`",
        )
    publish_cells(context, selected, **target)


def publish_cells(context: Context, cells: list[Cell], **target: Any) -> None:
    from orchestrator.publish.publisher import Publisher, load_artifact
    from orchestrator.publish.record import cell_identity
    from orchestrator.publish.target import open_store

    force, dry_run = bool(target["force"]), bool(target["dry_run"])
    resolved = resolve_publish_target(context, target)
    say(f"publishing to {resolved.describe()}")
    store = open_store(resolved, on_retry=lambda line: say(f"retry: {line}"))
    if not dry_run:
        sweep_orphans(store, resolved.prefix, hours=target["sweep_after"], say=say)
    publisher = Publisher(store, prefix=resolved.prefix, progress=say)
    for cell in cells:
        artifact = load_artifact(
            context.layout.artifacts, cell.archive_name, expect=cell_identity(cell)
        )
        outcome = publisher.publish(artifact, force=force, dry_run=dry_run)
        click.echo(f"{outcome.action:<9} {outcome.url}")
