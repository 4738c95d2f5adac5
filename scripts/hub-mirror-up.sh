#!/usr/bin/env bash
# Start a local Hugging Face Hub mirror (olah, downloads only) on 127.0.0.1 that serves git repos
# from DIR/mirrors/{models,datasets}/<org>/<name>. For testing hf:// reads without the public Hub.
#
#   scripts/hub-mirror-up.sh DIR [PORT]   # then: export HF_ENDPOINT=http://127.0.0.1:PORT HF_HUB_DISABLE_XET=1
#   scripts/hub-mirror-down.sh DIR
#
# olah and its web stack live in their own venv (DISTIL_CACHE/olah-venv) so they never change
# the project's dependency versions.
set -euo pipefail
DIR=${1:?usage: hub-mirror-up.sh DIR [PORT]}
PORT=${2:-18090}
VENV=${DISTIL_CACHE:-$HOME/.cache/distil-jobs}/olah-venv
if [ ! -x "$VENV/bin/olah-cli" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q olah >"$DIR.pip.log" 2>&1 || { echo "hub-mirror-up: pip install olah failed (see $DIR.pip.log)" >&2; exit 1; }
fi
mkdir -p "$DIR/mirrors/models" "$DIR/mirrors/datasets" "$DIR/repos"
cat > "$DIR/olah.toml" <<TOML
[basic]
host = "127.0.0.1"
port = $PORT
repos-path = "$DIR/repos"
mirrors-path = ["$DIR/mirrors"]

[accessibility]
offline = true
TOML
cd "$DIR"  # olah writes ./logs
setsid "$VENV/bin/olah-cli" -c "$DIR/olah.toml" </dev/null >"$DIR/olah.log" 2>&1 &
echo $! > "$DIR/olah.pid"
for _ in $(seq 1 150); do
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && { echo "hub mirror on http://127.0.0.1:$PORT"; exit 0; }
  kill -0 "$(cat "$DIR/olah.pid")" 2>/dev/null || { echo "hub-mirror-up: olah died:" >&2; tail -5 "$DIR/olah.log" >&2; exit 1; }
  sleep 0.2
done
echo "hub-mirror-up: olah did not open port $PORT in 30 s" >&2; exit 1
