#!/bin/sh
# The `join` sidecar of every decider pod: sees to it that this pod's node is a member of
# the group, with the role this release wants, then sleeps for the rest of the pod's life.
#
# Founding members need nothing from it (they found the group together through
# --initial-cluster), and it only confirms that. A pod that did not found the group (one
# added by scale-up, a read-only region's pod, a pod whose volume was replaced) is added
# with `ratchet ctl cluster add-learner`, which makes the leader call the pod back at its
# advertised address to learn its persisted id, and then `ratchet ctl cluster promote`
# unless PROMOTE is false. Both commands are idempotent, so retrying after any failure is
# safe. Node ids are never chosen here: each node draws its own and keeps it on its volume.
#
# Two cases are left to an operator on purpose:
# - the group already has a member with this pod's name but another id: this pod's volume
#   was lost or replaced. The old member must be removed first (`ratchet ctl cluster
#   remove --name NAME`); this script then adds the new node on its next attempt. (The
#   check-identity init container normally keeps such a pod from starting at all until
#   then; this is the second line of defence.)
# - the node was a member once and is not any more: someone removed it (scale-down).
#   MARKER_FILE, on the pod's volume, remembers that, so it is not added back.
#
# Environment (set by the StatefulSet):
#   POD_NAME        this node's --name
#   SELF_ADDRESS    host:port this pod advertises to the other deciders
#   LOCAL_ENDPOINT  this pod's decider gRPC over loopback
#   JOIN_ENDPOINTS  host:port,... where members of the group may be found
#   PROMOTE         true: make this node a voter; false: leave it a learner
#   RETRY_SECONDS   pause between attempts
#   MARKER_FILE     written with this node's id once it has been a member
#   RATCHET_CERT, RATCHET_KEY, RATCHET_CA
#                   the decider's own certificate, read by ratchet ctl (role peer, which
#                   includes admin for add-learner and promote); or, without TLS,
#   CTL_INSECURE    true: ratchet ctl --insecure (see ctl below)
set -u

: "${POD_NAME:?}" "${SELF_ADDRESS:?}" "${LOCAL_ENDPOINT:?}" "${JOIN_ENDPOINTS:?}" "${MARKER_FILE:?}"
PROMOTE=${PROMOTE:-true}
RETRY_SECONDS=${RETRY_SECONDS:-5}

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

log() { echo "join $POD_NAME: $*" >&2; }

# Logs a line unless it is the one logged last: waiting states repeat every few seconds.
last_said=""
say() {
  [ "$1" = "$last_said" ] || log "$1"
  last_said=$1
}

idle() {
  log "$1"
  exec sleep infinity
}

# `ratchet ctl --json cluster status` of one endpoint, or a failure.
status_of() { ctl --endpoints "$1" --json cluster status 2>/dev/null; }

# The node id digit for digit, for messages and the marker: jq 1.6 reads numbers as
# doubles, which is fine for comparing two ids read the same way but not for printing one.
raw_node_id() { printf '%s\n' "$1" | sed -n 's/^ *"node_id": *\([0-9][0-9]*\).*/\1/p' | head -n 1; }

while :; do
  if ! local_status=$(status_of "$LOCAL_ENDPOINT"); then
    say "waiting for the local decider at $LOCAL_ENDPOINT"
    sleep "$RETRY_SECONDS"
    continue
  fi
  my_id=$(raw_node_id "$local_status")

  # 1. This node knows a leader and finds itself in the membership: it is a member.
  my_role=$(printf '%s' "$local_status" |
    jq -r 'select(.leader_id != 0) | .node_id as $me | .members[] | select(.id == $me) | .role')
  if [ -n "$my_role" ]; then
    if [ "$PROMOTE" = true ] && [ "$my_role" = learner ]; then
      log "promoting $POD_NAME (id $my_id) to voter"
      if output=$(ctl --endpoints "$LOCAL_ENDPOINT" cluster promote --name "$POD_NAME" 2>&1); then
        log "$(printf '%s' "$output" | tr '\n' ' ')"
      else
        log "promote failed, will retry: $output"
        sleep "$RETRY_SECONDS"
      fi
      continue
    fi
    printf '%s\n' "$my_id" >"$MARKER_FILE.new" && mv -f "$MARKER_FILE.new" "$MARKER_FILE"
    idle "member of the group as $my_role (id $my_id); nothing more to do"
  fi

  # 2. Otherwise, look at the group from a member that knows a leader.
  group=""
  group_endpoint=""
  for endpoint in $(printf '%s' "$JOIN_ENDPOINTS" | tr ',' ' '); do
    [ "$endpoint" = "$SELF_ADDRESS" ] && continue
    candidate=$(status_of "$endpoint") || continue
    if printf '%s' "$candidate" | jq -e '.leader_id != 0 and (.members | length) > 0' >/dev/null 2>&1; then
      group=$candidate
      group_endpoint=$endpoint
      break
    fi
  done
  if [ -z "$group" ]; then
    say "no member with a leader reachable yet at $JOIN_ENDPOINTS (the group may still be founding)"
    sleep "$RETRY_SECONDS"
    continue
  fi

  namesakes=$(printf '%s' "$group" | jq -c --arg name "$POD_NAME" '[.members[] | select(.name == $name)]')
  if [ "$namesakes" != "[]" ]; then
    if printf '%s' "$namesakes" | jq -e --argjson id "$my_id" 'any(.[]; .id == $id)' >/dev/null; then
      say "listed in the group (seen at $group_endpoint); waiting for this node to catch up"
    else
      say "the group already has a member named $POD_NAME with another id, but this pod's volume holds node $my_id: the old volume was lost or replaced. Remove the old member (ratchet ctl --endpoints $group_endpoint cluster remove --name $POD_NAME) and this pod joins as a new member on the next attempt"
    fi
    sleep "$RETRY_SECONDS"
    continue
  fi

  if [ -f "$MARKER_FILE" ] && [ "$(cat "$MARKER_FILE")" = "$my_id" ]; then
    idle "node $my_id was a member and has been removed from the group: not adding it back. To join it anew, delete $MARKER_FILE and restart the pod"
  fi

  log "adding $POD_NAME (id $my_id) at $SELF_ADDRESS as a learner, through $group_endpoint"
  if output=$(ctl --endpoints "$group_endpoint" cluster add-learner --name "$POD_NAME" --address "$SELF_ADDRESS" 2>&1); then
    log "$output"
  else
    log "add-learner failed, will retry: $output"
    sleep "$RETRY_SECONDS"
  fi
done
