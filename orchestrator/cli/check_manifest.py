"""`orchestrator check-manifest`: every selected cell published, readable and consistent;
with --repair, first rebuild the store's records from what is published."""

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
)


@cli.command("check-manifest")
@click.argument("selectors", nargs=-1)
@click.option(
    "--repair",
    is_flag=True,
    help="First rebuild the store's records (local .farm-meta/, S3 object metadata) from the "
    "published bytes, for every object under the prefix; an archive whose bytes disagree "
    "with its .sha256 or manifest entry is named and left alone. With --dry-run: list the "
    "records it would rebuild, write nothing.",
)
@publish_options
@pass_context
def check_manifest(
    context: Context, /, selectors: tuple[str, ...], repair: bool, **target: Any
) -> None:
    """Check that every cell of SELECTORS (default: all) is published and consistent.

    Each cell must be in manifest.json with a valid entry; its archive must exist with the
    manifest's size and sha256; its .sha256, .json and SBOM must exist; each must have a
    record that describes it; and its stack/arch download-metadata.json must list it with
    the same sha256. Exits 10 naming every problem.

    \b
    --repair: a store copied without its records (`rsync dir/*` skips .farm-meta/; objects
    uploaded from a local copy by `aws s3 sync`/`cp` carry no sha256 metadata), or with one
    object restored alone, is refused by publish, nightly and this check until its records
    are rebuilt from the bytes.
    """
    from orchestrator.errors import PublishError
    from orchestrator.publish.publisher import check_published
    from orchestrator.publish.target import open_store

    cells = context.matrix.select(selectors)
    resolved = resolve_publish_target(context, target)
    store = open_store(resolved)
    if repair:
        from orchestrator.publish.repair import repair_records

        dry_run = bool(target["dry_run"])
        report = repair_records(store, resolved.prefix, progress=say, dry_run=dry_run)
        for problem in report.problems:
            click.echo(problem, err=True)
        say(
            f"repair: {report.keys} object(s) under {resolved.describe()}: "
            f"{len(report.rebuilt)} record(s) {'to rebuild' if dry_run else 'rebuilt'}, "
            f"{len(report.dropped)} dropped (no object), {len(report.problems)} problem(s)"
        )
        if dry_run:
            return  # nothing was written, so the check would report the same records
        if report.problems:
            raise PublishError(
                f"repair: {len(report.problems)} problem(s) at {resolved.describe()}",
                hint="each is named above; the other records were rebuilt",
            )
    problems = check_published(store, resolved.prefix, [c.archive_name for c in cells])
    if problems:
        for problem in problems:
            click.echo(problem, err=True)
        raise PublishError(
            f"{len(problems)} problem(s) with {len(cells)} cell(s) at {resolved.describe()}"
        )
    click.echo(f"{len(cells)} cell(s) published and consistent at {resolved.describe()}")
