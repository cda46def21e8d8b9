"""`orchestrator plan`: the cells of the matrix as a table, JSON or a GitHub job matrix."""

from __future__ import annotations

import json

import click

from orchestrator.cli.app import Context, cli, pass_context
from orchestrator.matrix import Cell


@cli.command()
@click.argument("selectors", nargs=-1)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["table", "json", "github-matrix"]),
    default="table",
    show_default=True,
    help='github-matrix: {"include": [...]} for a GitHub Actions job matrix.',
)
@pass_context
def plan(context: Context, selectors: tuple[str, ...], output_format: str) -> None:
    """List the cells of the matrix, optionally filtered by glob SELECTORS.

    \b
    Examples:
      orchestrator plan                          every cell
      orchestrator plan '3.13.*-debian-*-amd64'  3.13 on Debian stacks, amd64 (both variants)
      orchestrator plan '*t-debian-12-*'          the free-threaded cells of debian-12
      orchestrator plan '3.13.5-*-amd64v3'        3.13.5 built for x86-64-v3 (CPU levels
                                                 are left out unless a selector names one)
      orchestrator plan --format json '*-arm64'
    """
    cells = context.matrix.select(selectors)
    if output_format == "github-matrix":
        runners = context.matrix.model.runners
        include = [{**_cell_json(c), "cell": c.id, "runner": runners[c.arch]} for c in cells]
        click.echo(json.dumps({"include": include}, separators=(",", ":")))
        return
    if output_format == "json":
        click.echo(json.dumps([_cell_json(c) for c in cells], indent=2))
        return
    width = max(len(c.id) for c in cells)
    for cell in cells:
        click.echo(f"{cell.id:<{width}}  {cell.archive_name}")
    click.echo(f"{len(cells)} cell(s)", err=True)


def _cell_json(cell: Cell) -> dict[str, str | None]:
    return {
        "id": cell.id,
        "version": cell.version,
        "variant": cell.variant.value,
        "stack": cell.stack_name,
        "distro": cell.stack.distro,
        "distro_version": cell.stack.distro_version,
        "arch": cell.arch.value,
        # v2, v3 or v4 for a runtime built for that x86-64 level (the id's amd64v3); None: baseline
        "cpu_level": cell.cpu_level.value if cell.cpu_level else None,
        "archive": cell.archive_name,
    }
