"""`orchestrator nightly`: rebuild and publish what changed, skip the rest."""

from __future__ import annotations

import contextlib
import os
import socket
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from orchestrator.cli.app import (
    Context,
    allow_skip_option,
    cli,
    memory_option,
    pass_context,
    publish_options,
    resolve_publish_target,
    sweep_orphans,
    timeout_option,
)
from orchestrator.errors import RunFailed
from orchestrator.fsutil import check_output_file


@cli.command()
@click.argument("selectors", nargs=-1)
@click.option(
    "--jobs",
    type=click.IntRange(min=1, max=256),
    help="Cells built at once (default: one per 2 cores and 4 GB of memory).",
)
@click.option("--profile", help="Build profile (default: default_profile).")
@click.option(
    "--no-publish",
    is_flag=True,
    help="Build only; skip decisions then use the local artifacts' metadata.",
)
@click.option("--fail-fast", is_flag=True, help="Start no new cell after a failure.")
@click.option(
    "--report",
    "report_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write the outcome of every cell as JSON.",
)
@click.option(
    "--engine",
    "engines",
    multiple=True,
    metavar="ARCH=URL",
    help="Docker endpoint for an arch, e.g. arm64=ssh://arm64-builder (repeatable; "
    "matrix.yaml `engines:` too).",
)
@click.option(
    "--extra-ca",
    type=click.Path(path_type=Path),
    envvar="FARM_EXTRA_CA",
    help="PEM bundle added to the images' trust store.",
)
@click.option(
    "--transfer",
    type=click.Choice(["auto", "bind", "copy"]),
    default="auto",
    show_default=True,
    help="How inputs/outputs reach build containers: bind mounts (local engine) or "
    "copies through the API (remote engines).",
)
@memory_option(
    "Memory limit of each build container, GB, no swap beyond it (default: 90% of the "
    "machine's memory split over --jobs)."
)
@timeout_option
@allow_skip_option
@publish_options
@pass_context
def nightly(
    context: Context,
    /,
    selectors: tuple[str, ...],
    jobs: int | None,
    profile: str | None,
    no_publish: bool,
    fail_fast: bool,
    report_path: Path | None,
    engines: tuple[str, ...],
    extra_ca: Path | None,
    transfer: str,
    memory_gb: float | None,
    timeout_minutes: float | None,
    allowed_skips: tuple[str, ...],
    **target: Any,
) -> None:
    """Rebuild what changed in the matrix (or SELECTORS), publish it, skip the rest.

    Each cell's fingerprint hashes everything that can change its output (source sha256,
    rendered Dockerfile, base image id, build recipe, profile, flags, recipe_version). A
    cell whose published manifest entry carries the same fingerprint is skipped without a
    container or an upload; --force rebuilds and republishes anyway. A cell whose local
    artifact is complete, verified and has the same fingerprint (an earlier run built it,
    then publishing failed) is published without a rebuild. Builder images are
    built once per stack and arch first. A cell that runs longer than its profile's
    timeout_minutes (or --timeout) is killed and fails. One failed cell does not stop the
    others; the exit status is 11 when any cell failed. Ctrl-C / SIGTERM removes running
    containers and publishes nothing partial; the next run skips what was finished.

    One nightly at a time runs against a store: a second one started while the first
    holds it exits 10 at once, building nothing (local store: a lock the kernel releases
    when the holder exits; S3: a lease object the holder renews, taken over once expired).

    On a terminal: a live table; elsewhere timestamped lines; in GitHub Actions, folded
    groups, ::error annotations and a step summary. Logs: OUT/logs/<cell>.log.
    """
    from orchestrator.engine import EnginePool, parse_engine_options
    from orchestrator.images import read_extra_ca
    from orchestrator.nightly import Machine, Nightly, NightlyOptions, with_limits
    from orchestrator.prepare import BuildOptions
    from orchestrator.progress import (
        append_step_summary,
        make_reporter,
        summary_table,
        write_report,
    )
    from orchestrator.publish.publisher import Publisher
    from orchestrator.publish.target import open_store

    ca_bundle = read_extra_ca(extra_ca)
    # What the run writes at its end is checked at its start.
    for output in (report_path, os.environ.get("GITHUB_STEP_SUMMARY")):
        if output:
            check_output_file(Path(output))
    matrix = context.matrix
    matrix.profile(profile)  # an unknown profile is refused before the engine is asked
    cells = matrix.select(selectors)
    force, dry_run = bool(target["force"]), bool(target["dry_run"])
    machine = Machine.this()
    jobs = jobs or machine.default_jobs()
    build_options = with_limits(
        BuildOptions(
            profile=profile,
            extra_ca=ca_bundle,
            transfer=transfer,  # type: ignore[arg-type]
            timeout_minutes=timeout_minutes,
            allowed_skips=allowed_skips,
        ),
        machine,
        jobs,
        memory_bytes=int(memory_gb * 1024**3) if memory_gb else None,
    )
    pool = EnginePool({**matrix.model.engines, **parse_engine_options(engines)})
    reporter = make_reporter([c.id for c in cells])
    publisher = None
    store = None
    if not no_publish:
        resolved = resolve_publish_target(context, target)
        reporter.message(f"publishing to {resolved.describe()}")
        store = open_store(resolved, on_retry=lambda line: reporter.message(f"retry: {line}"))
        publisher = Publisher(store, prefix=resolved.prefix, progress=reporter.message)
    runner = Nightly(
        matrix,
        engines=pool,
        layout=context.layout,
        options=NightlyOptions(build=build_options, jobs=jobs, force=force, fail_fast=fail_fast),
        reporter=reporter,
        publisher=publisher,
    )
    started = time.monotonic()
    if dry_run or store is None:
        hold: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
    else:
        # Before anything is planned: the manifest a second run would read is not final
        # until the first has published, so it would build the same cells again.
        def lost(message: str) -> None:
            reporter.message(f"{message}; no further cell starts or is published")
            runner.cancel.set()

        holder = (
            f"nightly pid {os.getpid()} on {socket.gethostname()[:64]} since "
            f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}"
        )
        hold = store.run_lock(holder, prefix=resolved.prefix, on_lost=lost)
    try:
        if dry_run:
            todo, outcomes = runner.plan(cells)
            reporter.close()
            for item in todo:
                # Built earlier from the same inputs, not yet published: publish only.
                verb = "publish" if runner.current_local_artifact(item) else "build"
                click.echo(f"{verb:<7} {item.cell.id}  fingerprint {item.fingerprint[:16]}")
            for outcome in outcomes:
                click.echo(f"{outcome.result:<7} {outcome.cell}  {outcome.reason}")
            # A cell that could not even be planned (engine unreachable, base image missing)
            # is a failure of the dry run too, not a plan.
            failed = [o.cell for o in outcomes if o.result in ("failed", "cancelled")]
            if failed:
                raise RunFailed(
                    f"dry run: {len(failed)} cell(s) could not be planned: {', '.join(failed)}",
                    hint="see the reasons above",
                )
            return
        with hold:
            if store is not None:
                sweep_orphans(
                    store, resolved.prefix, hours=target["sweep_after"], say=reporter.message
                )
            outcomes = runner.run(cells)
    finally:
        reporter.close()
    order = {c.id: i for i, c in enumerate(cells)}
    outcomes.sort(key=lambda o: order.get(o.cell, 0))
    Console().print(summary_table(outcomes))
    if report_path:
        write_report(report_path, outcomes, seconds=time.monotonic() - started)
    append_step_summary(outcomes)
    bad = [o for o in outcomes if o.result in ("failed", "cancelled")]
    if bad:
        raise RunFailed(
            f"{len(bad)} of {len(outcomes)} cell(s) failed: {', '.join(o.cell for o in bad)}",
            hint=f"logs in {context.layout.logs}",
        )
