"""How a run shows itself: live view on a terminal, timestamped lines elsewhere, GitHub
Actions annotations inside Actions; then a summary table, a JSON report and a markdown
step summary.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, Protocol, TextIO

from rich.console import Console
from rich.live import Live
from rich.table import Table

from orchestrator.fsutil import check_output_file, write_atomic
from orchestrator.redact import redact

Result = Literal["built", "skipped", "failed", "cancelled"]


@dataclass(frozen=True, kw_only=True)
class CellOutcome:
    cell: str
    result: Result
    seconds: float
    reason: str = ""
    size: int | None = None
    sha256: str | None = None
    fingerprint: str | None = None
    published: str | None = None  # uploaded / unchanged / replaced / None (not published)
    log: str | None = None


class Reporter(Protocol):
    def phase(self, cell: str, phase: str) -> None: ...

    def message(self, text: str) -> None: ...

    def finished(self, outcome: CellOutcome) -> None: ...

    def close(self) -> None: ...


def _now() -> str:
    return time.strftime("%H:%M:%S")


class PlainReporter:
    """One timestamped line per event: for logs, pipes and CI."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream: TextIO = stream or sys.stderr
        self._lock = threading.Lock()

    def _write(self, line: str) -> None:
        with self._lock:
            print(redact(line), file=self._stream, flush=True)

    def phase(self, cell: str, phase: str) -> None:
        self._write(f"{_now()} [{cell}] {phase}")

    def message(self, text: str) -> None:
        self._write(f"{_now()} {text}")

    def finished(self, outcome: CellOutcome) -> None:
        detail = f": {outcome.reason}" if outcome.reason else ""
        self._write(
            f"{_now()} [{outcome.cell}] {outcome.result} in {outcome.seconds:.0f} s{detail}"
        )

    def close(self) -> None:
        pass


class GitHubReporter(PlainReporter):
    """Plain lines, plus a folded group per finished cell and ::error annotations."""

    def finished(self, outcome: CellOutcome) -> None:
        self._write(f"::group::{outcome.cell}: {outcome.result}")
        super().finished(outcome)
        if outcome.log:
            self._write(f"log: {outcome.log}")
        self._write("::endgroup::")
        if outcome.result == "failed":
            reason = outcome.reason.replace("\n", " ").replace("%", "%25")
            self._write(f"::error title=cell {outcome.cell} failed::{reason}")


class LiveReporter:
    """A rich live table: every cell's phase and elapsed time, refreshed in place."""

    def __init__(self, cells: Sequence[str], console: Console | None = None) -> None:
        self._console = console or Console(stderr=True)
        self._rows: dict[str, tuple[str, float, float | None]] = {
            cell: ("waiting", time.monotonic(), None) for cell in cells
        }
        self._lock = threading.Lock()
        self._live = Live(
            self._table(), console=self._console, refresh_per_second=2, get_renderable=self._table
        )
        self._live.start()

    def _table(self) -> Table:
        """Cells that started, one row each; waiting and skipped cells as counts (a matrix
        of hundreds would neither fit a terminal nor redraw cheaply twice a second)."""
        table = Table(title="python-farm", expand=False)
        table.add_column("cell")
        table.add_column("phase")
        table.add_column("elapsed", justify="right")
        now = time.monotonic()
        counts = {"waiting": 0, "skipped": 0}
        with self._lock:
            for cell, (phase, started, ended) in self._rows.items():
                if phase in counts:
                    counts[phase] += 1
                    continue
                table.add_row(cell, phase, f"{(ended or now) - started:.0f} s")
        for phase, count in counts.items():
            if count:
                table.add_row(f"{count} cell{'s' if count != 1 else ''}", phase, "")
        return table

    def phase(self, cell: str, phase: str) -> None:
        with self._lock:
            _, started, _ = self._rows.get(cell, ("", time.monotonic(), None))
            if phase.startswith("start"):
                started = time.monotonic()
            self._rows[cell] = (phase[:60], started, None)

    def message(self, text: str) -> None:
        self._console.log(redact(text))

    def finished(self, outcome: CellOutcome) -> None:
        with self._lock:
            _, started, _ = self._rows.get(outcome.cell, ("", time.monotonic(), None))
            self._rows[outcome.cell] = (outcome.result, started, time.monotonic())

    def close(self) -> None:
        self._live.stop()


def make_reporter(cells: Sequence[str]) -> Reporter:
    if os.environ.get("GITHUB_ACTIONS") == "true":
        return GitHubReporter()
    if sys.stderr.isatty():
        return LiveReporter(cells)
    return PlainReporter()


def summary_table(outcomes: Sequence[CellOutcome]) -> Table:
    """A row per cell that was built, failed or cancelled; skipped cells are counted in one
    row per reason (a matrix of hundreds of unchanged cells stays one line, and rich spends
    about a millisecond per row), or named when alone. The JSON report lists every cell."""
    table = Table(title="summary")
    for column in ("cell", "result", "duration", "size", "sha256", "reason / log"):
        table.add_column(column, overflow="fold")
    skipped: dict[str, list[CellOutcome]] = {}
    for o in outcomes:
        if o.result == "skipped":
            skipped.setdefault(o.reason, []).append(o)
            continue
        size = f"{o.size / 1e6:.1f} MB" if o.size else ""
        note = o.reason or (o.log or "")
        table.add_row(o.cell, o.result, f"{o.seconds:.0f} s", size, (o.sha256 or "")[:16], note)
    for reason, group in skipped.items():
        cell = group[0].cell if len(group) == 1 else f"{len(group)} cells"
        table.add_row(cell, "skipped", "", "", "", reason)
    return table


def write_report(path: Path, outcomes: Sequence[CellOutcome], *, seconds: float) -> None:
    document = {
        "seconds": round(seconds, 1),
        "counts": {
            r: sum(o.result == r for o in outcomes)
            for r in ("built", "skipped", "failed", "cancelled")
        },
        "cells": [asdict(o) for o in outcomes],
    }
    check_output_file(path)
    write_atomic(path, (redact(json.dumps(document, indent=2)) + "\n").encode())


def markdown_summary(outcomes: Sequence[CellOutcome]) -> str:
    lines = [
        "| cell | result | duration | size | sha256 | reason / log |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for o in outcomes:
        size = f"{o.size / 1e6:.1f} MB" if o.size else ""
        note = (o.reason or o.log or "").replace("|", "\\|")
        lines.append(
            f"| `{o.cell}` | {o.result} | {o.seconds:.0f} s | {size} | "
            f"`{(o.sha256 or '')[:16]}` | {note} |"
        )
    return "\n".join(lines) + "\n"


def append_step_summary(outcomes: Sequence[CellOutcome]) -> None:
    """Markdown into $GITHUB_STEP_SUMMARY when running inside GitHub Actions."""
    target = os.environ.get("GITHUB_STEP_SUMMARY")
    if target:
        check_output_file(Path(target))  # appended to: a fifo would block
        with open(target, "a", encoding="utf-8") as handle:
            handle.write("## python-farm\n\n" + redact(markdown_summary(outcomes)))
