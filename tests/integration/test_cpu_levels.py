"""CPU levels end to end (issue 18's acceptance): a real x86-64-v3 build of 3.13.5 for debian-12
(fast profile) is verified, published beside the baseline runtime of the same version into the
local store, and the real uv installs it when asked for it by key
(`cpython-3.13.5-linux-x86_64_v3-gnu`), while a plain `3.13.5` request still installs the
baseline one. On a CPU without the level (qemu's Nehalem model, x86-64-v2) the runtime stops at
glibc's loader with a clear message, not SIGILL; a build of the cell on such a machine stops
before anything is fetched or started.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
import zstandard
from docker import DockerClient

from orchestrator.build import BuildOptions, build_cell
from orchestrator.cellbuild import OWNER_LABEL, owner
from orchestrator.layout import Layout
from orchestrator.matrix import CpuLevel, load_matrix
from orchestrator.verify.cpulevel import HostCpuError
from tests.integration.support import E2E_CELL, E2E_CELL_V3, REPO_ROOT, E2EBuild, run_cli

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

QEMU = Path("/usr/bin/qemu-x86_64-static")  # qemu-user-static, installed by `make setup`
V3_KEY = "cpython-3.13.5-linux-x86_64_v3-gnu"
BASELINE_KEY = "cpython-3.13.5-linux-x86_64-gnu"
# qemu's Nehalem model: SSE4.2 and POPCNT (x86-64-v2), no AVX.
NEHALEM = "host CPU lacks x86-64-v3: avx, avx2, bmi1, bmi2, f16c, fma, abm, movbe, xsave"


def _checks(build: E2EBuild, cell: str) -> dict[str, str]:
    """name -> 'ok|fail detail' from the build's verification log."""
    found = {}
    for line in (build.out_dir / "logs" / f"{cell}.verify.log").read_text().splitlines():
        if line.startswith("CHECK "):
            _, name, rest = line.split(" ", 2)
            found[name] = rest
    return found


def _unpack(archive: Path, into: Path) -> Path:
    into.mkdir(parents=True)
    with (
        archive.open("rb") as raw,
        zstandard.ZstdDecompressor().stream_reader(raw) as stream,
        tarfile.open(fileobj=stream, mode="r|") as tar,
    ):
        tar.extractall(into, filter="tar")
    return into


def _installed(pythons: Path) -> list[str]:
    """The installations in a UV_PYTHON_INSTALL_DIR: directories, not uv's minor-version
    links (cpython-3.13-linux-x86_64_v3-gnu -> cpython-3.13.5-linux-x86_64_v3-gnu)."""
    return sorted(p.name for p in pythons.iterdir() if p.is_dir() and not p.is_symlink()
                  and not p.name.startswith("."))  # fmt: skip


