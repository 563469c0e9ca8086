#!/usr/bin/env bash
# Quick start: set up, then run a Loft server on the embedded default (SQLite + a
# local chunk directory) on 127.0.0.1:8470, with one account, this machine logged in
# as a device, and the workspace mounted at ~/Loft. Stays in the foreground; Ctrl-C
# unmounts (after pushing what is pending) and stops the server.
#
#   tools/dev/run.sh
#
# State lives in .loft-dev/ (server data in .loft-dev/server, the device's home in
# .loft-dev/home). Knobs: LOFT_USER (default: me), LOFT_PASSWORD (default: printed),
# LOFT_LISTEN (default 127.0.0.1:8470), LOFT_MOUNT (default ~/Loft).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

tools/dev/setup.sh

STATE="$ROOT/.loft-dev"
LISTEN="${LOFT_LISTEN:-127.0.0.1:8470}"
export LOFT_USER="${LOFT_USER:-me}"
export LOFT_PASSWORD="${LOFT_PASSWORD:-loft-dev-password}"
export LOFT_HOME="$STATE/home"
LOFT=(.venv/bin/loft)
mkdir -p "$STATE"

if ! "${LOFT[@]}" user add "$LOFT_USER" --data "$STATE/server" 2>/dev/null; then
  echo "run.sh: account $LOFT_USER already exists"
fi

"${LOFT[@]}" serve --data "$STATE/server" --listen "$LISTEN" &
SERVER=$!
MOUNT="${LOFT_MOUNT:-$HOME/Loft}"
cleanup() {
  if mountpoint -q "$MOUNT"; then "${LOFT[@]}" unmount "$MOUNT" || fusermount3 -uz "$MOUNT"; fi
  kill -TERM $SERVER 2>/dev/null
  wait $SERVER
}
trap cleanup EXIT
trap 'exit 130' INT TERM
for _ in $(seq 100); do
  curl -fsS "http://$LISTEN/v1/health" >/dev/null 2>&1 && break
  kill -0 $SERVER 2>/dev/null || { echo "run.sh: the server did not start" >&2; exit 1; }
  sleep 0.1
done
"${LOFT[@]}" login "http://$LISTEN" --user "$LOFT_USER" --device "$(hostname)"
mkdir -p "$MOUNT"
"${LOFT[@]}" mount "$MOUNT"
cat <<MSG

Loft is serving on http://$LISTEN (data in $STATE/server), mounted at $MOUNT.
Account: $LOFT_USER / $LOFT_PASSWORD. This device's home: $LOFT_HOME
Try, in another shell:
  cp README.md $MOUNT/ && ls -l $MOUNT
  LOFT_HOME=$LOFT_HOME .venv/bin/loft status
Ctrl-C unmounts and stops the server.
MSG
wait $SERVER
