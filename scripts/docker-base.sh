#!/usr/bin/env bash
# Builds the offline base image for bundled tasks (no registry needed):
# debootstrap'd Debian bookworm (minbase + git + python3), imported into Docker.
#
#   scripts/docker-base.sh [IMAGE]        default IMAGE: cbench-base:bookworm
#
# The rootfs tarball is cached in $CBENCH_BASE_CACHE (default ~/.cache/cbench) so the
# ~60 s debootstrap runs once per machine. Needs root (debootstrap) and a running dockerd.
set -euo pipefail

image="${1:-cbench-base:bookworm}"
cache="${CBENCH_BASE_CACHE:-$HOME/.cache/cbench}"
tarball="$cache/docker-base-bookworm.tar.gz"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

if docker image inspect "$image" >/dev/null 2>&1; then
  echo "docker-base: $image already present"
  exit 0
fi

mkdir -p "$cache"
if [[ ! -s "$tarball" ]]; then
  command -v debootstrap >/dev/null || { echo "docker-base: debootstrap is not installed (apt-get install debootstrap)" >&2; exit 1; }
  rootfs="$(mktemp -d)"
  trap 'rm -rf "$rootfs"' EXIT
  echo "docker-base: debootstrap bookworm into $rootfs (about a minute)"
  debootstrap --variant=minbase --include=git,python3,ca-certificates bookworm "$rootfs" "$mirror" >/dev/null
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/*
  tar -C "$rootfs" -czf "$tarball.part" .
  mv "$tarball.part" "$tarball"
fi
echo "docker-base: importing $tarball as $image"
docker import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' --change 'CMD ["bash"]' "$tarball" "$image" >/dev/null
echo "docker-base: $image ready"
