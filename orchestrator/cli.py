"""Command line: `orchestrator render|plan|fetch|images|build`.

The only place that prints for humans and turns FarmError into an exit status.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click
from rich.console import Console

from orchestrator.errors import (
    FarmError,
    Interrupted,
    RenderCheckError,
    RunFailed,
    SelectionError,
    VerificationError,
)
from orchestrator.layout import Layout
from orchestrator.matrix import Cell, Matrix, load_matrix
from orchestrator.render import stale_files, write_rendered

if TYPE_CHECKING:
    from orchestrator.publish.target import PublishTarget

DEFAULT_CELL = "3.13.5-debian-12-amd64"


class Context:
    def __init__(self, matrix_path: Path, out_dir: Path) -> None:
        self.matrix_path = matrix_path
        self.layout = Layout(out_dir=out_dir)
        self._matrix: Matrix | None = None

    @property
    def matrix(self) -> Matrix:
        if self._matrix is None:
            self._matrix = load_matrix(self.matrix_path)
        return self._matrix


def _say(message: str) -> None:
    click.echo(f"{time.strftime('%H:%M:%S')} {message}", err=True)


def _cell_progress(cell: Cell) -> tuple[Callable[[str], None], Callable[[str], None]]:
    def progress(message: str) -> None:
        _say(f"[{cell.id}] {message}")

    def echo(line: str) -> None:
        click.echo(f"    {line}", err=True)

    return progress, echo


pass_context = click.make_pass_decorator(Context)

F = TypeVar("F", bound=Callable[..., Any])


def publish_options(command: F) -> F:
    """Target flags shared by `publish` and `build --publish` (env FARM_PUBLISH_*)."""
    options = [
        click.option("--bucket", envvar="FARM_PUBLISH_BUCKET",
                     help="S3 bucket (env FARM_PUBLISH_BUCKET). None: the local store."),
        click.option("--prefix", envvar="FARM_PUBLISH_PREFIX",
                     help="Key prefix inside the bucket (env FARM_PUBLISH_PREFIX)."),
        click.option("--region", envvar="FARM_PUBLISH_REGION",
                     help="Bucket region (env FARM_PUBLISH_REGION)."),
        click.option("--endpoint-url", envvar="FARM_PUBLISH_ENDPOINT_URL",
                     help="S3-compatible endpoint (env FARM_PUBLISH_ENDPOINT_URL)."),
        click.option("--public-base-url", envvar="FARM_PUBLISH_PUBLIC_BASE_URL",
                     help="Base URL clients download from, e.g. a CDN "
                     "(env FARM_PUBLISH_PUBLIC_BASE_URL)."),
        click.option("--force", is_flag=True,
                     help="Replace a published archive whose sha256 differs (recorded)."),
        click.option("--dry-run", is_flag=True,
                     help="Print every key it would write; write nothing."),
    ]  # fmt: skip
    for option in reversed(options):
        command = option(command)
    return command


def _resolve_target(context: Context, target: dict[str, Any]) -> PublishTarget:
    """matrix.yaml `publish:` < FARM_PUBLISH_* < flags; --force/--dry-run are not target."""
    from orchestrator.publish.target import resolve_target

    overrides = {k: v for k, v in target.items() if k not in ("force", "dry_run")}
    return resolve_target(
        context.matrix.model.publish,
        root=context.matrix.root,
        out_dir=context.layout.out_dir,
        **overrides,
    )


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.option(
    "--matrix",
    "matrix_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=Path("matrix.yaml"),
    envvar="FARM_MATRIX",
    show_default=True,
    help="The build matrix (env FARM_MATRIX). Templates and dockerfiles/ are found beside it.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("out"),
    envvar="FARM_OUT",
    show_default=True,
    help="Output directory: artifacts/, logs/ and work/ go here (env FARM_OUT).",
)
@click.version_option(package_name="python-runtime-farm")
@click.pass_context
def cli(ctx: click.Context, matrix_path: Path, out_dir: Path) -> None:
    """Build farm for relocatable CPython runtimes.

    A matrix of Python versions x stacks x arches (matrix.yaml) goes in; each cell
    (id VERSION-STACK-ARCH, e.g. 3.13.5-debian-12-amd64) is compiled in its own container
    and packed as python-VERSION-DISTRO-DISTRO_VERSION-ARCH.tar.zst with a .sha256 and a
    .json metadata record under OUT/artifacts. Logs go to OUT/logs.
    """
    ctx.obj = Context(matrix_path, out_dir)


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
      orchestrator plan '3.13.*-debian-*-amd64'  3.13 on Debian stacks, amd64
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


def _cell_json(cell: Cell) -> dict[str, str]:
    return {
        "id": cell.id,
        "version": cell.version,
        "stack": cell.stack_name,
        "distro": cell.stack.distro,
        "distro_version": cell.stack.distro_version,
        "arch": cell.arch.value,
        "archive": cell.archive_name,
    }


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
            _say(f"[{version}] {line}")

        fetched = fetch_source(
            known[version],
            mirrors=matrix.model.sources.mirrors,
            cache_dir=matrix.source_cache,
            progress=progress,
        )
        click.echo(f"{fetched.sha256}  {fetched.path}")


@cli.command()
@click.argument("cells", nargs=-1)
@click.option("--profile", help="Build profile from matrix.yaml (default: default_profile).")
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    default=os.cpu_count() or 1,
    show_default="number of cores",
    help="make -j inside the container.",
)
@click.option("--cpus", type=click.FloatRange(min=0.1), help="CPU limit for the container.")
@click.option("--memory", "memory_gb", type=click.FloatRange(min=0.5), help="Memory limit, GB.")
@click.option(
    "--extra-ca",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
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
    extra_ca: Path | None,
    keep_work: bool,
    quiet: bool,
    then_publish: bool,
    skip_unchanged: bool,
    engine: tuple[str, ...],
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
    from orchestrator.build import BuildOptions, build_cell, prepare_cell
    from orchestrator.cellbuild import Limits
    from orchestrator.engine import EnginePool, parse_engine_options

    matrix = context.matrix
    selected = matrix.select(cells or (DEFAULT_CELL,))
    engines = EnginePool({**matrix.model.engines, **parse_engine_options(engine)})
    options = BuildOptions(
        profile=profile,
        jobs=jobs,
        keep_work=keep_work,
        extra_ca=extra_ca,
        limits=Limits(cpus=cpus, memory_bytes=int(memory_gb * 1024**3) if memory_gb else None),
    )
    published: dict[str, str] = {}
    if skip_unchanged and then_publish:
        from orchestrator.nightly import published_fingerprints
        from orchestrator.publish.target import open_store

        resolved = _resolve_target(context, target)
        published = published_fingerprints(open_store(resolved), resolved.prefix)
    for cell in selected:
        progress, echo = _cell_progress(cell)
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
            _publish_cells(context, [cell], **dict(target))


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
    # Globs take the cells that are built; a cell named exactly must be built.
    selected = [
        cell
        for cell in context.matrix.select(cells)
        if (artifacts / cell.archive_name).is_file() or cell.id in cells
    ]
    if not selected:
        raise FarmError(
            f"nothing to publish: no built archive in {artifacts} matches",
            hint="build first: `orchestrator build CELL`",
        )
    _publish_cells(context, selected, **target)


def _publish_cells(context: Context, cells: list[Cell], **target: Any) -> None:
    from orchestrator.publish.publisher import Publisher, load_artifact
    from orchestrator.publish.target import open_store

    force, dry_run = bool(target["force"]), bool(target["dry_run"])
    resolved = _resolve_target(context, target)
    _say(f"publishing to {resolved.describe()}")
    store = open_store(resolved, on_retry=lambda line: _say(f"retry: {line}"))
    publisher = Publisher(store, prefix=resolved.prefix, progress=_say)
    for cell in cells:
        artifact = load_artifact(context.layout.artifacts, cell.archive_name)
        outcome = publisher.publish(artifact, force=force, dry_run=dry_run)
        click.echo(f"{outcome.action:<9} {outcome.url}")


@cli.command()
@click.argument("selectors", nargs=-1)
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
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
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
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
    **target: Any,
) -> None:
    """Rebuild what changed in the matrix (or SELECTORS), publish it, skip the rest.

    Each cell's fingerprint hashes everything that can change its output (source sha256,
    rendered Dockerfile, base image id, build recipe, profile, flags, recipe_version). A
    cell whose published manifest entry carries the same fingerprint is skipped without a
    container or an upload; --force rebuilds and republishes anyway. Builder images are
    built once per stack and arch first. One failed cell does not stop the others; the exit
    status is 11 when any cell failed. Ctrl-C / SIGTERM removes running containers and
    publishes nothing partial; the next run skips what was finished.

    On a terminal: a live table; elsewhere timestamped lines; in GitHub Actions, folded
    groups, ::error annotations and a step summary. Logs: OUT/logs/<cell>.log.
    """
    from orchestrator.build import BuildOptions
    from orchestrator.engine import EnginePool, parse_engine_options
    from orchestrator.nightly import Machine, Nightly, NightlyOptions, with_limits
    from orchestrator.progress import (
        append_step_summary,
        make_reporter,
        summary_table,
        write_report,
    )
    from orchestrator.publish.publisher import Publisher
    from orchestrator.publish.target import open_store

    matrix = context.matrix
    cells = matrix.select(selectors)
    force, dry_run = bool(target["force"]), bool(target["dry_run"])
    machine = Machine.this()
    jobs = jobs or machine.default_jobs()
    build_options = with_limits(
        BuildOptions(profile=profile, extra_ca=extra_ca, transfer=transfer),  # type: ignore[arg-type]
        machine,
        jobs,
    )
    pool = EnginePool({**matrix.model.engines, **parse_engine_options(engines)})
    reporter = make_reporter([c.id for c in cells])
    publisher = None
    if not no_publish:
        resolved = _resolve_target(context, target)
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
    try:
        if dry_run:
            todo, outcomes = runner.plan(cells)
            reporter.close()
            for item in todo:
                click.echo(f"build   {item.cell.id}  fingerprint {item.fingerprint[:16]}")
            for outcome in outcomes:
                click.echo(f"{outcome.result:<7} {outcome.cell}  {outcome.reason}")
            return
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
    resolved = _resolve_target(context, target)
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


@cli.command()
@click.argument("targets", nargs=-1, required=True)
@click.option(
    "--rebuild",
    is_flag=True,
    help="Also rebuild each CELL from the same inputs and compare the two archives.",
)
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    default=os.cpu_count() or 1,
    show_default="number of cores",
    help="make -j for --rebuild.",
)
@pass_context
def verify(context: Context, /, targets: tuple[str, ...], rebuild: bool, jobs: int) -> None:
    """Verify runtimes: ARCHIVE paths (.tar.zst, with their .json beside them) or CELL ids
    and globs (their archives in OUT/artifacts). Builds run this automatically.

    \b
    In a clean container of the stack's run image, at a fresh random path, without
    LD_LIBRARY_PATH: python, python3, python3.X, python3-config run; bin/ holds only the
    expected entries; ldd resolves every library of the executable, libpython and each
    lib-dynload module (their apt packages are recorded); the expected modules import;
    sqlite3/lzma/bz2/zlib (and compression.zstd) round-trip; deep recursion in a thread
    ends in RecursionError; venv with bundled pip works offline (skipped without the
    wheel); Py_ENABLE_SHARED is 1 and sysconfig carries none of our build flags. In the
    builder image: a C extension and an embedding program build against the runtime. On
    the host: no RPATH/RUNPATH but $ORIGIN/../lib on the executable, every ELF file
    stripped, no static libpython; build-host paths in the tree are reported.

    With --rebuild: the cell is built again from the same inputs and the two archives are
    compared; differing members are listed with what differs (size, content, mode, mtime).
    """
    from orchestrator.engine import connect
    from orchestrator.images import ensure_image, plan_image
    from orchestrator.matrix import Arch
    from orchestrator.verify import (
        load_metadata,
        raise_for_failures,
        summary_lines,
        verify_archive,
    )

    matrix = context.matrix
    archives: list[Path] = []
    for target in targets:
        if target.endswith(".tar.zst"):
            archives.append(Path(target))
        else:
            archives.extend(
                context.layout.artifacts / c.archive_name for c in matrix.select([target])
            )
    client = connect()
    for archive in archives:
        record = load_metadata(archive)
        arch = Arch(record["arch"])
        images = {}
        for kind in ("run", "builder"):
            plan = plan_image(client, matrix, record["stack"], arch, kind)
            log = context.layout.image_log(plan.tag)
            images[kind] = ensure_image(client, plan, log_path=log).image_id
        cell_id = record.get("cell", archive.name)
        report = verify_archive(
            client,
            archive=archive,
            metadata=record,
            run_image=images["run"],
            builder_image=images["builder"],
            expected_modules=record["expected_modules"],
            log_path=context.layout.logs / f"{cell_id}.verify.log",
        )
        for line in summary_lines(report):
            click.echo(line)
        raise_for_failures(report, what=cell_id)
        if rebuild:
            _rebuild_and_compare(context, archive, record, jobs=jobs)


def _rebuild_and_compare(
    context: Context, archive: Path, record: dict[str, Any], *, jobs: int
) -> None:
    import tempfile

    from orchestrator.build import BuildOptions, build_cell
    from orchestrator.engine import connect
    from orchestrator.layout import Layout
    from orchestrator.reproduce import compare_archives

    matrix = context.matrix
    cell = matrix.cell(record["cell"])
    progress, _ = _cell_progress(cell)
    with tempfile.TemporaryDirectory(
        prefix="farm-rebuild-",
        dir=context.layout.out_dir.parent if context.layout.out_dir.exists() else None,
    ) as tmp:
        layout = Layout(out_dir=Path(tmp))
        progress(f"rebuilding from the same inputs into {tmp}")
        result = build_cell(
            matrix,
            cell,
            client=connect(),
            layout=layout,
            options=BuildOptions(profile=record["profile"], jobs=jobs),
            progress=progress,
        )
        if result.fingerprint != record.get("fingerprint"):
            click.echo(
                f"note: the inputs changed since {archive.name} was built "
                f"(fingerprint {record.get('fingerprint', '?')[:16]} -> {result.fingerprint[:16]})",
                err=True,
            )
        diffs = compare_archives(archive, result.archive.path)
    if not diffs:
        click.echo(
            f"reproducible: the rebuild of {cell.id} is byte-identical (sha256 {record['sha256']})"
        )
        return
    for diff in diffs:
        click.echo(f"differs: {diff}")
    raise VerificationError(
        f"{cell.id} is not reproducible: {len(diffs)} member(s) differ (first: {diffs[0]})",
        hint="see docs/REPRODUCIBILITY.md for known causes (PGO)",
    )


build.help = (build.help or "").rstrip() + f" ({DEFAULT_CELL}).\n"


def _raise_interrupt(signum: int, frame: FrameType | None) -> NoReturn:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    # SIGTERM takes the same path as Ctrl-C, so every `finally` removes its container.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        cli.main(args=argv, prog_name="orchestrator", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("error: interrupted", err=True)
        return Interrupted.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except FarmError as exc:
        click.echo(f"error: {exc}", err=True)
        return exc.exit_code
    except KeyboardInterrupt:
        click.echo("error: interrupted; running containers were removed", err=True)
        return Interrupted.exit_code
    return 0


def console_main() -> NoReturn:
    sys.exit(main())
