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
    the pin. Then upstream's signatures pinned for the version in matrix.yaml `signatures`
    are checked: the OpenPGP .asc against the release managers' keys (keys/<FINGERPRINT>.asc),
    the Sigstore bundle against the pinned identity and issuer. A bad signature is always
    fatal (exit 4, tarball removed from the cache); a missing one only with
    `signatures.required: true`. A verified cached file is reused without the network.
    """
    from orchestrator.sources.fetch import fetch_source
    from orchestrator.sources.signatures import policy_for

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
            deadline=matrix.model.sources.download_deadline_seconds,
            progress=progress,
            signatures=policy_for(
                matrix.model.signatures, root=matrix.root, version=known[version].parsed
            ),
        )
        click.echo(f"{fetched.sha256}  {fetched.path}  ({fetched.proof.describe()})")
