"""Run the CLI (or another module) in a child process and measure its peak memory."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

# The child reports VmHWM, its own peak RSS. Not getrusage's ru_maxrss: Linux carries the
# forking parent's peak across exec into it (pytest's, hundreds of MB after a long session).
_RUNNER = """
import runpy, sys
sys.argv = [sys.argv[1], *sys.argv[2:]]
status = 0
try:
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
except SystemExit as exc:
    status = exc.code
with open("/proc/self/status") as handle:
    peak = next(line.split()[1] for line in handle if line.startswith("VmHWM:"))
print("PEAK_RSS_KB", peak, file=sys.stderr)
sys.exit(status)
"""


@dataclass(frozen=True, kw_only=True)
class Measured:
    returncode: int
    stderr: str  # without the measurement line
    peak_rss_kb: int


def run_measured(
    args: list[str], *, module: str = "orchestrator", env: dict[str, str] | None = None
) -> Measured:
    result = subprocess.run(
        [sys.executable, "-c", _RUNNER, module, *args],
        cwd=REPO_ROOT, env={**os.environ, **(env or {})}, capture_output=True, text=True,
        timeout=600, check=False,
    )  # fmt: skip
    lines = result.stderr.splitlines()
    peaks = [int(line.split()[1]) for line in lines if line.startswith("PEAK_RSS_KB ")]
    assert peaks, f"the child did not report its memory:\n{result.stderr[-3000:]}"
    return Measured(
        returncode=result.returncode,
        stderr="\n".join(line for line in lines if not line.startswith("PEAK_RSS_KB ")),
        peak_rss_kb=peaks[0],
    )
