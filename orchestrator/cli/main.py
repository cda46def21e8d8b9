"""Entry point: run the command group, turn FarmError into one line and an exit status."""

from __future__ import annotations

import signal
import sys
from types import FrameType
from typing import NoReturn

import click

from orchestrator.cli.app import cli
from orchestrator.errors import FarmError, Interrupted, OutputError
from orchestrator.redact import redact


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
        click.echo(f"error: {redact(str(exc))}", err=True)
        return exc.exit_code
    except KeyboardInterrupt:
        click.echo("error: interrupted; running containers were removed", err=True)
        return Interrupted.exit_code
    except OSError as exc:
        # The last line of defence for the machine's own faults (a full disk under --out, a
        # read-only mount): one line naming the file, never a traceback.
        where = f"{exc.filename}: " if exc.filename else ""
        click.echo(
            f"error: {where}{exc.strerror or exc} (free space or fix permissions, then run "
            "again; finished artifacts are complete, unfinished ones were not written)",
            err=True,
        )
        return OutputError.exit_code
    return 0


def console_main() -> NoReturn:
    sys.exit(main())
