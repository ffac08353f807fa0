#!/usr/bin/env bash
# The demo behind `make demo`: one Portal with the example guestbook app
# installed, driven only through the portald command line. Everything runs
# on loopback in a temporary directory and is stopped at the end (or left
# running with KEEP=1).
set -euo pipefail

BIN=${BIN:-bin}
API_PORT=${DEMO_API_PORT:-18480}
APP_PORT=${DEMO_APP_PORT:-18080}
KEEP=${KEEP:-}
root=$(cd "$(dirname "$0")/.." && pwd)
BIN=$(cd "$root" && cd "$BIN" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/portal-demo.XXXXXX")
pids=()

cleanup() {
	local rc=$?
	for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
	for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
	rm -rf "$work"
	exit $rc
}
trap cleanup EXIT INT TERM

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
portald() { (PS4='$ '; set -x; "$BIN/portald" "$@" --api "127.0.0.1:$API_PORT"); }

step "start Portal A (data in $work/a, API on 127.0.0.1:$API_PORT)"
"$BIN/portald" run --data "$work/a" --api "127.0.0.1:$API_PORT" --name "Alice's Portal" 2>"$work/a.log" &
pids+=($!)
for _ in $(seq 100); do
	"$BIN/portald" id --api "127.0.0.1:$API_PORT" >/dev/null 2>&1 && break
	kill -0 "${pids[0]}" 2>/dev/null || { cat "$work/a.log"; echo "portald exited"; exit 1; }
	sleep 0.1
done

step "start the example app (guestbook on 127.0.0.1:$APP_PORT)"
GUESTBOOK_CORE="http://127.0.0.1:$API_PORT" "$BIN/guestbook" --listen "127.0.0.1:$APP_PORT" 2>"$work/guestbook.log" &
pids+=($!)

step "Portal A's ID"
portald id

step "install the guestbook app"
portald apps add guestbook --meta "$root/examples/guestbook/app_meta.json" \
	--upstream "http://127.0.0.1:$APP_PORT" --source 127.0.0.1
portald apps ls

step "pair with a friend's Portal by short ID (resolved once the rendezvous server knows it)"
portald peers add q7x2ab --name "Bob's Portal"
portald peers ls

step "status"
portald status

if [ -n "$KEEP" ]; then
	step "running; press Ctrl-C to stop"
	echo "API:       http://127.0.0.1:$API_PORT/protected/peers"
	echo "guestbook: http://127.0.0.1:$APP_PORT/"
	wait "${pids[0]}"
	exit 0
fi

step "stop Portal A gracefully"
kill -TERM "${pids[0]}"
rc=0
wait "${pids[0]}" || rc=$?
tail -n 3 "$work/a.log"
if [ "$rc" -ne 0 ]; then
	echo "portald exited with $rc"
	exit 1
fi
pids=("${pids[@]:1}")
step "demo finished"
