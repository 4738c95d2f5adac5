#!/usr/bin/env bash
# Stop the SeaweedFS server started by scripts/s3-up.sh (by its pid file). Data stays in DIR/data
# unless --purge is given.
set -uo pipefail
DIR=${DISTIL_S3_DIR:-/tmp/distil-s3}
PURGE=0
for a in "$@"; do case $a in --purge) PURGE=1;; *) DIR=$a;; esac; done
if [ -f "$DIR/weed.pid" ]; then
  PID=$(cat "$DIR/weed.pid")
  kill "$PID" 2>/dev/null
  for _ in $(seq 1 50); do kill -0 "$PID" 2>/dev/null || break; sleep 0.2; done
  kill -0 "$PID" 2>/dev/null && kill -9 "$PID" 2>/dev/null
  rm -f "$DIR/weed.pid"
  echo "s3-down: stopped SeaweedFS (pid $PID)"
else
  echo "s3-down: no server running from $DIR"
fi
if [ "$PURGE" = 1 ]; then rm -rf "$DIR"; fi
true
