"""Benchmarks of the runtimes themselves (c: footprint and start-up, d: speed).

    python scripts/bench.py footprint [--reuse-stale]   (c) release vs slim
    python scripts/bench.py speed [--reuse-stale]       (d) release vs fast, pyperformance
    python scripts/bench.py jit [--reuse-stale]         (g) PYTHON_JIT=0 vs 1, one release cell

The runtimes are built with the orchestrator into out/bench/<profile> and reused while their
fingerprint matches the current inputs (--reuse-stale: whenever they exist; the section then
says so). Everything runs in the stack's run image, with the runtimes mounted read-only.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from benchlib import BENCH_OUT, BuiltRuntime, built_runtime, machine, run_image, write_section

from orchestrator.archive import pack_tree
from orchestrator.verify.reproduce import Member, compare_members, read_members

CELL = "3.13.5-debian-12-amd64"
STACK, ARCH = "debian-12", "amd64"
# The JIT needs LLVM 18 for 3.13, which debian-12's matrix entry does not list (docs/JIT.md):
# the release build of this cell is the one with the JIT available.
JIT_CELL, JIT_STACK = "3.13.5-debian-13-amd64", "debian-13"
STARTUP_RUNS = 40
# What start-up means for a typical service: the interpreter alone, and a common import set.
STARTUP_COMMANDS = {
    "`python3 -c pass`": "pass",
    "`import json, asyncio, email.message, http.client, decimal`": (
        "import json, asyncio, email.message, http.client, decimal"
    ),
}
PYPERFORMANCE = "pyperformance==1.14.0"
PYPERF = "pyperf==2.10.0"
# Benchmarks that need nothing beyond pyperf: mostly pure-Python interpreter work, where PGO and
# LTO help most, plus regex_v8 and json_dumps for time spent in C stdlib modules.
SPEED_BENCHMARKS = (
    "chaos", "deltablue", "float", "go", "json_dumps", "nbody", "nqueens", "raytrace",
    "regex_v8", "richards", "spectral_norm",
)  # fmt: skip

# Runs inside the run image with a farm runtime as the driver. Round-robin over the variants,
# so drift on the machine (other load, frequency) hits every variant alike.
STARTUP_PROBE = """
import json, subprocess, sys, time
runs, commands, variants = int(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3:]
results = {f"{v} {label}": [] for v in variants for label in commands}
for index in range(runs + 3):
    for variant in variants:
        for label, code in commands.items():
            command = [f"/rt/{variant}/bin/python3", "-c", code]
            started = time.perf_counter()
            subprocess.run(command, check=True)
            if index >= 3:  # the first rounds warm the page cache
                results[f"{variant} {label}"].append(time.perf_counter() - started)
