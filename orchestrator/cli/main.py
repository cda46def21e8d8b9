"""Entry point: run the command group, turn FarmError into one line and an exit status."""

from __future__ import annotations

import signal
import sys
from types import FrameType
from typing import NoReturn

import click

from orchestrator.cli.app import cli
from orchestrator.errors import FarmError, Interrupted, OutputError, one_line
from orchestrator.redact import redact

MAX_ERROR_CHARS = 4000


def _error(message: str) -> None:
    """The one way a failure is reported: one line on stderr, credentials redacted, input
    echoed in the message (a path, a key, a value) escaped so it cannot add lines, and a
    200 KB argument echoed back cut in the middle (the end holds the hint)."""
    text = one_line(redact(message))
    if len(text) > MAX_ERROR_CHARS:
        cut = len(text) - 3000 - 800
        text = f"{text[:3000]} [... {cut} characters cut ...] {text[-800:]}"
    click.echo(f"error: {text}", err=True)


def _usage(exc: click.ClickException) -> str:
    """click's usage errors print the usage, a hint and a blank line: one line instead,
    naming the command's --help."""
    message = exc.format_message().rstrip(".")
    ctx = getattr(exc, "ctx", None)
    if isinstance(exc, click.UsageError) and ctx is not None:
        return f"{message} (see `{ctx.command_path} --help`)"
    return message


def _raise_interrupt(signum: int, frame: FrameType | None) -> NoReturn:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    # SIGTERM takes the same path as Ctrl-C, so every `finally` removes its container.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        cli.main(args=argv, prog_name="orchestrator", standalone_mode=False)
    except click.exceptions.Abort:
        _error("interrupted")
        return Interrupted.exit_code
    except click.exceptions.NoArgsIsHelpError as exc:
        # `orchestrator` alone: the help is what was asked for, then why it did nothing.
        click.echo(exc.ctx.get_help() if exc.ctx else "")
        _error("no command given (see `orchestrator --help`)")
        return exc.exit_code
    except click.ClickException as exc:
        _error(_usage(exc))
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except FarmError as exc:
        _error(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        _error("interrupted; running containers were removed")
        return Interrupted.exit_code
    except OSError as exc:
        # The last line of defence for the machine's own faults (a full disk under --out, a
        # read-only mount): one line naming the file, never a traceback.
        where = f"{exc.filename}: " if exc.filename else ""
        _error(
            f"{where}{exc.strerror or exc} (free space or fix permissions, then run "
            "again; finished artifacts are complete, unfinished ones were not written)"
        )
        return OutputError.exit_code
    return 0


def console_main() -> NoReturn:
    sys.exit(main())
