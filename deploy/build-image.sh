#!/usr/bin/env bash
# Builds the Ratchet image from deploy/Dockerfile without pulling anything: makes the base
# image from Debian's packages if it is missing (deploy/base-images.sh), builds ratchet in
# release on this machine unless --binary names one, and hands Docker a build context
# holding only that binary.
#
#   deploy/build-image.sh [--binary PATH] [--tag NAME:TAG]
#
# --tag defaults to ratchet:<appVersion of helm/ratchet/Chart.yaml>, the image the chart
# runs by default. The cargo build goes to $CARGO_TARGET_DIR (default
# ~/.cache/ratchet/target, shared with deploy/dev.sh's builds). The binary must be built
# on Debian bookworm or older: the base image's glibc is bookworm's.
set -euo pipefail
cd "$(dirname "$0")/.."

binary=""
tag="ratchet:$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' helm/ratchet/Chart.yaml)"
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary=${2:?--binary needs a path}; shift 2 ;;
    --tag) tag=${2:?--tag needs NAME:TAG}; shift 2 ;;
    *)
      echo "build-image.sh: unknown argument '$1' (--binary PATH, --tag NAME:TAG)" >&2
      exit 2
      ;;
  esac
done

deploy/base-images.sh

if [ -z "$binary" ]; then
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ratchet/target}"
  deploy/install-deps.sh dev
  cargo build --release --locked --workspace --bin ratchet
  binary="$CARGO_TARGET_DIR/release/ratchet"
fi
[ -x "$binary" ] || { echo "build-image.sh: $binary is not an executable" >&2; exit 1; }

context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
# Without debug info: a debug build's would make the image several times larger, and
# nobody debugs inside the container (symbols stay, for backtraces).
objcopy --strip-debug "$binary" "$context/ratchet"
# No registry is asked for anything: the base is local. --force-rm: a failed step leaves
# no container behind. The build's own output shows only when it fails.
docker build --quiet --force-rm -f deploy/Dockerfile -t "$tag" "$context" >/dev/null
echo "build-image.sh: built $tag" >&2
