#!/usr/bin/env bash
# Check a packed runtime the way its users will meet it: unpacked at a path it has never seen,
# in a clean container, without LD_LIBRARY_PATH or network.
#
# Driven by orchestrator/verify.py, which mounts the archive read-only at /farm/archive.tar.zst
# and this directory at /farm/recipe, and runs:
#   verify-runtime.sh runtime   PREFIX MAJOR.MINOR MODULE...   (in the stack's run image)
#   verify-runtime.sh extension PREFIX MAJOR.MINOR             (in the builder image: has gcc)
#   verify-runtime.sh jit       PREFIX MAJOR.MINOR MODULE...   (run image; JIT builds only)
# MAJOR.MINOR is CPython's LDVERSION: 3.13, or 3.13t for a free-threaded runtime (its ABI `t`
# is in bin/python3.13t, lib/python3.13t/, libpython3.13t.so), which also gets the GIL checks.
# PREFIX is a fresh random directory chosen by the host. Output protocol, one line each:
#   CHECK <name> ok|fail|skip <one-line detail>
#   PACKAGE <apt package> <library path>      an apt package providing a linked library
#   WARN <text>
#   DONE <stage>                              the script reached its end
# Anything else is log output. No `set -e`: every check runs and reports on its own.
set -uo pipefail
unset LD_LIBRARY_PATH PYTHONHOME PYTHONPATH PYTHONSTARTUP

stage=${1:?stage}
prefix=${2:?prefix}
mm=${3:?major.minor}
shift 3
modules=("$@")
# 3.13t -> base 3.13, abi t (free-threaded); 3.13 -> base 3.13, abi empty.
base_mm=${mm%t}
abi=${mm#"$base_mm"}
archive=/farm/archive.tar.zst
py="$prefix/bin/python$mm"
stdlib="$prefix/lib/python$mm"

# One line, at most 400 characters, so the host can always parse it.
oneline() { tr '\n\t' '  ' | sed -e 's/  */ /g' -e 's/^ //' -e 's/ $//' | cut -c1-400; }
# check_prefix names a rerun of checks under other conditions (the jit stage's "jit:").
check_prefix=
report() { printf 'CHECK %s%s %s %s\n' "$check_prefix" "$1" "$2" "$(printf '%s' "$3" | oneline)"; }

# check NAME COMMAND...: ok when the command exits 0; the detail is its output. On failure the
# detail is the last line (where a traceback names the error) and the whole output goes to
# stderr, which the host keeps in the log. Every command gets a time limit: a hang fails one check.
check() {
  local name=$1 out status
  shift
  out=$(timeout 300 "$@" 2>&1)
  status=$?
  if [ "$status" -eq 0 ]; then
    # Quiet success (a compiler): the command itself says what was checked.
    [ -n "$out" ] || out="$*"
    report "$name" ok "$(printf '%s' "$out" | head -c 300)"
  else
    fail_with_output "$name" "$status" "$out"
  fi
}
fail_with_output() {
  printf -- '--- %s failed (exit %s):\n%s\n' "$1" "$2" "$3" >&2
  report "$1" fail "exit $2$(signal_note "$2"): $(last_line "$3")"
}
last_line() { printf '%s\n' "$1" | grep -v '^[[:space:]]*$' | tail -n 1; }
signal_note() {
  if [ "$1" -eq 124 ]; then printf ' (timed out)'; elif [ "$1" -gt 128 ]; then
    printf ' (killed by SIG%s)' "$(kill -l $(($1 - 128)) 2>/dev/null || echo $(($1 - 128)))"
  fi
}

extract() {
  local out
  if ! out=$(mkdir -p "$prefix" 2>&1 && tar --zstd -xf "$archive" -C "$prefix" 2>&1); then
    report extract fail "tar --zstd -xf into $prefix: $out"
    printf 'DONE %s\n' "$stage"
    exit 0
  fi
  report extract ok "unpacked at $prefix"
}

# A snippet run by the runtime under test, in isolated mode (-I: no user site, no env vars).
pyrun() { "$py" -I -c "$@"; }

# --- runtime stage -----------------------------------------------------------------------------

check_environment() {
  if [ -n "${LD_LIBRARY_PATH+set}" ]; then
    report env:ld-library-path fail "LD_LIBRARY_PATH is set to '$LD_LIBRARY_PATH'"
  else
    report env:ld-library-path ok "unset"
  fi
}

# Run as nobody: every directory must be searchable and every file readable.
# shellcheck disable=SC2016
UNPRIVILEGED='import math, os, sys
bad = []
for root, dirs, files in os.walk(sys.prefix):
    bad += [p for p in (os.path.join(root, n) for n in dirs) if not os.access(p, os.R_OK | os.X_OK)]
    bad += [p for p in (os.path.join(root, n) for n in files) if not os.access(p, os.R_OK)]
print("uid", os.getuid(), "reads the whole runtime" if not bad else f"cannot read: {bad[:5]}")
sys.exit(1 if bad else 0)'
# The same promise judged from the modes, for a verify container that is itself unprivileged
# (it owns what it unpacked, so it could read a 0700 directory that others cannot).
# shellcheck disable=SC2016
OTHERS_CAN_READ='import os, stat, sys
bad = []
for root, dirs, files in os.walk(sys.prefix):
    for name in dirs + files:
        path = os.path.join(root, name)
        mode = os.lstat(path).st_mode
        if stat.S_ISLNK(mode):
            continue
        need = stat.S_IROTH | (stat.S_IXOTH if stat.S_ISDIR(mode) else 0)
        if mode & need != need:
            bad.append(path)
print("others can read the whole runtime" if not bad else f"not readable by others: {bad[:5]}")
sys.exit(1 if bad else 0)'

check_executables() {
  local name
  local names=(python python3 "python$mm")
  # A free-threaded runtime also answers to python3.X (as `make install` links it).
  [ -z "$abi" ] || names+=("python$base_mm")
  for name in "${names[@]}"; do
    check "exec:$name" "$prefix/bin/$name" -c 'import sys; print(sys.version)'
  done
  # Users rarely run as root: an unreadable file or a 0700 directory only shows up this way.
  if [ "$(id -u)" != 0 ]; then
    check perm:others-read "$py" -I -c "$OTHERS_CAN_READ"
  elif command -v setpriv >/dev/null; then
    check exec:unprivileged setpriv --reuid=65534 --regid=65534 --clear-groups \
      "$py" -I -c "$UNPRIVILEGED"
  else
    report exec:unprivileged skip "no setpriv in the image"
  fi
  local out
  out=$("$prefix/bin/python3-config" --prefix 2>&1)
  if [ "$out" = "$prefix" ]; then report config:prefix ok "$out"
  else report config:prefix fail "python3-config --prefix printed '$out', expected $prefix"; fi
  out=$("$prefix/bin/python3-config" --includes 2>&1)
  case " $out " in
    *" -I$prefix/include/python$mm "*) report config:includes ok "$out" ;;
    *) report config:includes fail "python3-config --includes printed '$out'" ;;
  esac
  out=$("$prefix/bin/python3-config" --ldflags 2>&1)
  case " $out " in
    *" -L$prefix/lib "*) report config:ldflags ok "$out" ;;
    *) report config:ldflags fail "python3-config --ldflags printed '$out', no -L$prefix/lib" ;;
  esac
  # The Python twin in the config directory (a shared build: no -L, libpython is on the rpath).
  local pyconfig
  pyconfig=$(find "$prefix/lib/python$mm/" -maxdepth 2 -path '*/config-*/python-config.py' | head -n 1)
  out=$("$pyconfig" --prefix --includes --ldflags --embed 2>&1 | tr '\n' ' ')
  case " $out" in
    " $prefix -I$prefix/include/python$mm "*" -lpython$mm "*) report config:python-config-py ok "$out" ;;
    *) report config:python-config-py fail "${pyconfig#"$prefix"/} printed '$out'" ;;
  esac
  local code
  # shellcheck disable=SC2016
  code='import sys, sysconfig
