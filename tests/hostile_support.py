"""The harness of the hostile-input suite (tests/unit/test_hostile_*.py).

Every case runs the real CLI entry point (`orchestrator.cli.main`) against a project of its
own (matrix.yaml, templates/, dockerfiles/, keys/ copied into a fresh work dir, which is also
the cwd, HOME, TMPDIR and default --out), with:

- no Docker: DOCKER_HOST names a socket in the work dir that does not exist;
- no network: the project's matrix has no release feeds and only a file:// mirror,
  HTTP(S)_PROXY point at a closed port on 127.0.0.1, AWS credentials and the instance
  metadata service are switched off, and publish.deadline_seconds is 1;
- a time limit (SIGALRM in process, a kill for a subprocess): a read that blocks fails the
  case instead of hanging the suite.

What a case must show (`check_refused`): a non-zero exit, no traceback, exactly one line on
stderr that starts with `error: ` (progress lines may precede it), a peak RSS under 512 MB,
and nothing written outside its work dir: the repository's tree is the same before and after
(sizes and mtimes), TMPDIR is empty again, nothing appears beside the work dir.

Two ways to run, and the suite says which each case used:

- in process (`run_in_process`): main() with stdout/stderr captured. The peak RSS is the
  whole pytest process's VmHWM, reset before the case through /proc/self/clear_refs, so it
  includes the test runner itself (about 150-250 MB): a stricter bound than the CLI's own.
- as a subprocess (`run_subprocess`): `python -m orchestrator`, stdin a pipe or /dev/null,
  reaped with os.wait4 so ru_maxrss is that one process's peak.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
RSS_LIMIT_KB = 512 * 1024
CASE_TIMEOUT = 30.0
_IGNORED = {".git", ".venv", ".cache", ".hypothesis", ".pytest_cache", ".mypy_cache",
            ".ruff_cache", "__pycache__", "out"}  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class Outcome:
    code: int | None  # None: the case raised out of main() (a traceback) or timed out
    stdout: str
    stderr: str
    peak_rss_kb: int
    seconds: float
    how: str  # "in-process" or "subprocess"
    raised: str = ""  # the traceback, when main() raised
    timed_out: bool = False

    def describe(self) -> str:
        return (
            f"[{self.how}] exit {self.code}, {self.seconds:.1f}s, peak RSS "
            f"{self.peak_rss_kb // 1024} MB\nstderr:\n{self.stderr[-2000:]}\n{self.raised[-3000:]}"
        )


# --- the work dir --------------------------------------------------------------------------


@dataclass
class Work:
    """One case's directory: the project, its out dir, HOME and TMPDIR, all inside `root`."""

    root: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def project(self) -> Path:
        return self.root / "project"

    @property
    def matrix(self) -> Path:
        return self.project / "matrix.yaml"

    @property
    def out(self) -> Path:
        return self.project / "out"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def mirror(self) -> Path:
        return self.root / "mirror"

    @property
    def artifacts(self) -> Path:
        return self.out / "artifacts"

    def data(self) -> dict[str, Any]:
        loaded: dict[str, Any] = yaml.safe_load(self.matrix.read_text())
        return loaded

    def write_matrix(self, data: Mapping[str, Any]) -> None:
        self.matrix.write_text(yaml.safe_dump(dict(data), sort_keys=False))

    def edit_matrix(self, change: Callable[[dict[str, Any]], None]) -> None:
        data = self.data()
        change(data)
        self.write_matrix(data)


def _template_project() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((REPO / "matrix.yaml").read_text())
    data["sources"]["release_feeds"] = []
    data["sources"]["cache_dir"] = ".cache/sources"
    data.setdefault("publish", {})["deadline_seconds"] = 1
    return data


_PROJECT = _template_project()


def make_work(root: Path) -> Work:
    """A fresh project in `root` (matrix, templates, dockerfiles and keys of the repository;
    feeds off, one file:// mirror inside the work dir)."""
    work = Work(root=root)
    work.project.mkdir(parents=True)
    for directory in ("templates", "dockerfiles", "keys"):
        shutil.copytree(REPO / directory, work.project / directory)
    work.tmp.mkdir()
    (root / "home").mkdir()
    work.mirror.mkdir()
    data = dict(_PROJECT)
    data["sources"] = {**_PROJECT["sources"], "mirrors": [f"{work.mirror.as_uri()}/{{filename}}"]}
    work.write_matrix(data)
    closed = "http://127.0.0.1:9"  # the discard port: nothing listens, connections refused
    work.env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "HOME": str(root / "home"),
        "TMPDIR": str(work.tmp),
        "DOCKER_HOST": f"unix://{root}/no-docker.sock",
        "HTTP_PROXY": closed, "HTTPS_PROXY": closed, "http_proxy": closed, "https_proxy": closed,
        "NO_PROXY": "", "no_proxy": "",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(root / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(root / "no-aws-credentials"),
        "FARM_MATRIX": str(work.matrix),
    }  # fmt: skip
    return work


