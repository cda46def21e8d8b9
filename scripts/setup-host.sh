#!/usr/bin/env bash
# Idempotent host set-up for the build farm on Debian/Ubuntu: Docker engine, buildx,
# qemu/binfmt for arm64, debootstrap, patchelf and gcc (tests), and a running daemon.
# Safe to run again: every step checks first and does nothing when already done.
set -euo pipefail

log() { printf '[setup] %s\n' "$*" >&2; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    log "not root and no sudo: install docker.io, docker-buildx, qemu-user-static, debootstrap by hand"; exit 1
  fi
fi

. /etc/os-release
export DEBIAN_FRONTEND=noninteractive

apt_updated=0
apt_update_once() {
  if [ "$apt_updated" -eq 0 ]; then $SUDO apt-get update -qq; apt_updated=1; fi
}
need_pkgs() {  # print the packages from "$@" that are not installed
  local p
  for p in "$@"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || echo "$p"; done
}

# gpg/gpgv check upstream signatures; debian-archive-keyring proves Debian's source indexes.
wanted="debootstrap qemu-user-static binfmt-support zstd ca-certificates dpkg-dev xz-utils patchelf gcc libc6-dev gpg gpgv debian-archive-keyring"
# An engine that already works (e.g. docker-ce on CI runners) is kept: docker.io would
# conflict with it.
if ! command -v dockerd >/dev/null 2>&1 && ! docker info >/dev/null 2>&1; then
  wanted="docker.io $wanted"
fi
# shellcheck disable=SC2086
missing=$(need_pkgs $wanted)
if [ -n "$missing" ]; then
  apt_update_once
  log "installing: $missing"
  # shellcheck disable=SC2086
  $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# buildx is not in Debian 12: take it from trixie at a low pin so
# nothing else is upgraded from there (they need only libc6 >= 2.34).
if [ "${ID:-}" = "debian" ] && [ "${VERSION_CODENAME:-}" = "bookworm" ]; then
  if [ ! -f /etc/apt/sources.list.d/farm-trixie.list ]; then
    log "adding a pinned trixie apt source for docker-buildx"
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main" | $SUDO tee /etc/apt/sources.list.d/farm-trixie.list >/dev/null
    printf 'Package: *\nPin: release n=trixie\nPin-Priority: 100\n' | $SUDO tee /etc/apt/preferences.d/farm-trixie >/dev/null
    apt_updated=0
  fi
  missing=""
  docker buildx version >/dev/null 2>&1 || missing=$(need_pkgs docker-buildx)
  # Compose v2 (`docker compose`), which pytest-docker starts the test services with.
  docker compose version >/dev/null 2>&1 || missing="$missing $(need_pkgs docker-compose)"
  # shellcheck disable=SC2086
  missing=$(echo $missing)  # trim the joins' spaces
  if [ -n "$missing" ]; then
    apt_update_once
    log "installing from trixie: $missing"
    # shellcheck disable=SC2086
    $SUDO apt-get install -y -qq --no-install-recommends -t trixie $missing >/dev/null
  fi
else
  missing=""
  docker buildx version >/dev/null 2>&1 || missing=$(need_pkgs docker-buildx)
  # Ubuntu names compose v2 docker-compose-v2; Debian trixie and later docker-compose.
  if ! docker compose version >/dev/null 2>&1; then
    apt_update_once  # apt-cache must know the archive's packages to tell which name exists
    if apt-cache show docker-compose-v2 >/dev/null 2>&1; then
      missing="$missing $(need_pkgs docker-compose-v2)"
    else
      missing="$missing $(need_pkgs docker-compose)"
    fi
  fi
  # shellcheck disable=SC2086
  missing=$(echo $missing)  # trim the joins' spaces
  if [ -n "$missing" ]; then
    apt_update_once
    # shellcheck disable=SC2086
    $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null || log "could not install $missing; install buildx and compose v2 by hand"
  fi
fi

# The daemon: no systemd here, so start dockerd ourselves when it does not answer.
if ! docker info >/dev/null 2>&1; then
  if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    $SUDO systemctl start docker
  else
    log "starting dockerd (log: /var/log/dockerd.log)"
    $SUDO sh -c 'nohup dockerd >/var/log/dockerd.log 2>&1 &'
  fi
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { log "dockerd did not start; see /var/log/dockerd.log"; exit 1; }
fi

# arm64 under emulation: make sure binfmt_misc is mounted and qemu-aarch64 registered.
if [ "$(uname -m)" != "aarch64" ]; then
  if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
    $SUDO mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc || log "could not mount binfmt_misc: arm64 cells will not build here"
  fi
  if [ -e /proc/sys/fs/binfmt_misc/register ] && [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    $SUDO update-binfmts --enable qemu-aarch64 || log "could not enable qemu-aarch64: arm64 cells will not build here"
  fi
fi

docker buildx version >/dev/null 2>&1 || { log "docker buildx is not available"; exit 1; }
docker compose version >/dev/null 2>&1 || { log "docker compose (v2) is not available"; exit 1; }
log "host ready: $(docker version --format 'engine {{.Server.Version}} (API {{.Server.APIVersion}})'), $(docker buildx version | head -n1)"