want = sys.argv[1]
got = {"sys.prefix": sys.prefix, "sys.exec_prefix": sys.exec_prefix,
       "sys.base_prefix": sys.base_prefix,
       "include": sysconfig.get_paths()["include"].rsplit("/include/", 1)[0]}
bad = [f"{k}={v}" for k, v in got.items() if v != want]
print("; ".join(bad) if bad else sys.prefix)
sys.exit(1 if bad else 0)'
  check sys:prefix "$py" -I -c "$code" "$prefix"
}

check_bin_entries() {
  local -A allowed=()
  local name extra=() missing=()
  for name in python python3 "python$mm" python3-config "python$mm-config" \
    "python$base_mm" "python$base_mm-config"; do
    allowed[$name]=1
    [ -e "$prefix/bin/$name" ] || missing+=("$name")
  done
  # pip's entry points are expected only where pip itself is installed.
  if [ -d "$stdlib/site-packages/pip" ]; then
    for name in pip pip3 "pip$base_mm" "pip$mm"; do allowed[$name]=1; done
  fi
  while IFS= read -r name; do
    [ -n "${allowed[$name]:-}" ] || extra+=("$name")
  done < <(ls -A "$prefix/bin")
  if [ ${#extra[@]} -eq 0 ] && [ ${#missing[@]} -eq 0 ]; then
    report bin:entries ok "$(ls -A "$prefix/bin" | tr '\n' ' ')"
  else
    report bin:entries fail "unexpected: ${extra[*]:-none}; missing: ${missing[*]:-none}"
  fi
}

# /lib and /usr/lib are one directory on merged-/usr systems, but dpkg records only the name the
# package ships, so look a library up under both spellings and through symlinks.
usrmerge_alias() {
  case $1 in
    /usr/lib/* | /usr/lib64/* | /usr/bin/* | /usr/sbin/*) printf '%s' "${1#/usr}" ;;
    /lib/* | /lib64/* | /bin/* | /sbin/*) printf '/usr%s' "$1" ;;
  esac
}

owner_of() {
  local path=$1 real candidate line
  real=$(readlink -f "$path")
  for candidate in "$path" "$(usrmerge_alias "$path")" "$real" "$(usrmerge_alias "$real")"; do
    [ -n "$candidate" ] || continue
    line=$(dpkg-query -S "$candidate" 2>/dev/null | grep -v '^diversion' | head -n1)
    if [ -n "$line" ]; then
      printf '%s' "${line%%: /*}"
      return 0
    fi
  done
  return 1
}

check_linkage() {
  local -a files=("$prefix/bin/python$mm" "$prefix/lib/libpython$mm.so.1.0")
  local f rel out line lib path pkgs pkg
  local -a problems=()
  local -A outside=()  # library path -> a file that needs it
  for f in "$stdlib"/lib-dynload/*.so; do [ -e "$f" ] && files+=("$f"); done
  for f in "${files[@]}"; do
    rel=${f#"$prefix"/}
    if [ ! -e "$f" ]; then problems+=("$rel: missing"); continue; fi
    if ! out=$(ldd "$f" 2>&1); then problems+=("$rel: ldd failed: $out"); continue; fi
    while IFS= read -r line; do
      line=${line#"${line%%[![:space:]]*}"}
      case $line in
        *"=> not found"*) problems+=("$rel: ${line%% *} not found"); continue ;;
        *"=> /"*) path=${line#*=> }; path=${path%% (*} ;;
        /*) path=${line%% (*} ;;
        *) continue ;;  # linux-vdso.so.1 and the like: no file
      esac
      case $path in "$prefix"/*) ;; *) outside[$path]=$rel ;; esac
    done <<<"$out"
  done
  for path in "${!outside[@]}"; do
    if pkgs=$(owner_of "$path"); then
      for pkg in ${pkgs//,/ }; do printf 'PACKAGE %s %s\n' "${pkg%%:*}" "$path"; done
    else
      printf 'WARN %s (needed by %s) belongs to no apt package\n' "$path" "${outside[$path]}"
    fi
  done
  if [ ${#problems[@]} -eq 0 ]; then
    report ldd ok "${#files[@]} files, ${#outside[@]} system libraries, all found"
  else
    report ldd fail "$(IFS=';'; printf '%s' "${problems[*]}" | sed 's/;/; /g')"
  fi
}

check_imports() {
  local module
  for module in "${modules[@]}"; do
    check "import:$module" "$py" -I -c \
      'import importlib, sys; m = importlib.import_module(sys.argv[1]); print(getattr(m, "__file__", "built-in"))' \
      "$module"
  done
}

is_expected() {
  local module
  for module in "${modules[@]}"; do [ "$module" = "$1" ] && return 0; done
  return 1
}

check_round_trips() {
  check roundtrip:sqlite3 "$py" -I -c 'import sqlite3
db = sqlite3.connect(":memory:")
db.execute("create table t (x integer, y text)")
db.executemany("insert into t values (?, ?)", [(1, "a"), (2, "b"), (3, "c")])
assert db.execute("select sum(x), group_concat(y, \"\") from t").fetchone() == (6, "abc")
print("sqlite", sqlite3.sqlite_version)'
  local codec
  for codec in lzma bz2 zlib; do
    check "roundtrip:$codec" "$py" -I -c "import $codec as codec
data = b'relocatable runtime ' * 5000
packed = codec.compress(data)
assert codec.decompress(packed) == data and len(packed) < len(data)
print(len(data), '->', len(packed))"
  done
  if is_expected compression.zstd; then
    check roundtrip:compression.zstd "$py" -I -c 'from compression import zstd
data = b"relocatable runtime " * 5000
assert zstd.decompress(zstd.compress(data)) == data
print("zstd", zstd.zstd_version_info)'
  fi
}

# Too-deep recursion in a thread must raise RecursionError, not overflow the (smaller) thread
# stack; both Python-level and C-level recursion (repr of a deeply nested list).
check_recursion() {
  local out status
  # shellcheck disable=SC2016
  out=$(timeout 120 "$py" -I -c 'import sys, threading
caught = []
def deep(n):
    return deep(n + 1)
def nested():
    x = []
    for _ in range(500_000):
        x = [x]
    return repr(x)
def run():
    for name, func in (("python", lambda: deep(0)), ("c", nested)):
        try:
            func()
        except RecursionError:
            caught.append(name)
thread = threading.Thread(target=run)
thread.start()
thread.join()
print("RecursionError raised for:", ", ".join(caught) or "nothing")
sys.exit(0 if caught == ["python", "c"] else 1)' 2>&1)
  status=$?
  if [ "$status" -eq 0 ]; then report recursion:thread ok "$out"
  else fail_with_output recursion:thread "$status" "$out"; fi
}

check_venv() {
  local wheels=("$stdlib"/ensurepip/_bundled/*.whl)
  if [ ! -e "${wheels[0]}" ]; then
    report venv:pip skip "no ensurepip wheel in the runtime"
    return
  fi
  local venv
  venv=$(mktemp -d /tmp/venv.XXXXXX)
  check venv:pip bash -c '"$1" -m venv "$2" && "$2/bin/python" -m pip --version' _ "$py" "$venv"
}

check_sysconfig() {
  check sysconfig:shared "$py" -I -c 'import sysconfig
value = sysconfig.get_config_var("Py_ENABLE_SHARED")
print("Py_ENABLE_SHARED =", value)
assert value == 1'
  # Build-only flags must not reach users' extension builds through sysconfig.
  check sysconfig:flags "$py" -I -c 'import sys, sysconfig
names = ("LDFLAGS", "LDSHARED", "BLDSHARED", "LDCXXSHARED", "PY_LDFLAGS", "CONFIG_ARGS")
bad = [f"{name} has {token}" for name in names for token in ("--strip-all", "ORIGIN")
       if token in str(sysconfig.get_config_var(name) or "")]
print("; ".join(bad) or "clean: " + ", ".join(names))
sys.exit(1 if bad else 0)'
}

# The variant is what it claims: the ABI tag in sys.abiflags and the extension suffix, and the
# GIL's state at start (-I ignores PYTHON_GIL). A free-threaded runtime must also run threads in
# parallel; a default one must have its GIL (it never runs the parallel check).
# shellcheck disable=SC2016
ABI_TAG='import sys, sysconfig
abi = sys.argv[1]
v = sys.version_info
want = f".cpython-{v.major}{v.minor}{abi}-{sys.implementation._multiarch}.so"
got = sysconfig.get_config_var("EXT_SUFFIX")
print(f"sys.abiflags={sys.abiflags!r} EXT_SUFFIX={got}")
sys.exit(0 if sys.abiflags == abi and got == want else 1)'
# shellcheck disable=SC2016
GIL_STATE='import sys, sysconfig
free = sys.argv[1] == "t"
flag = sysconfig.get_config_var("Py_GIL_DISABLED")
enabled = sys._is_gil_enabled() if hasattr(sys, "_is_gil_enabled") else True
print(f"Py_GIL_DISABLED={flag} sys._is_gil_enabled()={enabled}")
ok = (flag == 1 and enabled is False) if free else (not flag and enabled is True)
sys.exit(0 if ok else 1)'
# CPU-bound pure-Python work, the same total amount serially and in one thread per CPU: ok when
# the threads take under 0.8x the serial time and the process used more than 1.2 CPU seconds per
# second meanwhile (only threads running at the same time can; on a busy host a noisy serial run
# alone could pass the first test), or when two threads were seen running Python code at the
# same moment: each thread notes wall and thread CPU time every 20 000 iterations; a stretch in
# which a thread got (nearly) all of its wall time as CPU time ran without pause, and two such
# stretches of different threads overlapping for most of both cannot happen under a GIL (the
# other thread would have been waiting for it). That proof needs only a few moments of two free
# CPUs, so it holds on a busy shared host too. Up to ten tries, the best one counts. The host's
# idle CPU share during the threaded run (/proc/stat is the host's) tells a starved run from
# serialised threads: when every try found the host's CPUs busy and neither proof came, the
# check is skipped, saying so; with idle CPUs beside serialised threads it fails.
# With one CPU (the host's only one, or a container pinned to one) it is skipped, saying that.
# The host decides whether a skip is acceptable (verify/required.py: it is not, unless allowed).
# shellcheck disable=SC2016
PARALLEL='import os, sys, threading, time
STEP = 20_000
def work(n, marks=None):
    total = 0
    for first in range(0, n, STEP):
        if marks is not None:
            marks.append((time.perf_counter(), time.thread_time()))
        for i in range(first, min(first + STEP, n)):
            total += i * i % 7
    if marks is not None:
        marks.append((time.perf_counter(), time.thread_time()))
    return total
def solid(marks):
    return [(w0, w1) for (w0, c0), (w1, c1) in zip(marks, marks[1:])
            if w1 > w0 and c1 - c0 >= 0.9 * (w1 - w0)]
def overlapping(stretches):
    found = 0
    for a in range(len(stretches)):
        for b in range(a + 1, len(stretches)):
            for s0, e0 in stretches[a]:
                for s1, e1 in stretches[b]:
                    both = min(e0, e1) - max(s0, s1)
                    if both > 0.5 * (e0 - s0) and both > 0.5 * (e1 - s1):
                        found += 1
    return found
def host_cpu():
    try:
        with open("/proc/stat") as f:
            ticks = [int(x) for x in f.readline().split()[1:9]]
        return ticks[3] + ticks[4], sum(ticks)
    except (OSError, ValueError, IndexError):
        return None
threads = min(len(os.sched_getaffinity(0)), 4)
if threads < 2:
    host = os.cpu_count() or 1
    print(f"host has {host} CPU; nothing to run in parallel" if host < 2 else
          f"this container may use {threads} of {host} host CPUs; nothing to run in parallel")
    sys.exit(4)
n = 2_000_000
tries = []
for _ in range(10):
    start = time.perf_counter()
    for _ in range(threads):
        work(n)
    serial = time.perf_counter() - start
    marks = [[] for _ in range(threads)]
    pool = [threading.Thread(target=work, args=(n, m)) for m in marks]
    before, start, cpu = host_cpu(), time.perf_counter(), time.process_time()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    parallel, after = time.perf_counter() - start, host_cpu()
    cpus = (time.process_time() - cpu) / parallel
    idle = (after[0] - before[0]) / max(after[1] - before[1], 1) if before and after else None
    both = overlapping([solid(m) for m in marks])
    timed = parallel < 0.8 * serial and cpus > 1.2
    tries.append((not (timed or both >= 2), parallel / serial, serial, parallel, cpus, idle, both))
    if timed or both >= 2:
        break
_, ratio, serial, parallel, cpus, idle, both = min(tries)
passed = not min(tries)[0]
idles = [t[5] for t in tries]
busy = all(i is not None and i < 0.15 for i in idles)
gil = getattr(sys, "_is_gil_enabled", lambda: True)()
shown = "unknown" if idle is None else f"{idle:.0%}"
print(f"{threads} threads: serial {serial:.2f} s, parallel {parallel:.2f} s = {ratio:.2f} x serial "
      f"(must be < 0.8); {cpus:.2f} CPUs busy (must be > 1.2); or {both} moments of two threads "
      f"running at once (must be >= 2); host CPUs idle {shown} then; {len(tries)} tries; "
      f"GIL enabled after: {gil}")
if passed and not gil:
    sys.exit(0)
sys.exit(3 if busy and not gil else 1)'

check_variant() {
  check abi:tag "$py" -I -c "$ABI_TAG" "$abi"
  check gil:state "$py" -I -c "$GIL_STATE" "$abi"
  [ -n "$abi" ] || return 0
  local out status
  out=$(timeout 300 "$py" -I -c "$PARALLEL" 2>&1)
  status=$?
  case $status in
    0) report threads:parallel ok "$out" ;;
    3) report threads:parallel skip "host CPUs busy in every try, not measurable: $out" ;;
    4) report threads:parallel skip "$out" ;;
    *) fail_with_output threads:parallel "$status" "$out" ;;
  esac
}

# Every directory sysconfig names is under the unpacked tree and exists; no variable names the
# configure prefix (FARM_BUILD_PREFIX, from the host) or the build directory.
# shellcheck disable=SC2016
RELOCATED='import os, sys, sysconfig
root, build_prefix = sys.argv[1], sys.argv[2]
v = sysconfig.get_config_vars()
bad = []
for name in ("prefix", "exec_prefix", "LIBDIR", "LIBPL", "INCLUDEPY", "BINDIR", "CONFINCLUDEPY",
             "LIBDEST", "BINLIBDEST", "LIBPC"):
    value = str(v.get(name))
    if not (value == root or value.startswith(root + "/")) or not os.path.isdir(value):
        bad.append(f"{name}={value}")
for needle in filter(None, (build_prefix, "/tmp/python-build")):
    bad += [f"{k} names {needle}" for k, x in sorted(v.items()) if needle in str(x)]
# The placeholder uv rewrites must not reach Python: relocate.py'"'"'s trailer replaces it.
bad += [f"{k} names the /install placeholder" for k, x in sorted(v.items())
        if any(w.startswith("/install") for w in str(x).split())]
print("; ".join(bad[:8]) or "LIBDIR=" + v["LIBDIR"] + " INCLUDEPY=" + v["INCLUDEPY"])
sys.exit(1 if bad else 0)'

check_relocated() {
  check sysconfig:relocated "$py" -I -c "$RELOCATED" "$prefix" "${FARM_BUILD_PREFIX:-}"
  # `uv python install` parses _sysconfigdata_ as text and fails on anything but a literal dict.
  local data
  data=$(find "$prefix"/lib/python3*/ -maxdepth 1 -name '_sysconfigdata_*.py' | head -n 1)
  check sysconfig:uv-format "$py" -I -B /farm/recipe/relocate.py --uv-format "$data"
}

# --- extension stage ---------------------------------------------------------------------------

# The extension module built in DIR (argv[1]) imports and works; on a free-threaded runtime it
# carries the t ABI tag and leaves the GIL disabled.
# shellcheck disable=SC2016
CEXT_IMPORT='import sys, sysconfig
sys.path.insert(0, sys.argv[1])
import farmcheck
assert farmcheck.add(40, 2) == 42, farmcheck.add(40, 2)
note = ""
if sysconfig.get_config_var("Py_GIL_DISABLED"):
    tag = f"{sys.version_info.major}{sys.version_info.minor}t"
    assert f".cpython-{tag}-" in farmcheck.__file__, f"not built for the {tag} ABI"
    assert not sys._is_gil_enabled(), "importing it turned the GIL on"
    note = f" ({tag} ABI, GIL still disabled)"
print(farmcheck.__file__, "add(40, 2) = 42" + note)'

# The C extension module and the embedding program every consumer check builds, into DIR.
write_sources() {
  cat >"$1/farmcheck.c" <<'EOF'
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static PyObject *add(PyObject *self, PyObject *args) {
    long a, b;
    if (!PyArg_ParseTuple(args, "ll", &a, &b)) return NULL;
    return PyLong_FromLong(a + b);
}
static PyMethodDef methods[] = {{"add", add, METH_VARARGS, "a + b"}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "farmcheck", NULL, -1, methods};
PyMODINIT_FUNC PyInit_farmcheck(void) {
    PyObject *m = PyModule_Create(&module);
#ifdef Py_GIL_DISABLED
    /* Safe without the GIL: importing it must not turn the GIL back on. */
    if (m != NULL && PyUnstable_Module_SetGIL(m, Py_MOD_GIL_NOT_USED) < 0) {
        Py_DECREF(m);
        return NULL;
    }
#endif
    return m;
}
EOF
  cat >"$1/embed.c" <<'EOF'
#define PY_SSIZE_T_CLEAN
#include <Python.h>

int main(int argc, char **argv) {
    PyConfig config;
    PyConfig_InitIsolatedConfig(&config);
    /* A relocated runtime: tell the embedded interpreter where its home is. */
    PyStatus status = PyConfig_SetBytesString(&config, &config.home, argv[1]);
    if (!PyStatus_Exception(status)) status = Py_InitializeFromConfig(&config);
    PyConfig_Clear(&config);
    if (PyStatus_Exception(status)) Py_ExitStatusException(status);
    int rc = PyRun_SimpleString("import sys, json; print(sys.prefix, sys.version_info[:2])");
    return Py_FinalizeEx() < 0 || rc != 0 ? 1 : 0;
}
EOF
}


check_extension() {
  local work
  work=$(mktemp -d /tmp/cext.XXXXXX)
  write_sources "$work"
  # Compile and link the way setuptools does: with the compiler and flags sysconfig records.
  local vars cc cflags ccshared ldshared include suffix
  vars=$(pyrun 'import sysconfig
v = sysconfig.get_config_var
for value in (v("CC"), v("CFLAGS"), v("CCSHARED"), v("LDSHARED"),
              sysconfig.get_paths()["include"], v("EXT_SUFFIX")):
    print(value)' 2>&1) || { report cext:compile fail "cannot read sysconfig: $(last_line "$vars")"; return; }
  { read -r cc; read -r cflags; read -r ccshared; read -r ldshared; read -r include
    read -r suffix; } <<<"$vars"
  # shellcheck disable=SC2086  # the recorded flags are word lists
  check cext:compile $cc $cflags $ccshared "-I$include" -c "$work/farmcheck.c" -o "$work/farmcheck.o"
  # shellcheck disable=SC2086
  check cext:link $ldshared "$work/farmcheck.o" -o "$work/farmcheck$suffix"
  check cext:import "$py" -I -c "$CEXT_IMPORT" "$work"

  local includes ldflags
  includes=$("$prefix/bin/python3-config" --includes)
  ldflags=$("$prefix/bin/python3-config" --ldflags --embed)
  # shellcheck disable=SC2086
  check embed:build gcc $includes "$work/embed.c" -o "$work/embed" $ldflags -Wl,-rpath,"$prefix/lib"
  check embed:run "$work/embed" "$prefix"
  check_embed_without_home "$work" "$includes" "$ldflags"
}

# How an embedding program finds the stdlib without being told (CPython's Modules/getpath.py):
# on Linux getpath knows no path of libpython (only Windows and macOS frameworks report one), so
# it searches up from the program's directory (from argv[0] or PyConfig.program_name) for
# lib/pythonX.Y/os.py, then tries configure's prefix. So PYTHONHOME (or PyConfig.home) works
# anywhere, a program inside the runtime's tree that passes its argv needs nothing, and one
# elsewhere fails unless the runtime sits at its configured prefix (docs/RELOCATION.md).
check_embed_without_home() {
  local work=$1 includes=$2 ldflags=$3 out status
  cat >"$work/embed-env.c" <<'EOF'
#define PY_SSIZE_T_CLEAN
#include <Python.h>

int main(int argc, char **argv) {
    PyConfig config;
    PyConfig_InitPythonConfig(&config);  /* reads PYTHONHOME; no home set here */
    /* argv[0] is where getpath starts looking: without it, it starts from "python3" on PATH. */
    PyStatus status = PyConfig_SetBytesArgv(&config, argc, argv);
    if (!PyStatus_Exception(status)) status = Py_InitializeFromConfig(&config);
    PyConfig_Clear(&config);
    if (PyStatus_Exception(status)) Py_ExitStatusException(status);
    int rc = PyRun_SimpleString("import sys, encodings; print(sys.base_prefix)");
    return Py_FinalizeEx() < 0 || rc != 0 ? 1 : 0;
}
EOF
  # shellcheck disable=SC2086
  check embed:build-env gcc $includes "$work/embed-env.c" -o "$work/embed-env" $ldflags \
    -Wl,-rpath,"$prefix/lib"
  expect_prefix embed:pythonhome env PYTHONHOME="$prefix" "$work/embed-env"
  cp "$work/embed-env" "$prefix/bin/farm-embed-check"
  expect_prefix embed:inside-tree env -u PYTHONHOME "$prefix/bin/farm-embed-check"
  rm -f "$prefix/bin/farm-embed-check"
  out=$(cd / && timeout 60 env -u PYTHONHOME "$work/embed-env" 2>&1)
  status=$?
  case $status:$out in
    0:*) report embed:outside-no-home ok "found the stdlib: the runtime is at its configured prefix" ;;
    *encodings*)
      report embed:outside-no-home ok \
        "needs PYTHONHOME, as documented: $(printf '%s\n' "$out" | grep -m1 'Fatal Python error')" ;;
    *) fail_with_output embed:outside-no-home "$status" "$out" ;;
  esac
}

