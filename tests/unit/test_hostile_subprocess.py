"""Hostile-input suite, as real processes: a representative subset run as `python -m
orchestrator` in a child process (stdin /dev/null, or a pipe carrying 64 MiB), reaped with
os.wait4 so the peak RSS measured is that process's own (ru_maxrss), and the traceback check
reads what the process really printed.

The subset: one file place per reader of tests/hostile_files.py given /dev/zero (the input
that grew to 3.7 GB before), every file argument given /dev/stdin with data on a pipe, and
one case per finding of issue 16 that this suite owns (2 is
tests/integration/test_signatures.py and tests/unit/test_openpgp.py).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.hostile_files import CELL, PLACES, record_path, runtime_archive
from tests.hostile_support import (
    REPO,
    Tally,
    Work,
    error_lines,
    make_work,
    outside_changes,
    problems_of,
    run_subprocess,
    tree_state,
)

TALLY = Tally("subprocesses (ru_maxrss of each child)")
# One place per reader (the in-process suite gives every place every kind): the --matrix
# places differ only in the command after the load.
AS_PROCESSES = {
    "--matrix (plan)", "FARM_MATRIX (plan)", "build --extra-ca", "nightly --extra-ca",
    "verify ARCHIVE", "verify: the record beside ARCHIVE", "publish: the record",
    "publish: the archive", "fetch: the cached tarball", "fetch: a file:// mirror's tarball",
    "fetch: the cached signature", "fetch: a pinned key file", "render --check: the template",
}  # fmt: skip
PIPED = b"\0" * (64 * 1024 * 1024)  # what a pipe on stdin carries: more than any limit


def _stdin_matrix(work: Work) -> list[str]:
    return ["--matrix", "/dev/stdin", "plan"]


def _stdin_farm_matrix(work: Work) -> list[str]:
    work.env["FARM_MATRIX"] = "/dev/stdin"
    return ["plan"]


def _stdin_extra_ca(work: Work) -> list[str]:
    return ["build", CELL, "--extra-ca", "/dev/stdin"]


def _stdin_farm_extra_ca(work: Work) -> list[str]:
    work.env["FARM_EXTRA_CA"] = "/dev/stdin"
    return ["nightly", "--dry-run"]


def _stdin_record(work: Work) -> list[str]:
    archive, _ = runtime_archive(work)
    record_path(archive).unlink()
    record_path(archive).symlink_to("/dev/stdin")
    return ["verify", str(archive)]


def _stdin_report(work: Work) -> list[str]:
    return ["nightly", "--dry-run", "--report", "/dev/stdin"]


def _matrix_text(change: Callable[[str], str], *argv: str) -> Callable[[Work], list[str]]:
    def setup(work: Work) -> list[str]:
        work.matrix.write_text(change(work.matrix.read_text()))
        return list(argv)

    return setup


def _mips_record(work: Work) -> list[str]:
    archive, _ = runtime_archive(work)
    text = record_path(archive).read_text().replace('"amd64"', '"mips"')
    record_path(archive).write_text(text)
    return ["verify", str(archive)]


def _newline_out(work: Work) -> list[str]:
    work.env["FARM_OUT"] = "o\nut"
    return ["publish"]


# name -> (argv builder, stdin bytes or None, what the error line must say)
CASES: dict[str, tuple[Callable[[Work], list[str]], bytes | None, str]] = {
    **{
        f"{place} / dev-zero": ((lambda w, p=place: PLACES[p](w, "dev-zero")), None, "")
        for place in PLACES
        if place in AS_PROCESSES
    },
    "--matrix /dev/stdin (a pipe)": (_stdin_matrix, PIPED, "fifo"),
    "FARM_MATRIX=/dev/stdin (a pipe)": (_stdin_farm_matrix, PIPED, "fifo"),
    "--extra-ca /dev/stdin (a pipe)": (_stdin_extra_ca, PIPED, "fifo"),
    "FARM_EXTRA_CA=/dev/stdin (a pipe)": (_stdin_farm_extra_ca, PIPED, "fifo"),
    "verify: the record is /dev/stdin (a pipe)": (_stdin_record, PIPED, "fifo"),
    "nightly --report /dev/stdin (a pipe)": (_stdin_report, PIPED, "fifo"),
    "finding 7: a version with a newline": (
        _matrix_text(lambda t: t.replace("version: 3.13.5\n", 'version: "3.13.5\\n"\n'), "plan"),
        None,
        "version",
    ),
    "finding 8: recipe_version of 5000 digits": (
        _matrix_text(
            lambda t: t.replace("recipe_version: 1", "recipe_version: " + "9" * 5000), "plan"
        ),
        None,
        "digits",
    ),
    "finding 8: mirror http://[::1/": (
        _matrix_text(lambda t: t.replace("file://", "http://[::1/", 1), "fetch", "3.13.5"),
        None,
        "IPv6",
    ),
    "finding 8: publish --region 'us east 1'": (
        lambda w: ["publish", CELL, "--bucket", "farm-test", "--region", "us east 1"],
        None,
        "region",
    ),
    "finding 8: verify a record with arch mips": (_mips_record, None, "arch"),
    "finding 9: a NUL byte in the matrix": (
        _matrix_text(lambda t: t.replace("recipe_version: 1", "recipe_version: 1\x00"), "plan"),
        None,
        "#x0000",
    ),
    "finding 9: FARM_OUT with a newline": (_newline_out, None, "o\\nut"),
    "no command at all": (lambda w: [], None, "no command given"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_real_process_refuses_in_one_line_with_bounded_memory(name: str, tmp_path: Path) -> None:
    setup, stdin, says = CASES[name]
    work = make_work(tmp_path / "work")
    argv = setup(work)
    before = tree_state(REPO)
    outcome = run_subprocess(argv, work, stdin=stdin)
    problems = problems_of(outcome) + outside_changes(work, before)
    lines = error_lines(outcome)
    if lines and says not in lines[0]:
        problems.append(f"the error line does not say {says!r}")
    TALLY.add(outcome, problems, case=name)
    assert not problems, f"{name}: {problems}\n{outcome.describe()}"


def test_the_subset_names_real_places() -> None:
    assert set(PLACES) >= AS_PROCESSES
