#!/bin/sh
# The policy hook Job: checks the policy file, then makes it the group's policy with
# `ratchet ctl policy set`, unless the group already has exactly this text (so that an
# upgrade that does not touch the policy does not add a policy version).
#
# Runs after every install and upgrade, possibly while a new group is still founding: it
# retries until the group answers, for WAIT_SECONDS at most.
#
# Environment: ENDPOINTS (deciders, host:port,...), POLICY_FILE, WAIT_SECONDS; RATCHET_CERT,
# RATCHET_KEY and RATCHET_CA (a certificate with role admin, which policy set needs) or
# CTL_INSECURE (see ctl below).
set -eu
: "${ENDPOINTS:?}" "${POLICY_FILE:?}"
WAIT_SECONDS=${WAIT_SECONDS:-600}

# ratchet ctl as this pod. With the chart's tls.enabled, ratchet reads the pod's
# certificate from RATCHET_CERT, RATCHET_KEY and RATCHET_CA. With tls.enabled false the
# chart sets CTL_INSECURE=true instead, and every call says --insecure: plaintext, with
# no authentication at all.
ctl() {
  if [ "${CTL_INSECURE:-false}" = true ]; then
    ratchet ctl --insecure "$@"
  else
    ratchet ctl "$@"
  fi
}

# A broken policy fails the Job at once, with the rule named, before touching the group.
ratchet policy check "$POLICY_FILE"

deadline=$(($(date +%s) + WAIT_SECONDS))
while :; do
  if current=$(ctl --endpoints "$ENDPOINTS" --json policy show 2>&1); then
    if [ "$(printf '%s' "$current" | jq -r .policy_toml)" = "$(cat "$POLICY_FILE")" ]; then
      echo "the group already has this policy (version $(printf '%s' "$current" | jq -r .version))"
      exit 0
    fi
    if ctl --endpoints "$ENDPOINTS" policy set "$POLICY_FILE"; then
      exit 0
    fi
  else
    echo "waiting for the group at $ENDPOINTS: $current" >&2
  fi
  if [ "$(date +%s)" -ge "$deadline" ]; then
    echo "gave up: the group did not take the policy within ${WAIT_SECONDS}s" >&2
    exit 1
  fi
  sleep 5
done
