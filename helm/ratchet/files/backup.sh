#!/bin/sh
# The backup CronJob: saves a consistent copy of the group's whole state to BACKUP_DIR as
# PREFIX-YYYYMMDDTHHMMSSZ.snap (the UTC time this run started), then deletes PREFIX's
# oldest snapshots beyond the newest KEEP.
#
# `ratchet ctl snapshot save FILE` streams into FILE's .part sibling, checks the whole
# file's checksum and only then renames it to FILE: a .snap file is always complete and
# checked. A failed save exits here, before anything is deleted, so that failures never
# cost an older backup. The names sort by time, and only names of exactly that shape count,
# so other files on the volume (another release's, an operator's copy) are left alone.
#
# Environment (set by the CronJob):
#   ENDPOINTS      the deciders' client Service, host:port
#   BACKUP_DIR     the backup volume's mount path
#   PREFIX         the release's fullname: the snapshots' name prefix
#   KEEP           how many of PREFIX's snapshots to keep, at least 1
#   STALE_MINUTES  a .part file untouched for longer is a leftover of a run that was
#                  killed (longer than a Job may run), and is deleted
#   RATCHET_CERT, RATCHET_KEY, RATCHET_CA
#                  the backup certificate, read by ratchet ctl (role admin, which
#                  SaveSnapshot needs); or, without TLS,
#   CTL_INSECURE   true: ratchet ctl --insecure (see ctl below)
set -eu

: "${ENDPOINTS:?}" "${BACKUP_DIR:?}" "${PREFIX:?}" "${KEEP:?}" "${STALE_MINUTES:?}"

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

file="$BACKUP_DIR/$PREFIX-$(date -u +%Y%m%dT%H%M%SZ).snap"
ctl --endpoints "$ENDPOINTS" snapshot save "$file"

find "$BACKUP_DIR" -maxdepth 1 -name "$PREFIX-*.part" -mmin "+$STALE_MINUTES" -print | while read -r part; do
  rm -f -- "$part"
  echo "backup: removed $part, left over from a run that did not finish"
done

# Newest first; everything after the KEEP newest goes.
ls -1 "$BACKUP_DIR" | grep -E "^$PREFIX-[0-9]{8}T[0-9]{6}Z\.snap\$" | sort -r | tail -n "+$((KEEP + 1))" | while read -r old; do
  rm -f -- "$BACKUP_DIR/$old"
  echo "backup: removed $old (keeping the newest $KEEP)"
done
