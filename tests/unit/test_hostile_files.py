"""Hostile-input suite, files: every place the farm reads a file it did not write, given
every kind of file that is not the small regular file it expects (a device, a fifo, a socket,
a directory, a dangling or looping symlink, 3 GiB, non-UTF-8, NULs, empty, a /proc file).

Each case runs the CLI in process (tests/hostile_support.py: its own work dir, no Docker, no
network) and must end in exactly one `error:` line and a non-zero exit, with no traceback,
a peak RSS under 512 MB and nothing written outside its work dir. Issue 16, findings 3 and 5
(`verify` and `--extra-ca` read without bounds) and the rule behind them: fsutil.read_regular.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.hostile_files import KINDS, PLACES
from tests.hostile_support import (
    REPO,
    Tally,
    make_work,
    outside_changes,
    problems_of,
    run_in_process,
    tree_state,
)

TALLY = Tally("files (every file argument and read x 13 kinds)")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("place", sorted(PLACES))
def test_a_hostile_file_is_refused_in_one_line(place: str, kind: str, tmp_path: Path) -> None:
    work = make_work(tmp_path / "work")
    argv = PLACES[place](work, kind)
    before = tree_state(REPO)
    outcome = run_in_process(argv, work)
    problems = problems_of(outcome) + outside_changes(work, before)
    TALLY.add(outcome, problems, case=f"{place} / {kind}")
    assert not problems, f"{place} / {kind}: {problems}\n{outcome.describe()}"
