#!/usr/bin/env bash
# The fault suite, long: tests/chaos/run.sh [--schedules N] [--seed S]
# Each schedule founds a three-node group, each decider in its own network namespace, runs
# a workload under seeded faults (kill -9, partitions, SIGSTOP) and checks every node after
# healing. tests/run.sh runs one schedule; a failure prints the seed that replays it.
# Needs root (ip netns, iptables).
set -euo pipefail
cd "$(dirname "$0")/../.."
schedules=20
seed=""
while [ $# -gt 0 ]; do
  case "$1" in
    --schedules) schedules="$2"; shift 2 ;;
    --seed) seed="$2"; shift 2 ;;
    *) echo "tests/chaos/run.sh: unknown argument $1 (--schedules N, --seed S)" >&2; exit 2 ;;
  esac
done
deploy/install-deps.sh test
export RATCHET_CHAOS_SCHEDULES="$schedules"
[ -n "$seed" ] && export RATCHET_CHAOS_SEED="$seed"
cargo test --workspace --locked --test chaos -- --nocapture --test-threads=1
