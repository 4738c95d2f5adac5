#!/usr/bin/env bash
# Stop the daemon started by scripts/dockerd-up.sh (by its pid file). --purge also deletes its images.
set -uo pipefail
DIR=${DISTIL_DOCKER_DIR:-/tmp/distil-docker}
PURGE=0
for a in "$@"; do case $a in --purge) PURGE=1;; *) DIR=$a;; esac; done
if [ -f "$DIR/dockerd.pid" ]; then
  PID=$(cat "$DIR/dockerd.pid")
  kill "$PID" 2>/dev/null
  for _ in $(seq 1 100); do kill -0 "$PID" 2>/dev/null || break; sleep 0.2; done
  echo "dockerd-down: stopped dockerd (pid $PID)"
fi
[ "$PURGE" = 1 ] && rm -rf "$DIR"
true
