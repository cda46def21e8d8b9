"""`orchestrator check-manifest`: every selected cell published, readable and consistent."""

from __future__ import annotations

from typing import Any

import click

from orchestrator.cli.app import Context, cli, pass_context, publish_options, resolve_publish_target


@cli.command("check-manifest")
@click.argument("selectors", nargs=-1)
@publish_options
@pass_context
def check_manifest(context: Context, /, selectors: tuple[str, ...], **target: Any) -> None:
    """Check that every cell of SELECTORS (default: all) is published and consistent.

    Each cell must be in manifest.json; its archive must exist with the manifest's size and
    sha256; its .sha256 and .json must exist; and its stack/arch download-metadata.json
    must list it with the same sha256. Exits 10 naming every problem.
    """
    from orchestrator.errors import PublishError
    from orchestrator.publish.publisher import check_published
    from orchestrator.publish.target import open_store

    cells = context.matrix.select(selectors)
    resolved = resolve_publish_target(context, target)
    problems = check_published(
        open_store(resolved), resolved.prefix, [c.archive_name for c in cells]
    )
    if problems:
        for problem in problems:
            click.echo(problem, err=True)
        raise PublishError(
            f"{len(problems)} problem(s) with {len(cells)} cell(s) at {resolved.describe()}"
        )
    click.echo(f"{len(cells)} cell(s) published and consistent at {resolved.describe()}")
