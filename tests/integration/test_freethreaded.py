"""The free-threaded variant end to end (issue 12's acceptance): a real `--disable-gil` build
of 3.13.5 for debian-12 amd64 (fast profile) is verified, published with the default runtime of
the same version into the local store, and the real uv installs both from the store's
download-metadata.json (`3.13t` and `3.13`): two interpreters, each running a threaded program,
the free-threaded one without its GIL.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
import zstandard
from docker import DockerClient

from orchestrator.errors import VerificationError
from orchestrator.sandbox import confinement
from tests.integration.support import E2E_CELL, E2E_CELL_T, REPO_ROOT, E2EBuild, run_cli

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

# Every thread does the same CPU-bound work; prints the GIL state and what ran.
THREADED = """
import sys, sysconfig, threading
results = []
def work(n):
    results.append(sum(i * i % 7 for i in range(n)))
threads = [threading.Thread(target=work, args=(200_000,)) for _ in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
assert len(results) == 4 and len(set(results)) == 1
gil = sys._is_gil_enabled() if hasattr(sys, "_is_gil_enabled") else True
print(sys.executable, sysconfig.get_config_var("Py_GIL_DISABLED"), gil, sys.abiflags or "-")
"""


def _checks(build: E2EBuild, cell: str) -> dict[str, str]:
    """name -> 'ok|fail|skip detail' from the build's verification log."""
    log = build.out_dir / "logs" / f"{cell}.verify.log"
    found = {}
    for line in log.read_text().splitlines():
        if line.startswith("CHECK "):
            _, name, rest = line.split(" ", 2)
            found[name] = rest
    return found


def _members(archive: Path) -> set[str]:
    with (
        archive.open("rb") as raw,
        zstandard.ZstdDecompressor().stream_reader(raw) as stream,
        tarfile.open(fileobj=stream, mode="r|") as tar,
    ):
        return {m.name.removeprefix("./") for m in tar}


def test_the_free_threaded_runtime_is_built_and_verified(
    e2e_build_freethreaded: E2EBuild,
) -> None:
    build = e2e_build_freethreaded
    record = json.loads(build.metadata.read_text())
    assert record["variant"] == "freethreaded" and record["version"] == "3.13.5"
    assert record["cell"] == E2E_CELL_T and record["verification"]["ok"] is True
    assert record["configure_args"][-1] == "--disable-gil"
    assert record["fingerprint_inputs"]["variant"] == "freethreaded"
    members = _members(build.archive)
    assert {"bin/python3.13t", "bin/python3.13", "lib/libpython3.13t.so.1.0",
            "lib/python3.13t/os.py", "include/python3.13t/Python.h",
            "bin/python3.13t-config"} <= members  # fmt: skip
    assert not any(m.startswith("lib/python3.13/") for m in members)
    dynload = [m for m in members if m.startswith("lib/python3.13t/lib-dynload/")]
    assert dynload and all(".cpython-313t-x86_64-linux-gnu.so" in m for m in dynload)

    checks = _checks(build, E2E_CELL_T)
    assert checks["gil:state"].startswith("ok Py_GIL_DISABLED=1 sys._is_gil_enabled()=False")
    assert checks["abi:tag"].startswith("ok sys.abiflags='t'")
    # ok: threads ran in parallel. A skip (one CPU, or the host's CPUs busy in every try)
    # would have failed the build: threads:parallel is required of a free-threaded runtime.
    parallel = checks["threads:parallel"]
    assert parallel.startswith("ok "), parallel
    assert "serial" in parallel and "parallel" in parallel
    assert "threads:parallel" in record["verification"]["required"]
    assert record["verification"]["skipped"] == [] or not any(
        s["required"] for s in record["verification"]["skipped"]
    )
    # The C extension is built for the t ABI and leaves the GIL off; the rest of the list ran.
    assert "313t ABI, GIL still disabled" in checks["cext:import"]
    for name in ("cext:compile", "embed:run", "ldd", "sysconfig:relocated",
                 "sysconfig:uv-format", "recursion:thread", "pkgconfig:embed-run", "elf:rpath",
                 "bin:entries"):  # fmt: skip
        assert checks[name].startswith("ok"), (name, checks[name])
    assert not [n for n, c in checks.items() if c.startswith("fail")]


def test_one_cpu_skips_threads_parallel_saying_so_and_fails_the_verification(
    e2e_build_freethreaded: E2EBuild,
    docker_client: DockerClient,
    run_image_debian12: str,
    builder_image_debian12: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The real runtime in a verification container pinned to one CPU (as on a one-CPU host):
    threads:parallel is skipped with the true reason (one CPU, not a busy host), and that
    skip fails the verification unless allowed by name; the record says it was allowed."""
    from orchestrator.verify import runtime

    def one_cpu(*args: Any, **kwargs: Any) -> dict[str, Any]:
        return {**confinement(*args, **kwargs), "cpuset_cpus": "0"}

    monkeypatch.setattr(runtime, "confinement", one_cpu)
    record = json.loads(e2e_build_freethreaded.metadata.read_text())
    kwargs: dict[str, Any] = {
        "archive": e2e_build_freethreaded.archive,
        "metadata": record,
        "run_image": run_image_debian12,
        "builder_image": builder_image_debian12,
        "expected_modules": record["expected_modules"],
    }
    report = runtime.verify_archive(docker_client, **kwargs, log_path=tmp_path / "a.log")
    (skip,) = [c for c in report.checks if c.name == "threads:parallel"]
    assert skip.skipped and "busy" not in skip.detail, skip.detail
    host = os.cpu_count() or 1
    one = "host has 1 CPU" if host == 1 else f"may use 1 of {host} host CPUs"
    assert one in skip.detail, skip.detail
    assert [f.name for f in report.failures] == ["threads:parallel"]
    with pytest.raises(VerificationError, match=r"threads:parallel .*required, but skipped"):
        runtime.raise_for_failures(report, what=E2E_CELL_T)

    allowed = runtime.verify_archive(
        docker_client, **kwargs, log_path=tmp_path / "b.log", allowed_skips=["threads:parallel"]
    )
    assert allowed.ok, allowed.failures
    fields = allowed.metadata_fields()["verification"]
    assert fields["allowed_skips"] == ["threads:parallel"]
    assert {"check": "threads:parallel", "required": True, "allowed": True}.items() <= fields[
        "skipped"
    ][0].items()
    assert not runtime.leftover_verify_containers(docker_client, owner_pid=os.getpid())


def test_the_default_runtime_keeps_its_gil(e2e_build: E2EBuild) -> None:
    checks = _checks(e2e_build, E2E_CELL)
    assert checks["gil:state"].startswith("ok Py_GIL_DISABLED=0 sys._is_gil_enabled()=True")
    assert checks["abi:tag"].startswith("ok sys.abiflags=''")
    assert "threads:parallel" not in checks
    assert json.loads(e2e_build.metadata.read_text())["variant"] == "default"


def test_uv_installs_both_variants_from_the_local_store(
    e2e_build: E2EBuild, e2e_build_freethreaded: E2EBuild, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    (out / "artifacts").mkdir(parents=True)
    for build in (e2e_build, e2e_build_freethreaded):
        for path in (build.out_dir / "artifacts").iterdir():
            shutil.copy(path, out / "artifacts" / path.name)
    published = run_cli(["--out", str(out), "publish", E2E_CELL, E2E_CELL_T])
    assert published.returncode == 0, published.stderr
    checked = run_cli(["--out", str(out), "check-manifest", "3.13.5*-debian-12-amd64"])
    assert checked.returncode == 0, checked.stderr + checked.stdout

    store = out / "publish"
    manifest = json.loads((store / "manifest.json").read_text())
    assert {(r["name"], r["variant"]) for r in manifest["runtimes"]} == {
        ("python-3.13.5-debian-12-amd64.tar.zst", "default"),
        ("python-3.13.5t-debian-12-amd64.tar.zst", "freethreaded"),
    }
    metadata = store / "debian-12" / "amd64" / "download-metadata.json"
    uv_doc = json.loads(metadata.read_text())
    assert uv_doc["cpython-3.13.5+freethreaded-linux-x86_64-gnu"]["variant"] == "freethreaded"
    assert uv_doc["cpython-3.13.5-linux-x86_64-gnu"]["variant"] is None

    uv = shutil.which("uv", path=str(REPO_ROOT / ".venv" / "bin")) or shutil.which("uv")
    assert uv is not None, "uv is a dev dependency of the project"
    uv_env = {
        **os.environ,
        "UV_PYTHON_DOWNLOADS_JSON_URL": metadata.as_uri(),
        "UV_PYTHON_INSTALL_DIR": str(tmp_path / "pythons"),
        "UV_PYTHON_BIN_DIR": str(tmp_path / "bin"),
        "UV_CACHE_DIR": str(tmp_path / "uv-cache"),
        "UV_PYTHON_PREFERENCE": "only-managed",
        "UV_NO_CONFIG": "1",
    }
    seen = {}
    for request in ("3.13t", "3.13"):
        install = subprocess.run(
            [uv, "python", "install", request],
            env=uv_env, capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert install.returncode == 0, install.stderr
        run = subprocess.run(
            [uv, "run", "--no-project", "--python", request, "python", "-c", THREADED],
            env=uv_env, capture_output=True, text=True, timeout=300, check=False, cwd=tmp_path,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        seen[request] = run.stdout.split()
    free_exe, free_flag, free_gil, free_abi = seen["3.13t"]
    std_exe, std_flag, std_gil, std_abi = seen["3.13"]
    installs = str(tmp_path / "pythons")
    assert free_exe.startswith(installs) and std_exe.startswith(installs)
    assert Path(free_exe).resolve() != Path(std_exe).resolve()
    assert "+freethreaded" in free_exe and free_exe.endswith("python3.13t")
    assert (free_flag, free_gil, free_abi) == ("1", "False", "t")
    assert (std_flag, std_gil, std_abi) == ("0", "True", "-")
