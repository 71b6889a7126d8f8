#!/bin/sh
# The `check-identity` init container of every decider pod: keeps a pod on a new, empty
# volume from starting its decider while the group still lists a member of the same name.
#
# Why: such a pod is the replacement of a member whose volume was lost. It comes back at
# the old member's address with a new id and an empty log, but the leader still sends the
# old member's Raft traffic to that address, and answering it would make the leader's log
# replication see a follower whose log went backwards, which openraft treats as fatal
# (the leader's Raft core panics). Raft RPCs do not say which node id they are meant for,
# so the new node cannot refuse them itself. Until the binary checks that, the pod waits
# here, visibly (Init:0/1, and this log), until an operator removes the old member with
# `ratchet ctl cluster remove --name NAME`; then the decider starts and the join sidecar
# adds it as a new member.
#
# A pod whose volume holds an identity starts at once, whatever the network: a whole
# group restarting must never wait on itself. A new pod that finds no member with a
# leader (a group being founded, or scale-up before anything answers) starts too.
#
# Environment: POD_NAME, SELF_ADDRESS, JOIN_ENDPOINTS (as join.sh), DATA_DIR (the
# decider's --data-dir), RETRY_SECONDS; RATCHET_CERT, RATCHET_KEY, RATCHET_CA or CTL_INSECURE (as join.sh).
set -u

: "${POD_NAME:?}" "${SELF_ADDRESS:?}" "${JOIN_ENDPOINTS:?}" "${DATA_DIR:?}"
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

if [ -e "$DATA_DIR/identity.json" ]; then
  echo "check-identity $POD_NAME: the volume holds this node's identity: starting" >&2
  exit 0
fi

# Succeeds when a member that knows a leader lists a member named POD_NAME.
group_lists_this_name() {
  for endpoint in $(printf '%s' "$JOIN_ENDPOINTS" | tr ',' ' '); do
    [ "$endpoint" = "$SELF_ADDRESS" ] && continue
    status=$(ctl --endpoints "$endpoint" --json cluster status 2>/dev/null) || continue
    printf '%s' "$status" | jq -e '.leader_id != 0' >/dev/null 2>&1 || continue
    seen_at=$endpoint
    printf '%s' "$status" | jq -e --arg name "$POD_NAME" 'any(.members[]; .name == $name)' >/dev/null
    return
  done
  return 1
}

said=false
while group_lists_this_name; do
  if [ "$said" = false ]; then
    echo "check-identity $POD_NAME: this pod's volume is new, but the group (seen at $seen_at) still lists a member named $POD_NAME: its volume was lost or replaced. Waiting until the old member is removed: ratchet ctl --endpoints $seen_at cluster remove --name $POD_NAME" >&2
    said=true
  fi
  sleep "$RETRY_SECONDS"
done
echo "check-identity $POD_NAME: a new volume and no member of this name: starting as a new node" >&2
