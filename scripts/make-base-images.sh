#!/usr/bin/env bash
# Create local Debian base images with debootstrap, because no image registry can be reached.
# Tags follow Docker Hub's per-arch convention so matrix.yaml can say `debian:bookworm` and the
# orchestrator picks `amd64/debian:bookworm` or `arm64v8/debian:bookworm` for each arch.
#
# usage: make-base-images.sh [SUITE:ARCH ...]     (default: bookworm:amd64)
#   e.g. make-base-images.sh bookworm:amd64 bookworm:arm64 trixie:amd64
# Idempotent: an existing tag is left alone (set FORCE=1 to recreate it).
set -euo pipefail

MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
log() { printf '[base-images] %s\n' "$*" >&2; }

namespace_for() {
  case "$1" in
    amd64) echo amd64 ;;
    arm64) echo arm64v8 ;;
    *) log "unknown arch '$1' (expected amd64 or arm64)"; exit 2 ;;
  esac
}

make_one() {
  local suite=$1 arch=$2 tag work
  tag="$(namespace_for "$arch")/debian:${suite}"
  if [ "${FORCE:-0}" != 1 ] && docker image inspect "$tag" >/dev/null 2>&1; then
    log "$tag exists; skipping"
    return 0
  fi
  work=$(mktemp -d /var/tmp/farm-base.XXXXXX)
  trap 'rm -rf "$work"' RETURN
  log "debootstrap $suite ($arch) -> $tag"
  local started=$SECONDS
  debootstrap --variant=minbase --arch="$arch" "$suite" "$work/rootfs" "$MIRROR" >"$work/debootstrap.log" 2>&1 || {
    tail -n 20 "$work/debootstrap.log" >&2; log "debootstrap failed for $suite/$arch"; return 1; }
  # Keep images small and apt usable inside builds, like the official images do.
  rm -rf "$work/rootfs/var/lib/apt/lists/"* "$work/rootfs/var/cache/apt/archives/"*.deb
  printf 'deb %s %s main\n' "$MIRROR" "$suite" >"$work/rootfs/etc/apt/sources.list"
  tar --numeric-owner -C "$work/rootfs" -cf "$work/rootfs.tar" .
  printf 'FROM scratch\nADD rootfs.tar /\nCMD ["bash"]\n' >"$work/Dockerfile"
  docker buildx build --platform "linux/$arch" --load -t "$tag" \
    --label "org.python-farm.base=debootstrap-minbase" "$work" >"$work/build.log" 2>&1 || {
    tail -n 20 "$work/build.log" >&2; log "image build failed for $tag"; return 1; }
  log "$tag ready in $((SECONDS - started)) s"
}

specs=("$@")
[ ${#specs[@]} -gt 0 ] || specs=(bookworm:amd64)
for spec in "${specs[@]}"; do
  make_one "${spec%%:*}" "${spec##*:}"
done
