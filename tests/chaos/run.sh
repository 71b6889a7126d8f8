#!/usr/bin/env bash
# The fault suite, long: tests/chaos/run.sh [--schedules N] [--seed S] [--nodes 3|5] [--seconds T]
# Each schedule founds a group of deciders, each in its own network namespace with its data
# on a small filesystem of its own, runs imports and pauses under seeded faults (kill -9,
# SIGTERM, partitions both ways and one way, minority cuts, SIGSTOP, a full disk, a lost
# volume replaced by a new member) and checks every node after healing. tests/run.sh runs
# six of the default 60 s; a failure prints the seed that replays it.
# Needs root (ip netns, iptables).
set -euo pipefail
cd "$(dirname "$0")/../.."
schedules=20
seed=""
nodes=3
seconds=60
while [ $# -gt 0 ]; do
  case "$1" in
    --schedules) schedules="$2"; shift 2 ;;
    --seed) seed="$2"; shift 2 ;;
    --nodes) nodes="$2"; shift 2 ;;
    --seconds) seconds="$2"; shift 2 ;;
    *) echo "tests/chaos/run.sh: unknown argument $1 (--schedules N, --seed S, --nodes 3|5, --seconds T)" >&2; exit 2 ;;
  esac
done
deploy/install-deps.sh test
case "$nodes" in 3|5) ;; *) echo "tests/chaos/run.sh: --nodes 3 or 5, not $nodes" >&2; exit 2 ;; esac
case "$seconds" in ''|*[!0-9]*) echo "tests/chaos/run.sh: --seconds takes a whole number, not $seconds" >&2; exit 2 ;; esac
export RATCHET_CHAOS_SCHEDULES="$schedules" RATCHET_CHAOS_NODES="$nodes" RATCHET_CHAOS_SECONDS="$seconds"
[ -n "$seed" ] && export RATCHET_CHAOS_SEED="$seed"
cargo test --workspace --locked --test chaos -- --nocapture --test-threads=1 under_seeded_faults
