#!/bin/sh
# Starts `ratchet decider` with the arguments that the StatefulSet gives every pod alike
# ("$@", beginning with the program), less `--initial-cluster` when this pod is not one of
# the founding members listed in it.
#
# Why: a StatefulSet has one pod template, so every pod gets the same --initial-cluster,
# but the binary refuses a list that does not name its own --name, and a pod added by
# scale-up (ordinal >= the founding size) must not found anything: it starts as a plain
# node and the `join` sidecar (join.sh) adds it to the group. A founding member keeps the
# flag for life; once its data directory holds the group, the binary ignores it.
# A join-on-start mode in the binary (`--join ENDPOINTS`, or a node not listed in
# --initial-cluster joining through it) would replace this script and join.sh.
set -eu

name=""
members=""
previous=""
for argument in "$@"; do
  case "$previous" in
    --name) name=$argument ;;
    --initial-cluster) members=$argument ;;
  esac
  case "$argument" in
    --name=*) name=${argument#--name=} ;;
    --initial-cluster=*) members=${argument#--initial-cluster=} ;;
  esac
  previous=$argument
done

case ",$members," in
  *",$name="*)
    echo "start-decider: $name is a founding member" >&2
    exec "$@"
    ;;
esac

echo "start-decider: $name is not among the founding members: starting without --initial-cluster; the join sidecar adds it to the group" >&2
skip_next=false
for argument in "$@"; do
  shift
  if [ "$skip_next" = true ]; then
    skip_next=false
    continue
  fi
  case "$argument" in
    --initial-cluster) skip_next=true; continue ;;
    --initial-cluster=*) continue ;;
  esac
  set -- "$@" "$argument"
done
exec "$@"
