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
from typing import Any, NoReturn, TypeVar

import click

from orchestrator.errors import FarmError, Interrupted, RenderCheckError, SelectionError
from orchestrator.layout import Layout
from orchestrator.matrix import Cell, Matrix, load_matrix
from orchestrator.render import stale_files, write_rendered

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
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
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
    from orchestrator.sources import fetch_source

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
    **target: Any,
) -> None:
    """Build CELLS (ids or glob selectors) end to end.

    For each cell: fetch and verify the source, build (or reuse) the stack's builder image
    with buildx, compile CPython in one container (no network, source read-only), check the
    expected modules, then pack OUT/artifacts/python-...tar.zst with .sha256 and .json.
    Live output also goes to OUT/logs/<cell>.log. With no CELLS, builds the default cell
    """
    # Imported here so `plan` and `render` start fast without the docker SDK.
    from orchestrator.build import BuildOptions, build_cell
    from orchestrator.cellbuild import Limits
    from orchestrator.engine import connect

    matrix = context.matrix
    selected = matrix.select(cells or (DEFAULT_CELL,))
    client = connect()
    options = BuildOptions(
        profile=profile,
        jobs=jobs,
        keep_work=keep_work,
        extra_ca=extra_ca,
        limits=Limits(cpus=cpus, memory_bytes=int(memory_gb * 1024**3) if memory_gb else None),
    )
    for cell in selected:
        progress, echo = _cell_progress(cell)
        result = build_cell(
            matrix,
            cell,
            client=client,
            layout=context.layout,
            options=options,
            progress=progress,
            echo=None if quiet else echo,
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
    from orchestrator.publish import Publisher, load_artifact
    from orchestrator.target import open_store, resolve_target

    force = bool(target.pop("force"))
    dry_run = bool(target.pop("dry_run"))
    resolved = resolve_target(
        context.matrix.model.publish,
        root=context.matrix.root,
        out_dir=context.layout.out_dir,
        **target,
    )
    _say(f"publishing to {resolved.describe()}")
    store = open_store(resolved, on_retry=lambda line: _say(f"retry: {line}"))
    publisher = Publisher(store, prefix=resolved.prefix, progress=_say)
    for cell in cells:
        artifact = load_artifact(context.layout.artifacts, cell.archive_name)
        outcome = publisher.publish(artifact, force=force, dry_run=dry_run)
        click.echo(f"{outcome.action:<9} {outcome.url}")


build.help = (build.help or "") + f" ({DEFAULT_CELL}).\n"


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