print(json.dumps(results))
"""


def _mib(size: float) -> str:
    if abs(size) < 1024**2:
        return f"{size / 1024:.0f} KiB"
    return f"{size / 1024**2:.1f} MiB"


def _pct(new: float, base: float) -> str:
    return f"{100 * (new - base) / base:+.0f} %"


def _extract(runtime: BuiltRuntime, dest: Path) -> None:
    dest.mkdir(parents=True)
    subprocess.run(["tar", "--zstd", "-xf", str(runtime.archive), "-C", str(dest)], check=True)


def _without_bytecode_cache(tree: Path, dest: Path) -> None:
    """A copy with every __pycache__ gone; bytecode-only modules (slim) keep their .pyc."""
    shutil.copytree(tree, dest, symlinks=True)
    for cache in sorted(dest.rglob("__pycache__"), reverse=True):
        shutil.rmtree(cache)


def _provenance(runtimes: list[BuiltRuntime]) -> str:
    lines = []
    for runtime in runtimes:
        record = runtime.record
        stale = "" if runtime.fresh else " (built from earlier inputs: reused with --reuse-stale)"
        lines.append(
            f"- `{runtime.profile}`: sha256 `{record['sha256'][:16]}`, fingerprint "
            f"`{record['fingerprint'][:16]}`, built in {record['build_seconds']:.0f} s{stale}"
        )
    return "\n".join(lines)


def _run_in_run_image(volumes: dict[str, str], command: list[str], stack: str = STACK) -> str:
    args = ["docker", "run", "--rm", "--network", "none"]
    for host, target in volumes.items():
        args += ["-v", f"{host}:{target}"]
    image = run_image(stack, ARCH)
    return subprocess.run(
        [*args, image, *command], check=True, capture_output=True, text=True
    ).stdout


# --- (c) footprint and start-up ---------------------------------------------------------------


def bench_footprint(*, reuse_stale: bool) -> None:
    runtimes = [built_runtime(CELL, p, reuse_stale=reuse_stale) for p in ("release", "slim")]
    # Read (decompressed and hashed) once: (c) sums their caches, (e) compares them.
    members = {runtime.profile: read_members(runtime.archive) for runtime in runtimes}
    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-footprint-") as tmp:
        work = Path(tmp)
        volumes = {}
        for runtime in runtimes:
            name = runtime.profile
            tree, bare = work / name, work / f"{name}-nopyc"
            _extract(runtime, tree)
            _without_bytecode_cache(tree, bare)
            bare_archive = pack_tree(bare, work / f"{name}-nopyc.tar.zst", source_date_epoch=0)
            cache_bytes = sum(m.size for n, m in members[name].items() if "/__pycache__/" in n)
            rows[name] = {
                "sizes": runtime.record["sizes"],
                "archive": runtime.record["size"],
                "cache_bytes": cache_bytes,
                "bare_archive": bare_archive.size,
            }
            volumes[str(tree)] = f"/rt/{name}:ro"
            volumes[str(bare)] = f"/rt/{name}-nopyc:ro"
        variants = [v.removeprefix("/rt/").removesuffix(":ro") for v in volumes.values()]
        probe = work / "probe.py"
        probe.write_text(STARTUP_PROBE)
        volumes[str(probe)] = "/probe.py:ro"
        output = _run_in_run_image(
            volumes,
            ["/rt/release/bin/python3", "-I", "/probe.py", str(STARTUP_RUNS),
             json.dumps(STARTUP_COMMANDS), *variants],
        )  # fmt: skip
    timings: dict[str, list[float]] = json.loads(output)

    def ms(variant: str, label: str) -> str:
        times = sorted(timings[f"{variant} {label}"])
        quartiles = statistics.quantiles(times, n=4)
        return (
            f"{1000 * statistics.median(times):.1f} ms"
            f" ({1000 * quartiles[0]:.1f}-{1000 * quartiles[2]:.1f})"
        )

    release, slim = rows["release"], rows["slim"]
    r_sizes, s_sizes = release["sizes"], slim["sizes"]
    size_rows = []
    for key, label in [
        ("bin", "bin/"), ("libpython", "libpython"), ("lib_dynload", "lib-dynload"),
        ("stdlib_py", "stdlib .py"), ("pyc", ".pyc"), ("include", "include/"),
        ("other", "other"), ("total", "**installed, total**"),
    ]:  # fmt: skip
        size_rows.append(
            f"| {label} | {_mib(r_sizes[key])} | {_mib(s_sizes[key])} | "
            f"{_mib(s_sizes[key] - r_sizes[key])} |"
        )
    size_rows.append(
        f"| **archive (.tar.zst)** | {_mib(release['archive'])} | {_mib(slim['archive'])} | "
        f"{_mib(slim['archive'] - release['archive'])} ({_pct(slim['archive'], release['archive'])}) |"
    )
    nopyc_rows = [
        f"| installed without `__pycache__` | {_mib(r_sizes['total'] - release['cache_bytes'])} | "
        f"{_mib(s_sizes['total'] - slim['cache_bytes'])} |",
        f"| archive without `__pycache__` | {_mib(release['bare_archive'])} | "
        f"{_mib(slim['bare_archive'])} |",
    ]
    startup_rows = []
    for label in STARTUP_COMMANDS:
        startup_rows.append(
            f"| {label} | {ms('release', label)} | {ms('release-nopyc', label)} | "
            f"{ms('slim', label)} | {ms('slim-nopyc', label)} |"
        )
    total_saved = r_sizes["total"] - s_sizes["total"]
    body = f"""## (c) Footprint: release vs slim

