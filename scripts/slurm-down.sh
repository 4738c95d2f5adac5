#!/usr/bin/env bash
# Stop the daemons started by scripts/slurm-up.sh, by their pid files (nothing else is touched).
#   scripts/slurm-down.sh [BASE] [--purge]
set -uo pipefail
BASE=${DISTIL_SLURM_DIR:-/tmp/distil-slurm}
PURGE=0
for a in "$@"; do case $a in --purge) PURGE=1;; *) BASE=$a;; esac; done
PIDS=""
for f in "$BASE"/run/slurmd-*.pid "$BASE"/run/slurmctld.pid "$BASE"/run/slurmdbd.pid; do
  [ -f "$f" ] && PIDS="$PIDS $(cat "$f")"
done
[ -n "$PIDS" ] && kill $PIDS 2>/dev/null
alive=""
for _ in $(seq 1 50); do alive=""; for p in $PIDS; do kill -0 "$p" 2>/dev/null && alive="$alive $p"; done
  [ -z "$alive" ] && break; sleep 0.2; done
[ -n "$alive" ] && kill -9 $alive 2>/dev/null   # slurmd ignores TERM while retrying registration
[ -f "$BASE/run/mysqld.pid" ] && kill "$(cat "$BASE/run/mysqld.pid")" 2>/dev/null
[ -f "$BASE/munge/munged.pid" ] && kill "$(cat "$BASE/munge/munged.pid")" 2>/dev/null
rm -f "$BASE"/run/*.pid
echo "slurm-down: stopped${PIDS:+ pids$PIDS}"
[ "$PURGE" = 1 ] && rm -rf "$BASE"
true