def _ymm_instructions(library: Path) -> int:
    """AVX/AVX2 instructions on ymm registers in `library`'s code: -march=x86-64-v3 emits
    them, the baseline (SSE2 only) never does."""
    listing = subprocess.run(
        ["objdump", "-d", "--no-show-raw-insn", str(library)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return listing.count("%ymm")


def test_the_v3_runtime_is_built_verified_and_marked(
    e2e_build: E2EBuild, e2e_build_v3: E2EBuild
) -> None:
    record = json.loads(e2e_build_v3.metadata.read_text())
    baseline = json.loads(e2e_build.metadata.read_text())
    assert record["cell"] == E2E_CELL_V3 and record["cpu_level"] == "v3"
    assert record["arch"] == "amd64" and record["name"] == "python-3.13.5-debian-12-amd64v3.tar.zst"
    assert record["verification"]["ok"] is True
    assert baseline["cpu_level"] is None
    # The level reaches make, never configure (nor, so, sysconfig's CONFIG_ARGS).
    assert record["configure_args"] == baseline["configure_args"]
    flags = record["make_flags"]
    assert flags["CFLAGS_NODIST"] == baseline["make_flags"]["CFLAGS_NODIST"] + " -march=x86-64-v3"
    assert flags["LDFLAGS_NODIST"] == baseline["make_flags"]["LDFLAGS_NODIST"] + " -Wl,-z,x86-64-v3"
    assert record["fingerprint_inputs"]["cpu_level"] == "v3"
    assert "cpu_level" not in baseline["fingerprint_inputs"]

    checks = _checks(e2e_build_v3, E2E_CELL_V3)
    # This machine has x86-64-v3: every check ran, none was skipped for the level.
    assert checks["cpu:level"].startswith("ok host CPU has x86-64-v3"), checks["cpu:level"]
    assert checks["elf:isa-level"].startswith("ok "), checks["elf:isa-level"]
    assert "GNU_PROPERTY_X86_ISA_1_NEEDED has x86-64-v3" in checks["elf:isa-level"]
    assert not [n for n in checks if n.startswith("stage:")]
    for name in ("import:ssl", "cext:compile", "cext:import", "embed:run", "sysconfig:flags",
                 "ldd", "recursion:thread", "pkgconfig:embed-run"):  # fmt: skip
        assert checks[name].startswith("ok"), (name, checks[name])
    assert not [n for n, c in checks.items() if c.startswith("fail")]
    # The baseline runtime's verification is what it was: no level checks.
    assert not {"cpu:level", "elf:isa-level"} & set(_checks(e2e_build, E2E_CELL))


def test_the_v3_code_is_v3_and_sysconfig_is_not(
    e2e_build: E2EBuild, e2e_build_v3: E2EBuild, tmp_path: Path
) -> None:
    v3 = _unpack(e2e_build_v3.archive, tmp_path / "v3")
    baseline = _unpack(e2e_build.archive, tmp_path / "baseline")
    library = "lib/libpython3.13.so.1.0"
    assert _ymm_instructions(v3 / library) > 1000
    assert _ymm_instructions(baseline / library) == 0
    # Users' extension builds read CFLAGS, CCSHARED, LDSHARED (setuptools, distutils) and
    # python3-config: none carries -march, so what they build with the v3 runtime still runs
    # on any x86-64 CPU. Only CPython's own PY_*_NODIST variables record the make flags.
    read = (
        "import sysconfig; names = ('CFLAGS', 'CCSHARED', 'LDSHARED', 'LDFLAGS', 'CONFIG_ARGS',"
        " 'CONFIGURE_CFLAGS', 'OPT'); print([n for n in names"
        " if 'x86-64' in str(sysconfig.get_config_var(n))]);"
        " print('x86-64-v3' in sysconfig.get_config_var('PY_CFLAGS_NODIST'))"
    )
    seen = subprocess.run(
        [str(v3 / "bin" / "python3.13"), "-I", "-c", read],
        capture_output=True, text=True, check=True,
    ).stdout.split("\n")  # fmt: skip
    assert seen[:2] == ["[]", "True"]
    config = subprocess.run(
        [str(v3 / "bin" / "python3.13-config"), "--cflags", "--ldflags"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "x86-64" not in config and "-O3" in config


def test_uv_installs_the_v3_runtime_by_key_beside_the_baseline(
    e2e_build: E2EBuild, e2e_build_v3: E2EBuild, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    (out / "artifacts").mkdir(parents=True)
    for build in (e2e_build, e2e_build_v3):
        for path in (build.out_dir / "artifacts").iterdir():
            shutil.copy(path, out / "artifacts" / path.name)
    published = run_cli(["--out", str(out), "publish", E2E_CELL, E2E_CELL_V3])
    assert published.returncode == 0, published.stderr
    checked = run_cli(["--out", str(out), "check-manifest", E2E_CELL, E2E_CELL_V3])
    assert checked.returncode == 0, checked.stderr + checked.stdout
    assert "2 cell(s) published and consistent" in checked.stdout

    store = out / "publish"
    manifest = json.loads((store / "manifest.json").read_text())
    assert {(r["name"], r.get("cpu_level")) for r in manifest["runtimes"]} == {
        ("python-3.13.5-debian-12-amd64.tar.zst", None),
        ("python-3.13.5-debian-12-amd64v3.tar.zst", "v3"),
    }
    metadata = store / "debian-12" / "amd64" / "download-metadata.json"
    uv_doc = json.loads(metadata.read_text())
    assert set(uv_doc) == {BASELINE_KEY, V3_KEY}
    assert uv_doc[V3_KEY]["arch"] == {"family": "x86_64", "variant": "v3"}
    assert uv_doc[V3_KEY]["url"].endswith("/python-3.13.5-debian-12-amd64v3.tar.zst")
    assert uv_doc[BASELINE_KEY]["arch"] == {"family": "x86_64", "variant": None}

    uv = shutil.which("uv", path=str(REPO_ROOT / ".venv" / "bin")) or shutil.which("uv")
    assert uv is not None, "uv is a dev dependency of the project"

    def uv_env(name: str) -> dict[str, str]:
        return {
            **os.environ,
            "UV_PYTHON_DOWNLOADS_JSON_URL": metadata.as_uri(),
            "UV_PYTHON_INSTALL_DIR": str(tmp_path / name / "pythons"),
            "UV_PYTHON_BIN_DIR": str(tmp_path / name / "bin"),
            "UV_CACHE_DIR": str(tmp_path / "uv-cache"),
            "UV_PYTHON_PREFERENCE": "only-managed",
            "UV_NO_CONFIG": "1",
        }

    def uv_run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [uv, *args], env=env, capture_output=True, text=True, timeout=300, check=False,
            cwd=tmp_path,
        )  # fmt: skip

    probe = "import sys, sysconfig; print(sys.executable, sys.version.split()[0])"
    # Asked for by key: the v3 runtime, installed under uv's key for it.
    keyed = uv_env("keyed")
    install = uv_run(keyed, "python", "install", V3_KEY)
    assert install.returncode == 0, install.stderr
    installs = tmp_path / "keyed" / "pythons"
    assert _installed(installs) == [V3_KEY]
    run = uv_run(keyed, "run", "--no-project", "--python", V3_KEY, "python", "-c", probe)
    assert run.returncode == 0, run.stderr
    executable, version = run.stdout.split()
    assert executable.startswith(str(installs / V3_KEY)) and version == "3.13.5"
    # It is the v3 build: its libpython is the one in the v3 archive, AVX2 code and all.
    v3_tree = _unpack(e2e_build_v3.archive, tmp_path / "v3-tree")
    installed_lib = installs / V3_KEY / "lib" / "libpython3.13.so.1.0"
    assert installed_lib.read_bytes() == (v3_tree / "lib" / "libpython3.13.so.1.0").read_bytes()
    assert _ymm_instructions(installed_lib) > 1000

    # A plain request on this (v4-capable) x86_64 host: uv does not detect CPU levels and
    # orders x86_64 before x86_64_v3 for the same version, so it installs the baseline.
    plain = uv_env("plain")
    install = uv_run(plain, "python", "install", "3.13.5")
    assert install.returncode == 0, install.stderr
    installs = tmp_path / "plain" / "pythons"
    assert _installed(installs) == [BASELINE_KEY]
    baseline_lib = installs / BASELINE_KEY / "lib" / "libpython3.13.so.1.0"
    assert _ymm_instructions(baseline_lib) == 0

    # Why a level is published only beside its baseline twin: listed alone, it is what a plain
    # request installs on any x86_64 host (uv lets every level of a family run).
    alone = tmp_path / "v3-alone.json"
    alone.write_text(json.dumps({V3_KEY: uv_doc[V3_KEY]}))
    lone = {**uv_env("alone"), "UV_PYTHON_DOWNLOADS_JSON_URL": alone.as_uri()}
    install = uv_run(lone, "python", "install", "3.13.5")
    assert install.returncode == 0, install.stderr
    installs = tmp_path / "alone" / "pythons"
    assert _installed(installs) == [V3_KEY]


def _in_run_image(
    client: DockerClient, image: str, tree: Path, command: list[str]
) -> tuple[int, str, str]:
    """Run `command` in the run image with the unpacked runtime at /rt and qemu's user-mode
    emulator at /qemu (both read-only), no network; (exit code, stdout, stderr)."""
    container = client.containers.create(
        image,
        command=command,
        volumes={
            str(tree): {"bind": "/rt", "mode": "ro"},
            str(QEMU): {"bind": "/qemu", "mode": "ro"},
        },
        environment={},
        network_disabled=True,
        user="10001:10001",
        detach=True,
    )
    try:
        container.start()
        code = int(container.wait(timeout=300)["StatusCode"])
        out = container.logs(stdout=True, stderr=False).decode(errors="replace")
        err = container.logs(stdout=False, stderr=True).decode(errors="replace")
    finally:
        container.remove(force=True)
    return code, out, err


def test_an_older_cpu_gets_a_clear_message_not_sigill(
    docker_client: DockerClient,
    run_image_debian12: str,
    e2e_build: E2EBuild,
    e2e_build_v3: E2EBuild,
    tmp_path: Path,
) -> None:
    assert QEMU.is_file(), "qemu-user-static is installed by `make setup`"
    v3 = _unpack(e2e_build_v3.archive, tmp_path / "v3")
    baseline = _unpack(e2e_build.archive, tmp_path / "baseline")
    probe = ["-c", "import sys; print(sys.version.split()[0])"]

    # On a Nehalem (x86-64-v2) CPU, glibc's loader refuses the v3 runtime by its ISA marker
    # (libpython's is the first it checks): exit 127 and one line saying why, before a single
    # instruction of the runtime runs.
    code, out, err = _in_run_image(
        docker_client, run_image_debian12, v3,
        ["/qemu", "-cpu", "Nehalem", "/rt/bin/python3.13", *probe],
    )  # fmt: skip
    assert code == 127, (code, out, err)
    refused = [line for line in err.splitlines() if "CPU ISA level" in line]
    assert refused == ["/rt/bin/../lib/libpython3.13.so.1.0: CPU ISA level is lower than required"]
    assert out == ""
    # Not a crash: a SIGILL would be 132 (128 + 4) in the container's exit code.
    assert code != 128 + 4

    # The same emulated CPU runs the baseline runtime: the refusal is the level's, not qemu's.
    code, out, err = _in_run_image(
        docker_client, run_image_debian12, baseline,
        ["/qemu", "-cpu", "Nehalem", "/rt/bin/python3.13", *probe],
    )  # fmt: skip
    assert (code, out.strip()) == (0, "3.13.5"), err
    # And an emulated CPU with the level (Haswell: AVX2, BMI2, FMA, MOVBE) runs the v3 one.
    code, out, err = _in_run_image(
        docker_client, run_image_debian12, v3,
        ["/qemu", "-cpu", "Haswell", "/rt/bin/python3.13", *probe],
    )  # fmt: skip
    assert (code, out.strip()) == (0, "3.13.5"), err


def test_a_level_cell_is_not_built_on_a_machine_without_its_level(
    docker_client: DockerClient, tmp_path: Path
) -> None:
    """The Nehalem-class CPU again, as the flags reader says it: the build stops before the
    source is fetched or a container starts, naming the features the machine lacks."""
    matrix = load_matrix(REPO_ROOT / "matrix.yaml")
    cell = matrix.cell(E2E_CELL_V3)
    assert cell.cpu_level is CpuLevel.V3
    mine = {"label": f"{OWNER_LABEL}={owner()}"}  # containers this process starts
    before = {c.id for c in docker_client.containers.list(all=True, filters=mine)}
    lines: list[str] = []
    nehalem = frozenset(
        ["cx16", "lahf_lm", "popcnt", "pni", "sse4_1", "sse4_2", "ssse3", "sse", "sse2"]
    )
    with pytest.raises(HostCpuError) as info:
        build_cell(
            matrix,
            cell,
            client=docker_client,
            layout=Layout(out_dir=tmp_path / "out"),
            options=BuildOptions(profile="fast", cpu_flags=lambda: nehalem),
            progress=lines.append,
        )
    assert str(info.value).startswith(
        f"{E2E_CELL_V3} is built for x86-64-v3, and the build's {NEHALEM}"
    )
    assert info.value.exit_code == 7
    assert lines == []  # no source fetched, no image or container asked for
    assert {c.id for c in docker_client.containers.list(all=True, filters=mine)} == before
    assert not (tmp_path / "out" / "artifacts").exists()
