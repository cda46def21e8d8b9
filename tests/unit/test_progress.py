"""What a run shows: the summary table and the live view stay one row per cell that did
something, whatever the size of the matrix."""

from __future__ import annotations

import io

from rich.console import Console
from rich.table import Table

from orchestrator.progress import CellOutcome, LiveReporter, summary_table

SAME = "published with the same fingerprint"


def _rows(table: Table) -> list[list[str]]:
    columns = [[str(c) for c in column.cells] for column in table.columns]
    return [list(row) for row in zip(*columns, strict=True)]


def _skipped(count: int) -> list[CellOutcome]:
    return [
        CellOutcome(cell=f"3.13.{i}-debian-12-amd64", result="skipped", seconds=0, reason=SAME)
        for i in range(count)
    ]


def test_summary_counts_skipped_cells_in_one_row() -> None:
    built = CellOutcome(
        cell="3.13.5-debian-13-amd64", result="built", seconds=125, size=10_400_000,
        sha256="ab" * 32, published="uploaded",
    )  # fmt: skip
    failed = CellOutcome(
        cell="3.11.2-debian-12-arm64", result="failed", seconds=3, reason="compile failed"
    )
    table = summary_table([*_skipped(335), built, failed])
    assert _rows(table) == [
        ["3.13.5-debian-13-amd64", "built", "125 s", "10.4 MB", "ab" * 8, ""],
        ["3.11.2-debian-12-arm64", "failed", "3 s", "", "", "compile failed"],
        ["335 cells", "skipped", "", "", "", SAME],
    ]
    only = _skipped(1)[0].cell
    assert _rows(summary_table(_skipped(1))) == [[only, "skipped", "", "", "", SAME]]


def test_live_view_shows_started_cells_and_counts_the_rest() -> None:
    cells = [o.cell for o in _skipped(300)]
    console = Console(file=io.StringIO(), force_terminal=True, width=120)
    reporter = LiveReporter(cells, console=console)
    try:
        for outcome in _skipped(298):
            reporter.finished(outcome)
        reporter.phase(cells[298], "start")
        reporter.phase(cells[298], "building in a container")
        rows = _rows(reporter._table())
    finally:
        reporter.close()
    assert [row[:2] for row in rows] == [
        [cells[298], "building in a container"],
        ["1 cell", "waiting"],
        ["298 cells", "skipped"],
    ]
