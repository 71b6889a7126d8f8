#!/usr/bin/env bash
# Starts the whole system on loopback: a single-node decider, an edge and a demo tenant
# (see `ratchet dev --help`). Extra arguments go to `ratchet dev`.
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/install-deps.sh dev
exec cargo run --locked --bin ratchet -- dev "$@"
