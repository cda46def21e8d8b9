"""`orchestrator render`: templates/Dockerfile.j2 -> dockerfiles/<stack>/Dockerfile."""

from __future__ import annotations

import click

from orchestrator.cli.app import Context, cli, pass_context
from orchestrator.errors import RenderCheckError
from orchestrator.render import stale_files, write_rendered


@cli.command()
@click.option("--check", is_flag=True, help="Write nothing; exit 3 naming stale files.")
@pass_context
def render(context: Context, check: bool) -> None:
    """Render templates/Dockerfile.j2 into dockerfiles/<stack>/Dockerfile.

    The rendered files are committed. With --check, compare them with what the templates
    and matrix.yaml produce and fail if any differs, is missing, or belongs to a stack that
    is no longer in the matrix.
    """
    matrix = context.matrix
    if check:
        stale = stale_files(matrix)
        if stale:
            names = ", ".join(str(p.relative_to(matrix.root)) for p in stale)
            raise RenderCheckError(
                f"rendered Dockerfiles are out of date: {names}",
                hint="run `orchestrator render` and commit the result",
            )
        click.echo(f"dockerfiles/ is up to date ({len(matrix.model.stacks)} stacks)")
        return
    written = write_rendered(matrix)
    for path in written:
        click.echo(f"wrote {path.relative_to(matrix.root)}")
    if not written:
        click.echo("dockerfiles/ already up to date")
