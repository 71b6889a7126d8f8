#!/usr/bin/env bash
# Runs every test of Ratchet (unit, property and end-to-end across real processes),
# after installing what they need. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/install-deps.sh test
python3 helm/check.py
cargo test --workspace --locked "$@"
# The fault suite's seeded schedules, six more: three with three deciders, three with five.
tests/chaos/run.sh --schedules 3 --nodes 3
tests/chaos/run.sh --schedules 3 --nodes 5
# Every benchmark once, with tiny counts: that they run, not how fast (no thresholds).
bench/run.sh --smoke