# --- what must not change --------------------------------------------------------------------


def tree_state(top: Path) -> dict[str, tuple[int, int]]:
    """path -> (size, mtime_ns) of everything below `top`, build caches left out."""
    state: dict[str, tuple[int, int]] = {}
    for directory, dirs, files in os.walk(top):
        dirs[:] = [d for d in dirs if d not in _IGNORED]
        for name in files:
            path = os.path.join(directory, name)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            state[path] = (st.st_size, st.st_mtime_ns)
    return state


def outside_changes(work: Work, before_repo: dict[str, tuple[int, int]]) -> list[str]:
    """What a case wrote where it must not: the repository, TMPDIR, beside the work dir."""
    problems = []
    after = tree_state(REPO)
    changed = sorted(p for p in set(before_repo) | set(after) if before_repo.get(p) != after.get(p))
    problems += [f"repository changed: {p}" for p in changed[:5]]
    problems += [f"left in TMPDIR: {p.name}" for p in work.tmp.iterdir()]
    beside = {p.name for p in work.root.parent.iterdir()} - {work.root.name}
    problems += [f"written beside the work dir: {name}" for name in sorted(beside)]
    return problems


# --- running ---------------------------------------------------------------------------------


def _peak_rss_reset() -> None:
    with open("/proc/self/clear_refs", "w") as handle:  # "5": reset the peak RSS (VmHWM)
        handle.write("5")


def _peak_rss_kb() -> int:
    status = Path("/proc/self/status").read_text()
    found = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    return int(found.group(1)) if found else -1


class _TimedOut(BaseException):
    """Raised by SIGALRM in the case's frame: not an Exception, so main() does not catch it."""


@contextmanager
def _environment(env: Mapping[str, str], cwd: Path) -> Iterator[None]:
    saved_env = dict(os.environ)
    saved_cwd = os.getcwd()
    saved_tempdir = tempfile.tempdir
    for key in list(os.environ):
        if key.startswith(("FARM_", "AWS_", "DOCKER_")) or key.lower().endswith("_proxy"):
            del os.environ[key]
    os.environ.update(env)
    os.chdir(cwd)
    tempfile.tempdir = env["TMPDIR"]
    try:
        yield
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        tempfile.tempdir = saved_tempdir


def run_in_process(
    argv: Sequence[str], work: Work, *, env: Mapping[str, str] | None = None
) -> Outcome:
    from orchestrator.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    raised, code, timed_out = "", None, False

    def alarm(signum: int, frame: FrameType | None) -> None:
        raise _TimedOut

    previous_sigterm = signal.getsignal(signal.SIGTERM)
    previous_alarm = signal.signal(signal.SIGALRM, alarm)
    started = time.monotonic()
    with _environment({**work.env, **(env or {})}, work.project):
        _peak_rss_reset()
        signal.setitimer(signal.ITIMER_REAL, CASE_TIMEOUT)
        try:
            with redirect_stdout(out), redirect_stderr(err):
                code = main(list(argv))
        except _TimedOut:
            timed_out = True
        except BaseException:  # a traceback: what the suite exists to find
            raised = traceback.format_exc()
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous_alarm)
            signal.signal(signal.SIGTERM, previous_sigterm)  # main() installs its own
        peak = _peak_rss_kb()
    return Outcome(
        code=code, stdout=out.getvalue(), stderr=err.getvalue(), peak_rss_kb=peak,
        seconds=time.monotonic() - started, how="in-process", raised=raised,
        timed_out=timed_out,
    )  # fmt: skip


# The CLI in a child process: its address space is limited (a safety net, not the
# measurement: a regression that reads /dev/zero whole fails with MemoryError at 4 GiB instead
# of filling the shared machine), then `python -m orchestrator`.
_CHILD = (
    "import resource, runpy, sys; "
    "resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30)); "
    "sys.argv[0] = 'orchestrator'; "
    "runpy.run_module('orchestrator', run_name='__main__')"
)
# The measurer between pytest and the CLI. Linux keeps ru_maxrss across exec, and a child of
# the pytest process (fork or vfork) starts with pytest's own peak; a child of this small
# process starts near its ~10 MB. It reaps the CLI with os.wait4 and reports "status maxrss".
_MEASURE = (
    "import os, subprocess, sys; "
    "child = subprocess.Popen(sys.argv[2:]); "
    "_, status, usage = os.wait4(child.pid, 0); "
    "os.write(int(sys.argv[1]), f'{os.waitstatus_to_exitcode(status)} {usage.ru_maxrss}'.encode())"
)