One cell, {CELL}, built with both profiles (same compiler settings: PGO + LTO). `slim` adds
the footprint step of matrix.yaml: encodings and pydoc_data as bytecode only, no ensurepip
wheel, and the stdlib packages that cannot import here removed (tkinter, idlelib, turtle,
turtledemo: the run images have no Tk, so `_tkinter` is not built). Both pass the full
verification.

| part | release | slim | slim - release |
| --- | --- | --- | --- |
{chr(10).join(size_rows)}

Sizes are the metadata's breakdown (regular files, bytes). Installed, slim saves
{_mib(total_saved)} ({_pct(s_sizes["total"], r_sizes["total"])}).

Dropping the bytecode cache too (Fedora's "stop shipping the bytecode cache") would give:

| | release | slim |
| --- | --- | --- |
{chr(10).join(nopyc_rows)}

### Start-up time

Median (and interquartile range) of {STARTUP_RUNS} runs per cell, after 3 warm-up rounds;
the variants take turns run by run. In the debian-12 run image, runtimes mounted read-only (as in an image layer or a buildpack's read-only slug: nothing can write a cache, so
"without pyc" compiles what it imports on every start).

| command | release | release, no pyc | slim | slim, no pyc |
| --- | --- | --- | --- | --- |
{chr(10).join(startup_rows)}

### Trade-offs

- Bytecode-only encodings and pydoc_data: imported exactly as before (the import system loads
  `NAME.pyc` when no source exists), so start-up does not change; their tracebacks show no
  source lines and their source cannot be read in place. Both are data, rarely in a traceback.
- No ensurepip wheel: `python -m venv DIR` fails at its ensurepip step; `python -m venv
  --without-pip DIR` and `uv venv` work. Buildpacks install pip themselves anyway.
- Removed tkinter/idlelib/turtle: nothing is lost, as without `_tkinter` they cannot import;
  `import tkinter` still fails, with ModuleNotFoundError naming tkinter instead of _tkinter.
- Not done: shipping no pyc at all. It is the largest cut (the table above), but every process
  start then pays the compile shown in the "no pyc" columns unless the tree is writable, in
  which case the runtime writes the cache on first use and the size saving is gone.
- Not done: hardlinking identical files. With one bytecode level there is almost nothing to
  link (the packer keeps hardlinks if a tree has them); Fedora's gain came from identical
  opt-1/opt-2 caches, which this farm never ships.

Runtimes measured:
{_provenance(runtimes)}

Machine: {machine()}.
"""
    write_section("footprint", body)
    print(body)
    bench_pgo_reproducibility(runtimes, members)


def bench_pgo_reproducibility(
    runtimes: list[BuiltRuntime], members: dict[str, dict[str, Member]]
) -> None:
    """release and slim compile the same inputs with PGO in two separate builds; their footprint
    steps touch only pure-Python files. What differs among the members both archives hold is
    therefore what two PGO builds of the same code do not reproduce."""
    first, second = members["release"], members["slim"]
    common = first.keys() & second.keys()
    differing = compare_members({n: first[n] for n in common}, {n: second[n] for n in common})
    regular = [n for n in common if first[n].type in ("0", "\x00")]
    rows = [f"| `{diff.name.removeprefix('./')}` | {diff.what} |" for diff in differing]
    table = "\n".join(rows) if rows else "| (none) | |"
    body = f"""## (e) What two PGO builds of the same inputs do not reproduce

The release and slim runtimes of (c) are two separate PGO + LTO builds of the same source,
configure arguments, flags and builder image; slim's footprint step only removes or moves
pure-Python files afterwards. Comparing the members both archives hold therefore shows what
PGO leaves irreproducible: {len(common)} members in common ({len(regular)} files), of which
{len(differing)} differ:

| member | differs in |
| --- | --- |
{table}

Everything else (stdlib sources and bytecode, headers, scripts, sysconfig data) is
byte-identical. Why the compiled files differ: docs/REPRODUCIBILITY.md.

Runtimes compared:
{_provenance(runtimes)}
"""
    write_section("pgo", body)
    print(body)


# --- (d) speed: release (PGO + LTO) vs fast ----------------------------------------------------


def _pyperformance_libs() -> Path:
    """pyperformance's benchmark files and pyperf, unpacked for PYTHONPATH (pinned versions)."""
    libs = BENCH_OUT / "pylibs"
    marker = libs / ".complete"
    if marker.is_file() and marker.read_text() == f"{PYPERFORMANCE} {PYPERF}\n":
        return libs
    shutil.rmtree(libs, ignore_errors=True)
    wheels = BENCH_OUT / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d",
         str(wheels), PYPERFORMANCE, PYPERF],
        check=True,
    )  # fmt: skip
    libs.mkdir(parents=True)
    for wheel in sorted(wheels.glob("*.whl")):
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(libs)
    marker.write_text(f"{PYPERFORMANCE} {PYPERF}\n")
    return libs


