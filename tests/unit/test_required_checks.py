"""A skipped check is not a passed one: the checks a runtime must pass are declared per variant
and profile (orchestrator/verify/required.py); a required check that was skipped or never
reported fails the verification unless allowed by name, the record says so, and publishing
refuses a record whose required check was skipped."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from orchestrator.cli import main
from orchestrator.errors import ConfigError, PublishError, VerificationError
from orchestrator.matrix import VariantName, load_matrix
from orchestrator.publish.publisher import load_artifact
from orchestrator.verify.required import (
    ALL_REQUIRED,
    CORE,
    check_allowed_skips,
    required_checks,
    required_checks_of,
)
from orchestrator.verify.runtime import (
    RECIPE_DIR,
    VERIFY_SCRIPT,
    CheckResult,
    VerificationReport,
    parse_script_output,
    raise_for_failures,
    summary_lines,
)
from tests.publish_support import make_artifact

FREE = (*CORE, "threads:parallel", "venv:pip")


def _passing(names: tuple[str, ...]) -> list[CheckResult]:
    return [CheckResult(name=n, ok=True, detail="fine") for n in names]


def _report(checks: list[CheckResult], *, allowed: tuple[str, ...] = ()) -> VerificationReport:
    return VerificationReport(
        checks=checks, runtime_packages=[], warnings=[], required=FREE, allowed_skips=allowed
    )


def _without(checks: list[CheckResult], name: str) -> list[CheckResult]:
    return [c for c in checks if c.name != name]


ONE_CPU_SKIP = parse_script_output(
    "CHECK threads:parallel skip host has 1 CPU; nothing to run in parallel\n"
).checks


def test_a_skipped_required_check_fails_the_verification() -> None:
    report = _report(_without(_passing(FREE), "threads:parallel") + ONE_CPU_SKIP)
    assert not report.ok
    (failure,) = report.failures
    assert failure.name == "threads:parallel"
    assert "required, but skipped: host has 1 CPU" in failure.detail
    with pytest.raises(VerificationError, match=r"threads:parallel .*host has 1 CPU"):
        raise_for_failures(report, what="3.13.5t-debian-12-amd64")
    fields = report.metadata_fields()["verification"]
    assert fields["ok"] is False
    assert fields["skipped"] == [
        {
            "check": "threads:parallel",
            "reason": "host has 1 CPU; nothing to run in parallel",
            "required": True,
            "allowed": False,
        }
    ]
    assert any(line.startswith("skip threads:parallel") and "[REQUIRED]" in line
               for line in summary_lines(report))  # fmt: skip


def test_an_allowed_skip_passes_and_the_record_says_it_was_allowed() -> None:
    report = _report(
        _without(_passing(FREE), "threads:parallel") + ONE_CPU_SKIP, allowed=("threads:parallel",)
    )
    assert report.ok
    fields = report.metadata_fields()["verification"]
    assert fields["allowed_skips"] == ["threads:parallel"]
    assert fields["skipped"][0]["required"] is True and fields["skipped"][0]["allowed"] is True
    assert fields["required"] == list(FREE)


def test_a_required_check_never_reported_fails() -> None:
    report = _report(_without(_passing(FREE), "venv:pip"))
    assert [(f.name, f.detail) for f in report.failures] == [
        ("venv:pip", "required, but never reported")
    ]


def test_an_optional_skip_is_recorded_and_does_not_fail() -> None:
    skip = parse_script_output("CHECK meson:python-setup skip meson 1.0.1 needs distutils\n")
    report = _report(_passing(FREE) + skip.checks)
    assert report.ok
    assert report.metadata_fields()["verification"]["skipped"] == [
        {
            "check": "meson:python-setup",
            "reason": "meson 1.0.1 needs distutils",
            "required": False,
            "allowed": False,
        }
    ]


def test_required_checks_per_variant_and_profile(repo_root: Path) -> None:
    matrix = load_matrix(repo_root / "matrix.yaml")
    profiles = matrix.model.profiles
    fast = required_checks(VariantName.DEFAULT, profiles["fast"])
    assert set(CORE) <= set(fast) and "venv:pip" in fast and "threads:parallel" not in fast
    free = required_checks(VariantName.FREETHREADED, profiles["fast"])
    assert "threads:parallel" in free
    # slim drops the pip wheel: no venv with pip is promised.
    assert profiles["slim"].footprint.ensurepip_wheels is False
    assert "venv:pip" not in required_checks(VariantName.DEFAULT, profiles["slim"])


def test_a_record_says_what_it_promised(repo_root: Path) -> None:
    """From its variant and the profile settings in its fingerprint inputs; a record without
    them is held to a profile that ships pip."""
    matrix = load_matrix(repo_root / "matrix.yaml")
    slim = {"name": "slim", **matrix.model.profiles["slim"].model_dump(exclude={"description"})}
    record: dict[str, Any] = {"variant": "freethreaded", "fingerprint_inputs": {"profile": slim}}
    assert required_checks_of(record) == (*CORE, "threads:parallel")
    assert required_checks_of({}) == (*CORE, "venv:pip")


def test_allow_skip_takes_only_checks_that_can_be_required() -> None:
    assert check_allowed_skips(["venv:pip", "threads:parallel", "venv:pip"]) == (
        "threads:parallel",
        "venv:pip",
    )
    with pytest.raises(ConfigError, match="threads:paralel"):
        check_allowed_skips(["threads:paralel"])
    assert "threads:parallel" in ALL_REQUIRED and "meson:python-setup" not in ALL_REQUIRED


@pytest.mark.parametrize("command", ["build", "nightly", "verify"])
def test_cli_refuses_an_unknown_allow_skip_in_one_line(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main([command, "--allow-skip", "threads:paralel", "x.tar.zst"])
    err = capsys.readouterr().err
    assert code == 2 and "threads:paralel" in err and "Traceback" not in err


def _parallel_snippet() -> str:
    script = (RECIPE_DIR / VERIFY_SCRIPT).read_text()
    match = re.search(r"^PARALLEL='(.*?)'$", script, re.MULTILINE | re.DOTALL)
    assert match, "PARALLEL snippet not found in verify-runtime.sh"
    return match.group(1)


def test_one_cpu_is_reported_as_one_cpu_not_as_a_busy_host() -> None:
    """The snippet threads:parallel runs, pinned to one CPU as a one-CPU host or container
    is: exit 4 (the script reports a skip with this text), and the reason is the CPU count."""
    result = subprocess.run(
        [sys.executable, "-c", _parallel_snippet()],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        preexec_fn=lambda: os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}),
    )
    assert result.returncode == 4, result.stdout + result.stderr
    assert "nothing to run in parallel" in result.stdout
    assert "busy" not in result.stdout
    host = os.cpu_count() or 1
    expected = "host has 1 CPU" if host == 1 else f"may use 1 of {host} host CPUs"
    assert expected in result.stdout
    script = (RECIPE_DIR / VERIFY_SCRIPT).read_text()
    assert '4) report threads:parallel skip "$out" ;;' in script


def test_threads_under_a_gil_are_never_seen_running_at_once() -> None:
    """The check's proof of parallel threads cannot be fooled by a GIL: with this (GIL)
    interpreter on two CPUs, no two stretches of different threads ran at the same moment,
    however the host's load made the timings look; the check fails (exit 1), as it must for
    a runtime whose threads are serialised."""
    cpus = os.sched_getaffinity(0)
    assert len(cpus) >= 2, "the machines this project runs on have 2 cores"
    result = subprocess.run(
        [sys.executable, "-I", "-c", _parallel_snippet()],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        preexec_fn=lambda: os.sched_setaffinity(0, set(sorted(cpus)[:2])),
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "or 0 moments of two threads running at once" in result.stdout, result.stdout
    assert "GIL enabled after: True" in result.stdout


def _edit_record(directory: Path, name: str, verification: dict[str, Any]) -> None:
    path = directory / name.replace(".tar.zst", ".json")
    record = json.loads(path.read_text())
    record["verification"] = {**record["verification"], **verification}
    path.write_text(json.dumps(record))


SKIP = {"check": "threads:parallel", "reason": "host has 1 CPU", "required": True}


def test_publishing_refuses_a_record_whose_required_check_was_skipped(tmp_path: Path) -> None:
    # As the build writes it: ok false, and publishing refuses a failed verification.
    name = make_artifact(tmp_path, variant="freethreaded")
    _edit_record(tmp_path, name, {"ok": False, "skipped": [{**SKIP, "allowed": False}]})
    with pytest.raises(PublishError, match="verification failed"):
        load_artifact(tmp_path, name)
    # Edited to say ok: still refused, naming the check.
    _edit_record(tmp_path, name, {"ok": True})
    with pytest.raises(PublishError, match="required check threads:parallel was skipped") as e:
        load_artifact(tmp_path, name)
    assert "\n" not in str(e.value)
    # Allowed by name at build time: publishable, and the record keeps saying so.
    _edit_record(tmp_path, name, {"ok": True, "skipped": [{**SKIP, "allowed": True}]})
    assert load_artifact(tmp_path, name).record["verification"]["skipped"][0]["allowed"] is True


class _Stop(Exception):
    """Raised by a stand-in once it has seen the options; nothing is built."""


def test_allow_skip_reaches_the_build_options_of_build_and_nightly(
    repo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import orchestrator.engine
    import orchestrator.nightly
    import orchestrator.prepare

    seen: list[tuple[str, ...]] = []

    def prepare(*_args: Any, options: Any, **_kwargs: Any) -> None:
        seen.append(options.allowed_skips)
        raise _Stop

    def nightly(_self: Any, *_args: Any, options: Any, **_kwargs: Any) -> None:
        seen.append(options.build.allowed_skips)
        raise _Stop

    monkeypatch.setattr(orchestrator.engine.EnginePool, "client", lambda _self, _arch: None)
    monkeypatch.setattr(orchestrator.prepare, "prepare_cell", prepare)
    monkeypatch.setattr(orchestrator.nightly.Nightly, "__init__", nightly)
    common = ["--matrix", str(repo_root / "matrix.yaml"), "--out", str(tmp_path)]
    flags = ["--allow-skip", "venv:pip", "--allow-skip", "threads:parallel"]
    for command in (["build", "3.13.5t-debian-12-amd64"], ["nightly", "--no-publish"]):
        with pytest.raises(_Stop):
            main([*common, *command, *flags])
    assert seen == [("threads:parallel", "venv:pip")] * 2
