#!/usr/bin/env bash
# Stop the mirror started by hub-mirror-up.sh DIR.
DIR=${1:?usage: hub-mirror-down.sh DIR}
[ -f "$DIR/olah.pid" ] && kill "$(cat "$DIR/olah.pid")" 2>/dev/null
rm -f "$DIR/olah.pid"
true
