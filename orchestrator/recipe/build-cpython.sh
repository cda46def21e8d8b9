#!/usr/bin/env bash
# Compile, install and trim one CPython runtime inside a builder container.
#
# Driven by the orchestrator (orchestrator/cellbuild.py), which mounts:
#   $FARM_SOURCE                 the verified upstream tarball (read-only)
#   /farm/recipe                 this directory (read-only)
#   /farm/spec/configure-args    one ./configure argument per line (computed by orchestrator/buildspec.py)
#   /farm/spec/expected-modules  one module per line that must import after the build
#   /farm/spec/footprint.json    the profile's footprint settings (see footprint.py)
#   $FARM_PREFIX                 the empty install prefix, a host directory (read-write)
# and sets FARM_VERSION, FARM_JOBS, FARM_EXTRA_CFLAGS, FARM_LDFLAGS, FARM_BUILD_TYPE and
# SOURCE_DATE_EPOCH.
# Lines starting with "==> " mark phases; the orchestrator shows them as progress.
set -euo pipefail

phase() { printf '==> %s\n' "$*"; }
die() { printf 'ERROR: %s\n' "$*" >&2; exit 1; }

: "${FARM_VERSION:?}" "${FARM_SOURCE:?}" "${FARM_PREFIX:?}" "${FARM_JOBS:?}" "${FARM_BUILD_TYPE:?}"
: "${FARM_EXTRA_CFLAGS=}" "${FARM_LDFLAGS=}"
# Reproducible builds: GCC takes __DATE__/__TIME__ (Py_GetBuildInfo) from SOURCE_DATE_EPOCH,
# and a fixed hash seed keeps the order of set constants in .pyc files stable.
: "${SOURCE_DATE_EPOCH:?}"
export SOURCE_DATE_EPOCH PYTHONHASHSEED=0

mapfile -t configure_args </farm/spec/configure-args
mapfile -t expected_modules </farm/spec/expected-modules
major_minor=${FARM_VERSION%.*}
major_minor=${major_minor%%[abrc]*}

# The orchestrator computed --build from the cell's arch; a mismatch means the image or the
# emulation is not what the cell asked for, and the runtime would be mislabelled.
actual_type=$(dpkg-architecture -qDEB_BUILD_GNU_TYPE)
[ "$actual_type" = "$FARM_BUILD_TYPE" ] || die "container builds for $actual_type, cell wants $FARM_BUILD_TYPE"
[ -d "$FARM_PREFIX" ] && [ -z "$(ls -A "$FARM_PREFIX")" ] || die "$FARM_PREFIX must be an empty directory"

# What confines this build, seen from inside (the host asked for it; this proves it): the uid,
# effective capabilities, no_new_privs, and whether a connection out can be opened. Upstream's
# build scripts never need the network; a build that could reach it is refused.
status_field() { awk -v f="$1:" '$1 == f { print $2 }' /proc/self/status; }
network=blocked
if timeout 10 bash -c 'exec 3<>/dev/tcp/deb.debian.org/80' 2>/dev/null; then network=open; fi
printf 'SANDBOX uid=%s gid=%s capeff=%s nonewprivs=%s interfaces=%s network=%s\n' \
  "$(id -u)" "$(id -g)" "$(status_field CapEff)" "$(status_field NoNewPrivs)" \
  "$(ls /sys/class/net | tr '\n' ',' | sed 's/,$//')" "$network"
# Names only: the host passes an explicit allow-list, nothing of its own environment.
printf 'SANDBOX environment=%s\n' "$(compgen -e | sort | tr '\n' ',' | sed 's/,$//')"
[ "$network" = blocked ] || die "the build container can open network connections; refusing to build"
[ "$(id -u)" != 0 ] || die "the build container runs as root; refusing to build"

