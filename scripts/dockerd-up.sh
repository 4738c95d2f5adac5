#!/usr/bin/env bash
# A private Docker daemon (own data root and socket; no iptables, no bridge) for building and
# trying the images on a machine without a system Docker. Run as root.
#   scripts/dockerd-up.sh [DIR]        # DIR default: $DISTIL_DOCKER_DIR or /tmp/distil-docker
#   export DOCKER_HOST=unix://DIR/docker.sock
#   scripts/dockerd-down.sh [DIR]
# Containers get --network none or --network host only (there is no bridge).
set -euo pipefail
DIR=${1:-${DISTIL_DOCKER_DIR:-/tmp/distil-docker}}
if ! command -v dockerd >/dev/null; then
  [ "$(id -u)" = 0 ] || { echo "dockerd-up: dockerd missing: apt-get install docker.io" >&2; exit 3; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io >/dev/null 2>&1 \
    || { echo "dockerd-up: apt-get install docker.io failed" >&2; exit 3; }
fi
mkdir -p "$DIR"
if [ -f "$DIR/dockerd.pid" ] && kill -0 "$(cat "$DIR/dockerd.pid")" 2>/dev/null; then
  echo "export DOCKER_HOST=unix://$DIR/docker.sock"; exit 0
fi
# overlay2 when this kernel lets us mount an overlay here (each build step then costs no copy);
# otherwise vfs, which works on every file system (overlay inside containers often does not) but
# copies the whole file system for every step: minutes per step with torch in the image.
DRIVER=${DOCKER_STORAGE_DRIVER:-}
if [ -z "$DRIVER" ]; then
  PROBE=$(mktemp -d "$DIR/overlay-probe.XXXXXX")
  mkdir -p "$PROBE"/{lower,upper,work,merged}
  if mount -t overlay overlay -o "lowerdir=$PROBE/lower,upperdir=$PROBE/upper,workdir=$PROBE/work" \
       "$PROBE/merged" 2>/dev/null; then
    umount "$PROBE/merged"; DRIVER=overlay2
  else
    DRIVER=vfs
  fi
  rm -rf "$PROBE"
fi
start() {  # start dockerd with storage driver $1; 0 once it answers
  setsid dockerd --data-root="$DIR/data" --exec-root="$DIR/exec" --pidfile="$DIR/dockerd.pid" \
    -H "unix://$DIR/docker.sock" --storage-driver="$1" \
    --iptables=false --ip6tables=false --bridge=none --ip-masq=false </dev/null >"$DIR/dockerd.log" 2>&1 &
  for _ in $(seq 1 100); do
    DOCKER_HOST="unix://$DIR/docker.sock" docker version >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  return 1
}
if ! start "$DRIVER" && [ "$DRIVER" = overlay2 ] && [ -z "${DOCKER_STORAGE_DRIVER:-}" ]; then
  echo "dockerd-up: overlay2 did not start ($(tail -1 "$DIR/dockerd.log")); falling back to vfs" >&2
  [ -f "$DIR/dockerd.pid" ] && kill "$(cat "$DIR/dockerd.pid")" 2>/dev/null
  sleep 1
  DRIVER=vfs
  start vfs
fi
DOCKER_HOST="unix://$DIR/docker.sock" docker version >/dev/null 2>&1 || {
  echo "dockerd-up: daemon did not start; last log lines:" >&2; tail -5 "$DIR/dockerd.log" >&2; exit 1; }
echo "dockerd-up: storage driver $DRIVER" >&2
echo "export DOCKER_HOST=unix://$DIR/docker.sock"
