#!/usr/bin/env bash
# Makes the base image of deploy/Dockerfile from Debian's own packages, so that the Ratchet
# image builds on a machine that can pull nothing from any registry (an air-gapped
# builder, or CI behind one): debootstrap (minbase) lays out Debian bookworm with the
# image's runtime packages, and `docker import` turns that tree into an image.
#
#   deploy/base-images.sh [--force]
#
# Does nothing when the image already exists (--force makes it again). Needs root (or
# sudo) for debootstrap, a Docker Engine, and a Debian mirror: $DEBIAN_MIRROR, default
# http://deb.debian.org/debian; point it at a local mirror when even that is out of reach.
# A builder with no mirror at all can take the image made elsewhere:
#   docker save ratchet-base/debian:bookworm | ssh builder docker load
#
# The packages (the Dockerfile installs nothing, so the build needs no apt either):
#   ca-certificates  TLS to next hops and webhooks with the system CAs
#   tini             PID 1: forwards SIGTERM to ratchet and reaps
#   jq               the chart's scripts read `ratchet ctl --json`
#   libstdc++6       RocksDB's C++ runtime
#   passwd           groupadd and useradd for the image's user (not in minbase)
# Bookworm because ratchet is built on the host and must find the glibc it was linked
# against: build it on bookworm (or older), as deploy/build-image.sh does.
set -euo pipefail

image=ratchet-base/debian:bookworm
suite=bookworm
packages=ca-certificates,tini,jq,libstdc++6,passwd
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

force=false
case "${1:-}" in
  "") ;;
  --force) force=true ;;
  *)
    echo "base-images.sh: unknown argument '$1' (only --force)" >&2
    exit 2
    ;;
esac

if [ "$force" = false ] && docker image inspect "$image" >/dev/null 2>&1; then
  echo "base-images.sh: $image exists (--force to make it again)" >&2
  exit 0
fi

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
if ! command -v debootstrap >/dev/null; then
  echo "installing: debootstrap" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
fi

root=$(mktemp -d)
trap '$sudo rm -rf "$root"' EXIT
echo "base-images.sh: debootstrap $suite ($packages) from $mirror" >&2
$sudo debootstrap --variant=minbase --include="$packages" "$suite" "$root" "$mirror" >/dev/null
# Package lists and downloaded .debs are of no use in an image that never runs apt.
$sudo rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
$sudo tar --numeric-owner -C "$root" -c . |
  docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/bash"]' \
    --message "debootstrap --variant=minbase --include=$packages $suite" \
    - "$image" >/dev/null
echo "base-images.sh: made $image" >&2
