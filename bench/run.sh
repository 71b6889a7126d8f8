#!/usr/bin/env bash
# Runs every benchmark of Ratchet side by side with its anchor (Redis GET, a three-node
# etcd, smtp-source to smtp-sink), on this machine, in one run; see crates/bench.
#
#   bench/run.sh           release build; writes BENCHMARKS.md and bench/results.json
#   bench/run.sh --smoke   tiny counts, debug build; writes bench/out/ (for CI: no thresholds,
#                          exits 0 when every benchmark ran)
# Other arguments go to ratchet-bench (e.g. --only decide,smtp, --scale-servers 200000).
set -euo pipefail
cd "$(dirname "$0")/.."
# The same target directory as the tests (CI keeps it outside the clone): no second build.
target_dir="${CARGO_TARGET_DIR:-target}"

smoke=""
if [ "${1:-}" = "--smoke" ]; then
  smoke="--smoke"
  shift
fi

deploy/install-deps.sh test
if [ -n "$smoke" ]; then
  # The debug build that the tests already made: no second RocksDB compile in CI.
  cargo build --locked --bin ratchet --bin ratchet-bench
  bin="$target_dir/debug"
  out=bench/out
else
  cargo build --release --locked --bin ratchet --bin ratchet-bench
  bin="$target_dir/release"
  out=bench/out/full
fi

"$bin/ratchet-bench" --ratchet "$bin/ratchet" --out "$out" $smoke "$@"

# A full run of every benchmark (no --only) is what BENCHMARKS.md and bench/results.json hold.
if [ -z "$smoke" ] && [[ " $* " != *" --only"* ]]; then
  cp "$out/BENCHMARKS.md" BENCHMARKS.md
  cp "$out/results.json" bench/results.json
  echo "wrote BENCHMARKS.md and bench/results.json" >&2
elif [ -n "$smoke" ]; then
  echo "smoke run passed: $out/BENCHMARKS.md, $out/results.json" >&2
fi
