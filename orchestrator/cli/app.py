"""The `orchestrator` command group and what its commands share: the context (matrix and
output layout), timestamped progress lines, and the publish-target options."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from orchestrator.errors import ConfigError
from orchestrator.layout import Layout
from orchestrator.matrix import Cell, Matrix, load_matrix
from orchestrator.redact import redact

if TYPE_CHECKING:
    from orchestrator.publish.store import ObjectStore
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

    def reload_matrix(self) -> None:
        """Read matrix.yaml again on next use (after a command rewrote it)."""
        self._matrix = None


def say(message: str) -> None:
    click.echo(f"{time.strftime('%H:%M:%S')} {redact(message)}", err=True)


def cell_progress(cell: Cell) -> tuple[Callable[[str], None], Callable[[str], None]]:
    def progress(message: str) -> None:
        say(f"[{cell.id}] {message}")

    def echo(line: str) -> None:
        click.echo(f"    {redact(line)}", err=True)

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
        click.option("--sweep-after", type=FiniteRange(min=0, max=24 * 365), default=6.0,
                     show_default=True, metavar="HOURS",
                     help="Remove what killed publishers left (temp files, unfinished "
                     "multipart uploads of python-* keys) once older than this."),
    ]  # fmt: skip
    for option in reversed(options):
        command = option(command)
    return command


class FiniteRange(click.FloatRange):
    """A FloatRange that also refuses nan (which compares false with every bound, so slips
    through FloatRange) and needs an upper bound: 1e300 GB of memory is a typo, not a limit."""

    name = "finite float range"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if isinstance(number, float) and not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


def timeout_option(command: F) -> F:
    """--timeout, shared by `build` and `nightly`."""
    return click.option(
        "--timeout",
        "timeout_minutes",
        type=FiniteRange(min=1, max=7 * 24 * 60),
        metavar="MINUTES",
        help="Kill a cell's build container after this long and fail the cell "
        "(default: the profile's timeout_minutes in matrix.yaml).",
    )(command)


def _allowed_skips(
    _context: click.Context, _param: click.Parameter, value: tuple[str, ...]
) -> tuple[str, ...]:
    if not value:  # the usual case: nothing to check, and the verify package stays unloaded
        return value
    from orchestrator.verify.required import check_allowed_skips

    try:
        return check_allowed_skips(value)
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from None


def allow_skip_option(command: F) -> F:
    """--allow-skip CHECK, shared by `build`, `nightly` and `verify`."""
    return click.option(
        "--allow-skip",
        "allowed_skips",
        multiple=True,
        metavar="CHECK",
        callback=_allowed_skips,
        help="Let a required verification check be skipped, e.g. threads:parallel on a "
        "one-CPU host (repeatable; the record lists the skips allowed). Without it, a "
        "required check that was skipped fails the verification.",
    )(command)


def memory_option(help_text: str) -> Callable[[F], F]:
    """--memory in GB, shared by `build` and `nightly` (a cell's container limit, no swap)."""
    return click.option(
        "--memory", "memory_gb", type=FiniteRange(min=0.5, max=64 * 1024), help=help_text
    )


# Publishing flags that say how to publish, not where.
NOT_TARGET = ("force", "dry_run", "sweep_after")


def sweep_orphans(
    store: ObjectStore, prefix: str, *, hours: float, say: Callable[[str], None]
) -> None:
    """Before publishing: clear what an earlier, killed publisher provably left."""
    for removed in store.sweep_stale(prefix, older_than=hours * 3600):
        say(f"removed what a killed publisher left: {store.describe(removed)}")


def resolve_publish_target(context: Context, target: dict[str, Any]) -> PublishTarget:
    """matrix.yaml `publish:` < FARM_PUBLISH_* < flags; --force/--dry-run are not target."""
    from orchestrator.publish.target import resolve_target

    overrides = {k: v for k, v in target.items() if k not in NOT_TARGET}
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
    type=click.Path(path_type=Path),  # read by fsutil.read_regular, which says what it is
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