# A fixed build directory (the container is fresh each time): make install writes its path into
# sysconfig data and the config Makefile (relocate.py replaces it), so a random one would make
# every build differ.
srcdir=/tmp/python-build
mkdir "$srcdir"
phase "unpack $(basename "$FARM_SOURCE")"
tar -xf "$FARM_SOURCE" -C "$srcdir" --strip-components=1
cd "$srcdir"

phase "configure ${configure_args[*]}"
./configure "${configure_args[@]}"

# Flags go to make as CPython's *_NODIST variables: used for CPython and its stdlib
# modules, never recorded in sysconfig, so users' extension builds do not inherit them
# (plain LDFLAGS on make's command line does end up in sysconfig's LDFLAGS/LDSHARED).
# Never pass an empty PROFILE_TASK: it silently turns PGO off.
make_flags=("CFLAGS_NODIST=$FARM_EXTRA_CFLAGS" "LDFLAGS_NODIST=$FARM_LDFLAGS")
phase "make -j$FARM_JOBS"
make -j "$FARM_JOBS" "${make_flags[@]}"

# Relink only the executable with an $ORIGIN rpath so the runtime finds its libpython wherever
# it is unpacked, without LD_LIBRARY_PATH (and never a system libpython of the same version).
phase "relink python with rpath \$ORIGIN/../lib"
rm python
make -j "$FARM_JOBS" "CFLAGS_NODIST=$FARM_EXTRA_CFLAGS" \
  "LDFLAGS_NODIST=$FARM_LDFLAGS -Wl,-rpath,'\$\$ORIGIN/../lib'" python

phase "make install"
make "${make_flags[@]}" install

cd "$FARM_PREFIX"
# The free-threaded build (--disable-gil) names everything with CPython's ABI_THREAD `t`:
# bin/python3.13t, lib/python3.13t/, libpython3.13t.so.1.0.
abi_thread=
if grep -qx -- --disable-gil /farm/spec/configure-args; then abi_thread=t; fi
stdlib="lib/python$major_minor$abi_thread"
[ -d "$stdlib" ] || die "no $stdlib after install"

phase "trim the install tree"
static_libs=$(find . -name '*.a')
[ -z "$static_libs" ] || die "static libraries in the install tree: $static_libs"
find "$stdlib" -depth -type d \( -name test -o -name tests -o -name idle_test \) -exec rm -rf {} +
find . -depth -type d -name __pycache__ -exec rm -rf {} +
# Scripts with absolute shebangs to the build prefix; not needed in a runtime.
rm -f bin/idle* bin/pydoc* bin/2to3*
ln -sfn python3 bin/python
# `make install` hard-links python3.Xt as python3.X; a symlink is one ELF file, not two.
if [ -n "$abi_thread" ]; then ln -sfn "python$major_minor$abi_thread" "bin/python$major_minor"; fi

# Every path the runtime reports about itself (sysconfig, pkg-config, python-config, the config
# Makefile) follows the directory it is unpacked in; before compileall, so the .pyc match.
phase "relocate sysconfig, pkg-config and python-config data"
bin/python3 -I -B /farm/recipe/relocate.py "$FARM_PREFIX" "$srcdir" .

# Level-0 bytecode only, checked by source hash rather than mtime so it stays valid after
# extraction anywhere; one worker so marshal output does not depend on scheduling. -B: the
# modules compileall itself imports would otherwise get timestamp pycs (source mtime in the
# header) written by the import system first; -f rewrites anything already there.
phase "compile bytecode (level 0, unchecked-hash)"
bin/python3 -B -m compileall -f -q -j 1 --invalidation-mode unchecked-hash "$stdlib" >/dev/null

phase "footprint (profile settings: $(tr -d '\n' </farm/spec/footprint.json))"
bin/python3 -I -B /farm/recipe/footprint.py /farm/spec/footprint.json "$stdlib"

phase "check expected modules"
bin/python3 -I /farm/recipe/check_modules.py "${expected_modules[@]}"

phase "done: $(du -sh . | cut -f1) installed"
