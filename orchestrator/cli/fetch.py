"""`orchestrator fetch`: source tarballs into the cache, verified."""

from __future__ import annotations

import click

from orchestrator.cli.app import Context, cli, pass_context, say
from orchestrator.errors import SelectionError


@cli.command()
@click.argument("versions", nargs=-1)
@pass_context
def fetch(context: Context, versions: tuple[str, ...]) -> None:
    """Fetch and verify source tarballs into the source cache (all versions by default).

    Mirrors from matrix.yaml are tried in order; a file is kept only when its sha256 equals
    the pin. A verified cached file is reused without touching the network.
    """
    from orchestrator.sources.fetch import fetch_source

    matrix = context.matrix
    known = {p.version: p for p in matrix.model.pythons}
    unknown = [v for v in versions if v not in known]
    if unknown:
        raise SelectionError(
            f"unknown version(s) {', '.join(unknown)}",
            hint=f"versions in {matrix.path.name}: {', '.join(known)}",
        )
    for version in versions or tuple(known):

        def progress(line: str, version: str = version) -> None:
            say(f"[{version}] {line}")

        fetched = fetch_source(
            known[version],
            mirrors=matrix.model.sources.mirrors,
            cache_dir=matrix.source_cache,
            progress=progress,
        )
        click.echo(f"{fetched.sha256}  {fetched.path}")