def bench_speed(*, reuse_stale: bool) -> None:
    runtimes = [built_runtime(CELL, p, reuse_stale=reuse_stale) for p in ("fast", "release")]
    libs = _pyperformance_libs()
    with tempfile.TemporaryDirectory(prefix="bench-speed-") as tmp:
        work = Path(tmp)
        results = work / "results"
        results.mkdir()
        results.chmod(0o777)
        volumes = {str(libs): "/libs:ro", str(results): "/results"}
        for runtime in runtimes:
            _extract(runtime, work / runtime.profile)
            volumes[str(work / runtime.profile)] = f"/rt/{runtime.profile}:ro"
        bench_dir = "/libs/pyperformance/data-files/benchmarks"
        # Alternate the runtimes benchmark by benchmark, so drift hits both alike.
        steps = []
        for name in SPEED_BENCHMARKS:
            for runtime in runtimes:
                steps.append(
                    f"/rt/{runtime.profile}/bin/python3 {bench_dir}/bm_{name}/run_benchmark.py"
                    f" --fast --quiet --inherit-environ PYTHONPATH"
                    f" --append /results/{runtime.profile}.json >/dev/null"
                )
        compare = (
            "/rt/release/bin/python3 -m pyperf compare_to --table --table-format md"
            " /results/fast.json /results/release.json"
        )
        script = "set -e; export PYTHONPATH=/libs PYTHONDONTWRITEBYTECODE=1; " + "; ".join(
            [*steps, compare]
        )
        print(f"[bench] {len(steps)} pyperformance runs in the run image", flush=True)
        table = _run_in_run_image(volumes, ["bash", "-c", script])
    body = f"""## (d) Runtime speed: release (PGO + LTO) vs fast

pyperformance {PYPERFORMANCE.split("==")[1]} benchmarks ({", ".join(SPEED_BENCHMARKS)}), each run
with `--fast` by pyperf {PYPERF.split("==")[1]} on both runtimes of {CELL}, alternating, in the
debian-12 run image. `pyperf compare_to` with fast as the reference: a ratio above 1x ("faster")
is what PGO + LTO buy.

{table.strip()}

Runtimes measured:
{_provenance(runtimes)}

Machine: {machine()}.
`--fast` takes fewer samples than a full pyperformance run; differences under ~5 % are within
what this machine (shared, not tuned with `pyperf system tune`) resolves.
"""
    write_section("speed", body)
    print(body)


# --- (f) free-threaded vs default ---------------------------------------------------------------

CELL_T = "3.13.5t-debian-12-amd64"
# The verification's threads:parallel workload (recipe/verify-runtime.sh), timed with 1, 2 and 4
# threads doing the same total work, best of five rounds each.
PARALLEL_PROBE = """
import json, sys, threading, time
def work(n):
    total = 0
    for i in range(n):
        total += i * i % 7
    return total
total = 8_000_000
result = {}
for threads in (1, 2, 4):
    best = None
    for _ in range(5):
        pool = [threading.Thread(target=work, args=(total // threads,)) for _ in range(threads)]
        started = time.perf_counter()
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        took = time.perf_counter() - started
        best = took if best is None else min(best, took)
    result[threads] = best
print(json.dumps(result))
"""


