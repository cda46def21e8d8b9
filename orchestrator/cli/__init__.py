"""Command line: `orchestrator versions|render|plan|fetch|build|publish|nightly|...`.

One module per command; app.py holds the group and what commands share, main.py the entry
point. The only place that prints for humans and turns FarmError into an exit status.
"""

# Importing a command module registers its command on the group.
from orchestrator.cli import (  # noqa: F401
    build,
    check_manifest,
    fetch,
    nightly,
    plan,
    publish,
    render,
    verify,
    versions,
)
from orchestrator.cli.app import cli
from orchestrator.cli.main import console_main, main

__all__ = ["cli", "console_main", "main"]
