#!/usr/bin/env bash
# Starts the whole system on loopback: a single-node decider, an edge and a demo tenant
# (see `ratchet dev --help`). Extra arguments go to `ratchet dev`.
#
# Installs only what building and trying it need (deploy/install-deps.sh dev), builds the
# debug binary (the first build compiles RocksDB: about 11 minutes on 2 cores), prints the
# line that puts `ratchet` on PATH for the README's `ratchet ctl ...` in another terminal,
# then runs `ratchet dev` in the foreground.
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/install-deps.sh dev
cargo build --locked --bin ratchet
# Where cargo puts the binary: $CARGO_TARGET_DIR, else ./target (as bench/run.sh reads it).
target_dir="${CARGO_TARGET_DIR:-target}"
case "$target_dir" in
  /*) ;;
  *) target_dir="$PWD/$target_dir" ;;
esac
bin_dir="$target_dir/debug"
printf '\nratchet is built: %s/ratchet. For `ratchet ctl ...` in another terminal, first run:\n\n' "$bin_dir"
printf '  export PATH="%s:$PATH"\n\n' "$bin_dir"
exec "$bin_dir/ratchet" dev "$@"