# expect_prefix NAME COMMAND...: the command prints sys.base_prefix, which must be the tree.
expect_prefix() {
  local name=$1 out status
  shift
  out=$(timeout 60 "$@" 2>&1)
  status=$?
  if [ "$status" -eq 0 ] && [ "$out" = "$prefix" ]; then
    report "$name" ok "sys.base_prefix = $out"
  else
    fail_with_output "$name" "$status" "$out (expected sys.base_prefix = $prefix)"
  fi
}

# --- jit stage (runtimes built with --enable-experimental-jit=yes-off) ---------------------------

# Whether the JIT compiled a hot loop, seen through the executors the tier-2 optimizer attaches
# to code objects (_opcode.get_executor, 3.13+; as dis does): with PYTHON_JIT=1 a hot loop
# gets one holding machine code (get_jit_code), without it none. 3.14+ also reports sys._jit.
# shellcheck disable=SC2016
JIT_PROBE='import os, sys
import _opcode
want = sys.argv[1] == "on"
def hot():
    total = 0
    for i in range(20_000):
        total += i % 7
    return total
for _ in range(20):
    hot()
code = hot.__code__
executors = []
try:
    for offset in range(0, len(code.co_code), 2):
        try:
            executors.append(_opcode.get_executor(code, offset))
        except ValueError:
            pass
