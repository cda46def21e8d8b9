"""`orchestrator versions`: what upstream has released against what the matrix pins, and
`--update` to pin the newest patches from the release feeds."""

from __future__ import annotations

import datetime as dt
import json

import click
from rich.console import Console
from rich.table import Table

from orchestrator.cli.app import Context, cli, pass_context, say
from orchestrator.errors import FeedError


@cli.command()
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
)
@click.option(
    "--update",
    is_flag=True,
    help="Add the newest published patch of each tracked minor to matrix.yaml (in place; "
    "comments, order and anchors kept) and re-render dockerfiles/.",
)
@click.option(
    "--minor",
    "minors",
    multiple=True,
    metavar="X.Y",
    help="With --update: only these minors (repeatable); a minor the matrix does not track "
    "yet is added.",
)
@click.option(
    "--drop-old",
    is_flag=True,
    help="With --update: remove the older pins of each minor that gets a new one.",
)
@pass_context
def versions(
    context: Context,
    /,
    output_format: str,
    update: bool,
    minors: tuple[str, ...],
    drop_old: bool,
) -> None:
    """Compare the matrix's pins with the releases the feeds publish.

    \b
    Feeds are matrix.yaml `sources.release_feeds`, read in order: python.org's release API,
    Debian source indexes (InRelease verified with Debian's archive keyring). A feed that
    cannot be reached is skipped with a note; a malformed one, or two feeds stating
    different sha256 for one tarball, is an error (exit 12) and nothing is written.

    \b
    One row per CPython minor from 3.9 on, with a status:
      current       the matrix pins the newest published patch
      stale         a newer patch is published
      new minor     published and final, not in the matrix
      prerelease    only prereleases published, not in the matrix
      end of life   past sources.end_of_life
      not in feeds  pinned, but no feed that answered lists it
    Exits 0 whatever the statuses; it reports. A pin whose sha256 differs from a feed's
    is an error (exit 12).

    \b
    --update adds, for each tracked minor that is stale (or each --minor), the newest
    published patch with the feed's sha256, its size when a feed states one, and a
    provenance comment. Existing pins are
    never changed; older ones stay unless --drop-old.
    """
    from orchestrator.matrix.editor import NewPin, update_pins
    from orchestrator.render import write_rendered
    from orchestrator.sources.feeds.configured import configured_feeds
    from orchestrator.sources.versions import (
        merge,
        minor_rows,
        pin_conflicts,
        plan_update,
        read_feeds,
    )

    if (minors or drop_old) and not update:
        raise click.UsageError("--minor and --drop-old go with --update")
    matrix = context.matrix
    settings = matrix.model.sources
    reports = read_feeds(configured_feeds(settings, root=matrix.root), progress=say)
    index = merge(reports)
    pythons = matrix.model.pythons
    rows = minor_rows(pythons, index, end_of_life=settings.end_of_life, today=dt.date.today())
    conflicts = pin_conflicts(pythons, index)

    if output_format == "json":
        document = {
            "feeds": [
                {
                    "name": r.name,
                    "source": r.source,
                    "releases": len(r.releases),
                    "unavailable": r.unavailable,
                }
                for r in reports
            ],
            "minors": [row.as_json() for row in rows],
            "pin_conflicts": conflicts,
        }
        click.echo(json.dumps(document, indent=2))
    else:
        table = Table(title=f"CPython releases vs {matrix.path.name}", title_justify="left")
        for column in ("minor", "pinned", "newest published", "status", "end of life", "feed"):
            table.add_column(column)
        for row in rows:
            table.add_row(
                row.minor,
                ", ".join(row.pinned) or "-",
                row.newest or "-",
                row.status.value,
                row.end_of_life.isoformat() if row.end_of_life else "-",
                row.feed or "-",
            )
        Console(width=120).print(table)
        for report in reports:
            if report.unavailable:
                say(f"note: {report.name} could not be read; statuses reflect the other feeds")
    if conflicts:
        raise FeedError(
            f"{len(conflicts)} pin(s) disagree with the feeds: {'; '.join(conflicts)}",
            hint="check upstream's signature; a pin is never changed automatically",
        )
    if not update:
        return

    plan = plan_update(pythons, index, rows, minors=minors, drop_old=drop_old)
    if plan.empty:
        say(f"{matrix.path.name} already pins the newest published patches; nothing to do")
        return
    today = dt.date.today().isoformat()
    pins = [
        NewPin(
            version=release.version,
            sha256=release.sha256,
            size=release.size,
            filename=None
            if release.filename == f"Python-{release.version}.tar.xz"
            else release.filename,
            comment=f"{release.version} from release feed {release.feed}: {release.origin} "
            f"(added by `orchestrator versions --update`, {today})",
        )
        for release in plan.add
    ]
    update_pins(matrix.path, add=pins, drop=plan.drop)
    for release in plan.add:
        size = f"  {release.size} bytes" if release.size is not None else ""
        click.echo(f"added   {release.version}  sha256 {release.sha256}{size}  ({release.feed})")
    for version in plan.drop:
        click.echo(f"dropped {version}")
    context.reload_matrix()
    for path in write_rendered(context.matrix):
        click.echo(f"rendered {path.relative_to(context.matrix.root)}")
