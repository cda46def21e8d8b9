"""Shared fixtures. Unit tests never touch Docker or the network; integration tests are
marked and need a real engine (see tests/integration/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

# The S3 test server (moto over HTTP) and the fault-injecting proxy.
pytest_plugins = ["tests.s3.conftest_plugin"]

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The hostile-input suite's counts (docs/RELIABILITY.md records them)."""
    from tests.hostile_support import TALLIES

    tallies = [tally for tally in TALLIES if tally.tried]
    if not tallies:
        return
    terminalreporter.section("hostile-input suite")
    for tally in tallies:
        terminalreporter.write_line(tally.line())
    total = sum(t.tried for t in tallies)
    refused = sum(t.refused for t in tallies)
    accepted = sum(t.accepted for t in tallies)
    peak = max(t.peak_rss_kb for t in tallies) // 1024
    terminalreporter.write_line(
        f"hostile suite total: {total} cases tried, {refused} refused cleanly, {accepted} "
        f"accepted without error, peak RSS {peak} MB"
    )