def run_subprocess(
    argv: Sequence[str],
    work: Work,
    *,
    env: Mapping[str, str] | None = None,
    stdin: bytes | None = None,
) -> Outcome:
    """`python -m orchestrator ARGV` in the work dir; stdin /dev/null, or a pipe fed `stdin`.
    Its peak RSS is its own ru_maxrss, from os.wait4 in a small measuring parent."""
    started = time.monotonic()
    report_read, report_write = os.pipe()
    process = subprocess.Popen(
        [sys.executable, "-c", _MEASURE, str(report_write), sys.executable, "-c", _CHILD, *argv],
        cwd=work.project,
        env={**work.env, "PYTHONPATH": str(REPO), **(env or {})},
        stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        pass_fds=(report_write,),
        start_new_session=True,  # a timeout kills the measurer and the CLI together
    )
    os.close(report_write)
    timed_out = False

    def kill() -> None:
        nonlocal timed_out
        timed_out = True
        os.killpg(process.pid, signal.SIGKILL)

    with ThreadPoolExecutor(max_workers=3) as pool:
        assert process.stdout is not None and process.stderr is not None
        stdout = pool.submit(process.stdout.read)
        stderr = pool.submit(process.stderr.read)
        if stdin is not None:
            assert process.stdin is not None
            pipe = process.stdin

            def feed() -> None:
                try:
                    pipe.write(stdin)
                    pipe.close()
                except BrokenPipeError:
                    pass

            pool.submit(feed)
        timer = threading.Timer(CASE_TIMEOUT, kill)
        timer.start()
        try:
            process.wait()
        finally:
            timer.cancel()
        out = stdout.result().decode(errors="replace")
        err = stderr.result().decode(errors="replace")
    with os.fdopen(report_read, "rb") as report:
        measured = report.read().decode().split()
    if process.stdin is not None and not process.stdin.closed:
        process.stdin.close()
    code, peak = (int(measured[0]), int(measured[1])) if len(measured) == 2 else (None, -1)
    return Outcome(
        code=None if timed_out else code, stdout=out, stderr=err, peak_rss_kb=peak,
        seconds=time.monotonic() - started, how="subprocess",
        raised=err if "Traceback (most recent call last)" in err else "", timed_out=timed_out,
    )  # fmt: skip


# --- judging ---------------------------------------------------------------------------------


def error_lines(outcome: Outcome) -> list[str]:
    return [line for line in outcome.stderr.splitlines() if line.startswith("error: ")]


def problems_of(outcome: Outcome, *, refused: bool = True) -> list[str]:
    """What is wrong with a case's outcome. `refused`: it must have failed, in one line."""
    problems = []
    if outcome.timed_out:
        problems.append(f"did not finish in {CASE_TIMEOUT:g}s (a blocking read?)")
    if outcome.raised or "Traceback (most recent call last)" in outcome.stderr:
        problems.append("a traceback")
    if outcome.peak_rss_kb >= RSS_LIMIT_KB or outcome.peak_rss_kb < 0:
        problems.append(f"peak RSS {outcome.peak_rss_kb // 1024} MB (not measured if < 0)")
    lines = error_lines(outcome)
    if refused:
        if outcome.code in (None, 0):
            problems.append(f"exit status {outcome.code}, expected a refusal")
        if len(lines) != 1:
            problems.append(f"{len(lines)} error lines, expected exactly one")
        tail = [line for line in outcome.stderr.splitlines() if line.strip()][-1:]
        if lines and tail != lines[-1:]:
            problems.append("text after the error line on stderr")
    elif outcome.code not in (0, None) and len(lines) != 1:
        problems.append(f"exit {outcome.code} with {len(lines)} error lines")
    return problems


TALLIES: list[Tally] = []  # printed at the end of the run (tests/conftest.py)


@dataclass
class Tally:
    """Counts a suite module prints at the end (docs/RELIABILITY.md records them)."""

    name: str
    tried: int = 0
    refused: int = 0
    accepted: int = 0
    in_process: int = 0
    subprocess: int = 0
    peak_rss_kb: int = 0
    failures: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        TALLIES.append(self)

    def add(self, outcome: Outcome, problems: list[str], *, case: str) -> None:
        log = os.environ.get("HOSTILE_SUITE_LOG")  # every case and its answer, for review
        if log:
            with open(log, "a", encoding="utf-8") as handle:
                first = (error_lines(outcome) or ["(no error line)"])[0]
                handle.write(f"{case!r} -> {outcome.how} exit {outcome.code}: {first[:300]!r}\n")
        self.tried += 1
        if outcome.how == "subprocess":
            self.subprocess += 1
        else:
            self.in_process += 1
        self.peak_rss_kb = max(self.peak_rss_kb, outcome.peak_rss_kb)
        if problems:
            self.failures.append(f"{case}: {'; '.join(problems)}")
        elif outcome.code == 0:
            self.accepted += 1
        else:
            self.refused += 1

    def line(self) -> str:
        return (
            f"hostile suite {self.name}: {self.tried} cases tried, {self.refused} refused "
            f"cleanly, {self.accepted} accepted without error, {len(self.failures)} failed "
            f"({self.in_process} in process, {self.subprocess} as subprocesses; peak RSS "
            f"{self.peak_rss_kb // 1024} MB)"
        )