except RuntimeError as exc:
    sys.exit(f"no tier-2 executors in this build ({exc}): the JIT is not built in")
try:
    jitted = sum(1 for e in executors if e.get_jit_code())
except RuntimeError as exc:
    sys.exit(f"executors without machine code ({exc}): the JIT is not built in")
switch = os.environ.get("PYTHON_JIT", "(unset)")
state = f"PYTHON_JIT={switch}: {len(executors)} executor(s), {jitted} with machine code"
jit = getattr(sys, "_jit", None)
if jit is not None:
    state += f"; sys._jit available={jit.is_available()} enabled={jit.is_enabled()}"
    if not jit.is_available() or jit.is_enabled() != want:
        sys.exit(state)
print(state)
sys.exit(0 if (jitted > 0) == want else 1)'

# The runtime under PYTHON_JIT=1. -I would drop it (it implies -E, and the JIT switch is an
# environment variable), so the wrapper keeps -I's other parts: -s (no user site) and -P.
jit_python() {
  local wrapper=/tmp/python-jit
  printf '#!/bin/sh\nif [ "$1" = -I ]; then shift; set -- -s -P "$@"; fi\nPYTHON_JIT=1 exec %s "$@"\n' \
    "$py" >"$wrapper"
  chmod +x "$wrapper"
  printf '%s' "$wrapper"
}