def bench_variants(*, profile: str, reuse_stale: bool) -> None:
    """(f) The free-threaded runtime against the default one of the same version and profile:
    size, start-up, single-thread pyperformance, and the speed-up of a threaded workload."""
    runtimes = {
        "default": built_runtime(CELL, profile, reuse_stale=reuse_stale),
        "freethreaded": built_runtime(CELL_T, profile, reuse_stale=reuse_stale),
    }
    libs = _pyperformance_libs()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-variants-") as tmp:
        work = Path(tmp)
        results = work / "results"
        results.mkdir()
        results.chmod(0o777)
        volumes = {str(libs): "/libs:ro", str(results): "/results"}
        for name, runtime in runtimes.items():
            _extract(runtime, work / name)
            volumes[str(work / name)] = f"/rt/{name}:ro"
        print("[bench] start-up and threads", flush=True)
        probe = [
            "/rt/default/bin/python3", "-c", STARTUP_PROBE, str(STARTUP_RUNS),
            json.dumps(STARTUP_COMMANDS), *runtimes,
        ]  # fmt: skip
        startup = json.loads(_run_in_run_image(volumes, probe))
        threads = {
            name: json.loads(
                _run_in_run_image(volumes, [f"/rt/{name}/bin/python3", "-c", PARALLEL_PROBE])
            )
            for name in runtimes
        }
        bench_dir = "/libs/pyperformance/data-files/benchmarks"
        steps = [
            f"/rt/{name}/bin/python3 {bench_dir}/bm_{bench}/run_benchmark.py --fast --quiet"
            f" --inherit-environ PYTHONPATH --append /results/{name}.json >/dev/null"
            for bench in SPEED_BENCHMARKS
            for name in runtimes
        ]
        compare = (
            "/rt/default/bin/python3 -m pyperf compare_to --table --table-format md"
            " /results/default.json /results/freethreaded.json"
        )
        script = "set -e; export PYTHONPATH=/libs PYTHONDONTWRITEBYTECODE=1; " + "; ".join(
            [*steps, compare]
        )
        print(f"[bench] {len(steps)} pyperformance runs in the run image", flush=True)
        table = _run_in_run_image(volumes, ["bash", "-c", script])
    load_after, cores = os.getloadavg()[0], os.cpu_count() or 1
    busy = max(load_before, load_after) > cores / 2
    load_note = (
        f"Host load average {load_before:.1f} before and {load_after:.1f} after, on {cores} cores"
        + (
            ": other work shared the machine, so the threaded rows cannot show what parallel "
            "threads gain (the threads had no idle core to run on) and every time is inflated; "
            "rerun on a quiet machine for numbers to quote."
            if busy
            else "."
        )
    )
    rows = [
        "| | default | free-threaded | change |",
        "| --- | ---: | ---: | ---: |",
    ]
    base, free = runtimes["default"].record, runtimes["freethreaded"].record
    for label, a, b in (
        ("archive (zstd)", base["size"], free["size"]),
        ("installed", base["sizes"]["total"], free["sizes"]["total"]),
        ("libpython", base["sizes"]["libpython"], free["sizes"]["libpython"]),
        ("lib-dynload", base["sizes"]["lib_dynload"], free["sizes"]["lib_dynload"]),
    ):
        rows.append(f"| {label} | {_mib(a)} | {_mib(b)} | {_pct(b, a)} |")
    for label in STARTUP_COMMANDS:
        a = statistics.median(startup[f"default {label}"]) * 1000
        b = statistics.median(startup[f"freethreaded {label}"]) * 1000
        rows.append(f"| start-up, {label} (median) | {a:.1f} ms | {b:.1f} ms | {_pct(b, a)} |")
    for count in ("1", "2", "4"):
        a, b = threads["default"][count], threads["freethreaded"][count]
        rows.append(
            f"| threaded workload, {count} thread(s) | {a:.2f} s | {b:.2f} s | {_pct(b, a)} |"
        )
    speedups = {n: threads[n]["1"] / threads[n]["2"] for n in runtimes}
    provenance = "\n".join(
        f"- `{r.record['cell']}`: sha256 `{r.record['sha256'][:16]}`, fingerprint "
        f"`{r.record['fingerprint'][:16]}`, built in {r.record['build_seconds']:.0f} s"
        + ("" if r.fresh else " (built from earlier inputs: reused with --reuse-stale)")
        for r in runtimes.values()
    )
    body = f"""## (f) Free-threaded vs default ({profile} profile)

{CELL_T} against {CELL}, both built with the `{profile}` profile, measured in the debian-12 run
image: sizes from the metadata records, start-up as in (c) ({STARTUP_RUNS} runs, round-robin),
and the CPU-bound pure-Python workload of the `threads:parallel` check, the same total work in
1, 2 and 4 threads (best of five). 2 threads over 1: {speedups["default"]:.2f}x on the default
runtime, {speedups["freethreaded"]:.2f}x free-threaded.

{chr(10).join(rows)}

Single-thread speed, pyperformance {PYPERFORMANCE.split("==")[1]} (`--fast`, alternating; default
as the reference: "slower" is the cost of no GIL on one thread; 3.13's free-threaded build also
runs without the specializing adaptive interpreter):

{table.strip()}

Runtimes measured:
{provenance}

Machine: {machine()}. {load_note}
"""
    write_section("variants", body)
    print(body)