check_jit() {
  check jit:off env -u PYTHON_JIT "$py" -I -c "$JIT_PROBE" off
  py=$(jit_python)
  check jit:on "$py" -I -c "$JIT_PROBE" on
  # The same checks as the runtime stage, now with the JIT compiling what they run.
  check_prefix=jit:
  check_imports
  check_round_trips
  check_recursion
  check_prefix=
}

# --- consumers stage (the builder plus CMake, meson, ninja: the tools users point at a runtime) --

# check_import NAME DIR: the extension module in DIR imports in the runtime and works.
check_import() {
  check "$1" "$py" -I -c "$CEXT_IMPORT" "$2"
}

# check_under NAME WHAT VALUE...: every VALUE is a path under the unpacked tree.
check_under() {
  local name=$1 what=$2 value bad=()
  shift 2
  for value in "$@"; do
    case $value in "$prefix"/*) ;; *) bad+=("$value") ;; esac
  done
  if [ $# -gt 0 ] && [ ${#bad[@]} -eq 0 ]; then report "$name" ok "$what: $*"
  else report "$name" fail "$what not under $prefix: ${bad[*]:-none found}"; fi
}

check_consumers() {
  local work
  work=$(mktemp -d /tmp/consumers.XXXXXX)
  write_sources "$work"

  # pkg-config sees only the runtime's .pc files, so nothing of the image can stand in.
  local pcflags flag dirs=()
  if pcflags=$(PKG_CONFIG_LIBDIR="$prefix/lib/pkgconfig" PKG_CONFIG_PATH="$prefix/lib/pkgconfig" \
    pkg-config --cflags --libs python3-embed 2>&1); then
    for flag in $pcflags; do
      case $flag in -I* | -L*) dirs+=("$(realpath -m "${flag:2}")") ;; esac
    done
    check_under pkgconfig:flags "-I/-L of python3-embed" "${dirs[@]}"
    # shellcheck disable=SC2086
    check pkgconfig:embed-build gcc "$work/embed.c" -o "$work/embed-pc" $pcflags \
      -Wl,-rpath,"$prefix/lib"
    check pkgconfig:embed-run "$work/embed-pc" "$prefix"
  else
    report pkgconfig:flags fail "pkg-config --cflags --libs python3-embed: $(last_line "$pcflags")"
  fi

  # CMake's FindPython, pointed at the interpreter: it reads sysconfig for headers and libpython.
  local version
  version=$(cmake --version 2>/dev/null | awk 'NR == 1 { print $3 }')
  case $version in
    "") report cmake:configure fail "no cmake in the image" ;;
    3.1[0-7].* | 3.[0-9].*)
      report cmake:configure skip "cmake $version: FindPython's Development.Module/Embed need 3.18" ;;
    *)
      cat >"$work/CMakeLists.txt" <<'EOF'
cmake_minimum_required(VERSION 3.18)
project(farmcheck C)
find_package(Python3 REQUIRED COMPONENTS Interpreter Development.Module Development.Embed)
file(WRITE "${CMAKE_BINARY_DIR}/found.txt" "${Python3_INCLUDE_DIRS}\n${Python3_LIBRARIES}\n")
Python3_add_library(farmcheck MODULE farmcheck.c WITH_SOABI)
add_executable(embed embed.c)
target_link_libraries(embed PRIVATE Python3::Python)
EOF
      check cmake:configure cmake -S "$work" -B "$work/cmake" -DPython3_EXECUTABLE="$py" \
        -DPython3_FIND_STRATEGY=LOCATION
      if [ -f "$work/cmake/found.txt" ]; then
        # shellcheck disable=SC2046
        check_under cmake:found "Python3_INCLUDE_DIRS, Python3_LIBRARIES" \
          $(tr ';' '\n' <"$work/cmake/found.txt")
        check cmake:build cmake --build "$work/cmake"
        check_import cmake:import "$work/cmake"
        check cmake:embed-run "$work/cmake/embed" "$prefix"
      fi
      ;;
  esac

  # meson, twice: plain meson with pkg-config's python3 (any meson), and meson's python module,
  # whose find_installation() runs the interpreter and reads its sysconfig. A meson whose python
  # module still needs distutils (Debian 12's 1.0.1 says so), which Python 3.12+ no longer has,
  # gets that one reported as skipped.
  if ! command -v meson >/dev/null; then
    report meson:pkgconfig-setup fail "no meson in the image"
    return
  fi
  local suffix out status
  suffix=$(pyrun 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
  mkdir "$work/meson-pc" "$work/meson-py"
  cp "$work/farmcheck.c" "$work/meson-pc/"
  cp "$work/farmcheck.c" "$work/meson-py/"
  cat >"$work/meson-pc/meson.build" <<EOF
project('farmcheck', 'c')
shared_module('farmcheck', 'farmcheck.c', dependencies: dependency('python3'),
              name_prefix: '', name_suffix: '${suffix#.}')
EOF
  check meson:pkgconfig-setup env PKG_CONFIG_LIBDIR="$prefix/lib/pkgconfig" \
    meson setup "$work/meson-pc/build" "$work/meson-pc"
  check meson:pkgconfig-build ninja -C "$work/meson-pc/build"
  check_import meson:pkgconfig-import "$work/meson-pc/build"

  cat >"$work/meson-py/meson.build" <<EOF
project('farmcheck', 'c')
py = import('python').find_installation('$py')
py.extension_module('farmcheck', 'farmcheck.c', dependencies: py.dependency())
EOF
  out=$(timeout 300 meson setup "$work/meson-py/build" "$work/meson-py" 2>&1)
  status=$?
  if [ "$status" -ne 0 ] && [[ $out == *"missing distutils"* ]]; then
    report meson:python-setup skip "meson $(meson --version) needs distutils for its python module"
    return
  elif [ "$status" -ne 0 ]; then
    fail_with_output meson:python-setup "$status" "$out"
    return
  fi
  report meson:python-setup ok "$(last_line "$out")"
  check meson:python-build ninja -C "$work/meson-py/build"
  check_import meson:python-import "$work/meson-py/build"
}

case $stage in
  runtime)
    extract
    check_environment
    check_executables
    check_bin_entries
    check_linkage
    check_imports
    check_round_trips
    check_recursion
    check_venv
    check_sysconfig
    check_variant
    check_relocated
    ;;
  extension)
    extract
    check_extension
    ;;
  consumers)
    extract
    check_consumers
    ;;
  jit)
    extract
    check_jit
    ;;
  *) printf 'unknown stage %s\n' "$stage" >&2; exit 2 ;;
esac
printf 'DONE %s\n' "$stage"