# --- (g) the experimental JIT: PYTHON_JIT=0 vs PYTHON_JIT=1 on one release runtime --------------


def bench_jit(*, reuse_stale: bool) -> None:
    runtime = built_runtime(JIT_CELL, "release", reuse_stale=reuse_stale)
    if runtime.record.get("jit") is not True:
        raise SystemExit(f"{JIT_CELL} (release) was built without the JIT; see docs/JIT.md")
    libs = _pyperformance_libs()
    with tempfile.TemporaryDirectory(prefix="bench-jit-") as tmp:
        work = Path(tmp)
        results = work / "results"
        results.mkdir()
        results.chmod(0o777)
        _extract(runtime, work / "release")
        volumes = {str(libs): "/libs:ro", str(results): "/results", str(work / "release"): "/rt:ro"}
        bench_dir = "/libs/pyperformance/data-files/benchmarks"
        # One runtime, the switch alternating benchmark by benchmark; pyperf's workers only
        # see PYTHON_JIT when told to inherit it.
        steps = [
            f"PYTHON_JIT={switch} /rt/bin/python3 {bench_dir}/bm_{name}/run_benchmark.py"
            f" --fast --quiet --inherit-environ PYTHONPATH,PYTHON_JIT"
            f" --append /results/jit-{switch}.json >/dev/null"
            for name in SPEED_BENCHMARKS
            for switch in ("0", "1")
        ]
        compare = (
            "/rt/bin/python3 -m pyperf compare_to --table --table-format md"
            " /results/jit-0.json /results/jit-1.json"
        )
        script = "set -e; export PYTHONPATH=/libs PYTHONDONTWRITEBYTECODE=1; " + "; ".join(
            [*steps, compare]
        )
        print(f"[bench] {len(steps)} pyperformance runs in the {JIT_STACK} run image", flush=True)
        table = _run_in_run_image(volumes, ["bash", "-c", script], stack=JIT_STACK)
    body = f"""## (g) The experimental JIT: PYTHON_JIT=0 vs PYTHON_JIT=1

The release runtime (PGO + LTO) of {JIT_CELL}, built with the JIT available but off
(`--enable-experimental-jit=yes-off`, docs/JIT.md), run with `PYTHON_JIT=0` and with
`PYTHON_JIT=1`, alternating, in the {JIT_STACK} run image: the same pyperformance
{PYPERFORMANCE.split("==")[1]} benchmarks as (d), `--fast`, pyperf {PYPERF.split("==")[1]}.
`pyperf compare_to` with `PYTHON_JIT=0` (jit-0) as the reference: above 1x ("faster") is what
switching the JIT on buys. Another cell than (d)'s: 3.13's JIT needs LLVM 18, which only
debian-13 lists.

{table.strip()}

Runtime measured:
{_provenance([runtime])}

Machine: {machine()}.
`--fast` takes fewer samples than a full pyperformance run; differences under ~5 % are within
what this machine (shared, not tuned with `pyperf system tune`) resolves. Tier-2 traces and
the JIT's machine code are built during each worker's warm-up, so `--fast` may undercount
what long-running processes gain.
"""
    write_section("jit", body)
    print(body)
